"""Models that take free image sizes take one size after another, in one process, on every backend.

TensorFlow traces `predict` and `fit` again with free height and width once
a second size arrives (and a `tf.data` pipeline of mixed sizes has them free
from the start): every layer must then work on sizes read at run time.
Each result is compared with the model called eagerly on the same images.
Also here: the clear errors for a batch of no images or images of no pixels.
"""

import keras
import numpy as np
import pytest

import heads
from heads.segmentation.layers import BilinearResize, ResizeToMatch, resize_bilinear, resize_by_gathers
from mnet_backbones import MobileNetBackbone, MobileNetImageClassifier

SIZES = [(64, 64), (72, 88), (64, 64)]
tensorflow_only = pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="a TensorFlow graph")


def images_of(size, batch=2, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (batch,) + size + (3,)).astype("float32")


def assert_close(actual, expected, err_msg=""):
    """Equal to float32 rounding: the tolerance follows the largest value (random weights reach hundreds)."""
    scale = max(1.0, float(np.max(np.abs(expected))))
    np.testing.assert_allclose(actual, expected, atol=1e-4 * scale, rtol=1e-4, err_msg=err_msg)


def eager(model, images):
    outputs = model(images, training=False)
    return keras.tree.map_structure(keras.ops.convert_to_numpy, outputs)


# --- the resize that follows a size read at run time ---------------------------------------


@pytest.mark.parametrize(
    "shape, size", [((11, 13), (21, 25)), ((21, 25), (11, 13)), ((5, 7), (5, 7)), ((1, 1), (4, 3))]
)
def test_resize_bilinear_matches_keras_resize(shape, size):
    images = np.random.default_rng(0).normal(size=(2,) + shape + (3,)).astype("float32")
    expected = keras.ops.image.resize(images, size, interpolation="bilinear")
    got = resize_by_gathers(images, *size)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(got), keras.ops.convert_to_numpy(expected), atol=2e-6)
    # Sizes given as tensors (read at run time) take the gathers.
    sizes = [keras.ops.convert_to_tensor(side, "int32") for side in size]
    got = resize_bilinear(images, *sizes)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(got), keras.ops.convert_to_numpy(expected), atol=2e-6)


def test_the_resize_layers_and_the_fixed_size_resize_are_keras_resize_exactly():
    """BilinearResize (DeepLabV3+), ResizeToMatch on a map of known size (DeepLabV3, LR-ASPP, exports) and
    resize_bilinear with int sizes (evaluate_segmentation) are the one resize op they were before the merge."""
    images = np.random.default_rng(1).normal(size=(2, 11, 13, 5)).astype("float32")
    expected = keras.ops.convert_to_numpy(keras.ops.image.resize(images, (21, 25), interpolation="bilinear"))
    reference = np.zeros((2, 21, 25, 1), "float32")
    for got in (
        BilinearResize((21, 25))(images),
        ResizeToMatch()(images, reference),
        resize_bilinear(images, 21, 25),
    ):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(got), expected)


@tensorflow_only
def test_resize_to_match_runs_in_a_graph_of_unknown_sizes():
    import tensorflow as tf

    layer = ResizeToMatch()
    graph = tf.function(
        layer.call,
        input_signature=[tf.TensorSpec((None, None, None, 3)), tf.TensorSpec((None, None, None, 1))],
    )
    rng = np.random.default_rng(0)
    for (height, width), (to_height, to_width) in [((11, 13), (21, 25)), ((7, 9), (30, 17))]:
        x = rng.normal(size=(2, height, width, 3)).astype("float32")
        got = graph(x, np.zeros((2, to_height, to_width, 1), "float32")).numpy()
        expected = keras.ops.convert_to_numpy(keras.ops.image.resize(x, (to_height, to_width)))
        np.testing.assert_allclose(got, expected, atol=2e-6)


# --- segmenters of any size -------------------------------------------------------------------

ANY_SIZE_SEGMENTERS = {
    "deeplabv3": lambda: heads.create_deeplabv3(
        "mobilenetv3_small_050", num_classes=3, load_weights=False, aspp_filters=16, high_feature="P5",
        low_feature="P3", aux_head=True,
    ),
    "lraspp": lambda: heads.create_lraspp(
        "mobilenetv3_small_050", num_classes=3, load_weights=False, inter_filters=16, high_feature="P5",
        low_feature="P3",
    ),
}  # fmt: skip


@pytest.fixture(scope="module", params=sorted(ANY_SIZE_SEGMENTERS))
def segmenter(request):
    return ANY_SIZE_SEGMENTERS[request.param]()


def test_segmenter_predicts_one_size_after_another(segmenter):
    for i, size in enumerate(SIZES):
        images = images_of(size, seed=i)
        logits = segmenter.predict(images, verbose=0)
        assert logits.shape == (2,) + size + (3,)
        assert_close(logits, eager(segmenter, images), err_msg=f"at {size}")


def test_segmenter_predicts_a_list_of_sizes_image_by_image(segmenter):
    images = [images_of(size, batch=1, seed=i)[0] for i, size in enumerate(SIZES[:2])]
    logits = segmenter.predict(images, verbose=0)
    assert [one.shape for one in logits] == [size + (3,) for size in SIZES[:2]]
    for image, one in zip(images, logits):
        assert_close(one, eager(segmenter, image[None])[0])


