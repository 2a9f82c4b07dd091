"""An attached preprocessor runs the same way in `predict`, `fit` and `evaluate`, on every head.

Each task gets a keras-hub preprocessor whose converter resizes raw 96 px
images to the task's 64 px and rescales their pixels (and, for detectors,
transforms the boxes with the image). What the model receives is recorded
(the batches of the train, test and predict steps, run eagerly) and
compared with the converter's own output, and with boxes and masks worked
out by hand.
"""

import keras
import keras_hub
import numpy as np
import pytest

import heads

RAW, SIZE = 96, 64
SCALE = 64 / 96


# The preprocessor runs in keras-hub's data path, which differs per backend; the heads share it.
# On JAX and PyTorch one detector and two segmenters (LR-ASPP: any input size; DeepLabV3+:
# P2) take it: DeepLabV3 and the pyramid SSDLite, the slowest to step eagerly there (63 s and
# 29 s on JAX), run on TensorFlow.
def every_backend_or_tensorflow(names, tensorflow_only):
    skip = pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="same data path as the other heads")
    return [pytest.param(name, marks=skip) if name in tensorflow_only else name for name in sorted(names)]


def converter():
    return keras_hub.layers.ImageConverter(
        image_size=(SIZE, SIZE),
        scale=1.0 / 128.0,
        offset=-1.0,
        crop_to_aspect_ratio=False,
        interpolation="bilinear",
        bounding_box_format="xyxy",
    )


SEGMENTERS = {
    "deeplabv3": lambda: heads.create_deeplabv3(
        "mobilenetv3_small_050", num_classes=3, image_size=SIZE, load_weights=False, aspp_filters=16, high_feature="P5",
        low_feature="P3",
    ),
    "lraspp": lambda: heads.create_lraspp(
        "mobilenetv3_small_050", num_classes=3, load_weights=False, inter_filters=16, high_feature="P5",
        low_feature="P3",
    ),
    "deeplabv3plus": lambda: heads.create_deeplabv3plus(
        "mobilenetv3_small_050", num_classes=3, image_size=SIZE, load_weights=False, aspp_filters=16,
        low_level_filters=8, decoder_filters=16,
    ),
}  # fmt: skip

# Per detector: raw boxes in 96 px images, and what the model must receive at 64 px. The
# pyramid SSDLite clips targets to the image given (here the 96 px one) before the converter
# scales them; the paper's SSDLite takes boxes as torchvision does, inside the image.
DETECTORS = {
    "ssdlite": (
        lambda: heads.create_ssdlite("mobilenetv3_small_050", num_classes=3, image_size=SIZE, load_weights=False),
        [[60, 60, 90, 90], [-10, 0, 30, 120]],
        [[40, 40, 60, 60], [0, 0, 20, 64]],
    ),
    "ssdlite320": (
        lambda: heads.create_ssdlite(
            "mobilenetv3_small_050", num_classes=3, image_size=SIZE, head="ssdlite320", load_weights=False,
            extra_filters=(16, 16, 16, 16),
        ),
        [[60, 60, 90, 90], [0, 0, 30, 96]],
        [[40, 40, 60, 60], [0, 0, 20, 64]],
    ),
}  # fmt: skip


def record_model_inputs(task, monkeypatch):
    """A list that gets `(x, y)` as numpy for each batch the model trains on, evaluates or predicts.

    The step functions see the preprocessed batch; their data is the last
    argument (JAX's steps take the state first).
    """
    seen = []

    def numpy(value):
        return None if value is None else keras.tree.map_structure(keras.ops.convert_to_numpy, value)

    def spy(step):
        def recording_step(*args):
            x, y, _ = keras.utils.unpack_x_y_sample_weight(args[-1])
            seen.append((numpy(x), numpy(y)))
            return step(*args)

        return recording_step

    for name in ("train_step", "test_step", "predict_step"):
        monkeypatch.setattr(task, name, spy(getattr(task, name)))
    return seen


def raw_images():
    return np.random.default_rng(0).uniform(0, 255, (2, RAW, RAW, 3)).astype("float32")


def model_inputs_in_each_call(task, x, y, monkeypatch):
    """What the model received in `predict`, `fit` and `evaluate` of `(x, y)`: one `(x, y)` each."""
    task.compile(run_eagerly=True)
    seen = record_model_inputs(task, monkeypatch)
    task.predict(x, batch_size=len(x), verbose=0)
    task.fit(x, y, batch_size=len(x), epochs=1, shuffle=False, verbose=0)
    task.evaluate(x, y, batch_size=len(x), verbose=0)
    monkeypatch.undo()
    assert len(seen) == 3, f"expected one batch each in predict, fit and evaluate; saw {len(seen)}"
    return dict(zip(("predict", "fit", "evaluate"), seen))


