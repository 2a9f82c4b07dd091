"""SSDLite's parts (`heads.detection`): box coding, IoU and NMS, matching, layers, injected parts, names."""

import importlib
import json
import warnings

import keras
import keras_hub
import numpy as np
import pytest
from keras import ops

import heads
from heads.detection import postprocess
from heads.detection.anchors import anchor_boxes, ssdlite_anchor_generator
from heads.detection.box_coding import SSD_BOX_VARIANCE, decode_boxes, encode_boxes
from heads.detection.layers import (
    TORCHVISION_INITIALIZER,
    SSDLiteExtraBlock,
    SSDLitePaperExtraBlock,
    SSDLitePaperPredictor,
    SSDLitePredictor,
)
from heads.detection.matching import SSDLiteLabelEncoder, claim_best_anchors, match_anchors
from heads.detection.ssdlite import HEADS, ssdlite_class
from heads.preprocessing import pixel_normalizer
from heads.pyramid import split_task_kwargs
from mnet_backbones.constants import IMAGENET_PIXEL_MEAN

IMAGE_SIZE = 64


@pytest.fixture(scope="module")
def backbone():
    return keras_hub.models.Backbone.from_preset("mobilenetv1_025", load_weights=False)


def test_decode_inverts_encode_and_clips_to_the_image():
    anchors = np.array([[0, 0, 32, 32], [16, 8, 48, 24], [40, 40, 72, 72]], "float32")
    boxes = np.array([[[4, 2, 30, 40], [20, 10, 44, 30], [50, 45, 60, 62]]], "float32")
    deltas = encode_boxes(anchors, boxes)
    np.testing.assert_allclose(
        ops.convert_to_numpy(decode_boxes(anchors, deltas, SSD_BOX_VARIANCE, 64)), boxes, atol=1e-4
    )
    # Unbatched numpy in, the anchor itself out for zero deltas, clipped at the image's edge.
    decoded = ops.convert_to_numpy(decode_boxes(anchors, np.zeros((3, 4)), SSD_BOX_VARIANCE, (64, 60)))
    np.testing.assert_allclose(decoded, [[0, 0, 32, 32], [16, 8, 48, 24], [40, 40, 60, 64]])


def test_the_detector_decodes_with_decode_boxes(backbone):
    detector = heads.create_ssdlite(backbone, 3, image_size=IMAGE_SIZE)
    anchors = detector.anchors()
    deltas = np.random.default_rng(0).normal(0, 1, (2, anchors.shape[0], 4)).astype("float32")
    boxes, _ = detector.decode_raw_outputs(deltas, None)
    expected = decode_boxes(ops.convert_to_numpy(anchors), deltas, SSD_BOX_VARIANCE, IMAGE_SIZE)
    np.testing.assert_array_equal(ops.convert_to_numpy(boxes), ops.convert_to_numpy(expected))
    # The default anchors are the label encoder's.
    images = np.zeros((1, IMAGE_SIZE, IMAGE_SIZE, 3), "float32")
    np.testing.assert_array_equal(ops.convert_to_numpy(detector.label_encoder.anchors(images)), anchors)
    generator = ssdlite_anchor_generator(IMAGE_SIZE)
    np.testing.assert_array_equal(ops.convert_to_numpy(anchor_boxes(generator, images)), anchors)


@keras.saving.register_keras_serializable(package="test_heads_ssdlite_parts")
class TopKDecoder(keras.layers.Layer):
    """The `k` best-scoring anchors, no NMS: a stand-in prediction decoder."""

    def __init__(self, k, **kwargs):
        super().__init__(**kwargs)
        self.k = k

    def call(self, boxes, logits):
        confidence, index = ops.top_k(ops.max(ops.sigmoid(logits), axis=-1), self.k)
        return {
            "boxes": ops.take_along_axis(boxes, index[..., None], axis=1),
            "confidence": confidence,
            "labels": ops.take_along_axis(ops.argmax(logits, axis=-1), index, axis=1),
            "num_detections": ops.full((ops.shape(boxes)[0],), self.k, "int32"),
        }

    def get_config(self):
        return {**super().get_config(), "k": self.k}


