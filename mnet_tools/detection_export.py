"""LiteRT export of an SSDLite detector and the numpy post-processing it needs.

The exported `.tflite` file computes the raw outputs (box deltas and class
logits for every anchor). Decoding and NMS stay outside it: keras-hub's
`NonMaxSuppression` is a data-dependent while loop over the whole batch,
which the TFLite converter does not turn into builtin ops. `postprocess`
does that small step in numpy, with the anchors and settings that
`export_litert` writes beside the model.
"""

import json
import os

import keras
import numpy as np

from heads.box_coding import decode_boxes
from mnet_tools import litert


def _settings_path(tflite_path):
    return os.path.splitext(tflite_path)[0] + "_postprocess.npz"


def export_litert(detector, path, **converter_options):
    """Writes `path` (.tflite, raw outputs) and `<stem>_postprocess.npz`.

    Returns the two paths. The `.npz` holds the anchors (xyxy pixels), the
    box variance, the image size and the decoder's thresholds.
    `converter_options` go to `detector.export` (TFLite converter settings,
    such as int8 quantisation: see `mnet_tools.export`).

    Example:
    ```python
    from mnet_tools import detection_export
    tflite, settings = detection_export.export_litert(detector, "ssdlite.tflite")
    detections = detection_export.run_litert(tflite, images)  # same keys as predict
    ```
    """
    detector.export(path, format="litert", verbose=False, **converter_options)
    settings = postprocess_settings(detector)
    settings_path = _settings_path(path)
    settings["image_size"] = np.array(settings["image_size"], "int32")
    np.savez(settings_path, **settings, bounding_box_format=np.array(json.dumps(detector.bounding_box_format)))
    return path, settings_path


def postprocess_settings(detector):
    """`postprocess`'s keyword arguments for `detector`: its anchors, box variance, size and thresholds.

    Example:
    ```python
    raw = detector(images)
    detections = postprocess(raw["bbox_regression"], raw["cls_logits"], **postprocess_settings(detector))
    ```
    """
    return {
        "anchors": keras.ops.convert_to_numpy(detector.anchors()).astype("float32"),
        "box_variance": np.array(detector.box_variance, "float32"),
        "image_size": tuple(detector.image_size),
        "score_threshold": float(detector.score_threshold),
        "iou_threshold": float(detector.iou_threshold),
        "max_detections": int(detector.max_detections),
    }


def _iou_one_to_many(box, boxes):
    x0 = np.maximum(box[0], boxes[:, 0])
    y0 = np.maximum(box[1], boxes[:, 1])
    x1 = np.minimum(box[2], boxes[:, 2])
    y1 = np.minimum(box[3], boxes[:, 3])
    intersection = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return intersection / np.maximum(area + areas - intersection, 1e-8)


def postprocess(box_deltas, class_logits, anchors, box_variance, image_size,
                score_threshold=0.3, iou_threshold=0.5, max_detections=100):  # fmt: skip
    """Raw SSDLite outputs to detections, as `SSDLiteObjectDetector.predict` makes them.

    Decodes centre/size deltas against the anchors and clips them to the
    image with `heads.box_coding.decode_boxes`, as the detector does; takes
    each anchor's best class (sigmoid score), keeps scores above
    `score_threshold` and runs greedy class-agnostic NMS in numpy. Returns
    `{"boxes" (B, max_detections, 4) xyxy pixels, "confidence", "labels",
    "num_detections"}`, padded with -1 like `predict`.

    Example:
    ```python
    deltas, logits = ...  # the .tflite outputs
    detections = postprocess(deltas, logits, settings["anchors"], settings["box_variance"], (192, 192))
    ```
    """
    boxes = keras.ops.convert_to_numpy(decode_boxes(anchors, box_deltas, box_variance, image_size))
    scores = 1.0 / (1.0 + np.exp(-np.asarray(class_logits, "float32")))
    batch = boxes.shape[0]
    out = {
        "boxes": np.full((batch, max_detections, 4), -1.0, "float32"),
        "confidence": np.full((batch, max_detections), -1.0, "float32"),
        "labels": np.full((batch, max_detections), -1, "int32"),
        "num_detections": np.zeros((batch,), "int32"),
    }
    for i in range(batch):
        confidence = scores[i].max(axis=-1)
        order = np.argsort(-confidence, kind="stable")
        order = order[confidence[order] > score_threshold]
        kept = []
        while order.size and len(kept) < max_detections:
            best = order[0]
            kept.append(best)
            order = order[1:][_iou_one_to_many(boxes[i, best], boxes[i, order[1:]]) <= iou_threshold]
        count = len(kept)
        out["boxes"][i, :count] = boxes[i, kept]
        out["confidence"][i, :count] = confidence[kept]
        out["labels"][i, :count] = scores[i, kept].argmax(axis=-1)
        out["num_detections"][i] = count
    return out


def run_litert(tflite_path, images):
    """Runs an exported detector on `images` (B, H, W, 3, 0..255) and post-processes.

    Boxes come back in xyxy input pixels. Example:
    ```python
    detections = run_litert("ssdlite.tflite", images)
    ```
    """
    settings = np.load(_settings_path(tflite_path))
    outputs = litert.run(tflite_path, images)  # a file with a fixed batch runs in chunks
    # The two outputs differ in their last axis: 4 for deltas, num_classes for logits
    # (with 4 classes as well, the deltas come first, as the model lists them).
    deltas, logits = sorted(outputs, key=lambda output: output.shape[-1] != 4) if len(outputs) == 2 else outputs
    return postprocess(
        deltas, logits, settings["anchors"], settings["box_variance"], tuple(settings["image_size"]),
        float(settings["score_threshold"]), float(settings["iou_threshold"]), int(settings["max_detections"]),
    )  # fmt: skip
