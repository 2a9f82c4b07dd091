"""heads.losses: the segmenters' masked cross-entropy and the replica sum, on one device.

Several devices (the count summed over replicas) are checked in
tests/test_distributed.py, which needs a fresh interpreter per device count.
"""

import keras
import numpy as np
import pytest

import heads
from heads.losses import MaskedSparseCrossentropy, sum_over_replicas


def _hand_loss(labels, logits, ignore=255):
    shifted = logits - logits.max(axis=-1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
    valid = labels != ignore
    picked = np.take_along_axis(log_probs, np.where(valid, labels, 0)[..., None], axis=-1)[..., 0]
    return -picked[valid].sum() / max(valid.sum(), 1)


@pytest.fixture(scope="module")
def batch():
    rng = np.random.default_rng(3)
    logits = rng.normal(0, 2, (2, 5, 6, 4)).astype("float32")
    labels = rng.integers(0, 4, (2, 5, 6))
    labels[0, :3] = 255  # the first image has far fewer labelled pixels than the second
    return labels, logits


def test_the_mean_is_over_labelled_pixels(batch):
    labels, logits = batch
    value = float(keras.ops.convert_to_numpy(MaskedSparseCrossentropy()(labels, logits)))
    assert value == pytest.approx(_hand_loss(labels, logits), rel=1e-5)
    # On one device it is Keras' own masked loss.
    keras_loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=255)
    assert value == pytest.approx(float(keras.ops.convert_to_numpy(keras_loss(labels, logits))), rel=1e-5)


def test_labels_with_a_channel_axis_and_probabilities(batch):
    labels, logits = batch
    probabilities = keras.ops.convert_to_numpy(keras.ops.softmax(logits, axis=-1))
    loss = MaskedSparseCrossentropy(from_logits=False)
    value = float(keras.ops.convert_to_numpy(loss(labels[..., None], probabilities)))
    assert value == pytest.approx(_hand_loss(labels, logits), rel=1e-4)


def test_no_labelled_pixel_gives_zero_not_nan(batch):
    labels, logits = batch
    value = float(keras.ops.convert_to_numpy(MaskedSparseCrossentropy()(np.full_like(labels, 255), logits)))
    assert value == 0.0


def test_ignore_class_none_counts_every_pixel(batch):
    labels, logits = batch
    labels = np.where(labels == 255, 1, labels)
    value = float(keras.ops.convert_to_numpy(MaskedSparseCrossentropy(ignore_class=None)(labels, logits)))
    assert value == pytest.approx(_hand_loss(labels, logits), rel=1e-5)


def test_it_serializes():
    loss = MaskedSparseCrossentropy(ignore_class=7)
    again = keras.losses.deserialize(keras.losses.serialize(loss))
    assert isinstance(again, MaskedSparseCrossentropy)
    assert again.ignore_class == 7 and again.from_logits


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="reduction must be 'sum'"):
        MaskedSparseCrossentropy(reduction="sum_over_batch_size")
    with pytest.raises(TypeError, match="ignore_class"):
        MaskedSparseCrossentropy(ignore_class=2.5)


def test_one_replica_sum_is_the_value():
    assert float(keras.ops.convert_to_numpy(sum_over_replicas(keras.ops.convert_to_tensor(3.0)))) == 3.0


def test_segmenters_compile_with_it_by_default():
    segmenter = heads.create_deeplabv3plus("mobilenetv3_small_050", num_classes=3, image_size=64, load_weights=False)
    segmenter.compile()
    assert isinstance(segmenter.loss, MaskedSparseCrossentropy)
    lraspp = heads.create_lraspp("mobilenetv3_small_050", num_classes=3, image_size=64, load_weights=False)
    lraspp.compile()
    assert isinstance(lraspp.loss, MaskedSparseCrossentropy)
