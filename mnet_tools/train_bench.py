"""Training throughput: the input pipeline, the train step, both, and 1 vs 2 devices.

A benchmark, not a test: it prints a markdown table of medians and asserts
nothing about speed. Per task (classifier, SSDLite, DeepLabV3+) and backend,
in images per second:

- pipeline: one epoch's batches of `mnet-backbones train` (the epoch
  dataset of `mnet_tools.train.data.EpochData`, with `train`'s default
  augmentation: for SSDLite torchvision's recipe of photometric distortion,
  zoom out, IoU crop and flip; for DeepLabV3+ scale, crop and flip; for
  the classifier random resized crop and flip), on a synthetic shapes set
  (`heads.datasets.make_shapes`) written to a temporary folder;
- step: `train`'s train step alone (its model and optimizer, `fit` on
  random tensors already in memory), on the default device without any
  distribution;
- pipeline + step: `fit` on the epoch's batches, as `train` runs an epoch;
- the train step on 2 devices under `mnet_tools.distribute.data_parallel_scope`,
  and its ratio to 1 device. The two are timed in turn, run for run, and
  the ratio is the median of the ratios of neighbouring runs, so that a slow
  spell of a shared machine falls on both. On a CPU the devices are virtual
  (XLA's host device count on JAX, logical CPU devices on TensorFlow): they
  share the cores, so the ratio says what the engine costs, not what a
  second chip gains. PyTorch trains on one device in Keras 3 (no column).

Device counts are fixed when a backend starts, so `run` measures each backend
in its own interpreter (`python -m mnet_tools.train_bench --worker ...`);
`measure` is the in-process part, for the devices the process already has.
"""

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

TASKS = ("classifier", "ssdlite", "deeplabv3plus")
BACKENDS = ("jax", "tensorflow", "torch")
NUM_CLASSES = 3  # the shapes set's circles, squares and triangles
HEADER = [
    "task",
    "backend",
    "px",
    "batch",
    "pipeline (img/s)",
    "step (img/s)",
    "pipeline + step (img/s)",
    "step, 2 devices (img/s)",
    "2 / 1 devices",
]


def _check_positive(name, value):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}.")
    return value


# The bench's task names and `mnet_tools.train`'s task and head for them.
TRAIN_TASKS = {
    "classifier": ("classification", "classifier"),
    "ssdlite": ("detection", "ssdlite"),
    "deeplabv3plus": ("segmentation", "deeplabv3plus"),
}


def _check_task(task):
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}.")
    return task


def train_data(task, folder, preset, image_size, batch_size, num_images):
    """`mnet_tools.train`'s checked data (`EpochData`) of `task` over a shapes set written under `folder`.

    The configuration is `train`'s with its defaults (augmentation on, seed
    0) and the preset's random weights; validation reads the training set
    (the bench never validates). The set holds `num_images` images, and at
    least one per class.
    """
    import heads
    from mnet_tools.train.config import TrainConfig
    from mnet_tools.train.data import EpochData

    train_task, head = TRAIN_TASKS[_check_task(task)]
    num_images = max(num_images, NUM_CLASSES)
    paths = heads.datasets.make_shapes(os.path.join(folder, "shapes"), num_images, image_size, seed=0)
    if train_task == "detection":
        data = (paths["annotations"], paths["images"])
    elif train_task == "segmentation":
        data = (paths["images"], paths["masks"])
    else:
        # An image folder, one subfolder per class, as classification training reads.
        classes = os.path.join(folder, "classes")
        for i, name in enumerate(sorted(os.listdir(paths["images"]))):
            target = os.path.join(classes, f"class_{i % NUM_CLASSES}")
            os.makedirs(target, exist_ok=True)
            os.symlink(os.path.join(paths["images"], name), os.path.join(target, name))
        data = (classes,)
    config = TrainConfig(
        task=train_task, train_data=data, val_data=data, preset=preset, load_weights=False, head=head,
        # The shapes masks hold the background 0 and the three shapes.
        num_classes=NUM_CLASSES + 1 if train_task == "segmentation" else None,
        image_size=image_size, batch_size=batch_size, epochs=100,
    )  # fmt: skip
    return EpochData(config)


