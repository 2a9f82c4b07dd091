"""VOC-style semantic segmentation data: image folder + mask folder, paired by name.

Masks are single-channel PNGs of class indices (palette PNGs, as Pascal VOC
ships them, read as their indices), 255 marking pixels to ignore. Images and
masks are read with Pillow (`heads.datasets.images`): TensorFlow's PNG
decoder expands a palette to colours and ignores EXIF orientation.
"""

import os

import numpy as np
import tensorflow as tf

from heads.datasets._random import split_seed, with_seeds
from heads.datasets.images import (
    QUARTER_TURNS,
    image_tensor,
    inspect_image,
    read_image,  # noqa: F401  (its old home: the demos import it from here)
    read_single_channel,
)
from mnet_backbones.validation import check_image_size, check_positive_int

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
MASK_MODES = ("L", "P", "1", "I", "I;16", "I;16B", "I;16L", "I;16N")
IGNORE_LABEL = 255
PAD_COLOUR = (124.0, 116.0, 104.0)  # the ImageNet mean, in 0..255


def _files_by_stem(folder, extensions, what):
    if not os.path.isdir(folder):
        raise ValueError(f"The {what} folder {folder!r} does not exist.")
    files = {}
    for name in sorted(os.listdir(folder)):
        stem, ext = os.path.splitext(name)
        if ext.lower() in extensions:
            if stem in files:
                raise ValueError(f"Two {what} files share the name {stem!r} in {folder!r}: {files[stem]!r}, {name!r}.")
            files[stem] = name
    return files


def segmentation_pairs(image_dir, mask_dir):
    """Image and mask paths paired by file name (without extension).

    Every image needs a mask (`<name>.png`) and every mask an image; names
    without a partner raise a ValueError that lists them.

    Example:
    ```python
    images, masks = segmentation_pairs("VOC2012/JPEGImages", "VOC2012/SegmentationClass")
    ```
    """
    images = _files_by_stem(image_dir, IMAGE_EXTENSIONS, "image")
    masks = _files_by_stem(mask_dir, (".png",), "mask")
    no_mask = sorted(set(images) - set(masks))
    no_image = sorted(set(masks) - set(images))
    if no_mask or no_image:

        def listed(names):
            return ", ".join(names[:10]) + (f" and {len(names) - 10} more" if len(names) > 10 else "")

        problems = []
        if no_mask:
            problems.append(f"{len(no_mask)} image(s) in {image_dir!r} without a mask: {listed(no_mask)}")
        if no_image:
            problems.append(f"{len(no_image)} mask(s) in {mask_dir!r} without an image: {listed(no_image)}")
        raise ValueError("Images and masks must pair up by file name; " + "; ".join(problems) + ".")
    if not images:
        raise ValueError(f"No images ({', '.join(IMAGE_EXTENSIONS)}) found in {image_dir!r}.")
    stems = sorted(images)
    return (
        [os.path.join(image_dir, images[s]) for s in stems],
        [os.path.join(mask_dir, masks[s]) for s in stems],
    )


def read_mask(path, num_classes=None):
    """A mask file as a `(height, width)` uint8 array of class indices.

    Raises a ValueError naming the file if it is not single-channel, or, with
    `num_classes`, if it holds a value `>= num_classes` other than 255; an
    OSError naming it if it is not a complete image file. An EXIF
    orientation, if the file has one, is applied as to images.

    Example:
    ```python
    mask = read_mask("masks/000001.png", num_classes=4)
    ```
    """
    mask, mode = read_single_channel(path)
    if mode not in MASK_MODES:
        raise ValueError(
            f"Mask {path!r} has mode {mode!r}; masks must be single-channel PNGs of class indices (mode L or P)."
        )
    if mask.ndim != 2:
        raise ValueError(f"Mask {path!r} must be single-channel, got shape {mask.shape}.")
    if mask.max(initial=0) > IGNORE_LABEL or mask.min(initial=0) < 0:
        raise ValueError(f"Mask {path!r} holds values outside 0..255 (min {mask.min()}, max {mask.max()}).")
    mask = mask.astype("uint8")
    if num_classes is not None:
        bad = np.unique(mask[(mask >= num_classes) & (mask != IGNORE_LABEL)])
        if bad.size:
            raise ValueError(
                f"Mask {path!r} holds class values {bad[:10].tolist()}, but num_classes={num_classes} "
                f"allows 0..{num_classes - 1} and {IGNORE_LABEL} (ignore)."
            )
    return mask


def size_mismatch(image_path, image_size, mask_path, mask_size, orientation=1):
    """The ValueError for an image and mask of different sizes ((height, width) each), naming both."""
    turned = (
        f", as displayed: its EXIF orientation {orientation} turns it a quarter" if orientation in QUARTER_TURNS else ""
    )
    return ValueError(
        f"Image {image_path!r} is {image_size[1]}x{image_size[0]} (width x height{turned}) but its mask "
        f"{mask_path!r} is {mask_size[1]}x{mask_size[0]}; a mask must have the size of its image."
    )


def check_pairs(image_paths, mask_paths):
    """Checks every file before anything is decoded: complete image files, each mask the size of its image.

    Reads headers and end markers only (`inspect_image`), so a broken file or
    a mismatched pair fails here, naming the files, and not mid-epoch: an
    `OSError` (`FileNotFoundError`) for a missing, empty, unreadable or
    truncated file, a `ValueError` naming both files and their sizes (as
    displayed, EXIF orientation applied) for a mask of another size than its
    image. Mask values are not read: `read_mask` checks those.

    Example:
    ```python
    import heads

    files = heads.datasets.make_shapes("shapes", num_images=2, image_size=32)
    images, masks = heads.datasets.segmentation_pairs(files["images"], files["masks"])
    heads.datasets.check_pairs(images, masks)
    ```
    """
    for image_path, mask_path in zip(image_paths, mask_paths):
        image, mask = inspect_image(image_path), inspect_image(mask_path)
        if (image.height, image.width) != (mask.height, mask.width):
            raise size_mismatch(
                image_path, (image.height, image.width), mask_path, (mask.height, mask.width), image.orientation
            )


