"""COCO-format detection data as a `tf.data.Dataset` that `fit` takes directly."""

import json
import os
import warnings

import keras
import numpy as np
import tensorflow as tf

from heads.datasets._random import split_seed, with_seeds
from heads.datasets.images import QUARTER_TURNS, image_tensor, inspect_image
from heads.targets import BoxFormatWarning, box_problem_message, box_problems
from mnet_backbones.validation import check_image_size, check_positive_int

# More boxes than this fraction dropped or clipped: the file's boxes are not
# COCO boxes (most often [x0, y0, x1, y1] written where [x, y, w, h] belongs).
BAD_BOX_LIMIT = 0.5


def read_coco_json(annotation_file):
    try:
        with open(annotation_file, encoding="utf-8") as f:
            coco = json.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(f"COCO annotation file {annotation_file!r} not found.") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{annotation_file!r} is not a JSON file: {error}") from error
    if not isinstance(coco, dict):
        raise ValueError(f"{annotation_file!r} is not a COCO detection file: its JSON is a {type(coco).__name__}.")
    for key in ("images", "annotations", "categories"):
        if not isinstance(coco.get(key), list):
            raise ValueError(f"{annotation_file!r} is not a COCO detection file: it has no {key!r} list.")
    for key in ("images", "annotations", "categories"):
        for index, entry in enumerate(coco[key]):
            if not isinstance(entry, dict):
                raise ValueError(f"{annotation_file!r}: {key}[{index}] is a {type(entry).__name__}, not an object.")
    return coco


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _checked_size(image, key, annotation_file):
    value = image[key]
    if not _is_number(value) or value != int(value) or value < 1:
        raise ValueError(
            f"Image {image['file_name']!r} (id {image['id']}) of {annotation_file!r} has {key} {value!r}; "
            "it must be a positive integer (pixels), or absent."
        )
    return int(value)


def _size_mismatch(image, info, path, annotation_file, json_height, json_width):
    message = (
        f"Image {image['file_name']!r} (id {image['id']}) of {annotation_file!r} has width {json_width} and height "
        f"{json_height} in the JSON, but the file {path!r} is {info.width}x{info.height} (width x height"
    )
    if info.orientation in QUARTER_TURNS:
        message += f", as displayed: its EXIF orientation {info.orientation} turns the stored image a quarter"
    message += ")."
    if (json_height, json_width) == (info.width, info.height):
        message += " Width and height are swapped"
        if info.orientation in QUARTER_TURNS:
            message += (
                ": the JSON gives the size as stored, before the EXIF orientation, but boxes are read on the "
                "image as displayed (as labelling tools draw them). Check on which view the boxes were drawn"
            )
        message += "."
    return ValueError(message + " The boxes cannot be placed on the file; fix the JSON or the file.")


def checked_bbox(annotation, describe, annotation_file):
    if "bbox" not in annotation:
        raise ValueError(f"{describe} of {annotation_file!r} has no 'bbox'.")
    bbox = annotation["bbox"]
    if not isinstance(bbox, (list, tuple)) or len(bbox) != 4 or not all(_is_number(v) for v in bbox):
        raise ValueError(
            f"{describe} of {annotation_file!r} has bbox {bbox!r}; a COCO bbox is [x, y, width, height], "
            "four numbers in pixels."
        )
    values = np.array(bbox, dtype="float64")
    if not np.all(np.isfinite(values)):
        raise ValueError(
            f"{describe} of {annotation_file!r} has bbox {json.dumps(bbox)}, with a NaN or infinite coordinate; "
            "coordinates must be finite numbers (pixels)."
        )
    return values


