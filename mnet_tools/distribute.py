"""Data-parallel training with each backend's own engine.

`data_parallel_scope` is the one place the training code asks for several
devices. Inside it the user builds, compiles and fits a model as on one
device; the backend splits every global batch across the devices and keeps
one copy of the weights:

- JAX: `keras.distribution.DataParallel` over the first `num_devices` of
  `keras.distribution.list_devices()` (set with
  `keras.distribution.set_distribution`, the previous one restored on exit).
  The train step is one program over the global batch that XLA partitions,
  so BatchNorm's statistics, a loss normalised by the batch's positives and
  the metrics are those of the global batch: nothing to synchronise.
- TensorFlow: `tf.distribute.MirroredStrategy` over the first `num_devices`
  logical GPUs (or CPUs when there is no GPU), or
  `tf.distribute.MultiWorkerMirroredStrategy` when `TF_CONFIG` names a
  cluster of several workers. Each replica runs the train step on its share
  of the batch; Keras scales the losses and the strategy sums the gradients.
  BatchNorm averages over the replica's share unless its `synchronized`
  flag is set: `synchronize_batch_norm` sets it on a built model.
- PyTorch: Keras 3 has no data-parallel distribution for PyTorch, so the
  scope trains on one device and refuses more.

Multi-host: on JAX, `initialize_multi_host` (called by the scope) runs
`keras.distribution.initialize` from the `KERAS_DISTRIBUTION_*` variables
before any computation; on TensorFlow the cluster is read from `TF_CONFIG`.
"""

import contextlib
import dataclasses
import json
import os

import keras

MULTI_HOST_VARIABLES = (
    "KERAS_DISTRIBUTION_JOB_ADDRESSES",
    "KERAS_DISTRIBUTION_NUM_PROCESSES",
    "KERAS_DISTRIBUTION_PROCESS_ID",
)

PYTORCH_MESSAGE = (
    "Keras 3 supports data-parallel training on JAX (keras.distribution.DataParallel) and TensorFlow "
    "(tf.distribute.MirroredStrategy), not on PyTorch: run with KERAS_BACKEND=jax or KERAS_BACKEND=tensorflow "
    "to use several devices, or ask for one device."
)


@dataclasses.dataclass(frozen=True)
class DataParallelSetup:
    """What `data_parallel_scope` set up.

    Attributes:
        backend: `keras.backend.backend()`.
        num_replicas: how many devices share each global batch (all hosts
            together).
        devices: the devices' names, as the backend gives them.
        engine: the `keras.distribution.DataParallel`, the
            `tf.distribute.Strategy`, or None on PyTorch.
    """

    backend: str
    num_replicas: int
    devices: tuple
    engine: object = None

    def check_global_batch_size(self, global_batch_size):
        """The global batch size, if every replica gets an equal, non-empty share.

        Raises a ValueError naming the size and the number of replicas
        otherwise.
        """
        if isinstance(global_batch_size, bool) or not isinstance(global_batch_size, int) or global_batch_size < 1:
            raise ValueError(f"batch size must be a positive int, got {global_batch_size!r}.")
        if global_batch_size % self.num_replicas:
            raise ValueError(
                f"batch size {global_batch_size} does not split evenly over {self.num_replicas} devices: "
                f"use a multiple of {self.num_replicas}."
            )
        return global_batch_size


def _check_num_devices(num_devices):
    if num_devices is None:
        return None
    if isinstance(num_devices, bool) or not isinstance(num_devices, int) or num_devices < 1:
        raise ValueError(f"num_devices must be a positive int or None (all devices), got {num_devices!r}.")
    return num_devices


def _pick(devices, num_devices, kind):
    if num_devices is None:
        return list(devices)
    if num_devices > len(devices):
        names = ", ".join(getattr(device, "name", str(device)) for device in devices)
        raise ValueError(
            f"num_devices={num_devices} but this machine shows {len(devices)} {kind} device(s) "
            f"({names}): ask for at most {len(devices)}."
        )
    return list(devices)[:num_devices]


def tf_config_workers():
    """The number of workers `TF_CONFIG` names (0 when it is unset).

    Raises a ValueError naming `TF_CONFIG` when it is not the JSON that
    `tf.distribute.MultiWorkerMirroredStrategy` reads.
    """
    text = os.environ.get("TF_CONFIG")
    if not text:
        return 0
    try:
        config = json.loads(text)
        workers = config["cluster"]["worker"]
        config["task"]["index"]
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(
            f"TF_CONFIG is not a cluster description ({error!r}); expected JSON such as "
            '{"cluster": {"worker": ["host1:12345", "host2:12345"]}, "task": {"type": "worker", "index": 0}}.'
        ) from None
    return len(workers)


