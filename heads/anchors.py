"""SSDLite's anchors: the pyramid levels it predicts on and the boxes at each.

SSDLite predicts on the stride-16 map (level 4), the stride-32 map (level
5) and on extra maps that halve down to 1x1. At every position of a level
`l` sit `num_scales * len(aspect_ratios)` anchors, of sizes
`anchor_size * 2**l * 2**(i / num_scales)` (sizes double per level, like
RetinaNet's; SSD's linear scale schedule cannot be expressed with
`keras_hub.layers.AnchorGenerator`).
"""

import math

import keras
from keras import ops
from keras_hub.layers import AnchorGenerator

from mnet_backbones.validation import check_image_size

DEFAULT_ASPECT_RATIOS = (0.5, 1.0, 2.0)


def ssdlite_levels(image_size, min_level=4):
    """Pyramid levels SSDLite predicts on: `min_level` up to the first 1x1 map.

    Example:
    ```python
    ssdlite_levels(320)  # [4, 5, 6, 7, 8, 9]: maps of 20, 10, 5, 3, 2, 1
    ```
    """
    height, width = check_image_size(image_size)
    max_level = max(min_level + 1, math.ceil(math.log2(max(height, width))))
    return list(range(min_level, max_level + 1))


def ssdlite_anchor_generator(image_size, num_scales=2, aspect_ratios=DEFAULT_ASPECT_RATIOS, anchor_size=3.0):
    """The `keras_hub.layers.AnchorGenerator` of an SSDLite detector on `image_size` inputs (xyxy).

    Example:
    ```python
    generator = ssdlite_anchor_generator(320)
    generator.num_base_anchors  # 6: 2 scales x 3 aspect ratios
    ```
    """
    levels = ssdlite_levels(image_size)
    return AnchorGenerator(
        "xyxy",
        min_level=levels[0],
        max_level=levels[-1],
        num_scales=num_scales,
        aspect_ratios=list(aspect_ratios),
        anchor_size=anchor_size,
        name="anchor_generator",
    )


def anchor_boxes(anchor_generator, images):
    """All anchors of `anchor_generator` for `images`' size: (N, 4) xyxy pixels, level after level.

    Within a level, anchors run row-major over the map, then anchor by
    anchor: the order of the SSDLite predictors' outputs.

    Example:
    ```python
    anchor_boxes(ssdlite_anchor_generator(64), np.zeros((1, 64, 64, 3))).shape  # (126, 4)
    ```
    """
    anchors = anchor_generator(images)
    anchors = ops.concatenate(list(anchors.values()), axis=0)
    return keras.utils.bounding_boxes.convert_format(
        anchors, source=anchor_generator.bounding_box_format, target="xyxy"
    )
