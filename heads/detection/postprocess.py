"""Raw SSDLite outputs to detections outside the model: IoU, greedy NMS, decoding (numpy).

One IoU (`box_iou`) and one greedy NMS (`greedy_nms`) serve both heads and the
LiteRT export (`mnet_tools.detection_export`), which runs these same functions
on a `.tflite` file's raw outputs:

- `SOFTMAX_PER_CLASS_NMS`, `postprocess_detections`: `SSDLite320ObjectDetector`'s
  `predict`, as torchvision's SSD post-processes: boxes decoded with the
  log-size clamp (`decode_paper_boxes`), softmax over classes with the
  background 0, the best `topk_candidates` per class above `score_threshold`,
  NMS per class, the best `max_detections` kept, boxes scaled back to each
  image's own size.
- `SIGMOID_CLASS_AGNOSTIC_NMS`, `postprocess_sigmoid_detections`: what
  `SSDLiteObjectDetector.predict` computes in its graph (keras-hub's
  `NonMaxSuppression`), in numpy: each anchor's best class by sigmoid score,
  class-agnostic NMS.

A detector names its kind in `postprocessing`; the LiteRT settings file keeps
it as `kind`.
"""

import math

import keras
import numpy as np

from heads.detection.box_coding import SSD_BOX_VARIANCE, decode_boxes
from mnet_backbones.validation import check_image_size

# The post-processing kinds, as `SSDLiteObjectDetector.postprocessing` and
# `SSDLite320ObjectDetector.postprocessing` name them (and exported settings files store them).
SIGMOID_CLASS_AGNOSTIC_NMS = "sigmoid_class_agnostic_nms"
SOFTMAX_PER_CLASS_NMS = "torchvision_softmax_per_class_nms"
# torchvision's BoxCoder clamps the decoded log-size deltas (after the weights) at log(1000 / 16),
# so that a wild prediction cannot overflow exp().
MAX_LOG_SIZE_DELTA = math.log(1000.0 / 16)


def box_iou(boxes, others, ops_module=np):
    """IoU of every xyxy box of `boxes` (..., M, 4) with every one of `others` (..., N, 4): (..., M, N).

    With numpy (the default), as torchvision's `box_iou` computes it: 0 / 0
    (two boxes without area) stays NaN, which suppresses nothing in
    `greedy_nms`. With `ops_module=keras.ops` it runs inside a model (the
    paper head's matching, `heads.detection.matching.match_anchors`), the
    union floored at 1e-9 so that every value is finite.

    Example:
    ```python
    box_iou(np.array([[0, 0, 10, 10]], "float32"), np.array([[0, 0, 10, 10], [5, 0, 15, 10]], "float32"))
    # [[1.0, 0.333]]
    ```
    """
    xp = ops_module
    area = (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])
    other_area = (others[..., 2] - others[..., 0]) * (others[..., 3] - others[..., 1])
    top_left = xp.maximum(boxes[..., :, None, :2], others[..., None, :, :2])
    bottom_right = xp.minimum(boxes[..., :, None, 2:], others[..., None, :, 2:])
    overlap = xp.maximum(bottom_right - top_left, 0.0)
    intersection = overlap[..., 0] * overlap[..., 1]
    union = area[..., :, None] + other_area[..., None, :] - intersection
    if xp is not np:
        return intersection / xp.maximum(union, 1e-9)
    with np.errstate(divide="ignore", invalid="ignore"):
        return intersection / union


def greedy_nms(boxes, iou_threshold, max_kept=None):
    """Greedy NMS over xyxy boxes sorted by descending score: the indices kept, best first.

    Each kept box suppresses every later box of IoU above `iou_threshold`
    with it (a NaN IoU, of two boxes without area, suppresses nothing, as in
    torchvision); stops after `max_kept` boxes (None: no limit).

    Example:
    ```python
    greedy_nms(np.array([[0, 0, 10, 10], [1, 0, 11, 10], [20, 20, 30, 30]], "float32"), 0.5)  # [0, 2]
    ```
    """
    boxes = np.asarray(boxes)
    remaining = np.arange(len(boxes))
    kept = []
    while remaining.size and (max_kept is None or len(kept) < max_kept):
        best, rest = remaining[0], remaining[1:]
        kept.append(best)
        remaining = rest[~(box_iou(boxes[best][None], boxes[rest])[0] > iou_threshold)]
    return np.array(kept, "int64")


def empty_detections(batch, max_detections):
    """`{"boxes", "confidence", "labels", "num_detections"}` for `batch` images, all padding (-1, count 0)."""
    return {
        "boxes": np.full((batch, max_detections, 4), -1.0, "float32"),
        "confidence": np.full((batch, max_detections), -1.0, "float32"),
        "labels": np.full((batch, max_detections), -1, "int32"),
        "num_detections": np.zeros((batch,), "int32"),
    }


def decode_paper_boxes(anchors, box_deltas, image_size):
    """Box deltas (..., N, 4) against xyxy `anchors` to xyxy boxes clipped to `image_size`, as torchvision.

    The log-size deltas are clamped at log(1000 / 16) (after the (10, 10, 5, 5)
    weights) before decoding with `heads.detection.box_coding.decode_boxes`.
    Returns numpy.

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
    out = empty_detections(batch, max_detections)
    for i in range(batch):
        kept_boxes, kept_scores, kept_labels = [], [], []
        for label in range(1, scores.shape[-1]):
            candidates = np.flatnonzero(scores[i, :, label] > score_threshold)
            order = np.argsort(-scores[i, candidates, label], kind="stable")[:topk_candidates]
            candidates = candidates[order]
            keep = candidates[greedy_nms(boxes[i, candidates], iou_threshold)]
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


def postprocess_sigmoid_detections(box_deltas, class_logits, anchors, box_variance, image_size,
                                   score_threshold=0.3, iou_threshold=0.5, max_detections=100):  # fmt: skip
    """Raw outputs to detections, as `SSDLiteObjectDetector.predict` makes them; numpy in, numpy out.

    Decodes centre/size deltas against the anchors and clips them to the
    image with `heads.detection.box_coding.decode_boxes`, as the detector
    does; takes each anchor's best class (sigmoid score), keeps scores above
    `score_threshold` and runs greedy class-agnostic NMS. Returns
    `{"boxes" (B, max_detections, 4) xyxy pixels, "confidence", "labels",
    "num_detections"}`, padded with -1 like `predict`.

    Example:
    ```python
    deltas, logits = ...  # the .tflite outputs
    detections = postprocess_sigmoid_detections(deltas, logits, settings["anchors"], settings["box_variance"], 192)
    ```
    """
    boxes = keras.ops.convert_to_numpy(decode_boxes(anchors, box_deltas, box_variance, image_size))
    scores = 1.0 / (1.0 + np.exp(-np.asarray(class_logits, "float32")))
    batch = boxes.shape[0]
    out = empty_detections(batch, max_detections)
    for i in range(batch):
        confidence = scores[i].max(axis=-1)
        order = np.argsort(-confidence, kind="stable")
        order = order[confidence[order] > score_threshold]
        kept = order[greedy_nms(boxes[i, order], iou_threshold, max_detections)]
        count = len(kept)
        out["boxes"][i, :count] = boxes[i, kept]
        out["confidence"][i, :count] = confidence[kept]
        out["labels"][i, :count] = scores[i, kept].argmax(axis=-1)
        out["num_detections"][i] = count
    return out
