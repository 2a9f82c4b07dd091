"""Detection targets checked (and cleaned) before training (numpy).

`clean_detection_targets` (`SSDLiteObjectDetector`, and the COCO loader's
box checks): boxes that cannot be trained on as given (no area, outside the
image, far past its edge) are clipped or dropped, and never silently: each
call that drops or clips any warns with the counts and an example, since such
boxes most often mean a wrong box format (xywh data declared xyxy, or the
reverse). `check_background_targets` (`SSDLite320ObjectDetector`, whose class
0 is the background) checks only: what torchvision's SSD cannot train on is a
ValueError.
"""

import warnings

import keras
import numpy as np

from mnet_backbones.validation import check_image_size

bounding_boxes = keras.utils.bounding_boxes

# Pixels a box may reach past its image before clipping it counts as a
# problem: exports round box edges, and COCO's own boxes overshoot by less.
CLIP_TOLERANCE = 1.0
PROBLEMS = {
    "no_area": "with no area (x1 <= x0 or y1 <= y0), dropped",
    "outside": "outside their image, dropped",
    "clipped": f"reaching more than {CLIP_TOLERANCE:g} pixel past their image, clipped",
}


class BoxFormatWarning(UserWarning):
    """Boxes were dropped or clipped while loading; the counts and an example are in the message."""


def box_problems(xyxy, height, width):
    """Which boxes cannot be trained on as given, and the boxes clipped to the image.

    `xyxy` (N, 4) pixels, `height`/`width` scalars or (N,) per box. Returns
    `(problems, clipped)`: `problems` maps each key of `PROBLEMS` to an (N,)
    bool array (a box has at most one), `clipped` the boxes clipped to the
    image.

    Example:
    ```python
    problems, clipped = box_problems(np.array([[5., 5, 2, 9], [-9, 0, 4, 4]]), 10, 10)
    problems["no_area"]  # [True, False]; problems["clipped"]: [False, True]
    ```
    """
    xyxy = np.asarray(xyxy, dtype="float64").reshape(-1, 4)
    height = np.broadcast_to(np.asarray(height, dtype="float64"), xyxy.shape[:1])
    width = np.broadcast_to(np.asarray(width, dtype="float64"), xyxy.shape[:1])
    limit = np.stack([width, height, width, height], axis=-1)
    clipped = np.clip(xyxy, 0.0, limit)
    no_area = (xyxy[:, 2] <= xyxy[:, 0]) | (xyxy[:, 3] <= xyxy[:, 1])
    outside = ~no_area & ((clipped[:, 2] <= clipped[:, 0]) | (clipped[:, 3] <= clipped[:, 1]))
    overshoot = np.maximum(-xyxy[:, :2], xyxy[:, 2:] - limit[:, 2:]).max(axis=-1)
    far = ~no_area & ~outside & (overshoot > CLIP_TOLERANCE)
    return {"no_area": no_area, "outside": outside, "clipped": far}, clipped


def box_problem_message(problems, total, describe, where, hint):
    """One message with the count of each problem and its first example, or None if there is none.

    `describe(i)` names box `i` (its file, image, annotation and values);
    `where` says which boxes (a file name, "the targets"); `hint` ends the
    message.
    """
    parts = []
    for key, text in PROBLEMS.items():
        indices = np.flatnonzero(problems[key])
        if indices.size:
            parts.append(f"{indices.size} {text} (e.g. {describe(int(indices[0]))})")
    if not parts:
        return None
    return f"Of the {total} boxes of {where}, " + "; ".join(parts) + ". " + hint


def format_hint(bounding_box_format):
    return (
        f"The boxes were read as {bounding_box_format!r}: if that is not their format, "
        "pass the right `bounding_box_format`."
    )


