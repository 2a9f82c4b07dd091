"""The training and validation data of `train`, checked whole before the first step.

- classification: a folder with one subfolder per class (the subfolder's
  name is the class name; classes in sorted order); validation's subfolders
  must be classes of the training set;
- detection: a COCO JSON file and its image folder (`heads.datasets.read_coco`);
- segmentation: an image folder and a mask folder paired by file name
  (`heads.datasets.load_segmentation`).

Every file is looked at first (`heads.datasets.inspect_image`), so an
unreadable image is an error naming it before any training, not a crash in
epoch 7. Each epoch's dataset is built from the run seed and the epoch
number alone, so epoch `e` sees the same order and augmentation whether the
run went straight through or was resumed at `e` (see `EpochData.train_dataset`).
"""

import math
import os

import tensorflow as tf

from heads.datasets import (
    IMAGE_EXTENSIONS,
    check_pairs,
    coco_dataset,
    image_tensor,
    inspect_image,
    load_segmentation,
    read_coco,
    read_mask,
    segmentation_pairs,
    with_seeds,
)
from heads.datasets import split_seed as split

SEGMENTATION_SCALE_RANGE = (0.5, 2.0)
# Random-resized-crop area range of the classification augmentation (Inception's 0.08 is for ImageNet-length runs).
CROP_AREA_RANGE = (0.25, 1.0)


def epoch_seed(seed, epoch):
    """The data seed of one epoch: a function of the run seed and the epoch number only."""
    return (seed % 2**31) * 10_007 + epoch + 1


def _check_folder(path, option):
    if not os.path.isdir(path):
        what = "is a file" if os.path.exists(path) else "does not exist"
        raise FileNotFoundError(f"{option} folder {path!r} {what}.")


def scan_class_folder(folder, option, class_names=None):
    """`(class_names, paths, labels)` of a folder with one subfolder of images per class.

    With `class_names` (the training set's), every subfolder must be one of them;
    without, there must be two or more.
    Raises ValueError for an empty set, a single class or a class without images,
    OSError for an unreadable image, naming it.
    """
    _check_folder(folder, option)
    found = sorted(name for name in os.listdir(folder) if os.path.isdir(os.path.join(folder, name)))
    if not found:
        raise ValueError(f"{option} folder {folder!r} has no class subfolders; put each class's images in its own.")
    training = class_names is None
    if training:
        class_names = found
    else:
        unknown = [name for name in found if name not in class_names]
        if unknown:
            raise ValueError(
                f"{option} folder {folder!r} has classes the training set lacks: {', '.join(unknown)} "
                f"(training classes: {', '.join(class_names)})."
            )
    images = {}
    for name in found:
        subfolder = os.path.join(folder, name)
        images[name] = sorted(
            os.path.join(subfolder, file)
            for file in os.listdir(subfolder)
            if os.path.splitext(file)[1].lower() in IMAGE_EXTENSIONS
        )
        if not images[name]:
            raise ValueError(
                f"Class folder {subfolder!r} has no images ({', '.join(IMAGE_EXTENSIONS)}); "
                "remove it or add its images."
            )
    if training and len(found) == 1:
        raise ValueError(
            f"{option} folder {folder!r} has one class subfolder, {found[0]!r}: a classifier needs at least "
            "two classes (with one, every prediction is right and top-1 is 1.0 whatever it learns). "
            "Put each class's images in its own subfolder."
        )
    paths, labels = [], []
    for name in found:
        for path in images[name]:
            inspect_image(path)  # raises naming the file
        paths += images[name]
        labels += [class_names.index(name)] * len(images[name])
    return list(class_names), paths, labels


def _random_resized_crop(image, seed, size):
    shape = tf.shape(image)
    begin, crop_size, _ = tf.image.stateless_sample_distorted_bounding_box(
        shape,
        tf.zeros((1, 0, 4)),
        seed=seed,
        min_object_covered=0.0,
        aspect_ratio_range=(3 / 4, 4 / 3),
        area_range=CROP_AREA_RANGE,
        use_image_if_no_bounding_boxes=True,
    )
    return tf.image.resize(tf.slice(image, begin, crop_size), (size, size))