def read_coco(annotation_file, image_dir, num_classes=None):
    """Reads a COCO detection file into per-image records (numpy, original pixels).

    Returns `(records, categories)`: `records` is a list, one dict per image
    in file order, with `annotation_file`, `image_id`, `file_name`, `path`,
    `height`, `width` (the image as displayed, after its EXIF orientation),
    `boxes` (N, 4) xyxy and `labels` (N,) contiguous 0..K-1; `categories`
    is the file's category list, whose order defines the labels (ids need
    not be contiguous). Crowd annotations (`iscrowd` 1) are skipped;
    `iscrowd` and `area` may be absent.

    Everything is checked before anything is returned, every error naming
    the file: each image file exists, is a complete image and has the
    JSON's `width` and `height` (when given) as displayed (`OSError`,
    `FileNotFoundError`, `ValueError`); image and category ids are unique;
    every annotation has a known image and category and a bbox of four
    finite numbers; with `num_classes`, no annotation has a category whose
    label is `num_classes` or more (`ValueError`). Boxes are clipped to the
    image and those without area inside it dropped, with a
    `heads.targets.BoxFormatWarning` giving the counts and an example; if
    more than half of the boxes are dropped or clipped by more than a pixel,
    the file's boxes are not COCO's [x, y, width, height] pixels and that is
    a `ValueError`.

    Example:
    ```python
    records, categories = read_coco("shapes/annotations.json", "shapes/images")
    records[0]["boxes"], [c["name"] for c in categories]
    ```
    """
    annotation_file = os.fspath(annotation_file)
    coco = read_coco_json(annotation_file)
    categories = list(coco["categories"])
    label_of = {}
    for index, category in enumerate(categories):
        if "id" not in category:
            raise ValueError(f"{annotation_file!r}: categories[{index}] has no 'id'.")
        if category["id"] in label_of:
            raise ValueError(f"{annotation_file!r} lists category id {category['id']!r} twice.")
        label_of[category["id"]] = index
    records = []
    by_image = {}
    for index, image in enumerate(coco["images"]):
        for key in ("id", "file_name"):
            if key not in image:
                raise ValueError(f"{annotation_file!r}: images[{index}] has no {key!r}.")
        if image["id"] in by_image:
            raise ValueError(
                f"{annotation_file!r} lists image id {image['id']!r} twice: for "
                f"{by_image[image['id']]['file_name']!r} and {image['file_name']!r}; "
                "image ids must be unique, or boxes land on the wrong image."
            )
        path = os.path.join(image_dir, image["file_name"])
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"Image {image['file_name']!r} (id {image['id']}) of {annotation_file} not found: {path}"
            )
        try:
            info = inspect_image(path)
        except OSError as error:
            raise OSError(f"{error} (image id {image['id']} of {annotation_file!r})") from error
        json_height = _checked_size(image, "height", annotation_file) if "height" in image else info.height
        json_width = _checked_size(image, "width", annotation_file) if "width" in image else info.width
        if (json_height, json_width) != (info.height, info.width):
            raise _size_mismatch(image, info, path, annotation_file, json_height, json_width)
        record = {
            "annotation_file": annotation_file,
            "image_id": image["id"],
            "file_name": image["file_name"],
            "path": path,
            "height": info.height,
            "width": info.width,
            "boxes": [],
            "labels": [],
        }
        by_image[image["id"]] = record
        records.append(record)
    boxes, owners, labels, sources = [], [], [], []
    for index, annotation in enumerate(coco["annotations"]):
        describe = f"Annotation {annotation['id']!r}" if "id" in annotation else f"annotations[{index}]"
        for key in ("image_id", "category_id"):
            if key not in annotation:
                raise ValueError(f"{describe} of {annotation_file!r} has no {key!r}.")
        record = by_image.get(annotation["image_id"])
        if record is None:
            raise ValueError(
                f"{describe} of {annotation_file!r} refers to image_id {annotation['image_id']!r}, "
                "which is not in its 'images'."
            )
        describe += f" (image {record['file_name']!r}, id {record['image_id']!r})"
        bbox = checked_bbox(annotation, describe, annotation_file)
        if annotation.get("iscrowd", 0):
            continue
        if annotation["category_id"] not in label_of:
            raise ValueError(
                f"{describe} of {annotation_file!r} has category_id {annotation['category_id']!r}, "
                f"which is not among the file's categories {sorted(label_of, key=str)}."
            )
        label = label_of[annotation["category_id"]]
        if num_classes is not None and label >= num_classes:
            category = categories[label]
            raise ValueError(
                f"{describe} of {annotation_file!r} has category {category['id']!r} "
                f"({category.get('name', 'no name')!r}), listed at position {label} of the file's "
                f"{len(categories)} categories, so its label is {label}; num_classes={num_classes} allows "
                f"labels 0..{num_classes - 1}, the first {num_classes} categories."
            )
        x, y, w, h = bbox
        boxes.append((x, y, x + w, y + h))
        owners.append(record)
        labels.append(label)
        sources.append((describe, annotation["bbox"]))
    boxes = np.array(boxes, "float64").reshape(-1, 4)

    problems, clipped = box_problems(
        boxes, [record["height"] for record in owners], [record["width"] for record in owners]
    )
    message = box_problem_message(
        problems,
        len(boxes),
        lambda i: (
            f"{sources[i][0]}: bbox {json.dumps(sources[i][1])} in a {owners[i]['width']}x{owners[i]['height']} image"
        ),
        repr(annotation_file),
        "A COCO bbox is [x, y, width, height] in pixels of the image as displayed.",
    )
    if message:
        flagged = sum(int(flags.sum()) for flags in problems.values())
        if flagged > BAD_BOX_LIMIT * len(boxes):
            raise ValueError(
                f"{message} With {flagged} of {len(boxes)} boxes affected, these are not COCO boxes; "
                "convert them to [x, y, width, height] pixels."
            )
        warnings.warn(message, BoxFormatWarning, stacklevel=2)
    keep = ~(problems["no_area"] | problems["outside"])
    for box, record, label, kept in zip(clipped, owners, labels, keep):
        if kept:
            record["boxes"].append(box)
            record["labels"].append(label)
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
    scale_seed, y_seed, x_seed, flip_seed = split_seed(seed, 4)
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
    num_classes=None,
):
    """A COCO detection set as batches of `(images, {"boxes", "labels"})`.

    Images are read as displayed (EXIF orientation applied, as labelling
    tools draw boxes on that view), as RGB float32 in 0..255 (grey, palette,
    RGBA, CMYK and 16-bit images converted, see `heads.datasets.images`),
    and resized to `image_size` (no aspect-ratio padding: original box
    coordinates are recovered by scaling x by `width / image_width` and y by
    `height / image_height`, see `read_coco`). Boxes are in
    `bounding_box_format` pixels of the resized image, padded with -1
    (labels with -1) to `max_boxes` (default: the most boxes of any image;
    boxes beyond it are left out with a warning); images without objects
    are kept. COCO category ids map to labels 0..K-1 in the order of the
    file's `categories`. With `augment`, each image gets a random scale
    jitter (zoom in `scale_range`, random crop or pad) and a random
    horizontal flip; boxes follow, are clipped, and those left thinner than
    2 pixels are dropped.

    The file and every image it lists are checked first (see `read_coco`:
    sizes, ids, finite boxes, complete image files; with `num_classes`,
    categories beyond it), so a bad file fails here, naming itself, and not
    in the middle of an epoch. With `num_classes`, every element's labels
    are checked again inside the pipeline (see `coco_dataset`), so the check
    holds after any `.take()`, `.map()`, `.shuffle()` or `.repeat()`;
    without it, `heads.datasets.check_classes(dataset, num_classes)` finds
    the file's categories through such transformations and refuses more of
    them than the model's classes (the detectors' `fit` checks the returned
    dataset itself).

    Example:
    ```python
    import heads
    files = heads.datasets.make_shapes("/tmp/shapes", num_images=16, image_size=128)
    dataset = heads.datasets.load_coco(files["annotations"], files["images"], image_size=128,
                                       batch_size=4, shuffle=True, augment=True, num_classes=3)
    detector.fit(dataset, epochs=1)
    ```
    """
    height, width = check_image_size(image_size, minimum=1)
    batch_size = check_positive_int("batch_size", batch_size)
    if num_classes is not None:
        num_classes = check_positive_int("num_classes", num_classes)
    if max_boxes is not None:
        max_boxes = check_positive_int("max_boxes", max_boxes)
    records, categories = read_coco(annotation_file, image_dir, num_classes=num_classes)
    if not records:
        raise ValueError(f"{annotation_file} lists no images.")
    dataset = coco_dataset(
        records,
        (height, width),
        batch_size,
        bounding_box_format,
        shuffle,
        augment,
        max_boxes,
        scale_range,
        seed,
        num_classes=num_classes,
        categories=categories,
    )
    # The detectors' fit() compares this with their num_classes, for callers that did not pass it here;
    # check_classes finds it again upstream of any transformation.
    dataset.coco_categories = [category.get("name", category["id"]) for category in categories]
    dataset.coco_file = str(annotation_file)
    return dataset


