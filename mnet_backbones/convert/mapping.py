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


def batch_norm_slots(bn, key):
    """(variable, PyTorch key, transform) for a Keras BatchNormalization from `{key}.*`."""
    yield bn.gamma, f"{key}.weight", identity
    yield bn.beta, f"{key}.bias", identity
    yield bn.moving_mean, f"{key}.running_mean", identity
    yield bn.moving_variance, f"{key}.running_var", identity


def conv_bn_slots(layer, conv_key, bn_key):
    """Slots of a `ConvBNAct` from a PyTorch conv (`{conv_key}.weight`) and BatchNorm (`{bn_key}.*`)."""
    transform = depthwise_kernel if layer.depthwise else conv_kernel
    yield layer.conv.kernel, f"{conv_key}.weight", transform
    if layer.use_bias:
        yield layer.conv.bias, f"{conv_key}.bias", identity
    if layer.bn is not None:
        yield from batch_norm_slots(layer.bn, bn_key)


def load_slots(slots, state_dict, source_name="checkpoint", allowed_unused_prefixes=()):
    """Fill every `(variable, key, transform)` slot from `state_dict`, all or nothing.

    Every slot's key must be in `state_dict` and every tensor of `state_dict`
    must fill a slot, except BatchNorm's `num_batches_tracked` counters and
    keys starting with one of `allowed_unused_prefixes` (a head that is not
    built, say). Raises `WeightMismatchError` naming the tensor (and both
    shapes, for a wrong shape) before anything is assigned.
    """
    pairs, used = [], set()
    for variable, key, transform in slots:
        if key not in state_dict:
            raise WeightMismatchError(
                f"{source_name}: tensor {key!r} for layer variable {variable.path!r} "
                f"(shape {tuple(variable.shape)}) is missing: the checkpoint is for "
                "another architecture or incomplete. Nothing was loaded."
            )
        array = np.asarray(state_dict[key])
        try:
            converted = np.asarray(transform(array))
        except ValueError as error:  # a transpose of the wrong rank
            converted = None
            reason = str(error)
        if converted is None or tuple(converted.shape) != tuple(variable.shape):
            raise WeightMismatchError(
                f"{source_name}: tensor {key!r} has shape {tuple(array.shape)}"
                + ("" if converted is None else f" ({tuple(converted.shape)} in Keras' layout)")
                + f", but layer variable {variable.path!r} has shape {tuple(variable.shape)}"
                + (f" ({reason})" if converted is None else "")
                + ". Nothing was loaded."
            )
        pairs.append((variable, converted, key))
        used.add(key)
    extra = sorted(
        key
        for key in state_dict
        if key not in used
        and not key.endswith("num_batches_tracked")
        and not key.startswith(tuple(allowed_unused_prefixes))
    )
    if extra:
        raise WeightMismatchError(
            f"{source_name}: {len(extra)} tensors do not belong to this model, e.g. "
            f"{extra[:5]} (shapes {[tuple(np.shape(state_dict[k])) for k in extra[:5]]}): "
            "the checkpoint is for another architecture. Nothing was loaded."
        )
    assign_all(pairs, source_name)


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
