"""Side-by-side speed and size of the presets, against keras.applications.

Everything is measured in one run on one machine, so that the ratios
(ours / keras.applications) mean something on a shared, noisy computer:
each figure is the median of repeated timings, and each of our models is timed
right next to its peer. `mnet-backbones bench --help` lists the
options; `run_benchmark` is the library entry point.

What is measured per preset, at its reference resolution, with random weights
(speed does not depend on the values):

- parameters and MACs (`count_macs`) of the 1000-class classifier;
- Keras on TensorFlow in graph mode (`tf.function`, no XLA: on CPU XLA is
  slower for these models), batch 1 and batch 32;
- LiteRT float32 and full-integer int8 (`mnet_tools.export`), batch 1,
  on `mnet_tools.litert`'s 2 threads;
- the peak resident memory of a fresh process that loads the LiteRT model
  and runs it (`ru_maxrss`, minus that of a process that only imports the
  interpreter);
- the MAC bound: 2 x MACs / the machine's float32 GEMM rate. The rate is
  that of a 1024 x 1024 x 1024 matrix product in LiteRT (XNNPACK, the same
  2 threads), timed in turn with the models, so that the ratio of a model's
  time to its bound is taken side by side; NumPy's rate, measured once at
  the start, is printed beside it for comparison. (NumPy cannot be the
  interleaved probe: OpenBLAS's threads keep spinning after a product and
  slow whatever LiteRT runs next on a 2-core machine.)
- how many XNNPACK partitions the int8 file falls into (one when XNNPACK
  runs all of it, `litert.xnnpack_coverage`), and the int8 speed-up this
  machine gives a plain stack of 1x1 convolutions in LiteRT: the ceiling for
  a model's int8 speed-up here.

A preset and its peer are timed in turn, run for run (ours, theirs, ours,
...), so that a slow spell of the machine falls on both alike; so are their
LiteRT float32 and int8 files, with the GEMM probe. Every ratio in the
tables (ours / keras.applications, the int8 speed-up, float32 over the MAC
bound) is the median of the ratios of neighbouring runs (`paired_ratio`), so
that it compares runs taken moments apart; the latencies are plain medians.

The pretrained heads (`run_task_benchmark`, `TASKS`: LR-ASPP, DeepLabV3 and
SSDLite320 converted from torchvision) are timed the same way at batch 1,
in TF graph mode and as LiteRT float32 / int8 files, in turn with
torchvision's own model on the CPU when torchvision is installed
(`torchvision_runner`); without it that column stays empty and the table
says why. Nothing else stands in for torchvision.
"""

import dataclasses
import math
import os
import statistics
import tempfile
import time

import keras
import numpy as np

import heads
from heads import torchvision_segmentation
from mnet_backbones.backbone import MobileNetBackbone
from mnet_backbones.classifier import MobileNetImageClassifier
from mnet_backbones.constants import IMAGENET_CLASSES
from mnet_backbones.presets import PRESETS, did_you_mean
from mnet_backbones.validation import check_image_size
from mnet_tools import export, litert
from mnet_tools.macs import count_macs
from mnet_tools.plotting import pyplot
from mnet_tools.tables import markdown_table

GEMM_SIZE = 1024
GEMM_FLOPS = 2 * GEMM_SIZE**3
DEFAULT_PRESETS = (
    "mobilenetv1_100",
    "mobilenetv2_100",
    "mobilenetv3_small_100",
    "mobilenetv3_large_100",
    "mobilenetv4_conv_small",
    "mobilenetv4_conv_medium",
    "mobilenetv4_hybrid_medium",
)

# keras.applications' constructor for each of our architectures it also has.
PEERS = {
    "mobilenetv1": ("MobileNet", {}),
    "mobilenetv2": ("MobileNetV2", {}),
    "mobilenetv3_large": ("MobileNetV3Large", {"include_preprocessing": False}),
    "mobilenetv3_small": ("MobileNetV3Small", {"include_preprocessing": False}),
    "mobilenetv3_large_minimal": (
        "MobileNetV3Large",
        {"include_preprocessing": False, "minimalistic": True},
    ),
    "mobilenetv3_small_minimal": (
        "MobileNetV3Small",
        {"include_preprocessing": False, "minimalistic": True},
    ),
}


