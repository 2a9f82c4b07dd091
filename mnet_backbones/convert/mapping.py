"""Assigning converted tensors to a model all at once, or not at all."""

import numpy as np


class WeightMismatchError(ValueError):
    """A checkpoint does not fit the model; nothing was assigned."""


def conv_kernel(array):
    """PyTorch OIHW conv weight -> Keras HWIO kernel."""
    return np.transpose(array, (2, 3, 1, 0))


def depthwise_kernel(array):
    """PyTorch (C, 1, kh, kw) depthwise weight -> Keras (kh, kw, C, 1)."""
    return np.transpose(array, (2, 3, 0, 1))


def dense_kernel(array):
    """PyTorch (out, in[, 1, 1]) weight -> Keras (in, out)."""
    return np.transpose(array.reshape(array.shape[0], -1))


def identity(array):
    return array


def assign_all(pairs, source_name="checkpoint"):
    """Check every `(variable, array, key)` then assign them all.

    Raises `WeightMismatchError` naming the variable, the source key and both
    shapes on the first mismatch, before anything has been assigned.
    """
    checked = []
    for variable, array, key in pairs:
        array = np.asarray(array)
        if tuple(array.shape) != tuple(variable.shape):
            raise WeightMismatchError(
                f"{source_name}: tensor {key!r} has shape {tuple(array.shape)} after "
                f"conversion, but layer variable {variable.path!r} has shape "
                f"{tuple(variable.shape)}. Nothing was loaded."
            )
        if not np.all(np.isfinite(array)):
            raise WeightMismatchError(
                f"{source_name}: tensor {key!r} for {variable.path!r} holds non-finite values. Nothing was loaded."
            )
        checked.append((variable, array))
    for variable, array in checked:
        variable.assign(array.astype(variable.dtype))
