"""Segmentation metrics over a whole VOC-style set, at each image's own resolution."""

import numpy as np
from keras import ops

from heads.datasets.images import read_image
from heads.datasets.segmentation import IGNORE_LABEL, check_pairs, read_mask, segmentation_pairs, size_mismatch
from heads.segmentation.layers import resize_bilinear
from mnet_backbones.validation import check_positive_int


def confusion_matrix(labels, predictions, num_classes):
    """`(num_classes, num_classes)` counts: rows true class, columns predicted.

    Pixels labelled 255 are left out.

    Example:
    ```python
    confusion_matrix(np.array([0, 1, 255]), np.array([0, 0, 1]), 2)  # [[1, 0], [1, 0]]
    ```
    """
    labels = np.asarray(labels).reshape(-1).astype("int64")
    predictions = np.asarray(predictions).reshape(-1).astype("int64")
    valid = labels != IGNORE_LABEL
    return np.bincount(labels[valid] * num_classes + predictions[valid], minlength=num_classes * num_classes).reshape(
        num_classes, num_classes
    )


def segmentation_scores(confusion):
    """mIoU, pixel accuracy and per-class IoU from a confusion matrix.

    A class absent from both labels and predictions has IoU NaN and is left
    out of the mean.

    Example:
    ```python
    segmentation_scores(np.array([[3, 1], [0, 4]]))
    # {"mIoU": 0.775, "pixel_accuracy": 0.875, "per_class_IoU": [0.75, 0.8]}
    ```
    """
    confusion = np.asarray(confusion, dtype="float64")
    true_positive = np.diag(confusion)
    union = confusion.sum(axis=0) + confusion.sum(axis=1) - true_positive
    with np.errstate(invalid="ignore", divide="ignore"):
        per_class = np.where(union > 0, true_positive / union, np.nan)
    total = confusion.sum()
    return {
        "mIoU": float(np.nanmean(per_class)) if np.any(union > 0) else float("nan"),
        "pixel_accuracy": float(true_positive.sum() / total) if total else float("nan"),
        "per_class_IoU": [float(v) for v in per_class],
    }


def _input_size(segmenter):
    size = getattr(segmenter, "image_size", None)
    if size is None:
        size = tuple(segmenter.input_shape[1:3])
    if isinstance(size, int):
        size = (size, size)
    if None in tuple(size):
        raise ValueError(f"The segmenter's input size must be fixed to resize images to it, got {tuple(size)}.")
    return tuple(int(s) for s in size)


def predict_masks(segmenter, images, original_sizes):
    """Class maps at each image's original size, from logits resized bilinearly."""
    logits = segmenter.predict(np.stack(images).astype("float32"), verbose=0)
    masks = []
    for logit, size in zip(logits, original_sizes):
        resized = resize_bilinear(logit[None], *(int(side) for side in size))
        masks.append(np.argmax(ops.convert_to_numpy(resized)[0], axis=-1))
    return masks


def evaluate_segmentation(segmenter, image_dir, mask_dir, num_classes, batch_size=8):
    """mIoU, pixel accuracy and per-class IoU of `segmenter` over a whole set.

    Each image is read as `load_segmentation` reads it (EXIF orientation
    applied, 8-bit RGB), resized to the segmenter's input, its logits resized
    back to the image's original resolution, and the argmax compared with the
    original mask; pixels labelled 255 are ignored. The scores come from one
    confusion matrix over all pixels of all images (as Pascal VOC scores).

    Args:
        segmenter: a model from images `(B, H, W, 3)` in 0..255 to logits
            `(B, H, W, num_classes)`, with a fixed input size.
        image_dir / mask_dir: VOC-style folders paired by file name.
        num_classes: classes, background included; mask values must be
            below it or 255.
        batch_size: images per prediction batch.

    Returns:
        `{"mIoU": float, "pixel_accuracy": float, "per_class_IoU": [float]}`,
        NaN for a class absent from both masks and predictions.

    Raises:
        ValueError: unpaired names, a mask of another size than its image
            (naming both files and sizes), a mask value `>= num_classes`.
        OSError: a file that is empty, not an image or truncated (named);
            all files are checked before the first prediction.

    Example:
    ```python
    scores = heads.evaluate_segmentation(segmenter, "val/images", "val/masks", num_classes=4)
    scores["mIoU"]
    ```
    """
    num_classes = check_positive_int("num_classes", num_classes)
    batch_size = check_positive_int("batch_size", batch_size)
    image_paths, mask_paths = segmentation_pairs(image_dir, mask_dir)
    height, width = _input_size(segmenter)
    check_pairs(image_paths, mask_paths)
    confusion = np.zeros((num_classes, num_classes), dtype="int64")
    for start in range(0, len(image_paths), batch_size):
        batch_images, batch_masks, sizes = [], [], []
        for image_path, mask_path in zip(
            image_paths[start : start + batch_size], mask_paths[start : start + batch_size]
        ):
            mask = read_mask(mask_path, num_classes)
            image = read_image(image_path)
            if image.shape[:2] != mask.shape:  # checked above; a file changed since is caught here
                raise size_mismatch(image_path, image.shape[:2], mask_path, mask.shape)
            # Resized as load_segmentation resizes training images.
            resized = resize_bilinear(image[None].astype("float32"), height, width)
            batch_images.append(ops.convert_to_numpy(resized)[0])
            batch_masks.append(mask)
            sizes.append(mask.shape)
        for mask, predicted in zip(batch_masks, predict_masks(segmenter, batch_images, sizes)):
            confusion += confusion_matrix(mask, predicted, num_classes)
    return segmentation_scores(confusion)
