"""Data-parallel training on 2 virtual CPU devices equals training on one.

Device counts are fixed when a backend starts, so every check runs in a fresh
interpreter: this file, run as a script (`python tests/test_distributed.py
BACKEND`), trains each task one step on one device and one step on two
under `data_parallel_scope`, from the same weights, and prints what it
measured as JSON; the tests read that and compare. JAX gets its 2 devices
from `XLA_FLAGS=--xla_force_host_platform_device_count=2`, TensorFlow from
two logical CPU devices.
"""

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

BATCH = 8
IMAGE = 64
NUM_CLASSES = 3
RELATIVE = 1e-5
ABSOLUTE = 1e-5
# The step's norm: TensorFlow's synchronised BatchNorm takes the variance in
# one pass, E[x^2] - E[x]^2, where one device takes it in two; the steps
# differ by about 1e-3 of their size (1.2e-3 measured on the classifier).
# The per-replica normalisation this file catches is at the percent level.
UPDATES = 5e-3
TASKS = ("classifier", "ssdlite", "ssdlite320", "deeplabv3plus")
# Each task costs a few CPU-minutes per backend (building and tracing the
# model twice): CI runs the cases below, `MNET_DISTRIBUTED=all python -m
# pytest tests/test_distributed.py` runs every task on both backends.
CI_CASES = {
    "tensorflow": ("ssdlite", "deeplabv3plus"),
    "jax": ("ssdlite320",),  # the classifier on 2 JAX devices: test_two_processes_over_loopback_equal_one_device
}


def _cases(backend):
    return TASKS if os.environ.get("MNET_DISTRIBUTED") == "all" else CI_CASES[backend]


# --- the worker (runs in its own interpreter) ---------------------------------
def _data(task):
    if task == "ssdlite320":
        # The paper's head: class 0 is the background, objects are 1..NUM_CLASSES.
        images, targets = _data("ssdlite")
        labels = targets["labels"]
        return images, {"boxes": targets["boxes"], "labels": np.where(labels >= 0, labels + 1, -1).astype("int32")}
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (BATCH, IMAGE, IMAGE, 3)).astype("float32")
    if task == "classifier":
        return images, np.array([0, 1, 2, 0, 1, 2, 2, 1], "int32")
    if task == "ssdlite":
        # A different number of boxes per image, more in the first half of
        # the batch than in the second: each device sees its own count of
        # positive anchors, and only the global count gives one device's loss.
        boxes = np.full((BATCH, 3, 4), -1.0, "float32")
        labels = np.full((BATCH, 3), -1, "int32")
        counts = [3, 3, 2, 2, 1, 0, 1, 1]
        for i, count in enumerate(counts):
            for j in range(count):
                x0, y0 = rng.uniform(0, 30, 2)
                w, h = rng.uniform(16, 34, 2)
                boxes[i, j] = [x0, y0, min(x0 + w, IMAGE), min(y0 + h, IMAGE)]
                labels[i, j] = rng.integers(0, NUM_CLASSES)
        return images, {"boxes": boxes, "labels": labels}
    masks = rng.integers(0, NUM_CLASSES, (BATCH, IMAGE, IMAGE)).astype("int32")
    # Pixels labelled 255 do not count, far more of them in the first half of
    # the batch than in the second: only the global count of labelled pixels
    # gives one device's mean.
    for i, rows in enumerate([40, 32, 48, 24, 4, 0, 8, 2]):
        masks[i, :rows] = 255
    return images, masks


def _build(task):
    import keras

    import heads
    from mnet_backbones import MobileNetImageClassifier

    keras.utils.set_random_seed(0)
    common = dict(load_weights=False)
    # XLA on a CPU compiles for longer than this one step runs.
    jit = dict(jit_compile=keras.backend.backend() != "tensorflow")
    if task == "classifier":
        model = MobileNetImageClassifier.from_preset(
            "mobilenetv3_small_050", num_classes=NUM_CLASSES, dropout=0.0, **common
        )
        model.compile(
            optimizer=keras.optimizers.SGD(0.05, momentum=0.9),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
            **jit,
        )
    elif task == "ssdlite":
        model = heads.create_ssdlite("mobilenetv3_small_050", num_classes=NUM_CLASSES, image_size=IMAGE, **common)
        model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9), **jit)
    elif task == "ssdlite320":
        model = heads.create_ssdlite(
            "mobilenetv3_small_050", num_classes=NUM_CLASSES + 1, image_size=IMAGE, head="ssdlite320", **common
        )
        model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9), **jit)
    else:
        model = heads.create_deeplabv3plus(
            "mobilenetv3_small_050", num_classes=NUM_CLASSES, image_size=IMAGE, dropout=0.0, **common
        )
        model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9), **jit)
    return model