def test_injected_parts_are_used_and_survive_saving(backbone, tmp_path):
    keras.utils.set_random_seed(0)
    # One anchor per position on the 4x4, 2x2 and 1x1 maps of a 64-pixel input.
    generator = keras_hub.layers.AnchorGenerator(
        "xyxy", min_level=4, max_level=6, num_scales=1, aspect_ratios=[1.0], anchor_size=4.0, name="anchor_generator"
    )
    encoder = SSDLiteLabelEncoder(generator, positive_threshold=0.6, negative_threshold=0.3, name="label_encoder")
    decoder = TopKDecoder(5, name="prediction_decoder")
    detector = heads.create_ssdlite(
        backbone,
        3,
        image_size=IMAGE_SIZE,
        anchor_generator=generator,
        label_encoder=encoder,
        prediction_decoder=decoder,
    )
    assert detector.anchor_generator is generator
    assert detector.label_encoder is encoder
    assert detector.prediction_decoder is decoder
    assert detector.output["bbox_regression"].shape[1] == 16 + 4 + 1
    detector.compile()
    images = np.random.default_rng(0).uniform(0, 255, (2, IMAGE_SIZE, IMAGE_SIZE, 3)).astype("float32")
    targets = {"boxes": np.array([[[4, 6, 40, 44]], [[-1] * 4]], "float32"), "labels": np.array([[1], [-1]])}
    history = detector.fit(images, targets, batch_size=2, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    detections = detector.predict(images, verbose=0)
    assert detections["boxes"].shape == (2, 5, 4)
    np.testing.assert_array_equal(detections["num_detections"], 5)

    path = str(tmp_path / "detector.keras")
    detector.save(path)
    restored = keras.models.load_model(path)
    assert isinstance(restored.prediction_decoder, TopKDecoder) and restored.prediction_decoder.k == 5
    assert isinstance(restored.label_encoder, SSDLiteLabelEncoder)
    assert restored.label_encoder.positive_threshold == 0.6
    assert restored.anchor_generator.num_base_anchors == 1
    # Compared as saved (JSON): a called layer's build_config holds its input shape as a tuple, a loaded one a list.
    assert json.loads(json.dumps(restored.get_config())) == json.loads(json.dumps(detector.get_config()))
    for key, value in restored.predict(images, verbose=0).items():
        np.testing.assert_allclose(value, detections[key], rtol=1e-5, atol=1e-4)


def test_an_anchor_generator_off_the_detector_levels_is_refused(backbone):
    generator = keras_hub.layers.AnchorGenerator(
        "xyxy", min_level=3, max_level=6, num_scales=1, aspect_ratios=[1.0], anchor_size=4.0
    )
    with pytest.raises(ValueError, match="must span exactly those levels"):
        heads.create_ssdlite(backbone, 3, image_size=IMAGE_SIZE, anchor_generator=generator)


def test_create_functions_pass_only_constructor_arguments_to_the_head(backbone):
    # `inputs`, `levels`, `outputs` are local variables of the constructors, not arguments:
    # with a backbone instance they are stray preset arguments, named in a TypeError.
    with pytest.raises(TypeError, match=r"Unexpected arguments \['inputs'\]: preset arguments"):
        heads.create_ssdlite(backbone, 3, image_size=IMAGE_SIZE, inputs=None)
    with pytest.raises(TypeError, match=r"Unexpected arguments \['outputs'\]: preset arguments"):
        heads.create_deeplabv3plus(backbone, 3, image_size=IMAGE_SIZE, outputs=None)
    head, rest = split_task_kwargs(
        heads.SSDLiteObjectDetector, {"levels": [4], "score_threshold": 0.2, "name": "d", "load_weights": False}
    )
    assert head == {"score_threshold": 0.2, "name": "d"}
    assert rest == {"levels": [4], "load_weights": False}


def test_pixel_normalizer_centres_imagenet_statistics():
    mean_image = np.broadcast_to(np.array(IMAGENET_PIXEL_MEAN, "float32"), (1, 2, 2, 3))
    np.testing.assert_allclose(ops.convert_to_numpy(pixel_normalizer()(mean_image)), 0.0, atol=1e-5)


# --- IoU and NMS: one of each, for both heads and the LiteRT export -------------
def random_boxes(count, seed, size=64.0):
    rng = np.random.default_rng(seed)
    corner = rng.uniform(0, size, (count, 2))
    boxes = np.concatenate([corner, corner + rng.uniform(0, size / 2, (count, 2))], axis=-1).astype("float32")
    boxes[::7, 2] = boxes[::7, 0]  # some boxes without area
    return boxes


def test_box_iou_is_the_same_in_numpy_and_keras_ops():
    boxes, others = random_boxes(9, 0), random_boxes(11, 1)
    by_numpy = postprocess.box_iou(boxes, others)
    by_ops = ops.convert_to_numpy(postprocess.box_iou(ops.convert_to_tensor(boxes), others, ops_module=ops))
    assert by_numpy.shape == by_ops.shape == (9, 11)

    # Equal but where two boxes without area meet: 0 / 0 stays NaN in numpy (as torchvision's box_iou), 0 in a model.
    def no_area(b):
        return (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]) == 0

    both_empty = no_area(boxes)[:, None] & no_area(others)[None, :]
    assert both_empty.any() and np.array_equal(np.isnan(by_numpy), both_empty)
    np.testing.assert_allclose(by_ops, np.nan_to_num(by_numpy, nan=0.0), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(postprocess.box_iou(boxes[1:2], boxes[1:2]), [[1.0]])
    empty = np.array([[5, 5, 5, 9]], "float32")
    assert np.isnan(postprocess.box_iou(empty, empty)[0, 0])
    assert float(ops.convert_to_numpy(postprocess.box_iou(ops.convert_to_tensor(empty), empty, ops))[0, 0]) == 0.0
    # Batched boxes against unbatched anchors, as the paper head's matching asks.
    batched = postprocess.box_iou(np.stack([boxes, boxes[::-1]]), others)
    np.testing.assert_array_equal(batched[1], by_numpy[::-1])


def test_greedy_nms_keeps_the_best_of_each_overlapping_group():
    boxes = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [20, 20, 30, 30], [21, 21, 30, 30], [0, 0, 10, 10]], "float32")
    np.testing.assert_array_equal(postprocess.greedy_nms(boxes, 0.5), [0, 2])
    np.testing.assert_array_equal(postprocess.greedy_nms(boxes, 0.95), [0, 1, 2, 3])
    np.testing.assert_array_equal(postprocess.greedy_nms(boxes, 0.5, max_kept=1), [0])
    assert postprocess.greedy_nms(np.zeros((0, 4), "float32"), 0.5).shape == (0,)
    # Boxes without area (NaN IoU with each other) suppress nothing.
    np.testing.assert_array_equal(postprocess.greedy_nms(np.array([[3, 3, 3, 8]] * 3, "float32"), 0.5), [0, 1, 2])