def photometric_distortion(image, seed):
    """torchvision's `RandomPhotometricDistort` (SSD's): brightness, contrast, saturation, hue, each with p=0.5.

    `image` is float 0..255; stateless, so one seed gives one result.
    """
    seeds = split(seed, 8)
    pixels = image / 255.0

    def maybe(index, pixels, adjust):
        apply = tf.random.stateless_uniform((), seeds[index]) < 0.5
        return tf.cond(apply, lambda: adjust(pixels), lambda: pixels)

    pixels = maybe(0, pixels, lambda x: x * tf.random.stateless_uniform((), seeds[1], 0.875, 1.125))
    pixels = maybe(
        2, pixels, lambda x: tf.image.adjust_contrast(x, tf.random.stateless_uniform((), seeds[3], 0.5, 1.5))
    )
    pixels = maybe(
        4, pixels, lambda x: tf.image.adjust_saturation(x, tf.random.stateless_uniform((), seeds[5], 0.5, 1.5))
    )
    pixels = maybe(6, pixels, lambda x: tf.image.adjust_hue(x, tf.random.stateless_uniform((), seeds[7], -0.05, 0.05)))
    return tf.clip_by_value(pixels, 0.0, 1.0) * 255.0


# torchvision's RandomIoUCrop (SSD's sampler): the least IoU a kept box must have with the crop; 1.0: no crop.
IOU_CROP_OPTIONS = (0.0, 0.1, 0.3, 0.5, 0.7, 0.9, 1.0)
IOU_CROP_SCALE = (0.3, 1.0)
IOU_CROP_ASPECT = (0.5, 2.0)
IOU_CROP_TRIALS = 40


def random_iou_crop(image, boxes, labels, seed):
    """SSD's random crop (torchvision's `RandomIoUCrop`) of a square `image` with xyxy pixel `boxes`.

    A least IoU is drawn from `IOU_CROP_OPTIONS` (1.0: the image is left
    whole); of `IOU_CROP_TRIALS` crops of 0.3-1.0 of each side and aspect
    0.5-2, the first is taken that holds the centre of at least one box and
    overlaps one of those boxes by that IoU. Boxes whose centre lies outside
    are dropped (-1), the rest clipped to the crop; the crop is resized back
    to the image's size. Where torchvision draws a new least IoU after 40
    failed trials, this leaves the image whole. Padding boxes (-1) stay padding.
    """
    option_seed, scale_seed, offset_seed = split(seed, 3)
    side = tf.cast(tf.shape(image)[0], "float32")
    options = tf.constant(IOU_CROP_OPTIONS)
    least_iou = tf.gather(
        options, tf.random.stateless_uniform((), option_seed, 0, len(IOU_CROP_OPTIONS), dtype="int32")
    )
    scale = tf.random.stateless_uniform((IOU_CROP_TRIALS, 2), scale_seed, *IOU_CROP_SCALE)
    crop_w, crop_h = tf.floor(side * scale[:, 0]), tf.floor(side * scale[:, 1])
    offsets = tf.random.stateless_uniform((IOU_CROP_TRIALS, 2), offset_seed)
    left, top = tf.floor((side - crop_w) * offsets[:, 0]), tf.floor((side - crop_h) * offsets[:, 1])
    right, bottom = left + crop_w, top + crop_h
    aspect = crop_w / tf.maximum(crop_h, 1.0)
    real = labels >= 0
    centre_x, centre_y = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
    within = (
        (left[:, None] < centre_x)
        & (centre_x < right[:, None])
        & (top[:, None] < centre_y)
        & (centre_y < bottom[:, None])
        & real[None, :]
    )  # fmt: skip  (trials, boxes)
    inter_w = tf.maximum(tf.minimum(right[:, None], boxes[:, 2]) - tf.maximum(left[:, None], boxes[:, 0]), 0.0)
    inter_h = tf.maximum(tf.minimum(bottom[:, None], boxes[:, 3]) - tf.maximum(top[:, None], boxes[:, 1]), 0.0)
    inter = inter_w * inter_h
    box_area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    iou = inter / tf.maximum(crop_w[:, None] * crop_h[:, None] + box_area[None, :] - inter, 1e-6)
    best_iou = tf.reduce_max(tf.where(within, iou, -1.0), axis=1)
    valid = (
        (aspect >= IOU_CROP_ASPECT[0]) & (aspect <= IOU_CROP_ASPECT[1]) & (crop_w >= 1) & (crop_h >= 1)
        & tf.reduce_any(within, axis=1) & (best_iou >= least_iou)
    )  # fmt: skip
    crop = (least_iou < 1.0) & tf.reduce_any(valid)

    def cropped():
        index = tf.argmax(tf.cast(valid, "int32"))
        x0, y0, x1, y1 = left[index], top[index], right[index], bottom[index]
        pixels = tf.image.crop_to_bounding_box(
            image, tf.cast(y0, "int32"), tf.cast(x0, "int32"), tf.cast(y1 - y0, "int32"), tf.cast(x1 - x0, "int32")
        )
        pixels = tf.image.resize(pixels, tf.shape(image)[:2])
        keep = within[index]
        origin = tf.stack([x0, y0, x0, y0])
        limit = tf.stack([x1 - x0, y1 - y0, x1 - x0, y1 - y0])
        stretch = tf.stack([side / (x1 - x0), side / (y1 - y0)] * 2)
        moved = tf.clip_by_value(boxes - origin, 0.0, limit) * stretch
        return pixels, tf.where(keep[:, None], moved, -1.0), tf.where(keep, labels, -1)

    return tf.cond(crop, cropped, lambda: (image, boxes, labels))


