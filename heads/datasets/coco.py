"""COCO-format detection data as a `tf.data.Dataset` that `fit` takes directly."""

import json
import os

import keras
import numpy as np
import tensorflow as tf

from heads.datasets._random import split, with_seeds
from mnet_backbones.validation import check_image_size, check_positive_int


def read_coco(annotation_file, image_dir):
    """Reads a COCO detection file into per-image records (numpy, original pixels).

    Returns `(records, categories)`: `records` is a list, one dict per image
    in file order, with `image_id`, `path`, `height`, `width`, `boxes`
    (N, 4) xyxy, `labels` (N,) contiguous 0..K-1; `categories` is the file's
    category list, whose order defines the labels. Crowd annotations are
    skipped; boxes are clipped to the image and degenerate ones dropped.
    A missing image file raises `FileNotFoundError` naming it.

    Example:
    ```python
    records, categories = read_coco("shapes/annotations.json", "shapes/images")
    records[0]["boxes"], [c["name"] for c in categories]
    ```
    """
    with open(annotation_file, encoding="utf-8") as f:
        coco = json.load(f)
    for key in ("images", "annotations", "categories"):
        if key not in coco:
            raise ValueError(f"{annotation_file} is not a COCO detection file: it has no {key!r} list.")
    categories = list(coco["categories"])
    label_of = {category["id"]: label for label, category in enumerate(categories)}
    records = []
    by_image = {}
    for image in coco["images"]:
        path = os.path.join(image_dir, image["file_name"])
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"Image {image['file_name']!r} (id {image['id']}) of {annotation_file} not found: {path}"
            )
        record = {
            "image_id": image["id"],
            "path": path,
            "height": int(image["height"]),
            "width": int(image["width"]),
            "boxes": [],
            "labels": [],
        }
        by_image[image["id"]] = record
        records.append(record)
    for annotation in coco["annotations"]:
        if annotation.get("iscrowd", 0):
            continue
        if annotation["category_id"] not in label_of:
            raise ValueError(
                f"Annotation {annotation.get('id')} has category_id {annotation['category_id']}, "
                f"which is not among the file's categories {sorted(label_of)}."
            )
        record = by_image.get(annotation["image_id"])
        if record is None:
            raise ValueError(f"Annotation {annotation.get('id')} refers to unknown image_id {annotation['image_id']}.")
        x, y, w, h = (float(v) for v in annotation["bbox"])
        x0, y0 = np.clip(x, 0, record["width"]), np.clip(y, 0, record["height"])
        x1, y1 = np.clip(x + w, 0, record["width"]), np.clip(y + h, 0, record["height"])
        if x1 <= x0 or y1 <= y0:
            continue
        record["boxes"].append((x0, y0, x1, y1))
        record["labels"].append(label_of[annotation["category_id"]])
    for record in records:
        record["boxes"] = np.array(record["boxes"], "float32").reshape(-1, 4)
        record["labels"] = np.array(record["labels"], "int32")
    return records, categories


def _convert_from_xyxy(boxes, bounding_box_format, height, width):
    if bounding_box_format == "xyxy":
        return boxes
    valid = tf.reduce_max(boxes, axis=-1, keepdims=True) >= 0
    converted = keras.utils.bounding_boxes.convert_format(
        boxes, source="xyxy", target=bounding_box_format, height=height, width=width
    )
    return tf.where(valid, converted, -1.0)