def _step(model, task, initial):
    import keras

    model.set_weights(initial)
    x, y = _data(task)
    history = model.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0)
    logs = {name: float(values[-1]) for name, values in history.history.items()}
    weights = [np.asarray(keras.ops.convert_to_numpy(v)) for v in model.weights]
    return logs, weights


def _compare(one, two, initial, paths, trainable):
    """How far apart two runs' weights are.

    `weights`: per variable, max |difference| over `RELATIVE * max |weight| +
    ABSOLUTE`, the worst variable's (at most 1 passes). The absolute part
    is for the variables that start at zero (betas, biases): after one step
    they hold only the step, and a gradient summed over a whole batch of
    pixels that nearly cancels (the stem's beta) differs in its last digits
    with the order of the sums. `updates`: the norm of the difference of the two steps over the
    norm of the step, all variables together.
    """
    ratios = [float(np.max(np.abs(a - b)) / (RELATIVE * np.max(np.abs(a)) + ABSOLUTE)) for a, b in zip(one, two)]
    worst = int(np.argmax(ratios))
    pairs = [(a, b, w0) for a, b, w0, t in zip(one, two, initial, trainable) if t]
    difference = np.sqrt(sum(float(np.sum(np.square(a - b))) for a, b, _ in pairs))
    step = np.sqrt(sum(float(np.sum(np.square(a - w0))) for a, _, w0 in pairs))
    moved = sum(bool(np.any(a != w0)) for a, w0 in zip(one, initial))
    return {
        "weights": ratios[worst],
        "worst": paths[worst],
        "worst_scale": [
            float(np.max(np.abs(one[worst]))),
            float(np.max(np.abs(one[worst] - two[worst]))),
            float(np.max(np.abs(one[worst] - initial[worst]))),
        ],
        "updates": difference / step,
        "moved": moved,
        "variables": len(one),
    }


def _paths_and_trainable(model):
    trainable = {id(v) for v in model.trainable_weights}
    return [v.path for v in model.weights], [id(v) in trainable for v in model.weights]


def worker(backend):
    if backend == "jax":
        os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
    os.environ["KERAS_BACKEND"] = backend
    if backend == "tensorflow":
        import tensorflow as tf

        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        tf.config.experimental.enable_op_determinism()

    from mnet_tools.distribute import data_parallel_scope, synchronize_batch_norm

    results = {}
    tasks = sys.argv[2].split(",") if len(sys.argv) > 2 else TASKS
    for task in tasks:
        start = time.perf_counter()
        reference = _build(task)
        initial = [np.asarray(w) for w in reference.get_weights()]
        logs_one, weights_one = _step(reference, task, initial)
        with data_parallel_scope(2) as setup:
            model = _build(task)
            synchronized = synchronize_batch_norm(model)
            logs_two, weights_two = _step(model, task, initial)
        results[task] = {
            "replicas": setup.num_replicas,
            "synchronized_batch_norm": synchronized,
            "logs_one": logs_one,
            "logs_two": logs_two,
            **_compare(weights_one, weights_two, initial, *_paths_and_trainable(reference)),
            "seconds": time.perf_counter() - start,
        }
    print("RESULT " + json.dumps(results))