def free_size_dataset():
    """A `tf.data` pipeline whose batches differ in size: height and width are None in its spec."""
    import tensorflow as tf

    batches = []
    for i, size in enumerate(SIZES[:2]):
        masks = np.random.default_rng(i).integers(0, 3, (2,) + size + (1,)).astype("int32")
        masks[:, :2, :2] = 255  # ignored pixels
        batches.append((images_of(size, seed=i), masks))
    spec = (tf.TensorSpec((None, None, None, 3), "float32"), tf.TensorSpec((None, None, None, 1), "int32"))
    return tf.data.Dataset.from_generator(lambda: iter(batches), output_signature=spec), batches


def test_segmenter_trains_and_evaluates_on_a_dataset_of_free_sizes(segmenter):
    dataset, batches = free_size_dataset()
    segmenter.compile(optimizer=keras.optimizers.SGD(1e-3))
    before = [keras.ops.convert_to_numpy(w).copy() for w in segmenter.trainable_weights]
    history = segmenter.fit(dataset, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    after = [keras.ops.convert_to_numpy(w) for w in segmenter.trainable_weights]
    assert any(not np.array_equal(a, b) for a, b in zip(before, after)), "fit changed no weight"

    result = segmenter.evaluate(dataset, verbose=0, return_dict=True)
    # Both batches hold two images: evaluate's loss is the mean of the two batch losses.
    expected = np.mean([float(segmenter.loss(masks, eager(segmenter, images))) for images, masks in batches])
    np.testing.assert_allclose(result["loss"], expected, rtol=1e-4)


# --- backbones and classifiers -----------------------------------------------------------------

BACKBONES = [("mobilenetv1", 0.25), ("mobilenetv3_small", 0.5), ("mobilenetv4_hybrid_medium", 0.25)]


@pytest.mark.parametrize("architecture, width", BACKBONES, ids=[name for name, _ in BACKBONES])
def test_backbone_pyramid_takes_one_size_after_another(architecture, width):
    backbone = MobileNetBackbone(architecture, width_multiplier=width)
    pyramid = keras.Model(backbone.inputs, backbone.pyramid_outputs)
    for i, size in enumerate(SIZES):
        images = images_of(size, seed=i)
        maps = pyramid.predict(images, verbose=0)
        expected = eager(pyramid, images)
        for level, stride in (("P2", 4), ("P3", 8), ("P4", 16), ("P5", 32)):
            assert maps[level].shape[1:3] == (-(-size[0] // stride), -(-size[1] // stride)), (level, size)
            assert_close(maps[level], expected[level], err_msg=f"{level} {size}")


def test_classifier_takes_one_size_after_another():
    classifier = MobileNetImageClassifier(MobileNetBackbone("mobilenetv3_small", width_multiplier=0.5), num_classes=4)
    for i, size in enumerate(SIZES):
        images = images_of(size, seed=i)
        assert_close(classifier.predict(images, verbose=0), eager(classifier, images))


# --- detectors: fixed network sizes, images of any size resized ------------------------------


def test_detectors_take_images_of_one_size_after_another():
    """A 64x128 image whose columns come in pairs resizes back to the 64x64 one: the same detections, x doubled."""
    common = dict(num_classes=3, image_size=64, load_weights=False, score_threshold=0.0)
    pyramid = heads.create_ssdlite("mobilenetv3_small_050", **common)
    paper = heads.create_ssdlite("mobilenetv3_small_050", head="ssdlite320", extra_filters=(16,) * 4, **common)
    square = images_of((64, 64), batch=1)[0]
    wide = np.repeat(square, 2, axis=1)
    odd = images_of((50, 77), batch=1, seed=1)[0]
    for detector, inputs in ((pyramid, ([square, odd], [wide, odd])), (paper, (square[None], wide[None], [odd, wide]))):
        results = [detector.predict(x, verbose=0) for x in inputs]
        first, second = results[0], results[1]
        found = int(first["num_detections"][0])
        assert found > 0
        assert int(second["num_detections"][0]) == found
        np.testing.assert_allclose(second["boxes"][0, :found], first["boxes"][0, :found] * [2, 1, 2, 1], atol=1e-2)
        np.testing.assert_array_equal(second["labels"][0, :found], first["labels"][0, :found])
    # The odd image's boxes stay inside its own 77 x 50 pixels.
    boxes = results[-1]["boxes"][0, : int(results[-1]["num_detections"][0])]
    assert boxes.size and boxes[:, [0, 2]].max() <= 77 + 1e-3 and boxes[:, [1, 3]].max() <= 50 + 1e-3


# --- batches no model takes ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_backbone():
    return MobileNetBackbone("mobilenetv3_small", width_multiplier=0.5)


@pytest.mark.parametrize(
    "images, message",
    [
        (np.zeros((0, 64, 64, 3), "float32"), r"empty batch \(shape \(0, 64, 64, 3\)\)"),
        (np.zeros((1, 0, 0, 3), "float32"), r"no pixels \(shape \(1, 0, 0, 3\)\)"),
        (np.zeros((1, 64, 0, 3), "float32"), r"no pixels \(shape \(1, 64, 0, 3\)\)"),
        (np.zeros((64, 48, 3), "float32"), r"one image of shape \(64, 48, 3\)\. Add a batch axis"),
    ],
)
def test_backbone_and_classifier_name_batches_they_cannot_take(small_backbone, images, message):
    classifier = MobileNetImageClassifier(small_backbone, num_classes=4)
    for model in (small_backbone, classifier):
        with pytest.raises(ValueError, match=type(model).__name__ + ".*" + message):
            model.predict(images, verbose=0)
    if images.ndim == 4 and images.shape[0]:
        with pytest.raises(ValueError, match=message):
            small_backbone(images)
