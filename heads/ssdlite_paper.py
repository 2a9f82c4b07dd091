"""SSDLite exactly as the MobileNetV3 paper and torchvision's `ssdlite320_mobilenet_v3_large` define it.

The MobileNetV3 paper (Howard et al., 2019, section 6.3) attaches SSDLite's
first map to the expansion layer of the first stride-32 block (672 channels
on V3-Large, 20x20 at 320 px), the second to the backbone's last 1x1 conv,
and adds four depthwise-separable extra blocks (512, 256, 256, 128
channels). torchvision builds it so and publishes COCO weights; this module
computes the same numbers from the same weights (`heads.torchvision_ssdlite`
loads them):

- input: any image, resized to 320x320 (bilinear, half-pixel centres, no
  antialiasing) and normalised to [-1, 1] (`x / 127.5 - 1`);
- SSD default boxes (`heads.default_boxes`): scales 0.2..0.95 and 1,
  aspect ratios 2 and 3, sizes clipped; 3234 boxes at 320 px;
- per map a depthwise 3x3 + BatchNorm + ReLU6 and a 1x1 conv for 6 x
  `num_classes` logits and 6 x 4 box deltas, in torchvision's order
  (map, row, column, box);
- class 0 is the background: softmax over all classes, box deltas coded
  with weights (10, 10, 5, 5) (`heads.box_coding.SSD_BOX_VARIANCE`);
- training: an anchor is positive at IoU >= 0.5 with a box, and each box
  claims its best anchor; softmax cross-entropy with 3:1 hard-negative
  mining, smooth-L1 on the positives' deltas, both over the positive count;
- post-processing (`postprocess_detections`, numpy): score > 0.001, the top
  300 per class, boxes clipped to the input, per-class NMS at IoU 0.55, the
  best 300 kept, boxes scaled back to each image's own size.

`SSDLiteObjectDetector` (`heads.ssdlite`) is the project's other SSDLite: the
stride-16 and stride-32 pyramid levels, sigmoid classes, focal loss.
"""

import math
import re

import keras
import numpy as np
from keras import ops

# Registers the MobileNet backbones, so that saved detectors on them load.
import mnet_backbones  # noqa: F401
from heads import torchvision_ssdlite
from heads.box_coding import SSD_BOX_VARIANCE, decode_boxes, encode_boxes
from heads.default_boxes import boxes_per_position, default_boxes
from heads.losses import sum_over_replicas
from heads.preprocessing import pixel_normalizer
from heads.tasks import PyramidObjectDetector
from mnet_backbones.keras_hub_internals import load_task_preset
from mnet_backbones.layers import ConvBNAct, map_size
from mnet_backbones.validation import check_image_size, check_positive_int

bounding_boxes = keras.utils.bounding_boxes

PAPER_EXTRA_FILTERS = (512, 256, 256, 128)
PAPER_ASPECT_RATIOS = ((2.0, 3.0),) * 6
# torchvision's BoxCoder clamps the decoded log-size deltas (after the weights) at log(1000 / 16),
# so that a wild prediction cannot overflow exp().
MAX_LOG_SIZE_DELTA = math.log(1000.0 / 16)
# (x / 255 - 0.5) / 0.5 on 0..255 pixels.
PAPER_PIXEL_MEAN = (127.5, 127.5, 127.5)
PAPER_PIXEL_VARIANCE = (127.5**2,) * 3
# torchvision initialises every SSDLite convolution so (`_normal_init`).
_HEAD_INITIALIZER = {"class_name": "RandomNormal", "config": {"mean": 0.0, "stddev": 0.03}}


def _conv_bn_relu6(filters, kernel_size, strides=1, depthwise=False, bn_momentum=0.97, bn_epsilon=1e-3, name=None,
                   dtype=None):  # fmt: skip
    return ConvBNAct(
        filters,
        kernel_size,
        strides=strides,
        depthwise=depthwise,
        activation="relu6",
        kernel_initializer=keras.initializers.get(_HEAD_INITIALIZER),
        padding="symmetric",  # torch pads 1 on every side of the stride-2 depthwise
        bn_epsilon=bn_epsilon,
        bn_momentum=bn_momentum,
        dtype=dtype,
        name=name,
    )