def initialize_multi_host():
    """Join a multi-host JAX run described by the `KERAS_DISTRIBUTION_*` variables.

    Calls `keras.distribution.initialize()` once, when
    `KERAS_DISTRIBUTION_NUM_PROCESSES` is set and above 1 on JAX; it must run
    before the process computes anything. Returns True when it joined a run
    (or had joined one already), False when there is none to join. On
    TensorFlow the cluster comes from `TF_CONFIG` and there is nothing to do
    here.

    Example:
    ```python
    # On every host, before anything else:
    # KERAS_DISTRIBUTION_JOB_ADDRESSES=10.0.0.1:1234 KERAS_DISTRIBUTION_NUM_PROCESSES=2 \\
    # KERAS_DISTRIBUTION_PROCESS_ID=<0 or 1> KERAS_BACKEND=jax python train.py
    initialize_multi_host()
    ```
    """
    if keras.backend.backend() != "jax":
        return False
    text = os.environ.get("KERAS_DISTRIBUTION_NUM_PROCESSES")
    if not text:
        return False
    try:
        num_processes = int(text)
    except ValueError:
        raise ValueError(f"KERAS_DISTRIBUTION_NUM_PROCESSES must be an int, got {text!r}.") from None
    if num_processes <= 1:
        return False
    import jax

    # jax.distributed refuses a second initialize; a process already in the
    # run (the user called keras.distribution.initialize) simply stays in it.
    if jax.distributed.is_initialized():
        return True
    missing = [name for name in MULTI_HOST_VARIABLES if not os.environ.get(name)]
    if missing:
        raise ValueError(
            f"KERAS_DISTRIBUTION_NUM_PROCESSES={num_processes} needs {', '.join(missing)} set too "
            "(the coordinator's host:port and this process's index from 0)."
        )
    keras.distribution.initialize()
    return True


@contextlib.contextmanager
def _jax_scope(num_devices):
    initialize_multi_host()
    devices = _pick(keras.distribution.list_devices(), num_devices, "JAX")
    distribution = keras.distribution.DataParallel(devices=devices)
    previous = keras.distribution.distribution()
    keras.distribution.set_distribution(distribution)
    try:
        yield DataParallelSetup("jax", len(devices), tuple(str(d) for d in devices), distribution)
    finally:
        keras.distribution.set_distribution(previous)


def _reduce_each_tensor(strategy):
    """`strategy` with a `reduce` that Keras 3's TensorFlow `fit` can use.

    Keras 3 (3.15) calls `strategy.reduce` on a multi-worker strategy in two
    ways `MultiWorkerMirroredStrategy` refuses (keras-team/keras#20585):
    with a whole `(x, y)` batch to build the model ("Attempt to convert a
    value (PerReplica...)"), and with `axis=0` on the step's scalar logs
    ("Invalid reduction dimension 0"). This reduces a nested value one tensor
    at a time (the same reductions, in the same order on every worker) and a
    scalar across the replicas only, which is what `axis=0` means for it.
    """
    import tensorflow as tf

    reduce = strategy.reduce

    def rank(value):
        first = value.values[0] if isinstance(value, tf.distribute.DistributedValues) else value
        return tf.convert_to_tensor(first).shape.rank

    def reduce_one(reduce_op, value, axis):
        return reduce(reduce_op, value, None if axis is not None and rank(value) == 0 else axis)

    def reduce_each(reduce_op, value, axis=None):
        return tf.nest.map_structure(lambda one: reduce_one(reduce_op, one, axis), value)

    strategy.reduce = reduce_each
    return strategy


@contextlib.contextmanager
def _tensorflow_scope(num_devices):
    import tensorflow as tf

    workers = tf_config_workers()
    if workers > 1:
        strategy = _reduce_each_tensor(tf.distribute.MultiWorkerMirroredStrategy())
        devices = tuple(strategy.extended.worker_devices)
        # Every worker uses all its devices: num_devices can only confirm the total.
        if num_devices is not None and num_devices != strategy.num_replicas_in_sync:
            raise ValueError(
                f"num_devices={num_devices} but the TF_CONFIG cluster of {workers} workers has "
                f"{strategy.num_replicas_in_sync} devices in all, each worker using all of its own: "
                f"pass {strategy.num_replicas_in_sync} or leave num_devices unset."
            )
    else:
        gpus = tf.config.list_logical_devices("GPU")
        logical = gpus or tf.config.list_logical_devices("CPU")
        devices = tuple(d.name for d in _pick(logical, num_devices, "TensorFlow"))
        # On CPUs MirroredStrategy's collectives can pair the all-reduces of
        # parallel branches (ASPP, the detector's heads) with each other's
        # and abort; reducing through one device keeps them in trace order.
        cross_device_ops = None if gpus else tf.distribute.ReductionToOneDevice()
        strategy = tf.distribute.MirroredStrategy(devices=list(devices), cross_device_ops=cross_device_ops)
    with strategy.scope():
        yield DataParallelSetup("tensorflow", strategy.num_replicas_in_sync, devices, strategy)


