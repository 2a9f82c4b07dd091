"""Every variant round-trips through .keras files and trains in mixed precision."""

import keras
import numpy as np
import pytest

from conftest import ALL_PRESETS, ONE_PER_GENERATION, randomize_statistics
from mnet_backbones import MobileNetBackbone, MobileNetImageClassifier
from mnet_backbones.layers import hard_swish_int8

IMAGES = np.random.default_rng(0).normal(size=(2, 48, 40, 3)).astype("float32")


@pytest.mark.parametrize("name", ALL_PRESETS)
def test_backbone_keras_file_round_trip(name, tmp_path):
    backbone = MobileNetBackbone.from_preset(name, load_weights=False)
    randomize_statistics(backbone)
    # Eager calls, not `predict`: tracing a function for each of 24 presets, twice, cost more than the rest.
    expected = keras.ops.convert_to_numpy(backbone(IMAGES, training=False))
    path = str(tmp_path / "backbone.keras")
    backbone.save(path)
    restored = keras.models.load_model(path)
    assert isinstance(restored, MobileNetBackbone)
    assert sorted(restored.pyramid_outputs) == ["P2", "P3", "P4", "P5"]
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(restored(IMAGES, training=False)), expected)


@pytest.mark.parametrize("name", ONE_PER_GENERATION)
def test_classifier_keras_file_round_trip(name, tmp_path):
    classifier = MobileNetImageClassifier(
        MobileNetBackbone.from_preset(name, load_weights=False), num_classes=6, dropout=0.1
    )
    randomize_statistics(classifier)
    expected = classifier.predict(IMAGES, verbose=0)
    path = str(tmp_path / "classifier.keras")
    classifier.save(path)
    restored = keras.models.load_model(path)
    assert isinstance(restored, MobileNetImageClassifier) and restored.dropout == 0.1
    np.testing.assert_array_equal(restored.predict(IMAGES, verbose=0), expected)


def _loss_and_gradients(model, images, labels):
    """Loss and gradients of the trainable weights, on the active backend."""
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            loss = loss_fn(labels, model(images, training=True))
        return loss, tape.gradient(loss, model.trainable_weights)
    if backend == "jax":
        import jax

        trainable = [v.value for v in model.trainable_variables]
        fixed = [v.value for v in model.non_trainable_variables]

        def compute(trainable):
            logits, _ = model.stateless_call(trainable, fixed, images, training=True)
            return loss_fn(labels, logits)

        return jax.value_and_grad(compute)(trainable)
    if backend == "torch":
        loss = loss_fn(labels, model(images, training=True))
        model.zero_grad()
        loss.backward()
        return loss, [v.value.grad for v in model.trainable_weights]
    pytest.skip(f"no gradient helper for backend {backend}")


@pytest.mark.parametrize("name", ALL_PRESETS)
def test_mixed_float16_outputs_and_gradients_are_finite(name, float32_policy):
    keras.mixed_precision.set_global_policy("mixed_float16")
    backbone = MobileNetBackbone.from_preset(name, load_weights=False)
    classifier = MobileNetImageClassifier(backbone=backbone, num_classes=5)
    assert backbone.compute_dtype == "float16"
    pyramid = keras.Model(backbone.input, backbone.pyramid_outputs)
    for feature in pyramid.predict(IMAGES, verbose=0).values():
        assert np.all(np.isfinite(feature.astype("float32")))
    loss, gradients = _loss_and_gradients(classifier, IMAGES, np.array([1, 3]))
    assert np.isfinite(float(keras.ops.convert_to_numpy(loss)))
    assert len(gradients) == len(classifier.trainable_weights)
    for gradient in gradients:
        assert np.all(np.isfinite(keras.ops.convert_to_numpy(gradient).astype("float32")))


def test_head_dtype_survives_keras_files(tmp_path, float32_policy):
    keras.mixed_precision.set_global_policy("mixed_float16")
    backbone = MobileNetBackbone.from_preset("mobilenetv3_small_050", load_weights=False)
    default_head = MobileNetImageClassifier(backbone, num_classes=3)
    float32_head = MobileNetImageClassifier(
        MobileNetBackbone.from_preset("mobilenetv3_small_050", load_weights=False),
        num_classes=3,
        head_dtype="float32",
    )
    for model, dtype in ((default_head, "float16"), (float32_head, "float32")):
        path = str(tmp_path / f"{dtype}.keras")
        model.save(path)
        restored = keras.models.load_model(path)
        assert restored.get_layer("predictions").compute_dtype == dtype


def test_hard_swish_form_travels_with_the_backbone_config():
    # The exporter's int8 copy: same function, the form XNNPACK's int8 path runs.
    fused = MobileNetImageClassifier(MobileNetBackbone("mobilenetv3_small", width_multiplier=0.5), num_classes=7)
    config = {**fused.backbone.get_config(), "hard_swish_form": "int8"}
    integer = MobileNetImageClassifier(MobileNetBackbone.from_config(config), num_classes=7)
    integer.set_weights(fused.get_weights())
    assert integer.backbone.get_layer("stem")._activation_fn is hard_swish_int8
    assert integer.get_layer("head_activation").activation is hard_swish_int8
    x = np.random.default_rng(0).uniform(-1, 1, (2, 64, 64, 3)).astype("float32")
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(integer(x)), keras.ops.convert_to_numpy(fused(x)), rtol=1e-5, atol=1e-5
    )
