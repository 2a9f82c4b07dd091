"""SSDLite: structure, label encoding, one training step and prediction (every backend)."""

import keras
import keras_hub
import numpy as np
import pytest

import heads
from heads.detection.anchors import ssdlite_levels
from heads.detection.matching import SSDLiteLabelEncoder
from heads.detection.targets import clean_detection_targets

IMAGE_SIZE = 64
NUM_CLASSES = 3


@pytest.fixture(scope="module")
def detector():
    keras.utils.set_random_seed(0)
    detector = heads.create_ssdlite("mobilenetv1_025", NUM_CLASSES, image_size=IMAGE_SIZE, load_weights=False)
    detector.compile()
    return detector


def padded_targets():
    # Image 0: two boxes and padding; image 1: no object at all.
    boxes = np.array([[[4, 6, 40, 44], [30, 20, 62, 60], [-1, -1, -1, -1]], [[-1, -1, -1, -1]] * 3], "float32")
    labels = np.array([[0, 2, -1], [-1, -1, -1]], "int32")
    return {"boxes": boxes, "labels": labels}


def test_levels_go_from_stride_16_down_to_one_pixel():
    assert ssdlite_levels(320) == [4, 5, 6, 7, 8, 9]  # maps 20, 10, 5, 3, 2, 1
    assert ssdlite_levels(64) == [4, 5, 6]  # maps 4, 2, 1
    assert ssdlite_levels((96, 200)) == [4, 5, 6, 7, 8]


def test_outputs_cover_every_anchor(detector):
    # 6 anchors per position (2 scales x 3 ratios) on maps 4x4, 2x2, 1x1.
    expected_anchors = 6 * (16 + 4 + 1)
    outputs = detector(np.zeros((2, IMAGE_SIZE, IMAGE_SIZE, 3), "float32"))
    assert tuple(outputs["bbox_regression"].shape) == (2, expected_anchors, 4)
    assert tuple(outputs["cls_logits"].shape) == (2, expected_anchors, NUM_CLASSES)
    anchors = detector.label_encoder.anchors(np.zeros((1, IMAGE_SIZE, IMAGE_SIZE, 3)))
    assert tuple(anchors.shape) == (expected_anchors, 4)
    # The head is depthwise-separable: no regular 3x3 convolution outside the backbone.
    head_layers = detector.extra_blocks + detector.box_predictors + detector.class_predictors
    for layer in head_layers:
        for sub in layer._flatten_layers():
            if isinstance(sub, keras.layers.Conv2D) and not isinstance(sub, keras.layers.DepthwiseConv2D):
                assert tuple(sub.kernel_size) == (1, 1), sub.name
    assert [block.filters for block in detector.extra_blocks] == [256]


def test_label_encoder_known_answer():
    anchor_generator = keras_hub_anchor_generator()
    encoder = SSDLiteLabelEncoder(anchor_generator)
    images = np.zeros((2, 32, 32, 3), "float32")
    anchors = keras.ops.convert_to_numpy(encoder.anchors(images))
    # A box equal to one anchor: that anchor is positive with zero deltas.
    target = anchors[5]
    boxes = np.array([[target, [-1] * 4], [[-1] * 4, [-1] * 4]], "float32")
    labels = np.array([[2, -1], [-1, -1]], "int32")
    deltas, classes = encoder(images, boxes, labels)
    deltas, classes = keras.ops.convert_to_numpy(deltas), keras.ops.convert_to_numpy(classes)
    assert classes[0, 5] == 2
    np.testing.assert_allclose(deltas[0, 5], 0.0, atol=1e-5)
    # Anchors not overlapping the box are background; padding never matches.
    assert set(np.unique(classes[0])) <= {2.0, -1.0, -2.0}
    assert np.all(classes[1] == -1.0), "an image without objects has only background anchors"


def keras_hub_anchor_generator():
    import keras_hub

    return keras_hub.layers.AnchorGenerator("xyxy", min_level=3, max_level=4, num_scales=1,
                                            aspect_ratios=[1.0], anchor_size=1.0)  # fmt: skip


def test_label_encoder_force_matches_a_small_box():
    encoder = SSDLiteLabelEncoder(keras_hub_anchor_generator())
    images = np.zeros((1, 32, 32, 3), "float32")
    # 3x3 box: IoU with every 8x8 or 16x16 anchor is far below 0.5.
    deltas, classes = encoder(images, np.array([[[10, 10, 13, 13]]], "float32"), np.array([[1]]))
    classes = keras.ops.convert_to_numpy(classes)
    assert np.sum(classes[0] == 1) == 1


def test_one_training_step_with_padding_and_an_empty_image(detector):
    images = np.random.default_rng(0).uniform(0, 255, (2, IMAGE_SIZE, IMAGE_SIZE, 3)).astype("float32")
    history = detector.fit(images, padded_targets(), batch_size=2, epochs=1, verbose=0)
    for name in ("loss", "bbox_regression_loss", "cls_logits_loss"):
        assert np.isfinite(history.history[name][0]), name
    assert history.history["bbox_regression_loss"][0] > 0.0


