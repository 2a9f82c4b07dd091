"""A synthetic COCO-format dataset of coloured shapes, for demos and tests.

The same files a real user has (PNG images, a COCO `annotations.json`,
VOC-style class masks), so the demos and tests go through the real loaders.
"""

import json
import os

import numpy as np
import tensorflow as tf

from mnet_backbones.validation import check_image_size, check_positive_int

CATEGORIES = ({"id": 1, "name": "circle"}, {"id": 2, "name": "square"}, {"id": 3, "name": "triangle"})
MAX_SHAPES = 4
SIZE_RANGE = (0.08, 0.6)  # shape size as a fraction of the shorter image side
MIN_BOX_SIDE = 4  # pixels; slivers left visible by occlusion are not worth a box


def _background(rng, height, width):
    """A smooth colour gradient with pixel noise, so shapes are not on a flat field."""
    corners = rng.uniform(0, 255, size=(2, 2, 3))
    ys = np.linspace(0.0, 1.0, height)[:, None, None]
    xs = np.linspace(0.0, 1.0, width)[None, :, None]
    top = corners[0, 0] * (1 - xs) + corners[0, 1] * xs
    bottom = corners[1, 0] * (1 - xs) + corners[1, 1] * xs
    image = top * (1 - ys) + bottom * ys
    return image + rng.normal(0.0, 12.0, size=(height, width, 3))


def _shape_mask(category, height, width, center, radius):
    """Boolean mask of one filled shape: circle, axis-aligned square, or upright triangle."""
    ys, xs = np.mgrid[0:height, 0:width]
    dy, dx = ys - center[0], xs - center[1]
    if category == 1:
        return dy**2 + dx**2 <= radius**2
    if category == 2:
        return (np.abs(dy) <= radius) & (np.abs(dx) <= radius)
    # Apex at the top, base at the bottom: inside when |dx| is within the half-width at that row.
    relative_height = (dy + radius) / (2 * radius)
    return (relative_height >= 0) & (relative_height <= 1) & (np.abs(dx) <= radius * relative_height)


def _write_png(path, array):
    tf.io.write_file(path, tf.io.encode_png(array))


def make_shapes(out_dir, num_images, image_size, seed=0):
    """Write a synthetic detection and segmentation dataset in COCO format.

    Each image shows one to four filled circles, squares and triangles
    (COCO category ids 1, 2, 3) on a noisy gradient; shapes may overlap and
    touch the border. Files written under `out_dir`:

    - `images/<id:06d>.png`: RGB images of `image_size`.
    - `masks/<id:06d>.png`: single-channel class masks, 0 = background,
      otherwise the category id of the shape on top at that pixel.
    - `annotations.json`: COCO `images`, `annotations` (the bounding box and
      area of each shape's visible part; shapes hidden down to a sliver
      narrower than 4 pixels are left out) and `categories`.

    Args:
        out_dir: folder to write into (created if needed).
        num_images: number of images, at least 1.
        image_size: an int, or a `(height, width)` pair, each at least 16.
        seed: the random seed; the same seed writes the same files.

    Returns:
        A dict with the paths `"annotations"`, `"images"` and `"masks"`.

    Example:

    ```python
    paths = heads.datasets.make_shapes("/tmp/shapes/train", 200, 256, seed=0)
    dataset = heads.datasets.load_coco(paths["annotations"], paths["images"], 256, 8)
    ```
    """
    num_images = check_positive_int("num_images", num_images)
    height, width = check_image_size(image_size, minimum=16)
    paths = {
        "annotations": os.path.join(out_dir, "annotations.json"),
        "images": os.path.join(out_dir, "images"),
        "masks": os.path.join(out_dir, "masks"),
    }
    os.makedirs(paths["images"], exist_ok=True)
    os.makedirs(paths["masks"], exist_ok=True)
    rng = np.random.default_rng(seed)
    images, annotations = [], []
    shorter = min(height, width)
    for image_id in range(1, num_images + 1):
        image = _background(rng, height, width)
        instances = np.zeros((height, width), np.int32)  # 0 = background, k = k-th shape
        categories = []
        for instance in range(1, rng.integers(1, MAX_SHAPES + 1) + 1):
            category = int(rng.integers(1, len(CATEGORIES) + 1))
            radius = rng.uniform(*SIZE_RANGE) * shorter / 2
            center = (rng.uniform(0, height), rng.uniform(0, width))
            mask = _shape_mask(category, height, width, center, radius)
            # A colour far from the local background keeps every shape visible.
            background_colour = image[mask].mean(axis=0) if mask.any() else 128.0
            colour = np.where(background_colour > 127, rng.uniform(0, 70, 3), rng.uniform(185, 255, 3))
            image[mask] = colour
            instances[mask] = instance
            categories.append(category)
        file_name = f"{image_id:06d}.png"
        pixels = np.clip(image, 0, 255).astype(np.uint8)
        _write_png(os.path.join(paths["images"], file_name), pixels)
        class_mask = np.zeros((height, width, 1), np.uint8)
        for instance, category in enumerate(categories, start=1):
            visible = instances == instance
            if not visible.any():
                continue
            class_mask[visible, 0] = category
            ys, xs = np.nonzero(visible)
            x0, y0, x1, y1 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
            if min(x1 - x0, y1 - y0) < MIN_BOX_SIDE:
                continue
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": category,
                    "bbox": [float(x0), float(y0), float(x1 - x0), float(y1 - y0)],
                    "area": float(visible.sum()),
                    "iscrowd": 0,
                }
            )
        _write_png(os.path.join(paths["masks"], file_name), class_mask)
        images.append({"id": image_id, "file_name": file_name, "height": height, "width": width})
    coco = {"images": images, "annotations": annotations, "categories": list(CATEGORIES)}
    with open(paths["annotations"], "w") as f:
        json.dump(coco, f)
    return paths
