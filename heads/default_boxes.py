"""SSD's default boxes, as the SSD paper (Liu et al., 2016, section 2.2) and torchvision define them.

Map k of m gets the scale `s_k = min_ratio + (max_ratio - min_ratio) * k / (m - 1)`
(and `s_m = 1`), and at every cell centre, in this order: a square box of
side `s_k`, a square box of side `sqrt(s_k * s_(k+1))`, then for each aspect
ratio `a` the pair `(s_k * sqrt(a), s_k / sqrt(a))` and its transpose. Sizes
are fractions of the image; with `clip`, widths and heights are clipped to
[0, 1] before the boxes are placed (torchvision clips the size, not the box).

The boxes come in the order of torchvision's SSD outputs: map, then row,
then column, then box. They depend only on the map sizes and the image size,
so they are computed once, in numpy.
"""

import math

import numpy as np

from mnet_backbones.validation import check_image_size


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
