"""Argument checks the heads share: a clear ValueError naming the value."""

import numpy as np


def _is_int(value):
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def check_positive_int(name, value):
    """`value` as an int, or a ValueError naming `name`."""
    if not _is_int(value) or value < 1:
        raise ValueError(f"`{name}` must be a positive int, got {value!r}.")
    return int(value)


def check_image_size(image_size, minimum=32):
    """`image_size` (an int, or a pair of ints, each >= `minimum`) as (height, width)."""
    if _is_int(image_size):
        image_size = (int(image_size), int(image_size))
    if (
        not isinstance(image_size, (tuple, list))
        or len(image_size) != 2
        or not all(_is_int(side) and side >= minimum for side in image_size)
    ):
        raise ValueError(
            f"`image_size` must be an int or a (height, width) pair of ints >= {minimum}, got {image_size!r}."
        )
    return (int(image_size[0]), int(image_size[1]))
