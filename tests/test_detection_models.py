"""SSDLite learns, saves, loads and exports; our backbones plug into keras-hub's RetinaNet.

TensorFlow only: the training here is the costly part of the detection tests,
and LiteRT export goes through TensorFlow.
"""

import keras
import numpy as np
import pytest

import heads
from mnet_tools import detection_export

pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow",
    reason="costlier detection checks run on the TensorFlow backend; one training step "
    "runs on every backend in test_ssdlite.py",
)

IMAGE_SIZE = 64
BOXES = np.array(
    [[[6, 8, 38, 40], [40, 30, 62, 60]], [[20, 4, 60, 36], [-1, -1, -1, -1]]], "float32"
)  # fmt: skip
LABELS = np.array([[0, 1], [2, -1]], "int32")


def toy_images():
    """Flat grey images with the boxes painted in a colour per class."""
    rng = np.random.default_rng(0)
    images = np.full((2, IMAGE_SIZE, IMAGE_SIZE, 3), 120.0, "float32") + rng.normal(
        0, 5, (2, IMAGE_SIZE, IMAGE_SIZE, 3)
    )
    colours = {0: (250, 30, 30), 1: (30, 250, 30), 2: (30, 30, 250)}
    for i in range(2):
        for box, label in zip(BOXES[i], LABELS[i]):
            if label >= 0:
                x0, y0, x1, y1 = box.astype(int)
                images[i, y0:y1, x0:x1] = colours[label]
    return images.astype("float32")


def iou(a, b):
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


@pytest.fixture(scope="module")
def trained():
    """A tiny detector trained to memorise three boxes in two images."""
    keras.utils.set_random_seed(1)
    detector = heads.create_ssdlite("mobilenetv1_025", 3, image_size=IMAGE_SIZE, load_weights=False,
                                    extra_filters=64, anchor_size=2.0, score_threshold=0.2)  # fmt: skip
    detector.compile(optimizer=keras.optimizers.AdamW(5e-3, weight_decay=1e-4))
    images = np.tile(toy_images(), (8, 1, 1, 1))
    targets = {"boxes": np.tile(BOXES, (8, 1, 1)), "labels": np.tile(LABELS, (8, 1))}
    history = detector.fit(images, targets, batch_size=4, epochs=40, shuffle=True, verbose=0)
    return detector, history


def test_a_tiny_detector_finds_the_boxes_it_was_trained_on(trained):
    detector, history = trained
    assert history.history["loss"][-1] < 0.5 * history.history["loss"][0]
    detections = detector.predict(toy_images(), verbose=0)
    for i in range(2):
        count = int(detections["num_detections"][i])
        found = [(detections["boxes"][i, j], int(detections["labels"][i, j])) for j in range(count)]
        for box, label in zip(BOXES[i], LABELS[i]):
            if label < 0:
                continue
            best = max((iou(box, pred) for pred, pred_label in found if pred_label == label), default=0.0)
            assert best > 0.5, f"image {i}: box {box} of class {label} not found in {found}"


def assert_same_outputs(a, b, images):
    out_a, out_b = a(images), b(images)
    for key in ("bbox_regression", "cls_logits"):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(out_a[key]), keras.ops.convert_to_numpy(out_b[key]),
                                   atol=1e-5)  # fmt: skip


def test_keras_file_and_preset_round_trips(trained, tmp_path):
    detector, _ = trained
    images = toy_images()
    path = tmp_path / "ssdlite.keras"
    detector.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, heads.SSDLiteObjectDetector)
    assert loaded.get_config()["anchor_size"] == 2.0 and loaded.image_size == (IMAGE_SIZE, IMAGE_SIZE)
    assert_same_outputs(detector, loaded, images)
    assert isinstance(loaded.optimizer, keras.optimizers.AdamW), "the compile is restored"
    np.testing.assert_allclose(float(loaded.optimizer.iterations), float(detector.optimizer.iterations))

    detector.save_to_preset(str(tmp_path / "preset"))
    restored = heads.SSDLiteObjectDetector.from_preset(str(tmp_path / "preset"))
    assert_same_outputs(detector, restored, images)
    expected = detector.predict(images, verbose=0)
    actual = restored.predict(images, verbose=0)
    np.testing.assert_array_equal(actual["num_detections"], expected["num_detections"])
    np.testing.assert_allclose(actual["boxes"], expected["boxes"], atol=1e-3)