@dataclasses.dataclass
class Timing:
    """One model's figures; latencies are median seconds, None when not measured."""

    model: str
    params: int
    macs: int
    graph_batch1: float = None
    graph_batch32: float = None
    litert_float32: float = None
    litert_int8: float = None
    litert_peak_mib: float = None
    int8_partitions: int = None
    gemm_rate: float = None  # LiteRT float32 FLOP/s, timed in turn with this model's LiteRT runs
    # Every run's seconds, by field name ("gemm": the probe's), for paired ratios.
    samples: dict = dataclasses.field(default_factory=dict, repr=False)


def interleaved_samples(runs, repeats, warmup=2):
    """Seconds of every run of each callable, timed in turn: a, b, a, b, ..."""
    for run in runs:
        for _ in range(warmup):
            run()
    times = [[] for _ in runs]
    for _ in range(repeats):
        for run, samples in zip(runs, times):
            start = time.perf_counter()
            run()
            samples.append(time.perf_counter() - start)
    return times


def interleaved_medians(runs, repeats, warmup=2):
    """Median seconds of each callable, timed in turn: a, b, a, b, ..."""
    return [statistics.median(samples) for samples in interleaved_samples(runs, repeats, warmup)]


def paired_ratio(a, b):
    """Median over runs of a[i] / b[i], for runs timed in turn.

    Each pair ran moments apart, so a slow spell of the machine scales both
    and cancels in their ratio; the ratio of the two medians can still
    compare a fast run with a slow one.
    """
    if len(a) != len(b) or not a:
        raise ValueError(f"paired_ratio needs two equally long, non-empty runs; got {len(a)} and {len(b)}.")
    return statistics.median(x / y for x, y in zip(a, b))


def median_seconds(run, repeats, warmup=2):
    return interleaved_medians([run], repeats, warmup)[0]


def gemm_rate(repeats=10):
    """The machine's float32 matrix-multiply rate in FLOP/s (NumPy, 1024^3, median)."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((GEMM_SIZE, GEMM_SIZE), dtype=np.float32)
    b = rng.standard_normal((GEMM_SIZE, GEMM_SIZE), dtype=np.float32)
    return GEMM_FLOPS / median_seconds(lambda: a @ b, repeats)


def litert_gemm_runner(work_dir):
    """A callable that runs one 1024^3 float32 matrix product in LiteRT (`GEMM_FLOPS`).

    A dense layer over a batch of 1024: XNNPACK's fully-connected operator,
    on `litert.THREADS` threads like the models it is timed with.
    """
    inputs = keras.Input((GEMM_SIZE,))
    model = keras.Model(inputs, keras.layers.Dense(GEMM_SIZE, use_bias=False)(inputs))
    path = os.path.join(work_dir, "gemm.tflite")
    signature = [keras.InputSpec(shape=(GEMM_SIZE, GEMM_SIZE), dtype="float32")]
    model.export(path, format="litert", input_signature=signature, verbose=False)
    return litert.runner(path)


def classifier_for(preset):
    """Our 1000-class classifier of `preset`, fixed at its reference resolution."""
    resolution = PRESETS[preset].resolution
    backbone = MobileNetBackbone.from_preset(preset, load_weights=False, image_shape=(resolution, resolution, 3))
    return MobileNetImageClassifier(backbone, num_classes=IMAGENET_CLASSES)


def peer_for(preset):
    """keras.applications' model of the same architecture, or None (V4)."""
    spec = PRESETS[preset]
    if spec.architecture not in PEERS:
        return None
    constructor, kwargs = PEERS[spec.architecture]
    return getattr(keras.applications, constructor)(
        input_shape=(spec.resolution, spec.resolution, 3),
        alpha=spec.width_multiplier,
        weights=None,
        classes=IMAGENET_CLASSES,
        classifier_activation=None,
        **kwargs,
    )


def graph_runner(model, batch_size):
    """A callable that runs `model` once in TensorFlow graph mode (no XLA)."""
    import tensorflow as tf

    images = tf.random.uniform((batch_size, *model.input_shape[1:]))
    forward = tf.function(lambda x: model(x, training=False), jit_compile=False)
    return lambda: keras.tree.map_structure(lambda output: output.numpy(), forward(images))