# torchvision's RandomZoomOut in SSDLite's recipe: p=0.5, a canvas of 1-4 times the side, filled with the mean colour.
ZOOM_OUT_SIDE = (1.0, 4.0)
MEAN_COLOUR = (123.675, 116.28, 103.53)  # ImageNet's mean in 0..255, torchvision's fill


def random_zoom_out(image, boxes, labels, seed):
    """With p=0.5, the square `image` shrunk by 1/r (r in 1-4) onto a mean-coloured canvas at a random place."""
    apply_seed, side_seed, offset_seed = split(seed, 3)
    side = tf.shape(image)[0]
    ratio = tf.random.stateless_uniform((), side_seed, *ZOOM_OUT_SIDE)
    new_side = tf.maximum(tf.cast(tf.round(tf.cast(side, "float32") / ratio), "int32"), 1)
    offsets = tf.random.stateless_uniform((2,), offset_seed)
    offset = tf.cast(tf.floor(offsets * tf.cast(side - new_side, "float32")), "int32")

    def zoomed():
        mean = tf.constant(MEAN_COLOUR, "float32")
        small = tf.image.resize(image, (new_side, new_side)) - mean
        pixels = tf.image.pad_to_bounding_box(small, offset[1], offset[0], side, side) + mean
        factor = tf.cast(new_side, "float32") / tf.cast(side, "float32")
        moved = boxes * factor + tf.cast(tf.stack([offset[0], offset[1]] * 2), "float32")
        return pixels, tf.where(labels[:, None] >= 0, moved, -1.0), labels

    return tf.cond(tf.random.stateless_uniform((), apply_seed) < 0.5, zoomed, lambda: (image, boxes, labels))


def random_flip(image, boxes, labels, seed):
    """A horizontal flip with p=0.5; padding boxes (-1) stay padding."""
    side = tf.cast(tf.shape(image)[1], "float32")

    def flipped():
        moved = tf.stack([side - boxes[:, 2], boxes[:, 1], side - boxes[:, 0], boxes[:, 3]], axis=-1)
        return image[:, ::-1], tf.where(labels[:, None] >= 0, moved, -1.0), labels

    return tf.cond(tf.random.stateless_uniform((), seed) < 0.5, flipped, lambda: (image, boxes, labels))


def ssdlite_augment(image, boxes, labels, seed):
    """torchvision's SSDLite training recipe, in its order: photometric distortion, zoom out, IoU crop, flip.

    Drops boxes left thinner than 2 pixels (as `heads.datasets.load_coco`'s augmentation does).
    """
    colour_seed, zoom_seed, crop_seed, flip_seed = split(seed, 4)
    image = photometric_distortion(image, colour_seed)
    image, boxes, labels = random_zoom_out(image, boxes, labels, zoom_seed)
    image, boxes, labels = random_iou_crop(image, boxes, labels, crop_seed)
    image, boxes, labels = random_flip(image, boxes, labels, flip_seed)
    keep = (labels >= 0) & (boxes[:, 2] - boxes[:, 0] >= 2.0) & (boxes[:, 3] - boxes[:, 1] >= 2.0)
    return image, tf.where(keep[:, None], boxes, -1.0), tf.where(keep, labels, -1)