def multi_host_worker(process_id, port):
    """One of two JAX processes joined over loopback, the stand-in for two hosts.

    Each process has one CPU device; the coordinator listens on localhost.
    Both take the same one-device step first (a reference without any
    distribution), then one step of the global batch of 8 under
    `data_parallel_scope`, each process training on its own 4 images.
    """
    os.environ.update(
        KERAS_BACKEND="jax",
        KERAS_DISTRIBUTION_JOB_ADDRESSES=f"localhost:{port}",
        KERAS_DISTRIBUTION_NUM_PROCESSES="2",
        KERAS_DISTRIBUTION_PROCESS_ID=str(process_id),
    )
    import jax
    import keras

    from mnet_tools.distribute import data_parallel_scope, initialize_multi_host

    assert initialize_multi_host()
    task = "classifier"
    reference = _build(task)
    initial = [np.asarray(w) for w in reference.get_weights()]
    logs_one, weights_one = _step(reference, task, initial)
    with data_parallel_scope() as setup:
        model = _build(task)
        model.set_weights(initial)
        # Every host passes the same global batches; Keras' DataParallel
        # shards a tf.data dataset across the processes (4 images each).
        import tensorflow as tf

        dataset = tf.data.Dataset.from_tensor_slices(_data(task)).batch(BATCH, drop_remainder=True)
        history = model.fit(dataset, epochs=1, verbose=0)
        logs_two = {name: float(values[-1]) for name, values in history.history.items()}
        weights_two = [np.asarray(keras.ops.convert_to_numpy(v)) for v in model.weights]
    result = {
        "processes": jax.process_count(),
        "replicas": setup.num_replicas,
        "logs_one": logs_one,
        "logs_two": logs_two,
        **_compare(weights_one, weights_two, initial, *_paths_and_trainable(reference)),
    }
    print("RESULT " + json.dumps({task: result}))


def tf_multi_worker(process_id, ports):
    """One of two TensorFlow workers joined over loopback by `TF_CONFIG`.

    `MultiWorkerMirroredStrategy` must exist before TensorFlow runs anything,
    so here the two-worker step comes first: the model is built in the scope,
    its initial weights kept, and one step of the global batch of 8 taken,
    each worker training on its own 4 images with synchronised BatchNorm.
    Then the same step on this worker's one device, outside any strategy.
    """
    os.environ.update(
        KERAS_BACKEND="tensorflow",
        TF_CONFIG=json.dumps(
            {
                "cluster": {"worker": [f"localhost:{port}" for port in ports]},
                "task": {"type": "worker", "index": process_id},
            }
        ),
    )
    import keras
    import tensorflow as tf

    from mnet_tools.distribute import data_parallel_scope, synchronize_batch_norm

    task = "classifier"
    with data_parallel_scope() as setup:
        model = _build(task)
        synchronized = synchronize_batch_norm(model)
        initial = [np.asarray(w) for w in model.get_weights()]
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
        dataset = tf.data.Dataset.from_tensor_slices(_data(task)).batch(BATCH, drop_remainder=True)
        history = model.fit(dataset.with_options(options), epochs=1, verbose=0)
        logs_two = {name: float(values[-1]) for name, values in history.history.items()}
        weights_two = [np.asarray(keras.ops.convert_to_numpy(v)) for v in model.weights]
    reference = _build(task)
    logs_one, weights_one = _step(reference, task, initial)
    result = {
        "processes": len(ports),
        "replicas": setup.num_replicas,
        "synchronized_batch_norm": synchronized,
        "logs_one": logs_one,
        "logs_two": logs_two,
        **_compare(weights_one, weights_two, initial, *_paths_and_trainable(reference)),
    }
    print("RESULT " + json.dumps({task: result}))


# --- the tests ----------------------------------------------------------------
def _result(returncode, stdout, stderr):
    lines = [line for line in stdout.splitlines() if line.startswith("RESULT ")]
    assert returncode == 0 and lines, stderr[-4000:]
    return json.loads(lines[-1][len("RESULT ") :])


def _environment():
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    # XLA at its defaults: with tests/run_all.sh's fast-compilation flags the 1- and 2-device steps of
    # SSDLite320 on JAX differ by 639 times the per-variable bound (at the defaults, within it).
    for name in ("XLA_FLAGS", "TF_CONFIG", "KERAS_BACKEND"):
        env.pop(name, None)
    return env


def _run(backend, tasks):
    command = [sys.executable, __file__, backend, ",".join(tasks)]
    done = subprocess.run(command, env=_environment(), capture_output=True, text=True, timeout=1200)
    return _result(done.returncode, done.stdout, done.stderr)


@pytest.fixture(scope="module", params=["jax", "tensorflow"])
def measured(request):
    backend = request.param
    return backend, _run(backend, _cases(backend))