@pytest.mark.parametrize("name", every_backend_or_tensorflow(SEGMENTERS, ("deeplabv3",)))
def test_segmenters_apply_their_preprocessor_in_predict_fit_and_evaluate(name, monkeypatch):
    segmenter = SEGMENTERS[name]()
    segmenter.preprocessor = keras_hub.models.ImageSegmenterPreprocessor(
        image_converter=converter(), resize_output_mask=True
    )
    images = raw_images()
    # Left half class 1, right half class 2: nearest resizing to 64 px keeps the halves.
    masks = np.ones((2, RAW, RAW, 1), "int32")
    masks[:, :, RAW // 2 :] = 2
    expected_masks = np.ones((2, SIZE, SIZE, 1), "int32")
    expected_masks[:, :, SIZE // 2 :] = 2
    expected_images = keras.ops.convert_to_numpy(converter()(images))
    assert expected_images.shape == (2, SIZE, SIZE, 3) and expected_images.max() < 1.5

    seen = model_inputs_in_each_call(segmenter, images, masks, monkeypatch)
    for call, (x, y) in seen.items():
        np.testing.assert_allclose(x, expected_images, atol=1e-4, err_msg=f"{name}.{call} images")
        if y is not None:
            np.testing.assert_array_equal(np.asarray(y).astype("int32"), expected_masks, err_msg=f"{name}.{call}")
    assert seen["fit"][1] is not None and seen["evaluate"][1] is not None
    # And predict's output is the model's on the preprocessed images.
    segmenter.compile(run_eagerly=False)
    logits = segmenter.predict(images, verbose=0)
    np.testing.assert_allclose(
        logits, keras.ops.convert_to_numpy(segmenter(expected_images, training=False)), atol=1e-4, rtol=1e-4
    )


@pytest.mark.parametrize("name", every_backend_or_tensorflow(DETECTORS, ("ssdlite",)))
def test_detectors_apply_their_preprocessor_in_predict_fit_and_evaluate(name, monkeypatch):
    build, boxes, expected_boxes = DETECTORS[name]
    detector = build()
    detector.preprocessor = keras_hub.models.ObjectDetectorPreprocessor(image_converter=converter())
    images = raw_images()
    targets = {
        "boxes": np.array([boxes, boxes], "float32"),
        "labels": np.array([[1, 2], [2, 1]], "int32"),
    }
    expected_images = keras.ops.convert_to_numpy(converter()(images))

    seen = model_inputs_in_each_call(detector, images, dict(targets), monkeypatch)
    for call, (x, y) in seen.items():
        np.testing.assert_allclose(x, expected_images, atol=1e-3, err_msg=f"{name}.{call} images")
    for call in ("fit", "evaluate"):
        y = seen[call][1]
        np.testing.assert_allclose(y["boxes"], [expected_boxes] * 2, atol=1e-3, err_msg=f"{name}.{call} boxes")
        np.testing.assert_array_equal(y["labels"], targets["labels"], err_msg=f"{name}.{call} labels")


def test_detector_without_preprocessor_still_refuses_another_size():
    """The size check is skipped only where a preprocessor runs first."""
    detector = DETECTORS["ssdlite"][0]()
    with pytest.raises(ValueError, match="built for 64x64 images; got 96x96"):
        detector.predict(raw_images(), verbose=0)


def test_ssdlite_fit_clips_boxes_to_the_images_given_before_the_converter_scales_them(monkeypatch):
    """[60, 60, 90, 90] in a 96 px image is [40, 40, 60, 60] at 64 px: clipped against 96, then scaled."""
    detector = DETECTORS["ssdlite"][0]()
    detector.preprocessor = keras_hub.models.ObjectDetectorPreprocessor(image_converter=converter())
    detector.compile(run_eagerly=True)
    seen = record_model_inputs(detector, monkeypatch)
    targets = {"boxes": np.array([[[60, 60, 90, 90]]] * 2, "float32"), "labels": np.array([[1], [2]], "int32")}
    detector.fit(raw_images(), targets, batch_size=2, epochs=1, shuffle=False, verbose=0)
    ((_, y),) = seen
    np.testing.assert_allclose(y["boxes"], [[[40, 40, 60, 60]]] * 2, atol=1e-3)