def _label_check(num_classes, categories):
    """`check(labels, path, source)`: labels, asserted below `num_classes` inside the pipeline."""
    if num_classes is None:
        return lambda labels, path, source: labels
    num_classes = check_positive_int("num_classes", num_classes)
    if categories is None:
        names = None
    else:
        names = tf.constant(
            [f"category {category.get('id')} ({category.get('name', 'no name')})" for category in categories]
            + [f"no category of the {len(categories)} in the file"]
        )

    allowed = (
        f"; num_classes={num_classes} allows labels 0..{num_classes - 1} (the first {num_classes} categories of "
        "the file). A label beyond them would train as no object: build the model with more classes, or leave "
        "these boxes out."
    )

    def check(labels, path, source):
        beyond = labels >= num_classes
        first = labels[tf.argmax(tf.cast(beyond, tf.int32))]
        if names is None:
            named = tf.constant("a category")
        else:
            named = tf.gather(names, tf.clip_by_value(first, 0, len(categories)))
        message = tf.strings.join(
            ["Image ", path, " of ", source, " has a box of ", named, ", label ", tf.strings.as_string(first), allowed]
        )
        with tf.control_dependencies([tf.debugging.Assert(tf.logical_not(tf.reduce_any(beyond)), [message])]):
            return tf.identity(labels)

    return check