def test_greedy_nms_is_the_suppression_of_the_whole_iou_matrix():
    """One box at a time, as torchvision's NMS: the kept set of suppressing with the full IoU matrix."""
    boxes = random_boxes(60, 2)
    iou = postprocess.box_iou(boxes, boxes)
    suppressed, expected = np.zeros(len(boxes), bool), []
    for i in range(len(boxes)):
        if not suppressed[i]:
            expected.append(i)
            suppressed |= iou[i] > 0.3
    np.testing.assert_array_equal(postprocess.greedy_nms(boxes, 0.3), expected)


def test_both_postprocessings_pad_and_sort():
    anchors = np.array([[0, 0, 32, 32], [1, 0, 33, 32], [32, 32, 64, 64]], "float32")
    deltas = np.zeros((1, 3, 4), "float32")
    logits = np.array([[[3.0, -9.0], [2.0, -9.0], [-9.0, 1.0]]], "float32")
    sigmoid = postprocess.postprocess_sigmoid_detections(deltas, logits, anchors, SSD_BOX_VARIANCE, 64,
                                                         score_threshold=0.5, max_detections=4)  # fmt: skip
    assert int(sigmoid["num_detections"][0]) == 2  # anchor 1 is suppressed by anchor 0
    np.testing.assert_array_equal(sigmoid["labels"][0], [0, 1, -1, -1])
    np.testing.assert_allclose(sigmoid["boxes"][0, :2], anchors[[0, 2]])
    np.testing.assert_array_equal(sigmoid["boxes"][0, 2:], -1.0)
    softmax = postprocess.postprocess_detections(deltas, logits, anchors, 64, [(128, 64)], max_detections=4)
    assert int(softmax["num_detections"][0]) >= 1 and 0 not in softmax["labels"][0]  # never the background
    np.testing.assert_allclose(softmax["boxes"][0, 0], [32, 64, 64, 128])  # back in the image's own pixels


