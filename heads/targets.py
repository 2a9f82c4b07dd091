"""Detection targets checked and cleaned before training (numpy)."""

import keras
import numpy as np

from mnet_backbones.validation import check_image_size

bounding_boxes = keras.utils.bounding_boxes


def clean_detection_targets(targets, num_classes, image_size, bounding_box_format="xyxy"):
    """Checks and cleans padded detection targets (numpy).

    Boxes are clipped to the image; boxes with no area after clipping become
    padding (-1 box, label -1). Labels must be -1 (padding) or in
    `[0, num_classes)`.

    Example:
    ```python
    clean_detection_targets({"boxes": [[[-5, 10, 20, 90]]], "labels": [[0]]}, 3, 64)
    # boxes [[[0, 10, 20, 64]]], labels [[0]]
    ```
    """
    height, width = check_image_size(image_size)
    boxes = np.array(keras.ops.convert_to_numpy(targets["boxes"]), dtype="float32")
    labels = np.array(keras.ops.convert_to_numpy(targets["labels"]))
    if boxes.shape[-1] != 4 or boxes.shape[:-1] != labels.shape:
        raise ValueError(
            f"`boxes` must have shape labels.shape + (4,); got boxes {boxes.shape} and labels {labels.shape}."
        )
    if labels.size and np.any(np.round(labels) != labels):
        raise ValueError(f"`labels` must be integers, got {labels[np.round(labels) != labels][:5].tolist()}.")
    labels = labels.astype("int32")
    bad = labels[(labels >= num_classes) | (labels < -1)]
    if bad.size:
        raise ValueError(
            f"labels must be in [0, {num_classes}) or -1 for padding; got {int(bad[0])} (num_classes={num_classes})."
        )
    padding = labels < 0
    xyxy = np.array(
        bounding_boxes.convert_format(boxes, source=bounding_box_format, target="xyxy", height=height, width=width)
    )
    xyxy[..., 0::2] = np.clip(xyxy[..., 0::2], 0, width)
    xyxy[..., 1::2] = np.clip(xyxy[..., 1::2], 0, height)
    degenerate = (xyxy[..., 2] <= xyxy[..., 0]) | (xyxy[..., 3] <= xyxy[..., 1])
    drop = padding | degenerate
    boxes = np.array(
        bounding_boxes.convert_format(xyxy, source="xyxy", target=bounding_box_format, height=height, width=width)
    )
    boxes[drop] = -1.0
    labels[drop] = -1
    return {"boxes": boxes.astype("float32"), "labels": labels}