def load_segmentation(
    image_dir,
    mask_dir,
    image_size,
    batch_size,
    shuffle=False,
    augment=False,
    num_classes=None,
    scale_range=(0.75, 1.25),
    seed=None,
):
    """A `tf.data.Dataset` of `(images, masks)` batches from VOC-style folders.

    Images `(batch, height, width, 3)` float32 in 0..255, resized bilinearly;
    masks `(batch, height, width, 1)` int32, resized by nearest neighbour.
    Images are read as displayed (EXIF orientation applied) and made 8-bit
    RGB (grey, palette, RGBA, CMYK, 16-bit; see `heads.datasets.images`).
    Pairs match by file name; unpaired names raise a ValueError listing them.
    Every file is checked before the dataset is returned: a file that is
    empty, not an image or truncated is an OSError naming it, and a mask of
    another size than its image a ValueError naming both files and sizes.
    With `num_classes`, every mask's values are checked too and a value
    `>= num_classes` other than 255 raises a ValueError naming the file,
    up front and again where each mask is decoded. Without it,
    `heads.datasets.check_classes(dataset, num_classes)` checks the masks
    for a model's classes, through any transformation of the dataset.

    With `augment`: a random horizontal flip and scale jitter (resize by a
    factor in `scale_range`, then a random crop, or padding with ignore
    label 255 in the mask and the mean colour in the image, back to
    `image_size`).

    Args:
        image_dir: folder of RGB images (png, jpg, bmp).
        mask_dir: folder of single-channel PNG masks, same names.
        image_size: int or `(height, width)` of the batches.
        batch_size: images per batch (the last batch may be smaller).
        shuffle: reshuffle the pairs every epoch.
        augment: random flip and scale jitter.
        num_classes: if given, check every mask's values up front.
        scale_range: `(min, max)` resize factor of the scale jitter.
        seed: seed of shuffling and augmentation.

    Example:
    ```python
    paths = heads.datasets.make_shapes("/tmp/shapes", 16, 96)
    dataset = heads.datasets.load_segmentation(
        paths["images"], paths["masks"], 64, batch_size=4, num_classes=4
    )
    images, masks = next(iter(dataset))  # (4, 64, 64, 3), (4, 64, 64, 1)
    ```
    """
    height, width = check_image_size(image_size, minimum=1)
    batch_size = check_positive_int("batch_size", batch_size)
    low, high = scale_range
    if not 0 < low <= high:
        raise ValueError(f"`scale_range` must be (min, max) with 0 < min <= max, got {scale_range!r}.")
    image_paths, mask_paths = segmentation_pairs(image_dir, mask_dir)
    check_pairs(image_paths, mask_paths)
    if num_classes is not None:
        num_classes = check_positive_int("num_classes", num_classes)
        for path in mask_paths:
            read_mask(path, num_classes)

    # Checked again where each mask is decoded (a file may change after the check above).
    def load_mask(path):
        return read_mask(os.fsdecode(path), num_classes)[..., None]

    def load(image_path, mask_path):
        image = image_tensor(image_path)
        mask = tf.numpy_function(load_mask, [mask_path], tf.uint8, stateful=False)
        mask = tf.ensure_shape(mask, (None, None, 1))
        image = tf.image.resize(tf.cast(image, "float32"), (height, width), method="bilinear")
        mask = tf.image.resize(mask, (height, width), method="nearest")
        return image, tf.cast(mask, "int32")

    def jitter(pair, seed):
        image, mask = pair
        flip_seed, scale_seed, crop_seed = split_seed(seed, 3)
        if tf.random.stateless_uniform((), flip_seed) < 0.5:
            image, mask = image[:, ::-1], mask[:, ::-1]
        scale = tf.random.stateless_uniform((), scale_seed, low, high)
        size = tf.cast(tf.round(tf.constant([height, width], "float32") * scale), "int32")
        image = tf.image.resize(image, size, method="bilinear")
        mask = tf.image.resize(mask, size, method="nearest")
        # Pad to at least the target, then crop at random. Padding pixels are
        # the mean colour (so that BatchNorm statistics gathered in training do
        # not learn black borders the test images lack); in the mask, ignored.
        pad_h, pad_w = tf.maximum(height - size[0], 0), tf.maximum(width - size[1], 0)
        mean = tf.constant(PAD_COLOUR, "float32")
        image = tf.pad(image - mean, [[0, pad_h], [0, pad_w], [0, 0]]) + mean
        mask = tf.pad(mask - IGNORE_LABEL, [[0, pad_h], [0, pad_w], [0, 0]]) + IGNORE_LABEL
        stacked = tf.concat([image, tf.cast(mask, "float32")], axis=-1)
        stacked = tf.image.stateless_random_crop(stacked, (height, width, 4), crop_seed)
        return stacked[..., :3], tf.cast(stacked[..., 3:], "int32")

    dataset = tf.data.Dataset.from_tensor_slices((image_paths, mask_paths))
    if shuffle:
        dataset = dataset.shuffle(len(image_paths), seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.map(load, num_parallel_calls=tf.data.AUTOTUNE)
    if augment:
        dataset = with_seeds(dataset, seed).map(jitter, num_parallel_calls=tf.data.AUTOTUNE)
    dataset = dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)
    # heads.datasets.check_classes finds these upstream of any transformation.
    dataset.mask_files = mask_paths
    dataset.masks_checked_below = num_classes
    return dataset