def build(data):
    """`train`'s model for `data` (random weights), compiled with `train`'s optimizer and schedule."""
    from mnet_tools.train import build_model
    from mnet_tools.train.optim import make_optimizer

    config = data.config
    model = build_model(config, data, config.num_classes or data.num_classes)
    model.compile(optimizer=make_optimizer(config, model, data.steps_per_epoch))
    return model


def synthetic_batch(task, image_size, batch_size, seed=0):
    """Random images and targets of the shapes the task's `fit` takes."""
    rng = np.random.default_rng(seed)
    images = rng.uniform(0, 255, (batch_size, image_size, image_size, 3)).astype("float32")
    if task == "classifier":
        return images, rng.integers(0, NUM_CLASSES, batch_size).astype("int32")
    if task == "ssdlite":
        corner = rng.uniform(0, image_size / 2, (batch_size, 2, 2))
        size = rng.uniform(image_size / 8, image_size / 2, (batch_size, 2, 2))
        boxes = np.concatenate([corner, np.minimum(corner + size, image_size)], axis=-1).astype("float32")
        return images, {"boxes": boxes, "labels": rng.integers(0, NUM_CLASSES, (batch_size, 2)).astype("int32")}
    return images, rng.integers(0, NUM_CLASSES + 1, (batch_size, image_size, image_size, 1)).astype("int32")


@contextlib.contextmanager
def _within(setup):
    """Back inside the distribution `setup` was made with (none: the default device).

    TensorFlow refuses a model made under one strategy object in another, so
    the same engine is re-entered rather than a new scope made.
    """
    if setup is None or setup.engine is None:
        yield
    elif setup.backend == "tensorflow":
        with setup.engine.scope():
            yield
    else:
        import keras

        previous = keras.distribution.distribution()
        keras.distribution.set_distribution(setup.engine)
        try:
            yield
        finally:
            keras.distribution.set_distribution(previous)


def _images_per_second(run, images):
    start = time.perf_counter()
    run()
    return images / (time.perf_counter() - start)


def measure(task, preset="mobilenetv3_small_050", image_size=96, batch_size=8, steps=4, repeats=3, two_devices=True):
    """One row of the table for the current backend, as a dict of medians.

    A timed run is one epoch of `mnet_tools.train`: its epoch dataset
    (`EpochData.train_dataset(epoch)`, built fresh for each epoch as `train`
    does, so the pipeline's start is in the time) over a shapes set of
    `steps` batches. `repeats` timed runs, each a new epoch, after one
    warm-up run (which compiles). With `two_devices`, the train step is
    also timed on 2 devices, in turn with 1.
    """
    import keras

    from mnet_tools.distribute import data_parallel_scope

    _check_task(task)
    for name, value in (("image_size", image_size), ("batch_size", batch_size), ("steps", steps), ("repeats", repeats)):
        _check_positive(name, value)
    backend = keras.backend.backend()
    images = steps * batch_size
    x, y = synthetic_batch(task, image_size, batch_size * steps)
    row = {"task": task, "backend": backend, "image_size": image_size, "batch_size": batch_size}
    with tempfile.TemporaryDirectory() as folder:
        data = train_data(task, folder, preset, image_size, batch_size, images)
        model = build(data)
        epochs = iter(range(1 << 30))

        def pipeline():
            for _ in data.train_dataset(next(epochs)):
                pass

        def both():
            model.fit(data.train_dataset(next(epochs)), epochs=1, shuffle=False, verbose=0)

        def step(on=model, setup=None):
            with _within(setup):
                on.fit(x, y, batch_size=batch_size, epochs=1, shuffle=False, verbose=0)

        # An epoch holds `images`, or one image per class where that is more.
        for name, run, count in (("pipeline", pipeline, data.num_examples), ("step", step, images),
                                 ("both", both, data.num_examples)):  # fmt: skip
            run()  # warm-up: compiles, fills caches
            row[name] = statistics.median(_images_per_second(run, count) for _ in range(repeats))
        row["step_2"] = row["ratio_2_1"] = None
        if two_devices and backend != "torch":
            with data_parallel_scope(2) as setup:
                model_2 = build(data)
            step(model_2, setup)
            ones, twos = [], []
            for _ in range(repeats):
                ones.append(_images_per_second(step, images))
                twos.append(_images_per_second(lambda: step(model_2, setup), images))
            row["step_2"] = statistics.median(twos)
            row["ratio_2_1"] = statistics.median(two / one for one, two in zip(ones, twos))
    return row


