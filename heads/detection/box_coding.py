"""SSD box coding: boxes as centre/size deltas against anchors, and back.

A box is coded against its anchor as SSD codes it (Liu et al., 2016): the
centre offset in anchor widths and heights, then the log of the size ratio,
each divided by its entry of the box variance. Anchors and boxes are xyxy
pixels. Both functions are written in `keras.ops`, so they run on any
backend, inside a model or on numpy arrays (`heads.detection.postprocess`,
which the LiteRT export runs too).
"""

import keras
from keras import ops

from mnet_backbones.validation import check_image_size

bounding_boxes = keras.utils.bounding_boxes

# SSD's box-delta scaling: centre offsets / 0.1, log sizes / 0.2.
SSD_BOX_VARIANCE = (0.1, 0.1, 0.2, 0.2)


def encode_boxes(anchors, boxes, box_variance=SSD_BOX_VARIANCE):
    """xyxy `boxes` (..., N, 4) as deltas against xyxy `anchors` (N, 4), divided by `box_variance`.

    Example:
    ```python
    anchors = np.array([[0, 0, 32, 32]], "float32")
    encode_boxes(anchors, np.array([[[8, 0, 40, 32]]], "float32"))  # [[[2.5, 0, 0, 0]]]
    ```
    """
    return bounding_boxes.encode_box_to_deltas(
        anchors=anchors,
        boxes=boxes,
        anchor_format="xyxy",
        box_format="xyxy",
        encoding_format="center_xywh",
        variance=box_variance,
    )


def decode_boxes(anchors, box_deltas, box_variance, image_size):
    """Deltas (..., N, 4) against xyxy `anchors` (N, 4) to xyxy pixel boxes clipped to the image.

    The inverse of `encode_boxes`, then each corner clipped to
    `image_size` (an int or (height, width)). Returns a tensor of the
    backend; `keras.ops.convert_to_numpy` turns it into numpy.

    Example:
    ```python
    anchors = np.array([[0, 0, 32, 32], [40, 40, 72, 72]], "float32")
    deltas = np.array([[[2.5, 0, 0, 0], [0, 0, 0, 0]]], "float32")
    decode_boxes(anchors, deltas, SSD_BOX_VARIANCE, 64)  # [[[8, 0, 40, 32], [40, 40, 64, 64]]]
    ```
    """
    height, width = check_image_size(image_size, minimum=1)
    boxes = bounding_boxes.decode_deltas_to_boxes(
        anchors=ops.cast(anchors, "float32"),
        boxes_delta=ops.cast(box_deltas, "float32"),
        anchor_format="xyxy",
        box_format="xyxy",
        encoded_format="center_xywh",
        variance=box_variance,
    )
    x0, y0, x1, y1 = ops.unstack(boxes, 4, axis=-1)
    return ops.stack(
        [ops.clip(x0, 0.0, width), ops.clip(y0, 0.0, height), ops.clip(x1, 0.0, width), ops.clip(y1, 0.0, height)],
        axis=-1,
    )


def check_box_format(bounding_box_format):
    """A ValueError now, at construction, for a format `keras.utils.bounding_boxes` does not know."""
    try:
        bounding_boxes.convert_format(ops.zeros((1, 4)), source="xyxy", target=bounding_box_format, height=1, width=1)
    except ValueError as error:
        raise ValueError(f"bounding_box_format={bounding_box_format!r} is not a box format: {error}") from None