# --- matching: "each box claims its best anchor", once ------------------------
def test_claim_best_anchors_is_keras_hubs_force_match_when_the_first_box_wins():
    """The label encoder's targets are what keras-hub's force-match gave it: claims over its padded columns."""
    rng = np.random.default_rng(3)
    iou = rng.uniform(0, 1, (3, 40, 6)).astype("float32")  # (B, anchors, boxes)
    iou[:, :, 4:] = -1.0  # padded boxes
    iou[0, :, 1] = -1.0  # a padded box before a real one
    iou[1, 7, :4] = 2.0  # four boxes whose best anchor is the same
    forced = keras_hub.layers.BoxMatcher([0.4, 0.5], [-1, -2, 1], force_match_for_each_col=True)(iou)
    index, value = keras_hub.layers.BoxMatcher([0.4, 0.5], [-1, -2, 1], force_match_for_each_col=False)(iou)
    columns = np.concatenate([iou, -np.ones((3, 40, 1), "float32")], axis=-1)  # BoxMatcher's own extra column
    claimed = ops.convert_to_numpy(claim_best_anchors(np.transpose(columns, (0, 2, 1)), last_wins=False))
    np.testing.assert_array_equal(np.where(claimed >= 0, claimed, ops.convert_to_numpy(index)), forced[0])
    np.testing.assert_array_equal(np.where(claimed >= 0, 1, ops.convert_to_numpy(value)), forced[1])
    assert claimed[1, 7] == 0, "the first of the boxes sharing a best anchor takes it"


def test_match_anchors_gives_a_shared_best_anchor_to_the_last_box():
    anchors = np.array([[0, 0, 10, 10], [40, 40, 50, 50]], "float32")
    boxes = np.array([[[0, 0, 9, 9], [1, 1, 10, 10], [-1, -1, -1, -1]]], "float32")
    matched = ops.convert_to_numpy(match_anchors(boxes, np.array([[True, True, False]]), anchors))
    np.testing.assert_array_equal(matched, [[1, -1]])  # torchvision's SSDMatcher: the later box wins
    claimed = claim_best_anchors(np.array([[[0.9, 0.1], [0.8, 0.0]]], "float32"), np.array([[True, False]]))
    np.testing.assert_array_equal(ops.convert_to_numpy(claimed), [[0, -1]])  # an invalid box claims nothing


def test_label_encoder_lets_no_padded_box_take_an_anchor():
    generator = keras_hub.layers.AnchorGenerator("xyxy", 3, 4, 1, [1.0], 1.0)
    encoder = SSDLiteLabelEncoder(generator)
    images = np.zeros((1, 32, 32, 3), "float32")
    # Padding listed first: every padded box claims anchor 0, the real 3x3 box its own best anchor.
    boxes = np.array([[[-1, -1, -1, -1], [10, 10, 13, 13], [-1, -1, -1, -1]]], "float32")
    deltas, classes = encoder(images, boxes, np.array([[-1, 2, -1]]))
    classes = ops.convert_to_numpy(classes)
    assert np.sum(classes[0] == 2) == 1 and classes[0, 0] == -1.0
    assert set(np.unique(classes[0])) <= {2.0, -1.0, -2.0}


# --- the layer set: one extra block and one predictor, two conventions ------------
@pytest.mark.parametrize(
    "paper_cls, shared_cls, args",
    [(SSDLitePaperExtraBlock, SSDLiteExtraBlock, (24,)), (SSDLitePaperPredictor, SSDLitePredictor, (6, 5))],
)
def test_paper_layers_are_the_shared_layers_with_torchvisions_conventions(paper_cls, shared_cls, args):
    keras.utils.set_random_seed(0)
    paper = paper_cls(*args, name="layer")
    shared = shared_cls(*args, bn_momentum=0.97, kernel_initializer=TORCHVISION_INITIALIZER, padding="symmetric",
                        name="layer")  # fmt: skip
    assert paper.get_config() == shared.get_config()
    assert keras.saving.get_registered_name(paper_cls) == f"heads>{paper_cls.__name__}"
    inputs = np.random.default_rng(0).normal(size=(1, 8, 8, 16)).astype("float32")
    paper(inputs), shared(inputs)
    shared.set_weights(paper.get_weights())
    np.testing.assert_allclose(ops.convert_to_numpy(shared(inputs)), ops.convert_to_numpy(paper(inputs)), atol=1e-6)
    # A config saved before the options existed (no padding, no initializer) keeps its class's conventions.
    old = {key: value for key, value in paper.get_config().items() if key not in ("padding", "kernel_initializer")}
    assert paper_cls.from_config(old).get_config() == paper.get_config()
    assert shared_cls.from_config(shared_cls(*args).get_config()).padding == "same"