def test_only_empty_images_train_without_nan(detector):
    images = np.zeros((2, IMAGE_SIZE, IMAGE_SIZE, 3), "float32")
    targets = {"boxes": -np.ones((2, 3, 4), "float32"), "labels": -np.ones((2, 3), "int32")}
    history = detector.fit(images, targets, batch_size=2, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert history.history["bbox_regression_loss"][0] == 0.0


def test_predict_returns_detections_in_input_pixels(detector):
    images = np.random.default_rng(1).uniform(0, 255, (3, IMAGE_SIZE, IMAGE_SIZE, 3)).astype("float32")
    with detector.decoding(score_threshold=0.0):  # every box, to check their range
        detections = detector.predict(images, batch_size=2, verbose=0)
    assert set(detections) == {"boxes", "confidence", "labels", "num_detections"}
    assert detections["boxes"].shape == (3, 100, 4)
    count = int(detections["num_detections"][0])
    assert count > 0
    boxes = detections["boxes"][0, :count]
    assert boxes.min() >= 0.0 and boxes.max() <= IMAGE_SIZE
    assert np.all(boxes[:, 2] >= boxes[:, 0]) and np.all(boxes[:, 3] >= boxes[:, 1])
    labels = detections["labels"][0, :count]
    assert labels.min() >= 0 and labels.max() < NUM_CLASSES
    confidence = detections["confidence"][0, :count]
    assert np.all(np.diff(confidence) <= 1e-6), "detections come sorted by confidence"


def test_score_threshold_and_max_detections_are_set_after_construction(detector):
    images = np.random.default_rng(2).uniform(0, 255, (2, IMAGE_SIZE, IMAGE_SIZE, 3)).astype("float32")
    # Random weights score every anchor near the prior (0.01): none passes the default 0.3.
    assert detector.score_threshold == 0.3
    assert int(detector.predict(images, verbose=0)["num_detections"].max()) == 0
    detector.score_threshold, detector.max_detections = 0.0, 7
    try:
        detections = detector.predict(images, verbose=0)
        assert detections["boxes"].shape == (2, 7, 4)
        np.testing.assert_array_equal(detections["num_detections"], [7, 7])
        config = detector.get_config()
        assert config["score_threshold"] == 0.0 and config["max_detections"] == 7
        decoder = config["prediction_decoder"]["config"]
        assert decoder["confidence_threshold"] == 0.0 and decoder["max_detections"] == 7
    finally:
        detector.score_threshold, detector.max_detections = 0.3, 100
    assert int(detector.predict(images, verbose=0)["num_detections"].max()) == 0
    with detector.decoding(score_threshold=0.0, max_detections=3):
        assert detector.predict(images, verbose=0)["boxes"].shape == (2, 3, 4)
    assert (detector.score_threshold, detector.max_detections) == (0.3, 100)
    for bad in (1.0, -0.1, float("nan"), "0.5", None):
        with pytest.raises(ValueError, match=r"`score_threshold` must be a number in \[0, 1\), got"):
            detector.score_threshold = bad
    with pytest.raises(ValueError, match="`max_detections` must be a positive int, got 0"):
        detector.max_detections = 0
    assert (detector.score_threshold, detector.max_detections) == (0.3, 100)


def test_a_given_decoder_keeps_its_own_thresholds_until_they_are_set():
    decoder = keras_hub.layers.NonMaxSuppression("xyxy", from_logits=True, confidence_threshold=0.2, max_detections=9)
    backbone = heads.create_ssdlite("mobilenetv1_025", NUM_CLASSES, image_size=IMAGE_SIZE, load_weights=False).backbone
    detector = heads.SSDLiteObjectDetector(backbone, NUM_CLASSES, image_size=IMAGE_SIZE, prediction_decoder=decoder)
    assert (decoder.confidence_threshold, decoder.max_detections) == (0.2, 9)
    detector.score_threshold = 0.05
    assert (decoder.confidence_threshold, decoder.max_detections) == (0.05, 100)


def test_clean_targets_clip_drop_and_reject():
    cleaned = clean_detection_targets(
        {"boxes": [[[-5, 10, 20, 90], [30, 30, 30, 50], [70, 70, 90, 90], [1, 2, 3, 4]]],
         "labels": [[0, 1, 2, -1]]},
        NUM_CLASSES, IMAGE_SIZE,
    )  # fmt: skip
    np.testing.assert_array_equal(cleaned["boxes"][0, 0], [0, 10, 20, 64])  # clipped
    np.testing.assert_array_equal(cleaned["labels"][0], [0, -1, -1, -1])  # zero width, outside, padding
    np.testing.assert_array_equal(cleaned["boxes"][0, 1:], -1)
    with pytest.raises(ValueError, match=r"got 3 \(num_classes=3\)"):
        clean_detection_targets({"boxes": [[[0, 0, 5, 5]]], "labels": [[3]]}, NUM_CLASSES, IMAGE_SIZE)


def test_fit_rejects_a_label_beyond_num_classes(detector):
    targets = padded_targets()
    targets["labels"][0, 1] = 7
    with pytest.raises(ValueError, match="got 7"):
        detector.fit(np.zeros((2, IMAGE_SIZE, IMAGE_SIZE, 3), "float32"), targets, epochs=1, verbose=0)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="num_classes"):
        heads.create_ssdlite("mobilenetv1_025", 0, image_size=64, load_weights=False)
    with pytest.raises(ValueError, match="image_size"):
        heads.create_ssdlite("mobilenetv1_025", 2, image_size=8, load_weights=False)
    with pytest.raises(TypeError, match="FeaturePyramidBackbone"):
        heads.SSDLiteObjectDetector(keras.Sequential([keras.layers.Dense(2)]), 2)