def table(rows):
    """The rows of `measure` as a markdown table."""
    from mnet_tools.tables import markdown_table

    def rate(value):
        return "n/a" if value is None else f"{value:.1f}"

    lines = [
        [
            row["task"],
            row["backend"],
            str(row["image_size"]),
            str(row["batch_size"]),
            rate(row["pipeline"]),
            rate(row["step"]),
            rate(row["both"]),
            rate(row["step_2"]),
            "n/a" if row["ratio_2_1"] is None else f"{row['ratio_2_1']:.2f}",
        ]
        for row in rows
    ]
    return markdown_table(HEADER, lines, right_aligned=set(range(2, len(HEADER))))


def _worker(args):
    """Runs in a fresh interpreter whose backend was chosen by KERAS_BACKEND."""
    backend = os.environ.get("KERAS_BACKEND")
    if backend == "tensorflow":
        import tensorflow as tf

        if not tf.config.list_physical_devices("GPU"):
            cpu = tf.config.list_physical_devices("CPU")[0]
            tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    for task in args.tasks:
        row = measure(
            task, args.preset, args.image_size, args.batch_size, args.steps, args.repeats, not args.no_two_devices
        )
        # A row at a time, so that a long run shows its progress (stderr) and
        # a failure later keeps the rows already measured.
        print("ROW " + json.dumps(row), flush=True)
        print(f"measured {task} on {row['backend']}", file=sys.stderr, flush=True)


def run(
    tasks=TASKS, backends=BACKENDS, preset="mobilenetv3_small_050", image_size=96, batch_size=8, steps=4, repeats=3
):
    """Measures every task on every backend, each backend in its own interpreter; returns the rows."""
    for task in tasks:
        _check_task(task)
    for backend in backends:
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}.")
    rows = []
    for backend in backends:
        env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3")
        if backend == "jax":
            # 2 host devices when there is no accelerator; ignored on GPUs.
            env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2").strip()
        command = [sys.executable, "-m", "mnet_tools.train_bench", "--worker", "--tasks", *tasks]
        command += ["--preset", preset, "--image-size", str(image_size), "--batch-size", str(batch_size)]
        command += ["--steps", str(steps), "--repeats", str(repeats)]
        done = subprocess.run(command, env=env, stdout=subprocess.PIPE, text=True)
        rows += [json.loads(line[len("ROW ") :]) for line in done.stdout.splitlines() if line.startswith("ROW ")]
        if done.returncode:
            raise RuntimeError(f"the {backend} run failed (exit {done.returncode}); its error is printed above.")
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m mnet_tools.train_bench",
        description="Training throughput (images/s, medians): input pipeline, train step, both, 1 vs 2 devices.",
    )
    parser.add_argument("--tasks", nargs="+", choices=TASKS, default=list(TASKS))
    parser.add_argument("--backends", nargs="+", choices=BACKENDS, default=list(BACKENDS))
    parser.add_argument("--preset", default="mobilenetv3_small_050")
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=4, help="batches per timed run")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per figure (the median is printed)")
    parser.add_argument("--no-two-devices", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    for name in ("image_size", "batch_size", "steps", "repeats"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be a positive int, got {getattr(args, name)}.")
    if args.worker:
        return _worker(args)
    rows = run(args.tasks, args.backends, args.preset, args.image_size, args.batch_size, args.steps, args.repeats)
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