def _scale_jitter_and_flip(image, boxes, labels, height, width, scale_range, seed):
    """Random zoom (resize by s, then random crop/pad back) and horizontal flip; `seed` a stateless seed."""
    scale_seed, y_seed, x_seed, flip_seed = split(seed, 4)
    scale = tf.random.stateless_uniform((), scale_seed, *scale_range)
    new_height = tf.cast(tf.round(scale * height), tf.int32)
    new_width = tf.cast(tf.round(scale * width), tf.int32)
    image = tf.image.resize(image, (new_height, new_width))

    # Per axis: a zoomed-in image is cropped at a random offset, a zoomed-out
    # one pasted at a random place on a black canvas; `shift` moves the boxes.
    def axis_shift(new_side, side, axis_seed):
        slack = tf.abs(new_side - side)
        offset = tf.cast(tf.random.stateless_uniform((), axis_seed) * tf.cast(slack + 1, tf.float32), tf.int32)
        offset = tf.minimum(offset, slack)
        return tf.where(new_side >= side, -offset, offset)

    shift_y, shift_x = axis_shift(new_height, height, y_seed), axis_shift(new_width, width, x_seed)
    image = tf.image.pad_to_bounding_box(
        image,
        tf.maximum(shift_y, 0),
        tf.maximum(shift_x, 0),
        tf.maximum(new_height, height),
        tf.maximum(new_width, width),
    )
    image = tf.image.crop_to_bounding_box(image, tf.maximum(-shift_y, 0), tf.maximum(-shift_x, 0), height, width)
    shift = tf.cast(tf.stack([shift_x, shift_y, shift_x, shift_y]), tf.float32)
    padding = boxes[:, :1] < 0
    boxes = boxes * scale + shift
    limit = tf.cast(tf.stack([width, height, width, height]), tf.float32)
    boxes = tf.clip_by_value(boxes, 0.0, limit)
    flip = tf.random.stateless_uniform((), flip_seed) < 0.5
    image = tf.where(flip, image[:, ::-1, :], image)
    flipped = tf.stack([width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]], axis=-1)
    boxes = tf.where(flip, flipped, boxes)
    keep = tf.logical_and(boxes[:, 2] - boxes[:, 0] >= 2.0, boxes[:, 3] - boxes[:, 1] >= 2.0)
    keep = tf.logical_and(keep, tf.logical_and(labels >= 0, tf.logical_not(padding[:, 0])))
    boxes = tf.where(keep[:, None], boxes, -1.0)
    labels = tf.where(keep, labels, -1)
    return image, boxes, labels


def load_coco(
    annotation_file,
    image_dir,
    image_size,
    batch_size,
    bounding_box_format="xyxy",
    shuffle=False,
    augment=False,
    max_boxes=None,
    scale_range=(0.75, 1.25),
    seed=None,
):
    """A COCO detection set as batches of `(images, {"boxes", "labels"})`.

    Images are decoded as RGB float32 in 0..255 and resized to `image_size`
    (no aspect-ratio padding: original box coordinates are recovered by
    scaling x by `width / image_width` and y by `height / image_height`, see
    `read_coco`). Boxes are in `bounding_box_format` pixels of the resized
    image, padded with -1 (labels with -1) to `max_boxes` (default: the most
    boxes of any image); images without objects are kept. COCO category ids
    map to labels 0..K-1 in the order of the file's `categories`. With
    `augment`, each image gets a random scale jitter (zoom in `scale_range`,
    random crop or pad) and a random horizontal flip; boxes follow, are
    clipped, and those left thinner than 2 pixels are dropped.

    Example:
    ```python
    import heads
    files = heads.datasets.make_shapes("/tmp/shapes", num_images=16, image_size=128)
    dataset = heads.datasets.load_coco(files["annotations"], files["images"],
                                       image_size=128, batch_size=4, shuffle=True, augment=True)
    detector.fit(dataset, epochs=1)
    ```
    """
    height, width = check_image_size(image_size, minimum=1)
    batch_size = check_positive_int("batch_size", batch_size)
    records, _ = read_coco(annotation_file, image_dir)
    if not records:
        raise ValueError(f"{annotation_file} lists no images.")
    most = max(len(record["labels"]) for record in records)
    max_boxes = max(most, 1) if max_boxes is None else int(max_boxes)
    boxes = np.full((len(records), max_boxes, 4), -1.0, "float32")
    labels = np.full((len(records), max_boxes), -1, "int32")
    for i, record in enumerate(records):
        count = min(len(record["labels"]), max_boxes)
        scale = np.array([width / record["width"], height / record["height"]] * 2, "float32")
        boxes[i, :count] = record["boxes"][:count] * scale
        labels[i, :count] = record["labels"][:count]
    paths = [record["path"] for record in records]

    def load(path, image_boxes, image_labels, element_seed=None):
        image = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
        image = tf.image.resize(tf.cast(image, tf.float32), (height, width))
        if augment:
            image, image_boxes, image_labels = _scale_jitter_and_flip(
                image, image_boxes, image_labels, height, width, scale_range, element_seed
            )
        image = tf.ensure_shape(image, (height, width, 3))
        image_boxes = _convert_from_xyxy(image_boxes, bounding_box_format, height, width)
        return image, {"boxes": image_boxes, "labels": image_labels}

    dataset = tf.data.Dataset.from_tensor_slices((paths, boxes, labels))
    if shuffle:
        dataset = dataset.shuffle(len(records), seed=seed, reshuffle_each_iteration=True)
    if augment:
        dataset = with_seeds(dataset, seed).map(lambda element, element_seed: load(*element, element_seed),
                                                num_parallel_calls=tf.data.AUTOTUNE)  # fmt: skip
    else:
        dataset = dataset.map(load, num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)