def test_predictions_follow_the_box_format(trained):
    detector, _ = trained
    config = detector.get_config()
    config["bounding_box_format"] = "yxyx"
    yxyx = heads.SSDLiteObjectDetector.from_config(config)
    yxyx.set_weights(detector.get_weights())
    images = toy_images()
    xyxy_boxes = detector.predict(images, verbose=0)["boxes"]
    yxyx_boxes = yxyx.predict(images, verbose=0)["boxes"]
    np.testing.assert_allclose(yxyx_boxes, xyxy_boxes[..., [1, 0, 3, 2]], atol=1e-4)


def test_litert_export_detects_what_keras_detects(trained, tmp_path):
    pytest.importorskip("ai_edge_litert.interpreter")
    detector, _ = trained
    tflite, settings = detection_export.export_litert(detector, str(tmp_path / "ssdlite.tflite"))
    images = toy_images()
    expected = detector.predict(images, verbose=0)
    actual = detection_export.run_litert(tflite, images)
    np.testing.assert_array_equal(actual["num_detections"], expected["num_detections"])
    assert int(expected["num_detections"].sum()) >= 3
    for i in range(2):
        count = int(expected["num_detections"][i])
        np.testing.assert_allclose(actual["boxes"][i, :count], expected["boxes"][i, :count], atol=1e-2)
        np.testing.assert_allclose(actual["confidence"][i, :count], expected["confidence"][i, :count], atol=1e-4)
        np.testing.assert_array_equal(actual["labels"][i, :count], expected["labels"][i, :count])


def test_our_backbone_serves_keras_hub_retinanet():
    import keras_hub

    import mnet_backbones  # noqa: F401

    keras.utils.set_random_seed(0)
    encoder = keras_hub.models.Backbone.from_preset("mobilenetv1_025", load_weights=False)
    retinanet_backbone = keras_hub.models.RetinaNetBackbone(
        image_encoder=encoder, min_level=3, max_level=5, use_p5=False, image_shape=(64, 64, 3)
    )
    detector = keras_hub.models.RetinaNetObjectDetector(
        backbone=retinanet_backbone, num_classes=3, bounding_box_format="xyxy", pre_logits_num_conv_layers=1
    )
    detector.compile(optimizer=keras.optimizers.Adam(1e-3))
    images = toy_images()
    history = detector.fit(images, {"boxes": BOXES, "labels": LABELS}, batch_size=2, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    detections = detector.predict(images, verbose=0)
    assert set(detections) >= {"boxes", "confidence", "labels", "num_detections"}
    assert detections["boxes"].shape[0] == 2


def test_litert_postprocessing_decodes_what_the_keras_detector_decodes():
    """The same raw outputs through the detector's decoder and through the numpy post-processing."""
    keras.utils.set_random_seed(2)
    # Random weights: scores sit near the classification prior (0.01), so a
    # threshold below it keeps detections for NMS to sort out.
    detector = heads.create_ssdlite("mobilenetv4_conv_small", 3, image_size=IMAGE_SIZE, load_weights=False,
                                    score_threshold=0.005, max_detections=20)  # fmt: skip
    raw = detector(toy_images(), training=False)
    expected = {key: keras.ops.convert_to_numpy(value) for key, value in detector.decode_predictions(raw).items()}
    actual = detection_export.postprocess(
        keras.ops.convert_to_numpy(raw["bbox_regression"]),
        keras.ops.convert_to_numpy(raw["cls_logits"]),
        **detection_export.postprocess_settings(detector),
    )
    assert int(expected["num_detections"].min()) >= 5
    np.testing.assert_array_equal(actual["num_detections"], expected["num_detections"])
    np.testing.assert_allclose(actual["boxes"], expected["boxes"], atol=1e-3)
    np.testing.assert_allclose(actual["confidence"], expected["confidence"], atol=1e-5)
    np.testing.assert_array_equal(actual["labels"], expected["labels"])