@keras.saving.register_keras_serializable(package="heads")
class SSDLitePaperExtraBlock(keras.layers.Layer):
    """One of the paper's extra blocks: 1x1 conv to `filters // 2`, depthwise 3x3 stride 2, 1x1 conv to `filters`.

    Each convolution is followed by BatchNorm and ReLU6; the stride-2
    depthwise pads one pixel on every side, as torchvision's does.

    Example:
    ```python
    block = SSDLitePaperExtraBlock(512)
    block(keras.ops.ones((1, 10, 10, 480))).shape  # (1, 5, 5, 512)
    ```
    """

    def __init__(self, filters, bn_momentum=0.97, bn_epsilon=1e-3, **kwargs):
        super().__init__(**kwargs)
        self.filters = check_positive_int("filters", filters)
        self.bn_momentum = float(bn_momentum)
        self.bn_epsilon = float(bn_epsilon)
        reduced = max(self.filters // 2, 1)
        common = dict(bn_momentum=self.bn_momentum, bn_epsilon=self.bn_epsilon, dtype=self.dtype_policy)
        self.reduce = _conv_bn_relu6(reduced, 1, name="reduce", **common)
        self.depthwise = _conv_bn_relu6(reduced, 3, strides=2, depthwise=True, name="depthwise", **common)
        self.project = _conv_bn_relu6(self.filters, 1, name="project", **common)

    def build(self, input_shape):
        shape = tuple(input_shape)
        for layer in (self.reduce, self.depthwise, self.project):
            layer.build(shape)
            shape = layer.compute_output_shape(shape)

    def call(self, inputs, training=None):
        x = self.reduce(inputs, training=training)
        x = self.depthwise(x, training=training)
        return self.project(x, training=training)

    def compute_output_shape(self, input_shape):
        shape = self.depthwise.compute_output_shape(tuple(input_shape))
        return shape[:-1] + (self.filters,)

    def get_config(self):
        config = super().get_config()
        config.update(filters=self.filters, bn_momentum=self.bn_momentum, bn_epsilon=self.bn_epsilon)
        return config


@keras.saving.register_keras_serializable(package="heads")
class SSDLitePaperPredictor(keras.layers.Layer):
    """A predictor of the paper's head: depthwise 3x3 + BatchNorm + ReLU6, then a 1x1 conv with bias.

    Outputs `(batch, height * width * num_anchors, values_per_anchor)`, in
    torchvision's order: row, column, then anchor.

    Example:
    ```python
    predictor = SSDLitePaperPredictor(num_anchors=6, values_per_anchor=91)
    predictor(keras.ops.ones((1, 20, 20, 672))).shape  # (1, 2400, 91)
    ```
    """

    def __init__(self, num_anchors, values_per_anchor, bn_momentum=0.97, bn_epsilon=1e-3, **kwargs):
        super().__init__(**kwargs)
        self.num_anchors = check_positive_int("num_anchors", num_anchors)
        self.values_per_anchor = check_positive_int("values_per_anchor", values_per_anchor)
        self.bn_momentum = float(bn_momentum)
        self.bn_epsilon = float(bn_epsilon)
        self.depthwise = _conv_bn_relu6(
            None, 3, depthwise=True, bn_momentum=self.bn_momentum, bn_epsilon=self.bn_epsilon,
            dtype=self.dtype_policy, name="depthwise",
        )  # fmt: skip
        self.pointwise = keras.layers.Conv2D(
            self.num_anchors * self.values_per_anchor,
            1,
            kernel_initializer=keras.initializers.get(_HEAD_INITIALIZER),
            dtype=self.dtype_policy,
            name="pointwise",
        )

    def build(self, input_shape):
        shape = tuple(input_shape)
        self.depthwise.build(shape)
        self.pointwise.build(shape)

    def call(self, inputs, training=None):
        x = self.pointwise(self.depthwise(inputs, training=training))
        batch, height, width = map_size(x)
        return ops.reshape(x, (batch, height * width * self.num_anchors, self.values_per_anchor))

    def compute_output_shape(self, input_shape):
        height, width = input_shape[1], input_shape[2]
        count = None if height is None or width is None else height * width * self.num_anchors
        return (input_shape[0], count, self.values_per_anchor)

    def get_config(self):
        config = super().get_config()
        config.update(
            num_anchors=self.num_anchors,
            values_per_anchor=self.values_per_anchor,
            bn_momentum=self.bn_momentum,
            bn_epsilon=self.bn_epsilon,
        )
        return config


def _concatenate(tensors, dtype, name):
    """The maps' predictions joined along the anchor axis, at most four at a time.

    XNNPACK (LiteRT's CPU delegate) runs a concatenation of up to four or
    five inputs; one of six would stay outside it and split the graph.
    """
    while len(tensors) > 4:
        tensors = [
            keras.layers.Concatenate(axis=1, dtype=dtype, name=f"{name}_{len(tensors)}")(tensors[:3]),
            *tensors[3:],
        ]
    return keras.layers.Concatenate(axis=1, dtype=dtype, name=name)(tensors)


def default_feature_taps(backbone):
    """The paper's two taps on `backbone`: the last strided block's expansion, and `"final"`.

    On mobilenetv3_large (reduced tail or not) that is
    `("blocks.5.0.expansion", "final")`: 672 channels at stride 16 and the
    last 1x1 conv at stride 32.

    Example:
    ```python
    default_feature_taps(backbone)  # ("blocks.5.0.expansion", "final")
    ```
    """
    taps = _feature_taps(backbone)
    expansions = [name for name in taps if re.fullmatch(r"blocks\.\d+\.\d+\.expansion", name)]
    if not expansions or "final" not in taps:
        raise ValueError(
            f"SSDLite (paper) taps the last strided block's expansion layer and 'final'; backbone "
            f"{backbone.name!r} has taps {sorted(taps)}. Pass feature_taps=(name, name) explicitly."
        )
    last = max(expansions, key=lambda name: tuple(int(part) for part in name.split(".")[1:3]))
    return (last, "final")


def _feature_taps(backbone):
    taps = getattr(backbone, "feature_taps", None)
    if not isinstance(backbone, keras.Model) or not isinstance(taps, dict):
        raise TypeError(
            "SSDLite (paper) needs a backbone with `feature_taps` (a mnet_backbones.MobileNetBackbone), "
            f"got {type(backbone).__name__}."
        )
    return taps


def resize_images(images, image_size):
    """Images (B, H, W, 3) resized to `image_size` as torch's `F.interpolate(bilinear, align_corners=False)`.

    Half-pixel centres and no antialiasing, on any backend. Returns a tensor
    of the backend.

    Example:
    ```python
    resize_images(np.zeros((1, 240, 400, 3), "float32"), 320).shape  # (1, 320, 320, 3)
    ```
    """
    height, width = check_image_size(image_size, minimum=1)
    images = ops.cast(images, "float32")
    if tuple(images.shape[1:3]) == (height, width):
        return images
    return ops.image.resize(images, (height, width), interpolation="bilinear", antialias=False)


def _iou_matrix(boxes):
    """Pairwise IoU of xyxy boxes (K, 4) as torchvision's box_iou computes it (0 / 0 stays NaN)."""
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    top_left = np.maximum(boxes[:, None, :2], boxes[None, :, :2])
    bottom_right = np.minimum(boxes[:, None, 2:], boxes[None, :, 2:])
    overlap = np.clip(bottom_right - top_left, 0.0, None)
    intersection = overlap[..., 0] * overlap[..., 1]
    with np.errstate(divide="ignore", invalid="ignore"):
        return intersection / (area[:, None] + area[None, :] - intersection)


def _nms(boxes, iou_threshold):
    """Greedy NMS over boxes sorted by descending score: the indices kept (IoU > threshold suppresses)."""
    iou = _iou_matrix(boxes)
    suppressed = np.zeros(len(boxes), bool)
    kept = []
    for i in range(len(boxes)):
        if suppressed[i]:
            continue
        kept.append(i)
        suppressed |= iou[i] > iou_threshold  # NaN (two empty boxes) suppresses nothing, as in torchvision
    return np.array(kept, "int64")


def decode_paper_boxes(anchors, box_deltas, image_size):
    """Box deltas (..., N, 4) against xyxy `anchors` to xyxy boxes clipped to `image_size`, as torchvision.

    The log-size deltas are clamped at log(1000 / 16) (after the (10, 10, 5, 5)
    weights) before decoding with `heads.box_coding.decode_boxes`. Returns numpy.

    Example:
    ```python
    decode_paper_boxes(np.array([[0, 0, 32, 32]], "float32"), np.zeros((1, 4), "float32"), 320)
    # [[0, 0, 32, 32]]
    ```
    """
    deltas = np.asarray(box_deltas, "float32")
    limit = np.array([np.inf, np.inf, MAX_LOG_SIZE_DELTA / SSD_BOX_VARIANCE[2], MAX_LOG_SIZE_DELTA / SSD_BOX_VARIANCE[3]],
                     "float32")  # fmt: skip
    deltas = np.minimum(deltas, limit)
    return keras.ops.convert_to_numpy(decode_boxes(anchors, deltas, SSD_BOX_VARIANCE, image_size))


def postprocess_detections(box_deltas, class_logits, anchors, image_size, original_sizes=None, score_threshold=0.001,
                           iou_threshold=0.55, topk_candidates=300, max_detections=300):  # fmt: skip
    """Raw outputs to detections, as torchvision's SSD post-processes them; numpy in, numpy out.

    Per image: boxes decoded against `anchors` and clipped to the network
    input `image_size`; softmax over classes; for every class but the
    background 0, the scores above `score_threshold`, at most
    `topk_candidates` of them; NMS per class (a box is suppressed by a better
    one of its class with IoU > `iou_threshold`); the best `max_detections`
    kept, best first; boxes scaled from `image_size` to the image's
    `original_sizes[i]` (height, width), per axis.

    Args:
        box_deltas: (B, N, 4). class_logits: (B, N, num_classes).
        anchors: (N, 4) xyxy pixels of the network input.
        image_size: (height, width) of the network input.
        original_sizes: (B, 2) (height, width) per image; None: `image_size`.

    Returns `{"boxes" (B, max_detections, 4) xyxy, "confidence", "labels",
    "num_detections"}`, padded with -1 beyond each image's count.

    Example:
    ```python
    raw = detector(images)
    detections = postprocess_detections(raw["bbox_regression"], raw["cls_logits"], detector.anchors(), (320, 320))
    ```
    """
    height, width = check_image_size(image_size, minimum=1)
    deltas = np.asarray(keras.ops.convert_to_numpy(box_deltas), "float32")
    logits = np.asarray(keras.ops.convert_to_numpy(class_logits), "float32")
    batch, num_anchors = deltas.shape[:2]
    if logits.shape[:2] != (batch, num_anchors) or deltas.shape[-1] != 4:
        raise ValueError(
            f"Box deltas {deltas.shape} and class logits {logits.shape} do not match: need (B, N, 4) and (B, N, C)."
        )
    if original_sizes is None:
        original_sizes = np.tile([[height, width]], (batch, 1))
    original_sizes = np.asarray(original_sizes, "float32").reshape(batch, 2)
    boxes = decode_paper_boxes(anchors, deltas, (height, width))
    shifted = logits - logits.max(axis=-1, keepdims=True)
    scores = np.exp(shifted)
    scores /= scores.sum(axis=-1, keepdims=True)
    out = {
        "boxes": np.full((batch, max_detections, 4), -1.0, "float32"),
        "confidence": np.full((batch, max_detections), -1.0, "float32"),
        "labels": np.full((batch, max_detections), -1, "int32"),
        "num_detections": np.zeros((batch,), "int32"),
    }
    for i in range(batch):
        kept_boxes, kept_scores, kept_labels = [], [], []
        for label in range(1, scores.shape[-1]):
            candidates = np.flatnonzero(scores[i, :, label] > score_threshold)
            order = np.argsort(-scores[i, candidates, label], kind="stable")[:topk_candidates]
            candidates = candidates[order]
            keep = candidates[_nms(boxes[i, candidates], iou_threshold)]
            kept_boxes.append(boxes[i, keep])
            kept_scores.append(scores[i, keep, label])
            kept_labels.append(np.full(len(keep), label, "int32"))
        image_scores = np.concatenate(kept_scores)
        best = np.argsort(-image_scores, kind="stable")[:max_detections]
        count = len(best)
        ratio_y = original_sizes[i, 0] / np.float32(height)
        ratio_x = original_sizes[i, 1] / np.float32(width)
        scale = np.array([ratio_x, ratio_y, ratio_x, ratio_y], "float32")
        out["boxes"][i, :count] = np.concatenate(kept_boxes)[best] * scale
        out["confidence"][i, :count] = image_scores[best]
        out["labels"][i, :count] = np.concatenate(kept_labels)[best]
        out["num_detections"][i] = count
    return out


def _pairwise_iou(boxes, anchors):
    """IoU of xyxy `boxes` (B, M, 4) with xyxy `anchors` (N, 4): (B, M, N), keras.ops."""
    anchors = ops.cast(anchors, "float32")
    area_boxes = (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])
    area_anchors = (anchors[:, 2] - anchors[:, 0]) * (anchors[:, 3] - anchors[:, 1])
    left = ops.maximum(boxes[..., :, None, 0], anchors[None, None, :, 0])
    top = ops.maximum(boxes[..., :, None, 1], anchors[None, None, :, 1])
    right = ops.minimum(boxes[..., :, None, 2], anchors[None, None, :, 2])
    bottom = ops.minimum(boxes[..., :, None, 3], anchors[None, None, :, 3])
    intersection = ops.maximum(right - left, 0.0) * ops.maximum(bottom - top, 0.0)
    union = area_boxes[..., :, None] + area_anchors[None, None, :] - intersection
    return intersection / ops.maximum(union, 1e-9)