def clean_detection_targets(targets, num_classes, image_size, bounding_box_format="xyxy"):
    """Checks and cleans padded detection targets (numpy).

    Boxes are clipped to the image; boxes with no area after clipping become
    padding (-1 box, label -1). A `BoxFormatWarning` gives the count of
    dropped boxes and of boxes clipped by more than a pixel, with an example
    of each. Labels must be -1 (padding) or in `[0, num_classes)`; a NaN or
    infinite coordinate of a box that is not padding is a ValueError.

    Example:
    ```python
    clean_detection_targets({"boxes": [[[-5, 10, 20, 90]]], "labels": [[0]]}, 3, 64)
    # boxes [[[0, 10, 20, 64]]], labels [[0]] (and a warning: clipped by 26 pixels)
    ```
    """
    height, width = check_image_size(image_size, minimum=1)
    boxes = np.array(keras.ops.convert_to_numpy(targets["boxes"]), dtype="float32")
    labels = np.array(keras.ops.convert_to_numpy(targets["labels"]))
    if boxes.shape[-1:] != (4,) or boxes.shape[:-1] != labels.shape:
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
    not_finite = ~padding & ~np.all(np.isfinite(boxes), axis=-1)
    if np.any(not_finite):
        index = tuple(int(i) for i in np.argwhere(not_finite)[0])
        raise ValueError(
            f"{int(not_finite.sum())} box(es) have NaN or infinite coordinates, e.g. boxes{list(index)} = "
            f"{boxes[index].tolist()} (label {int(labels[index])}); coordinates must be finite pixels."
        )
    xyxy = np.array(
        bounding_boxes.convert_format(boxes, source=bounding_box_format, target="xyxy", height=height, width=width)
    )
    real = np.flatnonzero(~padding.reshape(-1))
    flat = xyxy.reshape(-1, 4)
    problems, clipped = box_problems(flat[real], height, width)
    flat[real] = clipped
    degenerate = (xyxy[..., 2] <= xyxy[..., 0]) | (xyxy[..., 3] <= xyxy[..., 1])

    def describe(i):
        index = list(np.unravel_index(real[i], padding.shape))
        return f"boxes{[int(k) for k in index]} = {boxes[tuple(index)].tolist()}"

    message = box_problem_message(
        problems, real.size, describe, f"the targets ({width}x{height} images)", format_hint(bounding_box_format)
    )
    if message:
        warnings.warn(message, BoxFormatWarning, stacklevel=2)
    drop = padding | degenerate
    boxes = np.array(
        bounding_boxes.convert_format(xyxy, source="xyxy", target=bounding_box_format, height=height, width=width)
    )
    boxes[drop] = -1.0
    labels[drop] = -1
    return {"boxes": boxes.astype("float32"), "labels": labels}


def check_background_targets(targets, num_classes, image_size, bounding_box_format="xyxy"):
    """Checks padded targets of a detector whose class 0 is the background (`SSDLite320ObjectDetector`).

    Labels must be 1..num_classes-1 or -1 (padding); real boxes finite and
    with positive width and height, as torchvision's SSD requires: anything
    else is a ValueError naming it (nothing is clipped or dropped). Returns
    `{"boxes": float32, "labels": int32}` numpy arrays.

    Example:
    ```python
    check_background_targets({"boxes": [[[10, 10, 60, 60]]], "labels": [[1]]}, 4, 320)
    ```
    """
    height, width = check_image_size(image_size, minimum=1)
    labels = np.asarray(targets["labels"])
    boxes = np.asarray(targets["boxes"], "float32")
    if boxes.shape[:-1] != labels.shape or boxes.shape[-1:] != (4,):
        raise ValueError(f"Targets: boxes {boxes.shape} and labels {labels.shape} must be (B, M, 4) and (B, M).")
    real = labels >= 0
    bad = labels[real & ((labels < 1) | (labels >= num_classes))]
    if bad.size:
        raise ValueError(
            f"Target label {int(bad[0])} is out of range: labels are 1..{num_classes - 1} "
            "(0 is the background) or -1 for padding."
        )
    if not np.all(np.isfinite(boxes[real])):
        raise ValueError("Target boxes hold NaN or infinite coordinates.")
    xyxy = keras.ops.convert_to_numpy(
        bounding_boxes.convert_format(boxes, source=bounding_box_format, target="xyxy", height=height, width=width)
    )
    degenerate = real & ((xyxy[..., 2] <= xyxy[..., 0]) | (xyxy[..., 3] <= xyxy[..., 1]))
    if degenerate.any():
        image, box = np.argwhere(degenerate)[0]
        raise ValueError(
            f"Target box {xyxy[image, box].tolist()} (image {image}, box {box}) has no area: all boxes "
            "need positive width and height, as torchvision's SSD requires."
        )
    return {"boxes": boxes, "labels": labels.astype("int32")}