def export_litert(model, path, int8=False):
    """Write `model` as LiteRT, float32 or int8 (calibrated on random images in [-1, 1])."""
    calibration = None
    if int8:
        calibration = export.random_images(export.model_image_size(model)) / 127.5 - 1.0
    return export.export_model(model, path, "litert", int8=int8, calibration_images=calibration)


def _record(timing, field, samples):
    """Keep every run's seconds (for paired ratios) and their median as the figure."""
    timing.samples[field] = samples
    setattr(timing, field, statistics.median(samples))


def measure(models, repeats, batch_sizes, work_dir, int8=True, gemm=None):
    """`Timing`s of `models` (a dict name -> model), each figure timed side by side.

    The TF graph runs are timed in turn, then all the LiteRT files (float32,
    int8) with the `gemm` probe (`litert_gemm_runner`, made here if None).
    """
    timings = [
        Timing(
            model=name,
            params=sum(math.prod(weight.shape) for weight in model.trainable_weights),
            macs=count_macs(model),
        )
        for name, model in models.items()
    ]

    def timed(field, runners, count=repeats):
        for timing, samples in zip(timings, interleaved_samples(runners, count)):
            _record(timing, field, samples)

    if 1 in batch_sizes:
        timed("graph_batch1", [graph_runner(model, 1) for model in models.values()])
    if 32 in batch_sizes:
        timed("graph_batch32", [graph_runner(model, 32) for model in models.values()], max(3, repeats // 10))
    stems = [os.path.join(work_dir, name.replace("/", "_")) for name in models]
    float_paths = [export_litert(model, f"{stem}.tflite") for stem, model in zip(stems, models.values())]
    int8_paths = []
    if int8:
        int8_paths = [
            export_litert(model, f"{stem}_int8.tflite", int8=True) for stem, model in zip(stems, models.values())
        ]
    gemm = gemm or litert_gemm_runner(work_dir)
    *samples, gemm_samples = interleaved_samples([litert.runner(p) for p in float_paths + int8_paths] + [gemm], repeats)
    for i, timing in enumerate(timings):
        _record(timing, "litert_float32", samples[i])
        if int8:
            _record(timing, "litert_int8", samples[len(timings) + i])
        timing.samples["gemm"] = gemm_samples
        timing.gemm_rate = GEMM_FLOPS / statistics.median(gemm_samples)
        timing.litert_peak_mib = litert.peak_memory_mib(float_paths[i])
        if int8:
            timing.int8_partitions = litert.xnnpack_coverage(int8_paths[i])["partitions"]
    return timings


def conv_int8_speedup(work_dir, repeats=100):
    """LiteRT float32 / int8 latency of four 1x1 convolutions (28 x 28 x 256, batch 1).

    A pointwise convolution is a matrix product, the bulk of a MobileNet's
    MACs and what int8 speeds up best; no model's int8 speed-up on this
    machine should be expected above this figure.
    """
    inputs = keras.Input((28, 28, 3))
    x = keras.layers.Conv2D(256, 1, name="widen")(inputs)  # 0.3% of the MACs
    for i in range(4):
        x = keras.layers.Conv2D(256, 1, activation="relu", name=f"pointwise_{i}")(x)
    model = keras.Model(inputs, x)
    float_path = export.export_model(model, os.path.join(work_dir, "pointwise.tflite"))
    calibration = np.random.default_rng(0).uniform(-1, 1, (8, 28, 28, 3)).astype("float32")
    int8_path = export.export_model(
        model, os.path.join(work_dir, "pointwise_int8.tflite"), int8=True, calibration_images=calibration
    )
    return paired_ratio(*interleaved_samples([litert.runner(float_path), litert.runner(int8_path)], repeats))


@dataclasses.dataclass
class Machine:
    """What the machine itself gives: NumPy's float32 GEMM FLOP/s, int8 speed-up of 1x1 convolutions."""

    gemm_rate: float
    conv_int8_speedup: float = None


def run_benchmark(presets=DEFAULT_PRESETS, repeats=100, batch_sizes=(1, 32), peers=True, int8=True, progress=None):
    """Measure `presets` and their keras.applications peers; returns (rows, `Machine`).

    Each row is a `Timing`; a peer's row follows its preset's, named
    `keras.applications/<preset>`, and the two are timed in turn.
    """
    for preset in presets:
        if preset not in PRESETS:
            raise ValueError(
                f"Unknown preset {preset!r}.{did_you_mean(preset, PRESETS)} Valid presets: {sorted(PRESETS)}."
            )
    rows = []
    with tempfile.TemporaryDirectory() as work_dir:
        machine = Machine(gemm_rate(), conv_int8_speedup(work_dir, repeats) if int8 else None)
        gemm = litert_gemm_runner(work_dir)
        for preset in presets:
            models = {preset: classifier_for(preset)}
            peer = peer_for(preset) if peers else None
            if peer is not None:
                models[f"keras.applications/{preset}"] = peer
            if progress:
                progress(" and ".join(models))
            rows.extend(measure(models, repeats, batch_sizes, work_dir, int8, gemm))
    return rows, machine


def block_profile(preset, repeats=100):
    """Where a preset's LiteRT float32 time goes, block by block, against its MACs.

    The classifier is cut after each block of its backbone (the stem, each
    block, the head) and each prefix is exported and timed, all in turn; a
    block's time is its prefix's minus the one before. Returns
    `(rows, gemm_rate)`, each row `{"block", "shape", "macs", "seconds"}`;
    the rate is LiteRT's (`litert_gemm_runner`), timed in turn with the prefixes.
    Times of small blocks are differences of noisy medians: read them in sums.
    """
    if preset not in PRESETS:
        raise ValueError(f"Unknown preset {preset!r}.{did_you_mean(preset, PRESETS)} Valid presets: {sorted(PRESETS)}.")
    classifier = classifier_for(preset)
    backbone = classifier.backbone
    cuts = backbone.layers[1:]  # every layer after the input
    prefixes = [keras.Model(backbone.input, layer.output) for layer in cuts] + [classifier]
    names = [layer.name for layer in cuts] + ["classifier head"]
    with tempfile.TemporaryDirectory() as work_dir:
        paths = [
            export_litert(model, os.path.join(work_dir, f"prefix_{i:03d}.tflite")) for i, model in enumerate(prefixes)
        ]
        *times, gemm_seconds = interleaved_medians(
            [litert.runner(path) for path in paths] + [litert_gemm_runner(work_dir)], repeats
        )
    macs = [count_macs(model) for model in prefixes]
    rows = []
    for i, (name, model) in enumerate(zip(names, prefixes)):
        rows.append(
            {
                "block": name,
                "shape": "x".join(str(d) for d in model.output.shape[1:]),
                "macs": macs[i] - (macs[i - 1] if i else 0),
                "seconds": times[i] - (times[i - 1] if i else 0),
            }
        )
    return rows, GEMM_FLOPS / gemm_seconds


def block_table(rows, rate):
    """`block_profile`'s rows as markdown, with each block's MAC bound and its time over it."""
    body, total_macs, total_seconds = [], 0, 0.0
    for row in rows + [None]:
        if row is None:
            row = {"block": "total", "shape": "", "macs": total_macs, "seconds": total_seconds}
        else:
            total_macs, total_seconds = total_macs + row["macs"], total_seconds + row["seconds"]
        bound = 2 * row["macs"] / rate
        body.append(
            [
                row["block"],
                row["shape"],
                f"{row['macs'] / 1e6:.1f}",
                _ms(row["seconds"]),
                _ms(bound),
                _ratio(row["seconds"], bound) if row["macs"] else "-",
            ]
        )
    header = ["block", "output", "MACs (M)", "LiteRT fp32 ms", "MAC bound ms", "time / bound"]
    table = markdown_table(header, body, right_aligned={2, 3, 4, 5})
    return f"{table}\n\nfloat32 GEMM rate: {rate / 1e9:.1f} GFLOP/s (LiteRT, 1024^3, timed in turn with the blocks)"


def _ms(seconds):
    return "-" if seconds is None else f"{seconds * 1e3:.2f}"


def _ratio(ours, theirs):
    return "-" if ours is None or theirs is None else f"{ours / theirs:.2f}"


def _paired(row, field, other, other_field):
    """`row.field / other.other_field`: the median of paired runs where both have them."""
    a, b = row.samples.get(field), other.samples.get(other_field)
    if a and b and len(a) == len(b):
        return f"{paired_ratio(a, b):.2f}"
    return _ratio(getattr(row, field), getattr(other, other_field))


def _bound_ratio(row, bound):
    """LiteRT float32 time over the MAC bound, paired run for run with the GEMM probe."""
    fp32, gemm = row.samples.get("litert_float32"), row.samples.get("gemm")
    if fp32 and gemm and len(fp32) == len(gemm):
        return f"{paired_ratio(fp32, [2 * row.macs * g / GEMM_FLOPS for g in gemm]):.2f}"
    return _ratio(row.litert_float32, bound)


RATIO_FIELDS = ("graph_batch1", "graph_batch32", "litert_float32", "litert_int8")


def results_table(rows, machine):
    """The measurements as markdown: one table of figures, one of ratios, then the machine's."""
    header = [
        "model",
        "params (M)",
        "MACs (M)",
        "TF graph b1 ms",
        "TF graph b32 ms",
        "LiteRT fp32 ms",
        "LiteRT int8 ms",
        "int8 speed-up",
        "int8 partitions",
        "MAC bound ms",
        "fp32 / bound",
        "LiteRT peak MiB",
    ]
    body = []
    for row in rows:
        bound = 2 * row.macs / (row.gemm_rate or machine.gemm_rate)
        body.append(
            [
                row.model,
                f"{row.params / 1e6:.2f}",
                f"{row.macs / 1e6:.1f}",
                _ms(row.graph_batch1),
                _ms(row.graph_batch32),
                _ms(row.litert_float32),
                _ms(row.litert_int8),
                _paired(row, "litert_float32", row, "litert_int8"),
                "-" if row.int8_partitions is None else str(row.int8_partitions),
                _ms(bound),
                _bound_ratio(row, bound),
                "-" if row.litert_peak_mib is None else f"{row.litert_peak_mib:.0f}",
            ]
        )
    figures = markdown_table(header, body, right_aligned=set(range(1, len(header))))
    by_name = {row.model: row for row in rows}
    ratio_rows = []
    for row in rows:
        peer = by_name.get(f"keras.applications/{row.model}")
        if peer is None:
            continue
        ratio_rows.append(
            [
                row.model,
                *(_paired(row, field, peer, field) for field in RATIO_FIELDS),
            ]
        )
    ratios = markdown_table(
        ["ours / keras.applications", "TF graph b1", "TF graph b32", "LiteRT fp32", "LiteRT int8"],
        ratio_rows,
        right_aligned={1, 2, 3, 4},
    )
    rates = [row.gemm_rate / 1e9 for row in rows if row.gemm_rate]
    notes = [f"float32 GEMM rate (1024^3): NumPy {machine.gemm_rate / 1e9:.1f} GFLOP/s, once at the start"]
    if rates:
        notes[0] += (
            f"; LiteRT {min(rates):.1f}-{max(rates):.1f} GFLOP/s timed in turn with each preset's"
            " LiteRT runs, which the MAC bound divides by"
        )
    if machine.conv_int8_speedup is not None:
        notes.append(f"int8 speed-up of 1x1 convolutions alone (LiteRT): {machine.conv_int8_speedup:.2f}")
    return f"{figures}\n\n{ratios}\n\n" + "\n".join(notes)


def pareto_plot(rows, path):
    """Latency against MACs, one point per model and runtime, as a PNG."""
    plt = pyplot("The Pareto plot (--plot)")
    figure, axes = plt.subplots(figsize=(8, 5.5))
    series = (
        ("TF graph, batch 1", "graph_batch1", "o"),
        ("LiteRT float32", "litert_float32", "s"),
        ("LiteRT int8", "litert_int8", "^"),
    )
    for is_peer in (False, True):
        for label, field, marker in series:
            points = [
                (row.macs / 1e6, getattr(row, field) * 1e3, row.model)
                for row in rows
                if getattr(row, field) is not None and row.model.startswith("keras.") == is_peer
            ]
            if not points:
                continue
            axes.scatter(
                [p[0] for p in points],
                [p[1] for p in points],
                marker=marker,
                facecolors="none" if is_peer else None,
                edgecolors="gray" if is_peer else None,
                label=f"{label} ({'keras.applications' if is_peer else 'ours'})",
            )
            if not is_peer:
                for macs, latency, name in points:
                    axes.annotate(name.replace("mobilenet", ""), (macs, latency), fontsize=7)
    axes.set_xscale("log")
    axes.set_yscale("log")
    axes.set_xlabel("MACs (millions)")
    axes.set_ylabel("latency (ms, median)")
    axes.set_title("MobileNet presets: latency against MACs")
    axes.legend(fontsize=7)
    axes.grid(True, which="both", alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


# --------------------------------------------------------------------------
# Pretrained heads beside torchvision's own CPU inference.

# Built-in pretrained heads the task benchmark times: torchvision's builder,
# whether the model is a segmenter or a detector, and the size torchvision
# runs it at (the segmenters' evaluation resizes the short side to 520; the
# detector resizes every image to 320 x 320).
TASKS = {
    "lraspp_mobilenetv3_large_voc": dict(builder="lraspp_mobilenet_v3_large", kind="segmenter", image_size=(520, 520)),
    "deeplabv3_mobilenetv3_large_voc": dict(
        builder="deeplabv3_mobilenet_v3_large", kind="segmenter", image_size=(520, 520)
    ),
    "ssdlite320_mobilenetv3_large_coco": dict(
        builder="ssdlite320_mobilenet_v3_large", kind="detector", image_size=(320, 320)
    ),
}
DEFAULT_TASKS = ("lraspp_mobilenetv3_large_voc", "ssdlite320_mobilenetv3_large_coco")


@dataclasses.dataclass
class TaskTiming:
    """One pretrained head's figures (median seconds, None when not measured) and torchvision's."""

    model: str
    params: int
    image_size: tuple
    macs: int = None
    graph_batch1: float = None
    litert_float32: float = None
    litert_int8: float = None
    int8_partitions: int = None
    torchvision: float = None
    # What the torchvision column is: "torchvision 0.x eager, N threads", or why it is empty.
    torchvision_note: str = ""
    samples: dict = dataclasses.field(default_factory=dict, repr=False)


def _check_task(name):
    if name not in TASKS:
        raise ValueError(f"Unknown pretrained head {name!r}. Valid names: {sorted(TASKS)}.")
    return TASKS[name]


def torchvision_runner(name, image_size, checkpoint=None):
    """`(callable, note)`: torchvision's own model of the built-in `name`, run once on CPU at batch 1.

    The model comes from torchvision's builder (random weights, or the
    state_dict at `checkpoint`), in eval mode under `torch.inference_mode`,
    on `litert.THREADS` threads like the LiteRT runs. A segmenter runs whole
    (its output at the image size); of the detector only the network runs
    (torchvision's `backbone` and `head` on a 320 x 320 batch: raw outputs,
    as our detector's own call and LiteRT file give them), not its resize
    and post-processing. Without torchvision the callable is None and the
    note says so: nothing else stands in for it (a model rebuilt here in
    PyTorch would not be torchvision's).
    """
    task = _check_task(name)
    try:
        import torch
        import torchvision
        from torchvision.models import detection, segmentation
    except Exception as error:  # ImportError, or torchvision's C++ ops failing to load
        return None, f"torchvision not available ({type(error).__name__}: {error}); not compared"

    torch.set_num_threads(litert.THREADS)
    module = detection if task["kind"] == "detector" else segmentation
    model = getattr(module, task["builder"])(weights=None, weights_backbone=None).eval()
    if checkpoint is not None:
        model.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=True))
    images = torch.rand(1, 3, *image_size)

    if task["kind"] == "detector":

        def run():
            with torch.inference_mode():
                return model.head(list(model.backbone(images).values()))

        what = "the network (backbone + head, raw outputs)"
    else:

        def run():
            with torch.inference_mode():
                return model(images)["out"]

        what = "the whole model"
    note = f"torchvision {torchvision.__version__} eager (torch {torch.__version__}), {what}, {litert.THREADS} threads"
    return run, note


def pretrained_head(name, image_size=None, checkpoint=None):
    """Our model of the built-in `name`: random weights (no download), or converted from `checkpoint`.

    A segmenter is built at `image_size` (default: `TASKS`'); the detector
    has its own 320 x 320.
    """
    task = _check_task(name)
    if task["kind"] == "detector":
        if image_size is not None and check_image_size(image_size) != task["image_size"]:
            raise ValueError(f"{name} runs at {task['image_size']}; got image_size={image_size}.")
        return heads.SSDLite320ObjectDetector.from_preset(checkpoint or name, load_weights=checkpoint is not None)
    image_size = check_image_size(image_size or task["image_size"])
    if checkpoint is None:
        return torchvision_segmentation.load_torchvision_segmenter(name, load_weights=False, image_size=image_size)
    model = torchvision_segmentation.load_torchvision_segmenter(checkpoint, image_size=image_size)
    if model.torchvision_builder != task["builder"]:
        raise ValueError(
            f"{checkpoint!r} holds a {model.torchvision_builder!r} checkpoint, not {name!r}'s {task['builder']!r}."
        )
    return model


def measure_task(name, repeats=50, image_size=None, int8=True, checkpoint=None, work_dir=None):
    """A `TaskTiming` of the built-in pretrained head `name`, every runtime timed in turn.

    Our model runs in TensorFlow graph mode and as LiteRT float32 / int8
    files (batch 1); torchvision's own (`torchvision_runner`) in the same
    rotation when it is installed, so each ratio is one of runs moments apart.
    """
    model = pretrained_head(name, image_size, checkpoint)
    size = tuple(int(side) for side in model.image_size)
    timing = TaskTiming(
        model=name, params=sum(math.prod(weight.shape) for weight in model.trainable_weights), image_size=size
    )
    try:
        timing.macs = count_macs(model)
    except ValueError:
        timing.macs = None
    with tempfile.TemporaryDirectory(dir=work_dir) as folder:
        float_path = export.export_model(model, os.path.join(folder, "float32.tflite"), image_size=size, batch_size=1)
        runners = {"graph_batch1": graph_runner(model, 1), "litert_float32": litert.runner(float_path)}
        if int8:
            int8_path = export.export_model(
                model,
                os.path.join(folder, "int8.tflite"),
                image_size=size,
                batch_size=1,
                int8=True,
                calibration_images=export.random_images(size),
            )
            runners["litert_int8"] = litert.runner(int8_path)
            timing.int8_partitions = litert.xnnpack_coverage(int8_path)["partitions"]
        reference, timing.torchvision_note = torchvision_runner(name, size, checkpoint)
        if reference is not None:
            runners["torchvision"] = reference
        for field, samples in zip(runners, interleaved_samples(list(runners.values()), repeats)):
            _record(timing, field, samples)
    return timing


def run_task_benchmark(names=DEFAULT_TASKS, repeats=50, image_size=None, int8=True, checkpoints=None, progress=None):
    """`measure_task` for each built-in pretrained head in `names`; `checkpoints` maps a name to a `.pth` path."""
    checkpoints = checkpoints or {}
    for name in names:
        _check_task(name)
    rows = []
    for name in names:
        if progress:
            progress(name)
        rows.append(measure_task(name, repeats, image_size, int8, checkpoints.get(name)))
    return rows


TASK_RATIO_FIELDS = ("graph_batch1", "litert_float32", "litert_int8")


def task_results_table(rows):
    """The pretrained heads' figures as markdown, with ours / torchvision ratios (paired runs) and notes."""
    header = [
        "model",
        "input",
        "params (M)",
        "MACs (M)",
        "TF graph b1 ms",
        "LiteRT fp32 ms",
        "LiteRT int8 ms",
        "int8 partitions",
        "torchvision CPU ms",
        "TF graph / tv",
        "LiteRT fp32 / tv",
        "LiteRT int8 / tv",
    ]
    body, notes = [], []
    for row in rows:
        body.append(
            [
                row.model,
                "x".join(str(side) for side in row.image_size),
                f"{row.params / 1e6:.2f}",
                "-" if row.macs is None else f"{row.macs / 1e6:.0f}",
                _ms(row.graph_batch1),
                _ms(row.litert_float32),
                _ms(row.litert_int8),
                "-" if row.int8_partitions is None else str(row.int8_partitions),
                _ms(row.torchvision),
                *(
                    "-"
                    if row.torchvision is None or getattr(row, field) is None
                    else _paired(row, field, row, "torchvision")
                    for field in TASK_RATIO_FIELDS
                ),
            ]
        )
        notes.append(f"{row.model}: torchvision column: {row.torchvision_note or 'not measured'}")
    table = markdown_table(header, body, right_aligned=set(range(2, len(header))))
    notes.append(
        "Ours: random weights unless a checkpoint was given (speed does not depend on them), batch 1, "
        f"LiteRT on {litert.THREADS} threads; the detector's figures are its network (raw outputs), "
        "post-processing not timed. Ratios are medians of runs timed in turn (below 1: ours faster)."
    )
    return table + "\n\n" + "\n".join(notes)