def match_anchors(boxes, valid, anchors, iou_threshold=0.5):
    """Each anchor's box index, or -1, as torchvision's `SSDMatcher` matches them.

    An anchor takes the box it overlaps most when that IoU is at least
    `iou_threshold`; then every valid box takes the anchor it overlaps most,
    whatever the IoU (a later box wins an anchor two boxes pick). keras.ops:
    runs inside the training step on every backend.

    Args:
        boxes: (B, M, 4) xyxy. valid: (B, M) bool, False for padding.
        anchors: (N, 4) xyxy.

    Returns (B, N) int32 box indices, -1 for the background.

    Example:
    ```python
    match_anchors(boxes, labels >= 0, detector.anchors())  # (B, N)
    ```
    """
    boxes = ops.cast(boxes, "float32")
    iou = _pairwise_iou(boxes, anchors)
    iou = ops.where(valid[..., None], iou, -1.0)
    best_iou = ops.max(iou, axis=1)
    matched = ops.where(best_iou >= iou_threshold, ops.cast(ops.argmax(iou, axis=1), "int32"), -1)
    num_anchors = ops.shape(iou)[-1]
    num_boxes = ops.shape(iou)[1]
    best_anchor = ops.argmax(iou, axis=-1)  # (B, M)
    claims = ops.logical_and(ops.one_hot(best_anchor, num_anchors) > 0, valid[..., None])  # (B, M, N)
    box_index = ops.reshape(ops.arange(num_boxes, dtype="int32"), (1, -1, 1))
    claimed_by = ops.max(ops.where(claims, box_index, -1), axis=1)
    return ops.where(claimed_by >= 0, claimed_by, matched)