# On JAX, DeepLabV3+'s steps on 1 and 2 devices differ at one ReLU: a value
# going into decoder_conv1_depthwise's ReLU (image 3, P2 (9, 14), channel 6) is
# +2.4e-6 on a map reaching 7.5, within float32 rounding of 0. The 2-device
# program sums BatchNorm's statistics in another order and rounds it below 0,
# so that pixel's gradient drops out: the step moves by 1.2e-3 of its norm,
# 0.8% on that channel's depthwise kernel. Moved off 0 (beta - 5e-5) the steps
# agree to 1e-5. A float32 step is discontinuous at every ReLU, so for this
# case only the step's norm (and the loss and metrics) are compared.
ONE_RELU_AT_ZERO = {("jax", "deeplabv3plus")}


def _check_same_step(result, per_variable=True):
    one, two = result["logs_one"], result["logs_two"]
    assert sorted(one) == sorted(two)
    for name in one:
        assert two[name] == pytest.approx(one[name], rel=RELATIVE, abs=1e-7), name
    if per_variable:
        assert result["weights"] <= 1.0, result["worst"]
    # The step itself, not only the weights it moved slightly, agrees closely.
    assert result["updates"] <= UPDATES


@pytest.mark.parametrize("task", TASKS)
def test_two_devices_equal_one(measured, task):
    backend, results = measured
    if task not in results:
        pytest.skip(f"{task} on {backend} runs with MNET_DISTRIBUTED=all (CI runs {CI_CASES[backend]})")
    result = results[task]
    assert result["replicas"] == 2
    # BatchNorm: synchronised on TensorFlow by the flag; on JAX the step is
    # one program over the global batch, so there is no flag to set.
    assert (result["synchronized_batch_norm"] > 0) == (backend == "tensorflow")
    # The step moved the weights (moving statistics included), so the
    # comparison below is not of two copies of the initial weights.
    # (Not all: at 64 px some of SSDLite320's extra blocks see 1x1 maps; 312 of 350 move.)
    assert result["moved"] > 0.85 * result["variables"]
    _check_same_step(result, per_variable=(backend, task) not in ONE_RELU_AT_ZERO)


def test_the_comparison_catches_a_per_replica_normaliser():
    # What test_two_devices_equal_one would see if each replica divided by
    # its own count: the mean of per-replica means, not the global mean.
    _, masks = _data("deeplabv3plus")
    labelled = (masks != 255).reshape(2, -1).sum(axis=1)
    assert labelled[0] < 0.8 * labelled[1]  # the halves differ, so the two means differ
    _, targets = _data("ssdlite")
    boxes_per_half = (targets["labels"] >= 0).reshape(2, -1).sum(axis=1)
    assert boxes_per_half[0] > 2 * boxes_per_half[1]


def _free_port():
    import socket

    with socket.socket() as probe:
        probe.bind(("localhost", 0))
        return probe.getsockname()[1]


@pytest.mark.parametrize("backend", ["jax", "tensorflow"])
def test_two_processes_over_loopback_equal_one_device(backend):
    # The stand-in for two hosts: JAX's keras.distribution.initialize, and
    # TensorFlow's MultiWorkerMirroredStrategy from TF_CONFIG.
    ports = [str(_free_port()) for _ in range(2)]
    arguments = {
        "jax": lambda i: ["multi-host", str(i), ports[0]],
        "tensorflow": lambda i: ["multi-worker", str(i)] + ports,
    }
    processes = [
        subprocess.Popen(
            [sys.executable, __file__] + arguments[backend](i),
            env=_environment(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    outputs = []
    try:
        for process in processes:
            outputs.append(process.communicate(timeout=900))
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
    for process, (stdout, stderr) in zip(processes, outputs):
        result = _result(process.returncode, stdout, stderr)["classifier"]
        assert result["processes"] == 2 and result["replicas"] == 2
        if backend == "tensorflow":
            assert result["synchronized_batch_norm"] > 0
        _check_same_step(result)


if __name__ == "__main__":
    if sys.argv[1] == "multi-host":
        multi_host_worker(int(sys.argv[2]), sys.argv[3])
    elif sys.argv[1] == "multi-worker":
        tf_multi_worker(int(sys.argv[2]), sys.argv[3:])
    else:
        worker(sys.argv[1])
