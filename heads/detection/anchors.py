"""The anchors of both SSDLite heads: where each predictor's boxes sit on the image.

- `SSDLiteObjectDetector` (`heads.detection.ssdlite`) predicts on the
  stride-16 map (level 4), the stride-32 map (level 5) and on extra maps
  that halve down to 1x1. At every position of a level `l` sit
  `num_scales * len(aspect_ratios)` anchors, of sizes
  `anchor_size * 2**l * 2**(i / num_scales)` (sizes double per level, like
  RetinaNet's; SSD's linear scale schedule cannot be expressed with
  `keras_hub.layers.AnchorGenerator`): `ssdlite_levels`,
  `ssdlite_anchor_generator`, `anchor_boxes`.
- `SSDLite320ObjectDetector` (`heads.detection.ssdlite320`) uses SSD's
  default boxes, as the SSD paper (Liu et al., 2016, section 2.2) and
  torchvision define them: `default_boxes`. Map k of m gets the scale
  `s_k = min_ratio + (max_ratio - min_ratio) * k / (m - 1)` (and `s_m = 1`),
  and at every cell centre, in this order: a square box of side `s_k`, a
  square box of side `sqrt(s_k * s_(k+1))`, then for each aspect ratio `a`
  the pair `(s_k * sqrt(a), s_k / sqrt(a))` and its transpose. Sizes are
  fractions of the image; with `clip`, widths and heights are clipped to
  [0, 1] before the boxes are placed (torchvision clips the size, not the
  box). The boxes come in the order of torchvision's SSD outputs: map, then
  row, then column, then box. They depend only on the map sizes and the
  image size, so they are computed once, in numpy.
"""

import math

import keras
import numpy as np
from keras import ops
from keras_hub.layers import AnchorGenerator

from mnet_backbones.validation import check_image_size

DEFAULT_ASPECT_RATIOS = (0.5, 1.0, 2.0)


# --- SSDLiteObjectDetector: keras-hub's AnchorGenerator on pyramid levels ----------
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


# --- SSDLite320ObjectDetector: SSD's default boxes (numpy) --------------------------
def default_box_scales(num_maps, min_ratio=0.2, max_ratio=0.95):
    """The `num_maps + 1` scales `s_k`, evenly spaced from `min_ratio` to `max_ratio`, then 1.

    Example:
    ```python
    default_box_scales(6)  # [0.2, 0.35, 0.5, 0.65, 0.8, 0.95, 1.0]
    ```
    """
    if num_maps < 1:
        raise ValueError(f"`num_maps` must be at least 1, got {num_maps!r}.")
    if not 0.0 < min_ratio <= max_ratio:
        raise ValueError(f"Need 0 < min_ratio <= max_ratio, got min_ratio={min_ratio!r}, max_ratio={max_ratio!r}.")
    if num_maps == 1:
        return [float(min_ratio), float(max_ratio)]
    step = (max_ratio - min_ratio) / (num_maps - 1.0)
    return [min_ratio + step * k for k in range(num_maps)] + [1.0]


def box_sizes(scales, aspect_ratios):
    """Per map, the (width, height) fractions of its boxes, in the order the predictors emit them.

    Example:
    ```python
    box_sizes(default_box_scales(6), [[2, 3]] * 6)[0].shape  # (6, 2)
    ```
    """
    sizes = []
    for k, ratios in enumerate(aspect_ratios):
        s_k = scales[k]
        s_between = math.sqrt(scales[k] * scales[k + 1])
        pairs = [(s_k, s_k), (s_between, s_between)]
        for ratio in ratios:
            root = math.sqrt(ratio)
            pairs += [(s_k * root, s_k / root), (s_k / root, s_k * root)]
        sizes.append(np.array(pairs, "float32"))
    return sizes


def boxes_per_position(aspect_ratios):
    """How many boxes each map puts at a position: 2 squares + 2 per aspect ratio.

    Example:
    ```python
    boxes_per_position([[2, 3]] * 6)  # [6, 6, 6, 6, 6, 6]
    ```
    """
    return [2 + 2 * len(ratios) for ratios in aspect_ratios]


def default_boxes(map_sizes, image_size, aspect_ratios, min_ratio=0.2, max_ratio=0.95, clip=True):
    """All default boxes: (N, 4) xyxy pixels of an `image_size` input, map by map, row-major, box last.

    Args:
        map_sizes: (height, width) of each prediction map, largest first.
        image_size: int or (height, width) of the network's input.
        aspect_ratios: per map, the aspect ratios besides 1 (each adds two boxes).
        min_ratio, max_ratio: the smallest and largest scale, as fractions
            of the image.
        clip: clip each box's width and height to [0, 1] of the image.

    Example:
    ```python
    boxes = default_boxes([(20, 20), (10, 10), (5, 5), (3, 3), (2, 2), (1, 1)], 320, [[2, 3]] * 6)
    boxes.shape  # (3234, 4): torchvision's ssdlite320_mobilenet_v3_large
    ```
    """
    height, width = check_image_size(image_size, minimum=1)
    if len(map_sizes) != len(aspect_ratios):
        raise ValueError(
            f"Got {len(map_sizes)} map sizes but {len(aspect_ratios)} lists of aspect ratios: one list per map."
        )
    scales = default_box_scales(len(map_sizes), min_ratio, max_ratio)
    boxes = []
    for (rows, cols), sizes in zip(map_sizes, box_sizes(scales, aspect_ratios)):
        # Centres in float32, as torchvision computes them, so the boxes match to the last bit or two.
        centre_x = (np.arange(cols, dtype="float32") + np.float32(0.5)) / np.float32(cols)
        centre_y = (np.arange(rows, dtype="float32") + np.float32(0.5)) / np.float32(rows)
        grid_y, grid_x = np.meshgrid(centre_y, centre_x, indexing="ij")
        centres = np.stack([grid_x.reshape(-1), grid_y.reshape(-1)], axis=-1)  # (rows * cols, 2)
        centres = np.repeat(centres, len(sizes), axis=0)
        if clip:
            sizes = np.clip(sizes, 0.0, 1.0)
        sizes = np.tile(sizes, (rows * cols, 1))
        scale = np.array([width, height], "float32")
        boxes.append(np.concatenate([(centres - 0.5 * sizes) * scale, (centres + 0.5 * sizes) * scale], axis=-1))
    return np.concatenate(boxes, axis=0).astype("float32")