@keras.saving.register_keras_serializable(package="heads")
class SSDLite320ObjectDetector(PyramidObjectDetector):
    """SSDLite as the MobileNetV3 paper and torchvision's `ssdlite320_mobilenet_v3_large` build it.

    The network reads two backbone taps (by default the last strided
    block's expansion layer and the last conv, `default_feature_taps`), adds
    `SSDLitePaperExtraBlock`s (512, 256, 256, 128) and puts a pair of
    `SSDLitePaperPredictor`s (box deltas, class logits) on each of the six
    maps. See the module docstring for the exact recipe.

    Calling the model on images of `image_size` (0..255 RGB; normalised
    inside) gives the raw outputs `{"bbox_regression": (B, N, 4),
    "cls_logits": (B, N, num_classes)}` in torchvision's anchor order
    (`anchors()`). `predict` takes images of any size (an array, or a list
    of differently sized images), resizes them to `image_size`, and returns
    `{"boxes", "confidence", "labels", "num_detections"}` with boxes in
    `bounding_box_format` in each image's own pixels and labels as class
    indices (0, the background, never appears).

    `fit` takes images of `image_size` (arrays of another size are resized,
    with their boxes) and `{"boxes": (B, M, 4) pixels in
    `bounding_box_format`, "labels": (B, M)}` padded with label -1; labels
    are 1..num_classes-1.

    Args:
        backbone: a `mnet_backbones.MobileNetBackbone` (it has `feature_taps`).
        num_classes: classes including the background 0 (91 for
            torchvision's COCO indices).
        image_size: int or (height, width) the images are resized to.
        bounding_box_format: format of targets and predicted boxes.
        feature_taps: the two backbone taps the head reads; None: the paper's.
        extra_filters: channels of the extra blocks (one map each).
        aspect_ratios: per map, the default boxes' aspect ratios besides 1.
        min_ratio, max_ratio: the default boxes' smallest and largest scale.
        match_iou_threshold: IoU from which an anchor is a positive.
        negative_ratio: hard negatives kept per positive.
        score_threshold, iou_threshold, topk_candidates, max_detections: the
            post-processing's settings (see `postprocess_detections`).
        bn_momentum, bn_epsilon: the head's BatchNorm (torchvision's momentum
            0.03 is Keras' 0.97).
        class_names: optional list of `num_classes` names (index 0 the
            background), kept with the model.
        preprocessor: optional keras-hub preprocessor.

    Example:
    ```python
    import heads, numpy as np
    from mnet_backbones import MobileNetBackbone
    backbone = MobileNetBackbone("mobilenetv3_large_reduced_tail", image_shape=(320, 320, 3))
    detector = heads.SSDLite320ObjectDetector(backbone, num_classes=4)
    detector.compile()
    images = np.random.uniform(0, 255, (2, 320, 320, 3)).astype("float32")
    targets = {"boxes": np.array([[[10, 10, 160, 200], [-1, -1, -1, -1]]] * 2, "float32"),
               "labels": np.array([[1, -1]] * 2)}
    detector.fit(images, targets, epochs=1)
    detections = detector.predict(images)  # boxes, confidence, labels, num_detections
    ```
    """

    def __init__(
        self,
        backbone,
        num_classes=91,
        image_size=320,
        bounding_box_format="xyxy",
        feature_taps=None,
        extra_filters=PAPER_EXTRA_FILTERS,
        aspect_ratios=PAPER_ASPECT_RATIOS,
        min_ratio=0.2,
        max_ratio=0.95,
        match_iou_threshold=0.5,
        negative_ratio=3.0,
        score_threshold=0.001,
        iou_threshold=0.55,
        topk_candidates=300,
        max_detections=300,
        bn_momentum=0.97,
        bn_epsilon=1e-3,
        class_names=None,
        preprocessor=None,
        dtype=None,
        **kwargs,
    ):
        taps = _feature_taps(backbone)
        num_classes = check_positive_int("num_classes", num_classes)
        if num_classes < 2:
            raise ValueError(f"`num_classes` counts the background 0 too: it must be at least 2, got {num_classes}.")
        image_size = check_image_size(image_size)
        feature_taps = tuple(feature_taps) if feature_taps is not None else default_feature_taps(backbone)
        if len(feature_taps) != 2 or any(name not in taps for name in feature_taps):
            raise ValueError(
                f"`feature_taps` must name two of the backbone's taps {sorted(taps)}, got {feature_taps!r}."
            )
        extra_filters = tuple(check_positive_int("extra_filters", f) for f in extra_filters)
        aspect_ratios = tuple(tuple(float(r) for r in ratios) for ratios in aspect_ratios)
        if len(aspect_ratios) != 2 + len(extra_filters):
            raise ValueError(
                f"`aspect_ratios` needs one list per map: 2 taps + {len(extra_filters)} extra blocks = "
                f"{2 + len(extra_filters)}, got {len(aspect_ratios)}."
            )
        if class_names is not None:
            class_names = [str(name) for name in class_names]
            if len(class_names) != num_classes:
                raise ValueError(f"`class_names` has {len(class_names)} names for num_classes={num_classes}.")
        head_dtype = dtype or backbone.dtype_policy
        anchors_per_position = boxes_per_position(aspect_ratios)

        # === Layers ===
        self.backbone = backbone
        self.preprocessor = preprocessor
        self.normalizer = pixel_normalizer(PAPER_PIXEL_MEAN, PAPER_PIXEL_VARIANCE, head_dtype)
        self.feature_extractor = keras.Model(
            backbone.inputs, [taps[name] for name in feature_taps], name="feature_taps"
        )
        common = dict(bn_momentum=bn_momentum, bn_epsilon=bn_epsilon, dtype=head_dtype)
        self.extra_blocks = [
            SSDLitePaperExtraBlock(filters, name=f"extra_{i}", **common) for i, filters in enumerate(extra_filters)
        ]
        self.box_predictors = [
            SSDLitePaperPredictor(count, 4, name=f"box_{i}", **common) for i, count in enumerate(anchors_per_position)
        ]
        self.class_predictors = [
            SSDLitePaperPredictor(count, num_classes, name=f"class_{i}", **common)
            for i, count in enumerate(anchors_per_position)
        ]

        # === Functional model ===
        inputs = keras.Input(shape=image_size + (3,), name="images")
        maps = list(self.feature_extractor(self.normalizer(inputs)))
        for block in self.extra_blocks:
            maps.append(block(maps[-1]))
        map_sizes = [tuple(x.shape[1:3]) for x in maps]
        if any(size is None for shape in map_sizes for size in shape):
            raise ValueError(f"The feature maps of {image_size} images have unknown sizes {map_sizes}.")
        outputs = {
            "bbox_regression": _concatenate(
                [predictor(x) for predictor, x in zip(self.box_predictors, maps)], head_dtype, "bbox_regression"
            ),
            "cls_logits": _concatenate(
                [predictor(x) for predictor, x in zip(self.class_predictors, maps)], "float32", "cls_logits"
            ),
        }
        super().__init__(inputs=inputs, outputs=outputs, dtype=dtype, **kwargs)

        # === Config ===
        self.num_classes = num_classes
        self.image_size = image_size
        self.bounding_box_format = bounding_box_format
        self.feature_taps = feature_taps
        self.extra_filters = extra_filters
        self.aspect_ratios = aspect_ratios
        self.min_ratio = float(min_ratio)
        self.max_ratio = float(max_ratio)
        self.match_iou_threshold = float(match_iou_threshold)
        self.negative_ratio = float(negative_ratio)
        self.score_threshold = float(score_threshold)
        self.iou_threshold = float(iou_threshold)
        self.topk_candidates = int(topk_candidates)
        self.max_detections = int(max_detections)
        self.bn_momentum = float(bn_momentum)
        self.bn_epsilon = float(bn_epsilon)
        self.class_names = class_names
        self.map_sizes = map_sizes
        self._anchors = default_boxes(map_sizes, image_size, aspect_ratios, self.min_ratio, self.max_ratio)
        # Read by the LiteRT export and the post-processing of the other SSDLite; kept under the same names.
        self.box_variance = SSD_BOX_VARIANCE

    def anchors(self):
        """The default boxes: (N, 4) xyxy pixels of the `image_size` input, in the order of the outputs.

        Example:
        ```python
        detector.anchors().shape  # (3234, 4) at 320 px
        ```
        """
        return self._anchors

    # --- training -----------------------------------------------------------
    def compile(self, optimizer="auto", **kwargs):
        """Configures training with the paper's loss (see the module docstring), computed by `compute_loss`.

        `optimizer="auto"`: AdamW (learning rate 1e-3, weight decay 1e-4,
        gradient norm clipped at 10), for fine-tuning. torchvision trained
        the COCO weights with SGD (momentum 0.9, learning rate 0.15, weight
        decay 4e-5, cosine schedule, 600 epochs).

        Example:
        ```python
        detector.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9))
        ```
        """
        if optimizer == "auto":
            optimizer = keras.optimizers.AdamW(1e-3, weight_decay=1e-4, global_clipnorm=10.0)
        kwargs.pop("loss", None)  # the loss is the paper's, in compute_loss
        keras.Model.compile(self, optimizer=optimizer, **kwargs)

    def compile_from_config(self, config):
        # compile() is our own, so Keras does not replay a saved compile by itself; this restores it,
        # optimizer state included.
        config = dict(keras.saving.deserialize_keras_object(config))
        for key in ("loss", "loss_weights", "metrics", "weighted_metrics"):
            config.pop(key, None)
        self.compile(**config)
        if self.built:
            self.optimizer.build(self.trainable_variables)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        boxes = bounding_boxes.convert_format(
            ops.cast(y["boxes"], "float32"), source=self.bounding_box_format, target="xyxy",
            height=self.image_size[0], width=self.image_size[1],
        )  # fmt: skip
        labels = ops.cast(y["labels"], "int32")
        valid = labels >= 0
        anchors = ops.convert_to_tensor(self._anchors)
        matched = match_anchors(boxes, valid, anchors, self.match_iou_threshold)
        positive = matched >= 0
        index = ops.maximum(matched, 0)
        class_targets = ops.where(positive, ops.take_along_axis(labels, index, axis=1), 0)
        matched_boxes = ops.take_along_axis(boxes, ops.repeat(index[..., None], 4, axis=-1), axis=1)
        # Background anchors are coded against themselves (zero deltas): finite, and masked out below.
        matched_boxes = ops.where(positive[..., None], matched_boxes, anchors[None])
        box_targets = encode_boxes(anchors, matched_boxes, SSD_BOX_VARIANCE)
        positive_f = ops.cast(positive, "float32")
        # The whole batch's positives, on every replica (heads.losses.sum_over_replicas).
        num_positive = ops.maximum(sum_over_replicas(ops.sum(positive_f)), 1.0)
        difference = ops.abs(ops.cast(y_pred["bbox_regression"], "float32") - box_targets)
        smooth_l1 = ops.where(difference < 1.0, 0.5 * difference**2, difference - 0.5)
        box_loss = ops.sum(ops.sum(smooth_l1, axis=-1) * positive_f)

        logits = ops.cast(y_pred["cls_logits"], "float32")
        log_probs = ops.log_softmax(logits, axis=-1)
        class_loss = -ops.sum(ops.one_hot(class_targets, self.num_classes) * log_probs, axis=-1)  # (B, N)
        # Hard negatives: per image, the 3 x positives background anchors of highest loss.
        negative_loss = ops.where(positive, -1.0, ops.stop_gradient(class_loss))
        rank = ops.argsort(ops.argsort(-negative_loss, axis=-1), axis=-1)
        num_negative = self.negative_ratio * ops.sum(positive_f, axis=-1, keepdims=True)
        hard_negative = ops.logical_and(ops.cast(rank, "float32") < num_negative, ops.logical_not(positive))
        selected = ops.stop_gradient(positive_f + ops.cast(hard_negative, "float32"))
        class_loss = ops.sum(class_loss * selected)
        return (box_loss + class_loss) / num_positive

    def _check_targets(self, y):
        labels = np.asarray(y["labels"])
        boxes = np.asarray(y["boxes"], "float32")
        if boxes.shape[:-1] != labels.shape or boxes.shape[-1:] != (4,):
            raise ValueError(f"Targets: boxes {boxes.shape} and labels {labels.shape} must be (B, M, 4) and (B, M).")
        real = labels >= 0
        bad = labels[real & ((labels < 1) | (labels >= self.num_classes))]
        if bad.size:
            raise ValueError(
                f"Target label {int(bad[0])} is out of range: labels are 1..{self.num_classes - 1} "
                "(0 is the background) or -1 for padding."
            )
        if not np.all(np.isfinite(boxes[real])):
            raise ValueError("Target boxes hold NaN or infinite coordinates.")
        xyxy = keras.ops.convert_to_numpy(
            bounding_boxes.convert_format(
                boxes, source=self.bounding_box_format, target="xyxy",
                height=self.image_size[0], width=self.image_size[1],
            )
        )  # fmt: skip
        degenerate = real & ((xyxy[..., 2] <= xyxy[..., 0]) | (xyxy[..., 3] <= xyxy[..., 1]))
        if degenerate.any():
            image, box = np.argwhere(degenerate)[0]
            raise ValueError(
                f"Target box {xyxy[image, box].tolist()} (image {image}, box {box}) has no area: all boxes "
                "need positive width and height, as torchvision's SSD requires."
            )
        return {"boxes": boxes, "labels": labels.astype("int32")}

    def _resize_training_arrays(self, x, y):
        """Array targets checked; array images of another size resized to `image_size`, their boxes with them."""
        if isinstance(y, dict) and "boxes" in y and "labels" in y:
            y = self._check_targets(y)
            if isinstance(x, np.ndarray) and x.ndim == 4 and tuple(x.shape[1:3]) != self.image_size:
                xyxy = keras.ops.convert_to_numpy(
                    bounding_boxes.convert_format(
                        y["boxes"], source=self.bounding_box_format, target="xyxy",
                        height=x.shape[1], width=x.shape[2],
                    )
                )  # fmt: skip
                scale = np.array([self.image_size[1] / x.shape[2], self.image_size[0] / x.shape[1]] * 2, "float32")
                xyxy = np.where(y["labels"][..., None] >= 0, xyxy * scale, -1.0)
                y["boxes"] = keras.ops.convert_to_numpy(
                    bounding_boxes.convert_format(
                        xyxy, source="xyxy", target=self.bounding_box_format,
                        height=self.image_size[0], width=self.image_size[1],
                    )
                )  # fmt: skip
                x = keras.ops.convert_to_numpy(resize_images(x, self.image_size))
        return x, y

    def fit(self, x=None, y=None, *args, **kwargs):
        """keras-hub's `fit`; array images of another size are resized, their boxes with them.

        Array targets are checked first: a label outside 1..num_classes-1
        (and not -1), a non-finite or an empty box raise a ValueError. An
        attached preprocessor then sees images of `image_size`, as in `predict`.
        """
        x, y = self._resize_training_arrays(x, y)
        return super().fit(x, y, *args, **kwargs)

    def evaluate(self, x=None, y=None, *args, **kwargs):
        """keras-hub's `evaluate`, with array images and targets resized and checked as `fit` does."""
        x, y = self._resize_training_arrays(x, y)
        return super().evaluate(x, y, *args, **kwargs)

    # --- prediction ---------------------------------------------------------
    def _resize_batch(self, x):
        """Images (an array or a list of HWC arrays) resized to `image_size`, and their (height, width)."""
        if isinstance(x, (list, tuple)):
            images = [np.asarray(image) for image in x]
        else:
            array = np.asarray(keras.ops.convert_to_numpy(x))
            if array.ndim == 3 and array.shape[-1] in (1, 3, 4):
                raise ValueError(
                    f"{type(self).__name__}.predict takes a batch of images (batch, height, width, 3); got one "
                    f"image of shape {array.shape}. Add a batch axis: predict(image[None])."
                )
            images = list(array)
        if not images:
            raise ValueError(f"{type(self).__name__}.predict got no images (a batch of 0): nothing to predict.")
        for i, image in enumerate(images):
            if image.ndim != 3 or image.shape[-1] != 3 or min(image.shape[:2]) < 1:
                raise ValueError(
                    f"{type(self).__name__}: image {i} has shape {image.shape}; each image must be "
                    "(height, width, 3) RGB with at least one pixel. Convert gray or RGBA images to RGB first "
                    "(e.g. PIL's image.convert('RGB'))."
                )
        sizes = np.array([image.shape[:2] for image in images], "float32")
        resized = [keras.ops.convert_to_numpy(resize_images(image[None], self.image_size))[0] for image in images]
        return np.stack(resized), sizes

    def raw_outputs(self, images, batch_size=None):
        """The raw outputs on any images (resized to `image_size` first), as numpy, and their sizes.

        Example:
        ```python
        raw, sizes = detector.raw_outputs(images)  # raw["cls_logits"]: (B, 3234, num_classes)
        ```
        """
        resized, sizes = self._resize_batch(images)
        raw = super().predict(resized, batch_size=batch_size, verbose=0)
        return raw, sizes

    def predict(self, x, batch_size=None, verbose="auto", steps=None, callbacks=None):
        """Detections on images of any size, boxes in each image's own pixels.

        `x` is an array (B, H, W, 3) or (H, W, 3), or a list of (H, W, 3)
        images of different sizes, RGB 0..255. Any other input (a dataset)
        goes to `keras.Model.predict` as it is: its images must be of
        `image_size`, and boxes come back in those pixels.
        """
        if isinstance(x, (np.ndarray, list, tuple)) or keras.ops.is_tensor(x):
            resized, sizes = self._resize_batch(x)
            raw = super().predict(resized, batch_size=batch_size, verbose=verbose, callbacks=callbacks)
        else:
            raw = super().predict(x, batch_size=batch_size, verbose=verbose, steps=steps, callbacks=callbacks)
            sizes = None
        detections = postprocess_detections(
            raw["bbox_regression"], raw["cls_logits"], self._anchors, self.image_size, sizes,
            self.score_threshold, self.iou_threshold, self.topk_candidates, self.max_detections,
        )  # fmt: skip
        if self.bounding_box_format != "xyxy":
            counts = detections["num_detections"]
            boxes = detections["boxes"]
            converted = []
            for i in range(len(boxes)):
                height, width = self.image_size if sizes is None else sizes[i]
                one = keras.ops.convert_to_numpy(
                    bounding_boxes.convert_format(
                        boxes[i], source="xyxy", target=self.bounding_box_format, height=height, width=width
                    )
                )
                one[counts[i] :] = -1.0
                converted.append(one)
            detections["boxes"] = np.stack(converted).astype("float32")
        return detections

    # --- serialisation ------------------------------------------------------
    def get_config(self):
        config = super().get_config()
        config.update(
            num_classes=self.num_classes,
            image_size=list(self.image_size),
            bounding_box_format=self.bounding_box_format,
            feature_taps=list(self.feature_taps),
            extra_filters=list(self.extra_filters),
            aspect_ratios=[list(r) for r in self.aspect_ratios],
            min_ratio=self.min_ratio,
            max_ratio=self.max_ratio,
            match_iou_threshold=self.match_iou_threshold,
            negative_ratio=self.negative_ratio,
            score_threshold=self.score_threshold,
            iou_threshold=self.iou_threshold,
            topk_candidates=self.topk_candidates,
            max_detections=self.max_detections,
            bn_momentum=self.bn_momentum,
            bn_epsilon=self.bn_epsilon,
            class_names=self.class_names,
        )
        return config

    @classmethod
    def from_preset(cls, preset, load_weights=True, **kwargs):
        """A built-in name, a torchvision checkpoint folder, or a folder saved with `save_to_preset`.

        - `"ssdlite320_mobilenetv3_large_coco"`: torchvision's COCO weights,
          downloaded once into the cache (`load_weights=False`: the same
          model, randomly initialised, no download);
        - a folder with `config.json` (torchvision's builder name and
          `num_classes`) and `model.pth` (a torchvision state_dict);
        - a folder written by `save_to_preset`.

        Example:
        ```python
        detector = heads.SSDLite320ObjectDetector.from_preset("ssdlite320_mobilenetv3_large_coco")
        detections = detector.predict(image)  # image: (H, W, 3) RGB 0..255
        ```
        """
        if torchvision_ssdlite.is_torchvision_source(preset):
            return torchvision_ssdlite.load_ssdlite(cls, preset, load_weights=load_weights, **kwargs)
        return load_task_preset(cls, preset, load_weights, **kwargs)