class EpochData:
    """One task's checked training and validation data; `train_dataset(epoch)` gives that epoch's batches.

    Attributes: `num_examples`, `steps_per_epoch`, `class_names` (None for
    segmentation), `num_classes` (None for segmentation: it comes from
    `--num-classes` or the model).
    """

    def __init__(self, config):
        self.config = config
        # 1 for a detector whose class 0 is the background (SSDLite320ObjectDetector); set by `train`.
        self.label_offset = 0
        self.task = config.task
        size = config.image_size
        self.size = size
        if self.task == "classification":
            self.class_names, self.paths, self.labels = scan_class_folder(config.train_data[0], "--train")
            _, self.val_paths, self.val_labels = scan_class_folder(config.val_data[0], "--val", self.class_names)
            self.num_examples = len(self.paths)
        elif self.task == "detection":
            annotations, image_dir = config.train_data
            self.records, categories = read_coco(annotations, image_dir)
            if not self.records:
                raise ValueError(f"--train annotations {annotations!r} list no images.")
            self.class_names = [str(category.get("name", category["id"])) for category in categories]
            val_records, val_categories = read_coco(*config.val_data)
            if not val_records:
                raise ValueError(f"--val annotations {config.val_data[0]!r} list no images.")
            val_names = [str(category.get("name", category["id"])) for category in val_categories]
            if val_names != self.class_names:
                raise ValueError(
                    f"--val annotations {config.val_data[0]!r} list the categories {val_names}, the training "
                    f"annotations {annotations!r} {self.class_names}: labels go by position, so they must agree."
                )
            self.num_examples = len(self.records)
        else:
            self.class_names = None
            image_paths, mask_paths = segmentation_pairs(*config.train_data)
            check_pairs(image_paths, mask_paths)
            self.num_examples = len(image_paths)
            check_pairs(*segmentation_pairs(*config.val_data))
        self.num_classes = None if self.class_names is None else len(self.class_names)
        self.steps_per_epoch = math.ceil(self.num_examples / config.batch_size)

    def check_masks(self, num_classes):
        """Segmentation: every training and validation mask value is below `num_classes` or 255 (checked once)."""
        for image_dir, mask_dir in (self.config.train_data, self.config.val_data):
            _, mask_paths = segmentation_pairs(image_dir, mask_dir)
            for path in mask_paths:
                read_mask(path, num_classes)

    def train_dataset(self, epoch):
        """Epoch `epoch`'s shuffled, augmented batches; the same for the same seed and epoch in any process."""
        seed = epoch_seed(self.config.seed, epoch)
        config, size = self.config, self.size
        if self.task == "detection":
            dataset = coco_dataset(self.records, (size, size), config.batch_size, shuffle=True, seed=seed)
            if self.label_offset:
                # The paper head's classes count the background as 0: object labels are 1..K.
                dataset = dataset.map(
                    lambda images, targets: (
                        images,
                        {**targets, "labels": tf.where(targets["labels"] >= 0, targets["labels"] + 1, -1)},
                    )
                )
            if config.augment:

                def augment(element, element_seed):
                    image, targets = element
                    image, boxes, labels = ssdlite_augment(image, targets["boxes"], targets["labels"], element_seed)
                    return tf.ensure_shape(image, (size, size, 3)), {"boxes": boxes, "labels": labels}

                dataset = with_seeds(dataset.unbatch(), seed + 1).map(augment, num_parallel_calls=tf.data.AUTOTUNE)
                dataset = dataset.batch(config.batch_size)
                # unbatch() forgets the length; Keras's progress bar and epoch end need it.
                dataset = dataset.apply(tf.data.experimental.assert_cardinality(self.steps_per_epoch))
                dataset = dataset.prefetch(tf.data.AUTOTUNE)
            return dataset
        if self.task == "segmentation":
            return load_segmentation(
                *config.train_data, size, config.batch_size, shuffle=True, augment=config.augment,
                scale_range=SEGMENTATION_SCALE_RANGE, seed=seed,
            )  # fmt: skip
        dataset = tf.data.Dataset.from_tensor_slices((self.paths, self.labels))
        dataset = dataset.shuffle(len(self.paths), seed=seed)
        augment = config.augment

        def load(element, element_seed):
            path, label = element
            image = tf.cast(image_tensor(path), "float32")
            if augment:
                crop_seed, flip_seed = split(element_seed, 2)
                image = _random_resized_crop(image, crop_seed, size)
                image = tf.image.stateless_random_flip_left_right(image, flip_seed)
            else:
                image = tf.image.resize(image, (size, size))
            return tf.ensure_shape(image, (size, size, 3)), label

        dataset = with_seeds(dataset, seed).map(load, num_parallel_calls=tf.data.AUTOTUNE)
        return dataset.batch(config.batch_size).prefetch(tf.data.AUTOTUNE)

    def val_images(self):
        """Classification: the validation images, resized, unshuffled (labels in `val_labels`)."""
        size = self.size
        dataset = tf.data.Dataset.from_tensor_slices(self.val_paths)
        dataset = dataset.map(lambda path: tf.image.resize(tf.cast(image_tensor(path), "float32"), (size, size)))
        return dataset.batch(self.config.batch_size)