@contextlib.contextmanager
def data_parallel_scope(num_devices=None):
    """Build, compile and fit inside this to train on several devices at once.

    Args:
        num_devices: how many of this machine's devices to use (the first
            ones); None for all of them. On PyTorch only 1 (or None) is
            allowed: Keras 3 has no data-parallel engine there.

    Yields a `DataParallelSetup`: the backend, the number of replicas and
    their devices, and the engine (`keras.distribution.DataParallel` on JAX,
    the `tf.distribute` strategy on TensorFlow). The model must be built
    inside the scope on TensorFlow (its variables are mirrored when they are
    made); on JAX the distribution in force when `fit` runs places the batch.
    On TensorFlow call `synchronize_batch_norm(model)` inside the scope so
    that BatchNorm sees the global batch, as it does by itself on JAX.

    Raises a ValueError when more devices are asked for than there are, or
    for more than one on PyTorch.

    Example:
    ```python
    from mnet_backbones import MobileNetImageClassifier

    with data_parallel_scope() as setup:
        model = MobileNetImageClassifier.from_preset(
            "mobilenetv3_small_050", num_classes=10, load_weights=False
        )
        synchronize_batch_norm(model)
        model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
        batch_size = setup.check_global_batch_size(8)
    ```
    """
    num_devices = _check_num_devices(num_devices)
    backend = keras.backend.backend()
    if backend == "jax":
        with _jax_scope(num_devices) as setup:
            yield setup
    elif backend == "tensorflow":
        with _tensorflow_scope(num_devices) as setup:
            yield setup
    elif backend == "torch":
        if num_devices not in (None, 1):
            raise ValueError(f"num_devices={num_devices} on PyTorch. {PYTORCH_MESSAGE}")
        import torch

        yield DataParallelSetup("torch", 1, ("cuda:0" if torch.cuda.is_available() else "cpu",))
    else:
        raise ValueError(f"data_parallel_scope does not support the {backend!r} backend; use jax or tensorflow.")


def batch_norm_layers(model):
    """Every `keras.layers.BatchNormalization` in `model`, nested ones included."""
    return [layer for layer in model._flatten_layers() if isinstance(layer, keras.layers.BatchNormalization)]


def synchronize_batch_norm(model, synchronized=True):
    """Make `model`'s BatchNorm layers average over all replicas (TensorFlow).

    Keras' BatchNormalization reads its `synchronized` flag at every call, so
    a built model is switched in place; on TensorFlow each replica then
    all-reduces its batch sums, and the statistics are those of the global
    batch. Outside a strategy the flag changes nothing.

    On JAX there is nothing to switch: under `keras.distribution.DataParallel`
    the step is one program over the global batch, so the statistics are the
    global batch's already. On PyTorch there is one device. On both the
    function returns 0 and changes nothing (Keras refuses the flag there).

    The flag is part of the layer's config: a `.keras` file or preset saved
    while it is set loads on TensorFlow only. Call
    `synchronize_batch_norm(model, False)` before saving a file meant for any
    backend.

    Returns the number of layers switched.

    Example:
    ```python
    from mnet_backbones import MobileNetImageClassifier

    model = MobileNetImageClassifier.from_preset(
        "mobilenetv3_small_050", num_classes=10, load_weights=False
    )
    synchronize_batch_norm(model)  # 0 on JAX and PyTorch
    synchronize_batch_norm(model, False)
    ```
    """
    if not isinstance(synchronized, bool):
        raise TypeError(f"synchronized must be True or False, got {synchronized!r}.")
    if not isinstance(model, keras.layers.Layer):
        raise TypeError(f"synchronize_batch_norm needs a Keras model or layer, got {type(model).__name__}.")
    if keras.backend.backend() != "tensorflow":
        return 0
    layers = batch_norm_layers(model)
    for layer in layers:
        layer.synchronized = synchronized
    return len(layers)