def coco_dataset(
    records,
    image_size,
    batch_size,
    bounding_box_format="xyxy",
    shuffle=False,
    augment=False,
    max_boxes=None,
    scale_range=(0.75, 1.25),
    seed=None,
    num_classes=None,
    categories=None,
):
    """`load_coco`'s batches from `read_coco`'s records, which it does not check again.

    For a pipeline of one's own over a COCO file read once: `read_coco`
    checks the file and every image and returns the records (which may be
    filtered or split first); this turns them into the batches `load_coco`
    gives, `(images, {"boxes", "labels"})`, with the same resizing, box
    padding to `max_boxes` and optional `augment` (see `load_coco` for each
    argument). `image_size` is `(height, width)`; `records` must not be
    empty. `mnet-backbones train` builds its detection epochs on it.

    With `num_classes`, each element's labels are checked where they are
    read, inside the pipeline, so the check survives any transformation of
    the dataset (records filtered or relabelled by hand are not checked up
    front): a label `>= num_classes` stops iteration with a
    `tf.errors.InvalidArgumentError` naming the annotation file, the image,
    the category id (from `categories`, `read_coco`'s second result, if
    given) and the labels allowed.

    Example:
    ```python
    import heads

    files = heads.datasets.make_shapes("shapes", num_images=4, image_size=64)
    records, categories = heads.datasets.read_coco(files["annotations"], files["images"])
    dataset = heads.datasets.coco_dataset(records, (64, 64), batch_size=2, shuffle=True, seed=0)
    images, targets = next(iter(dataset))  # (2, 64, 64, 3); targets["boxes"] (2, max_boxes, 4) xyxy
    ```
    """
    height, width = image_size
    most = max(len(record["labels"]) for record in records)
    max_boxes = max(most, 1) if max_boxes is None else max_boxes
    if most > max_boxes:
        over = [record for record in records if len(record["labels"]) > max_boxes]
        left_out = sum(len(record["labels"]) - max_boxes for record in over)
        warnings.warn(
            f"max_boxes={max_boxes} leaves out {left_out} boxes of {len(over)} images "
            f"(e.g. {over[0]['file_name']!r} has {len(over[0]['labels'])}).",
            stacklevel=3,
        )
    boxes = np.full((len(records), max_boxes, 4), -1.0, "float32")
    labels = np.full((len(records), max_boxes), -1, "int32")
    for i, record in enumerate(records):
        count = min(len(record["labels"]), max_boxes)
        scale = np.array([width / record["width"], height / record["height"]] * 2, "float32")
        boxes[i, :count] = record["boxes"][:count] * scale
        labels[i, :count] = record["labels"][:count]
    paths = [record["path"] for record in records]
    sources = [record.get("annotation_file", "the annotations") for record in records]
    check_labels = _label_check(num_classes, categories)

    def load(path, source, image_boxes, image_labels, element_seed=None):
        image_labels = check_labels(image_labels, path, source)
        image = tf.image.resize(tf.cast(image_tensor(path), tf.float32), (height, width))
        if augment:
            image, image_boxes, image_labels = _scale_jitter_and_flip(
                image, image_boxes, image_labels, height, width, scale_range, element_seed
            )
        image = tf.ensure_shape(image, (height, width, 3))
        image_boxes = _convert_from_xyxy(image_boxes, bounding_box_format, height, width)
        return image, {"boxes": image_boxes, "labels": image_labels}

    dataset = tf.data.Dataset.from_tensor_slices((paths, sources, boxes, labels))
    if shuffle:
        dataset = dataset.shuffle(len(records), seed=seed, reshuffle_each_iteration=True)
    if augment:
        dataset = with_seeds(dataset, seed).map(lambda element, element_seed: load(*element, element_seed),
                                                num_parallel_calls=tf.data.AUTOTUNE)  # fmt: skip
    else:
        dataset = dataset.map(load, num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)
