"""Argument checks shared by the models, the heads and the tools.

Each returns the checked value in its canonical form or raises a ValueError
that names the argument, the value received and what is allowed.
"""

import numpy as np

# The deepest pyramid level is stride 32: smaller inputs have no P5.
MIN_IMAGE_SIZE = 32


def is_int(value):
    """A Python or NumPy integer, and not a bool."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def check_positive_int(name, value):
    """`value` as an int, or a ValueError naming `name`.

    Example:
    ```python
    check_positive_int("batch_size", 8)    # 8
    check_positive_int("batch_size", 2.7)  # ValueError: `batch_size` must be a positive int, got 2.7.
    ```
    """
    if not is_int(value) or value < 1:
        raise ValueError(f"`{name}` must be a positive int, got {value!r}.")
    return int(value)


def check_image_size(image_size, minimum=MIN_IMAGE_SIZE, name="image_size"):
    """An int, or a (height, width) pair of ints, each >= `minimum`, as (height, width).

    Example:
    ```python
    check_image_size(320)         # (320, 320)
    check_image_size((256, 320))  # (256, 320)
    ```
    """
    if is_int(image_size):
        image_size = (int(image_size), int(image_size))
    if (
        not isinstance(image_size, (tuple, list))
        or len(image_size) != 2
        or not all(is_int(side) and side >= minimum for side in image_size)
    ):
        raise ValueError(f"`{name}` must be an int or a (height, width) pair of ints >= {minimum}, got {image_size!r}.")
    return (int(image_size[0]), int(image_size[1]))


def check_image_shape(image_shape, minimum=MIN_IMAGE_SIZE):
    """(height, width, channels), channels last; height and width None (any) or ints >= `minimum`.

    Example:
    ```python
    check_image_shape((None, None, 3))  # (None, None, 3)
    ```
    """
    if not isinstance(image_shape, (tuple, list)) or len(image_shape) != 3:
        raise ValueError(
            "`image_shape` must be (height, width, channels), channels last, e.g. "
            f"(None, None, 3) or (224, 224, 3). Received: image_shape={image_shape!r}."
        )
    height, width, channels = image_shape
    if not is_int(channels) or channels < 1:
        raise ValueError(f"The channel count of `image_shape` must be a positive int. Received: {image_shape!r}.")
    for size in (height, width):
        if size is not None and (not is_int(size) or size < minimum):
            raise ValueError(
                f"`image_shape` height and width must be None (any size) or ints of at least {minimum}, "
                f"the total stride. Received: image_shape={image_shape!r}."
            )
    return tuple(None if size is None else int(size) for size in image_shape)


def check_image_batch(model, x):
    """A ValueError for a batch in memory no model takes: no images, one image without a batch axis, no pixels.

    Keras would otherwise fail deep inside: a convolution's negative
    dimension, or `predict`'s `UnboundLocalError` on an empty batch.
    Datasets and generators (no `shape`) are left to Keras.

    Example:
    ```python
    check_image_batch(backbone, np.zeros((0, 224, 224, 3)))  # ValueError: ... empty batch ...
    ```
    """
    if isinstance(x, (list, tuple)) and not x:
        raise ValueError(f"{type(model).__name__}.predict got an empty list of images: nothing to predict.")
    if not hasattr(x, "shape") or not hasattr(x, "dtype"):
        return
    shape = tuple(x.shape)
    if len(shape) == 3 and shape[-1] in (1, 3, 4):  # Keras would read its rows as a batch
        raise ValueError(
            f"{type(model).__name__}.predict takes a batch of images (batch, height, width, 3); got one image "
            f"of shape {shape}. Add a batch axis: predict(image[None])."
        )
    if len(shape) == 4 and shape[0] == 0:
        raise ValueError(f"{type(model).__name__}.predict got an empty batch (shape {shape}): nothing to predict.")
    check_pixels(model, shape)


def check_pixels(model, shape):
    """A ValueError for a (batch, height, width, channels) shape without pixels."""
    if len(shape) == 4 and (shape[1] == 0 or shape[2] == 0):
        raise ValueError(
            f"{type(model).__name__} got an image with no pixels (shape {shape}): images need a height and "
            "a width of at least one pixel."
        )