def test_the_padding_option_is_torchs_or_tensorflows():
    inputs = np.random.default_rng(1).normal(size=(1, 8, 8, 16)).astype("float32")
    torch_like, tf_like = SSDLiteExtraBlock(16, padding="symmetric"), SSDLiteExtraBlock(16)
    torch_like(inputs), tf_like(inputs)
    tf_like.set_weights(torch_like.get_weights())
    assert torch_like(inputs).shape == tf_like(inputs).shape == (1, 4, 4, 16)
    assert not np.allclose(ops.convert_to_numpy(torch_like(inputs)), ops.convert_to_numpy(tf_like(inputs)))
    predictor = SSDLitePredictor(2, 3, bias_value=-4.0)
    predictor(inputs)
    np.testing.assert_array_equal(ops.convert_to_numpy(predictor.pointwise.bias), -4.0)


# --- one vocabulary: the heads' names, and what the tools read -----------------
def test_the_heads_are_named_as_in_the_cli_and_the_old_names_warn(backbone):
    assert HEADS == ("ssdlite", "ssdlite320")
    assert ssdlite_class("ssdlite") is heads.SSDLiteObjectDetector
    assert ssdlite_class("ssdlite320") is heads.SSDLite320ObjectDetector
    for old, new in (("pyramid", "ssdlite"), ("paper", "ssdlite320")):
        with pytest.warns(DeprecationWarning, match=rf"head='{old}' is deprecated: use head='{new}'"):
            assert ssdlite_class(old) is ssdlite_class(new)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        detector = heads.create_ssdlite(backbone, 3, image_size=IMAGE_SIZE, head="pyramid")
    assert isinstance(detector, heads.SSDLiteObjectDetector)
    [warning] = [w for w in caught if issubclass(w.category, DeprecationWarning)]
    assert "use head='ssdlite'" in str(warning.message) and warning.filename == __file__  # points at the caller
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        heads.create_ssdlite(backbone, 3, image_size=IMAGE_SIZE, head="ssdlite")
    with pytest.raises(ValueError, match="Unknown SSDLite head 'ssd'"):
        heads.create_ssdlite(backbone, 3, head="ssd")


def test_what_the_tools_read_of_a_detector():
    assert heads.SSDLiteObjectDetector.label_offset == 0
    assert heads.SSDLite320ObjectDetector.label_offset == 1  # class 0 is the background
    assert heads.SSDLiteObjectDetector.postprocessing == postprocess.SIGMOID_CLASS_AGNOSTIC_NMS
    assert heads.SSDLite320ObjectDetector.postprocessing == postprocess.SOFTMAX_PER_CLASS_NMS


# The flat modules of before: the module each names, and names it re-exports (with their new module).
OLD_PATHS = {
    "heads.ssdlite": ("ssdlite", {"SSDLiteObjectDetector": "ssdlite", "create_ssdlite": "ssdlite", "HEADS": "ssdlite"}),
    "heads.ssdlite_paper": (
        "ssdlite320",
        {
            "SSDLite320ObjectDetector": "ssdlite320",
            "PAPER_EXTRA_FILTERS": "ssdlite320",
            "resize_images": "resizing",
            "SSDLitePaperExtraBlock": "layers",
            "default_feature_taps": "layers",
            "match_anchors": "matching",
            "postprocess_detections": "postprocess",
            "decode_paper_boxes": "postprocess",
        },
    ),  # fmt: skip
    "heads.ssdlite_layers": ("layers", {"SSDLiteExtraBlock": "layers", "SSDLitePredictor": "layers"}),
    "heads.anchors": ("anchors", {"ssdlite_levels": "anchors", "anchor_boxes": "anchors"}),
    "heads.default_boxes": ("anchors", {"default_boxes": "anchors", "default_box_scales": "anchors"}),
    "heads.box_coding": ("box_coding", {"SSD_BOX_VARIANCE": "box_coding", "decode_boxes": "box_coding"}),
    "heads.label_encoder": ("matching", {"SSDLiteLabelEncoder": "matching"}),
    "heads.targets": ("targets", {"clean_detection_targets": "targets", "BoxFormatWarning": "targets"}),
    "heads.torchvision_ssdlite": ("torchvision", {"BUILTIN_SSDLITE": "torchvision", "load_ssdlite": "torchvision"}),
    "heads.coco_eval": ("coco_eval", {"evaluate_coco": "coco_eval", "coco_metrics": "coco_eval"}),
}


@pytest.mark.parametrize("old_path", sorted(OLD_PATHS))
def test_an_old_path_names_its_new_module_and_re_exports_its_objects(old_path):
    new_module, names = OLD_PATHS[old_path]
    old = importlib.import_module(old_path)
    assert old.__doc__.startswith(f"Moved to `heads.detection.{new_module}`")
    for name, module in names.items():
        assert getattr(old, name) is getattr(importlib.import_module(f"heads.detection.{module}"), name), name
