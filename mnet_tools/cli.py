"""The `mnet-backbones` command line (also `python -m mnet_tools`).

    mnet-backbones list [--no-params]
    mnet-backbones summary PRESET [--size H W] [--num-classes N]
    mnet-backbones convert SOURCE OUT_DIR
    mnet-backbones demo detection|segmentation [DEMO OPTIONS]
    mnet-backbones bench [PRESETS...] [--repeats N] [--plot PNG] [--quick]
    mnet-backbones export MODEL OUT [--format litert|onnx] [--int8 --calibration-data DIR]

A subcommand is a pair of functions: `add_<name>(subcommands)` declares its
arguments and sets `run`, and `run_<name>(args)` does the work and returns the
exit status. `COMMANDS` lists the `add_*` functions, so a new subcommand is
one more pair and one more entry. A `CommandError` is a user error: `main`
prints it as one line and returns 2, as argparse does for bad arguments.
"""

import argparse
import math
import os
import shutil
import sys
import time

import keras

from mnet_backbones import weights
from mnet_backbones._version import __version__
from mnet_backbones.architectures import get_architecture
from mnet_backbones.backbone import MobileNetBackbone
from mnet_backbones.builder import PYRAMID_STRIDES, pyramid_level
from mnet_backbones.classifier import MobileNetImageClassifier
from mnet_backbones.constants import IMAGENET_CLASSES
from mnet_backbones.convert import timm
from mnet_backbones.presets import PRESETS, check_preset_name
from mnet_tools import bench, export
from mnet_tools.demos import detection, segmentation
from mnet_tools.macs import count_macs
from mnet_tools.tables import markdown_table

PROG = "mnet-backbones"
PYRAMID_LEVELS = tuple(pyramid_level(stride) for stride in PYRAMID_STRIDES)


class CommandError(Exception):
    """A mistake in the command's arguments, reported without a traceback."""


# --------------------------------------------------------------------------
# Shared helpers.
def positive_int(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def trainable_parameters(model):
    return sum(math.prod(weight.shape) for weight in model.trainable_weights)


def build_classifier(preset, image_shape=(None, None, 3), num_classes=IMAGENET_CLASSES):
    """A randomly initialised classifier on the preset's backbone.

    A bad preset name or image shape becomes a `CommandError`.
    """
    try:
        backbone = MobileNetBackbone.from_preset(preset, load_weights=False, image_shape=image_shape)
    except ValueError as error:
        raise CommandError(str(error)) from None
    return MobileNetImageClassifier(backbone, num_classes=num_classes)


def macs_millions(model, image_shape):
    """MACs in millions as text; "n/a" off TensorFlow, whose graph the counter reads."""
    if keras.backend.backend() != "tensorflow":
        return "n/a"
    return f"{count_macs(model, image_shape) / 1e6:,.1f}"


# --------------------------------------------------------------------------
# mnet-backbones list
def add_list(subcommands):
    parser = subcommands.add_parser(
        "list",
        help="table of the built-in presets",
        description="Print every built-in preset with its architecture, the "
        "trainable parameters of its classifier at 1000 classes, the "
        "channels of its pyramid levels P2-P5 and its MACs at its resolution.",
    )
    parser.add_argument(
        "--no-params",
        dest="params",
        action="store_false",
        help="skip building the models: leave out parameter and channel counts",
    )
    parser.set_defaults(run=run_list)


def run_list(args):
    header = ["preset", "generation", "width", "resolution", "padding"]
    rows = []
    for preset in PRESETS.values():
        arch = get_architecture(preset.architecture)
        rows.append(
            [
                preset.name,
                str(arch.generation),
                f"{preset.width_multiplier:g}",
                str(preset.resolution),
                preset.padding,
            ]
        )
    right_aligned = {1, 2, 3}
    if args.params:
        print(
            f"Building {len(rows)} classifiers to count their parameters (--no-params skips this)...",
            file=sys.stderr,
        )
        header += [f"params ({IMAGENET_CLASSES} classes)", *PYRAMID_LEVELS, "MACs (M)"]
        right_aligned |= set(range(5, len(header)))
        for row in rows:
            classifier = build_classifier(row[0])
            pyramid = classifier.backbone.pyramid_outputs
            row.append(f"{trainable_parameters(classifier):,}")
            row.extend(str(pyramid[level].shape[-1]) for level in PYRAMID_LEVELS)
            resolution = int(row[3])
            row.append(macs_millions(classifier, (resolution, resolution, 3)))
    print(markdown_table(header, rows, right_aligned))
    return 0


# --------------------------------------------------------------------------
# mnet-backbones summary PRESET
def add_summary(subcommands):
    parser = subcommands.add_parser(
        "summary",
        help="pyramid shapes and parameter counts of one preset",
        description="Build a preset with random weights and print the shapes "
        "of its pyramid levels and final output at one input size, and its "
        "parameter counts.",
    )
    parser.add_argument("preset", help="a built-in preset name or a preset folder")
    parser.add_argument(
        "--size",
        nargs=2,
        type=positive_int,
        metavar=("H", "W"),
        help="input height and width (default: the preset's reference resolution)",
    )
    parser.add_argument(
        "--num-classes",
        type=positive_int,
        default=IMAGENET_CLASSES,
        metavar="N",
        help=f"classes of the classifier whose parameters are counted (default: {IMAGENET_CLASSES})",
    )
    parser.set_defaults(run=run_summary)


def reference_size(preset):
    if preset in PRESETS:
        resolution = PRESETS[preset].resolution
        return resolution, resolution
    try:
        check_preset_name(preset)
    except ValueError as error:
        raise CommandError(str(error)) from None
    raise CommandError(f"{preset!r} is not a built-in preset: give its input size with --size H W.")


def run_summary(args):
    height, width = args.size or reference_size(args.preset)
    classifier = build_classifier(args.preset, (height, width, 3), args.num_classes)
    backbone = classifier.backbone
    arch = backbone.architecture_spec
    print(
        f"{args.preset} at {height} x {width}: generation {arch.generation}, "
        f"architecture {arch.name}, width {backbone.width_multiplier:g}, "
        f"{backbone.padding} padding"
    )
    print()
    outputs = [
        (level, stride, backbone.pyramid_outputs[level]) for level, stride in zip(PYRAMID_LEVELS, PYRAMID_STRIDES)
    ]
    outputs.append(("output", PYRAMID_STRIDES[-1], backbone.output))
    rows = [[name, str(stride), str(tuple(tensor.shape[1:]))] for name, stride, tensor in outputs]
    print(markdown_table(["level", "stride", "shape (H, W, C)"], rows, right_aligned={1}))
    print()
    print(f"backbone parameters:   {backbone.count_params():,} ({trainable_parameters(backbone):,} trainable)")
    print(f"classifier parameters: {trainable_parameters(classifier):,} trainable ({args.num_classes} classes)")
    print(f"classifier MACs:       {macs_millions(classifier, (height, width, 3))} M")
    return 0


# --------------------------------------------------------------------------
# mnet-backbones convert
def add_convert(subcommands):
    parser = subcommands.add_parser(
        "convert",
        help="convert a checkpoint into a keras-hub preset folder",
        description=(
            "Convert SOURCE (a timm snapshot folder with config.json and "
            "model.safetensors, an hf://timm/<name>.<tag> handle, or a built-in "
            "preset name) into a keras-hub preset folder OUT_DIR that "
            "from_preset(OUT_DIR) loads offline."
        ),
    )
    parser.add_argument("source")
    parser.add_argument("out_dir")
    parser.set_defaults(run=run_convert)


def run_convert(args):
    start = time.perf_counter()
    steps = iter(range(1, 4))

    def progress(message):
        print(f"[{next(steps, 3)}/3 {time.perf_counter() - start:6.1f}s] {message}", file=sys.stderr)

    if os.path.exists(args.out_dir) and os.listdir(args.out_dir):
        raise CommandError(f"{args.out_dir!r} exists and is not empty; choose a new folder.")
    try:
        if args.source in PRESETS:
            progress(f"resolving {weights.checkpoint_source(args.source)}")
            cached = weights.ensure_cached(args.source, MobileNetImageClassifier, progress=progress)
            shutil.copytree(cached, args.out_dir, dirs_exist_ok=True)
        else:
            progress(f"reading {args.source}")
            snapshot = timm.resolve_snapshot(args.source)
            if snapshot is None:
                raise CommandError(
                    f"{args.source!r} is neither a built-in preset, an hf:// handle nor a "
                    "timm snapshot folder (config.json with 'architecture' + model.safetensors)."
                )
            progress("converting")
            classifier = timm.classifier_from_snapshot(MobileNetImageClassifier, snapshot)
            progress(f"writing {args.out_dir}")
            weights.save_converted(classifier, args.out_dir)
    except (ValueError, ConnectionError, FileNotFoundError) as error:
        raise CommandError(str(error)) from None
    print(
        f"wrote {args.out_dir} ({time.perf_counter() - start:.1f}s): load it with "
        f"MobileNetImageClassifier.from_preset({args.out_dir!r}) or Backbone.from_preset(...)"
    )
    return 0


# --------------------------------------------------------------------------
# mnet-backbones demo detection|segmentation [DEMO OPTIONS]
DEMOS = {"detection": detection, "segmentation": segmentation}


def add_demo(subcommands):
    parser = subcommands.add_parser(
        "demo",
        help="train a head on synthetic shapes and evaluate it",
        description="Generate a synthetic shapes dataset, train SSDLite "
        "(detection) or DeepLabV3+ (segmentation) on mobilenetv4_conv_small "
        "from scratch, evaluate on a held-out split and save a picture of the "
        "predictions. Options after the demo's name go to the demo: "
        "`mnet-backbones demo detection --help` lists them.",
    )
    parser.add_argument("demo", choices=sorted(DEMOS))
    options = parser.add_argument("demo_options", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    # argparse counts a REMAINDER positional as required, and would name it
    # when the demo is missing; none is needed after the demo's name.
    options.required = False
    parser.set_defaults(run=run_demo)


def run_demo(args):
    return DEMOS[args.demo].main(args.demo_options)


# --------------------------------------------------------------------------
# mnet-backbones bench [PRESETS...]
def add_bench(subcommands):
    parser = subcommands.add_parser(
        "bench",
        help="latency, MACs and memory of presets, side by side with keras.applications",
        description="Time each preset's 1000-class classifier (random weights, its "
        "reference resolution) in Keras TensorFlow graph mode and in LiteRT float32 and "
        "int8, next to keras.applications' model of the same architecture for V1-V3, "
        "and print the medians and ratios as markdown tables. Needs KERAS_BACKEND="
        f"tensorflow. Default presets: {' '.join(bench.DEFAULT_PRESETS)}.",
    )
    parser.add_argument("presets", nargs="*", metavar="PRESET", help="built-in preset names")
    parser.add_argument(
        "--repeats",
        type=positive_int,
        default=100,
        help="timed runs per figure (default 100; a tenth of that at batch 32)",
    )
    parser.add_argument(
        "--batch-sizes",
        type=positive_int,
        nargs="+",
        default=[1, 32],
        choices=[1, 32],
        metavar="B",
        help="TF graph batch sizes, 1 and/or 32 (default: both)",
    )
    parser.add_argument("--no-peers", dest="peers", action="store_false", help="skip keras.applications")
    parser.add_argument("--no-int8", dest="int8", action="store_false", help="skip the int8 LiteRT export")
    parser.add_argument("--plot", metavar="PNG", help="write the Pareto plot (latency against MACs) here")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a smoke run: 3 repeats, batch 1 only (figures too noisy to quote)",
    )
    parser.add_argument(
        "--blocks",
        action="store_true",
        help="instead: where each preset's LiteRT float32 time goes, block by block, against its MACs",
    )
    parser.set_defaults(run=run_bench)


def run_bench(args):
    if keras.backend.backend() != "tensorflow":
        raise CommandError(
            f"bench times TensorFlow graph mode and LiteRT; run it with KERAS_BACKEND=tensorflow "
            f"(now {keras.backend.backend()!r})."
        )
    presets = tuple(args.presets) or bench.DEFAULT_PRESETS
    repeats, batch_sizes = (3, (1,)) if args.quick else (args.repeats, tuple(args.batch_sizes))
    if args.blocks:
        for preset in presets:
            try:
                rows, rate = bench.block_profile(preset, repeats)
            except ValueError as error:
                raise CommandError(str(error)) from None
            print(f"{preset}\n\n{bench.block_table(rows, rate)}\n")
        return 0
    try:
        rows, machine = bench.run_benchmark(
            presets,
            repeats,
            batch_sizes,
            peers=args.peers,
            int8=args.int8,
            progress=lambda name: print(f"measuring {name}", file=sys.stderr),
        )
    except ValueError as error:
        raise CommandError(str(error)) from None
    print(bench.results_table(rows, machine))
    if args.plot:
        print(f"\nwrote {bench.pareto_plot(rows, args.plot)}")
    return 0


# --------------------------------------------------------------------------
# mnet-backbones export MODEL OUT
def add_export(subcommands):
    parser = subcommands.add_parser(
        "export",
        help="write a model as LiteRT or ONNX (optionally int8) and check it against Keras",
        description="Export MODEL (a built-in preset name, a folder written by "
        "save_to_preset, or a .keras file: classifier, backbone, SSDLite detector or "
        "DeepLabV3+ segmenter) to OUT, then run the file beside the Keras model and "
        "print their agreement. Needs KERAS_BACKEND=tensorflow.",
    )
    parser.add_argument("model", metavar="MODEL", help="preset name, preset folder or .keras file")
    parser.add_argument("out", metavar="OUT", help="the file to write (.tflite or .onnx)")
    parser.add_argument("--format", choices=export.FORMATS, default="litert", help="default: litert")
    parser.add_argument(
        "--task",
        choices=export.TASKS,
        default="classifier",
        help="for a preset name: the 1000-class classifier (default) or the bare backbone",
    )
    parser.add_argument(
        "--no-weights",
        dest="load_weights",
        action="store_false",
        help="for a preset name: random weights instead of the pretrained ones",
    )
    parser.add_argument(
        "--image-size",
        type=positive_int,
        nargs="+",
        metavar=("H", "W"),
        help="input size of the file (default: the model's own, else the preset's resolution)",
    )
    parser.add_argument(
        "--batch-size",
        type=positive_int,
        metavar="B",
        help="fix the batch axis (default: free). 1 is what a phone runs, and lets XNNPACK take "
        "dilated convolutions (DeepLab) whole",
    )
    parser.add_argument("--int8", action="store_true", help="full-integer int8 quantisation (LiteRT)")
    parser.add_argument(
        "--calibration-data",
        metavar="DIR",
        help="folder of images (jpg/png) representative of the inputs, for --int8 and the check",
    )
    parser.add_argument(
        "--num-calibration",
        type=positive_int,
        default=export.DEFAULT_CALIBRATION_IMAGES,
        metavar="N",
        help=f"images to use from DIR (default {export.DEFAULT_CALIBRATION_IMAGES})",
    )
    parser.set_defaults(run=run_export)


def run_export(args):
    if keras.backend.backend() != "tensorflow":
        raise CommandError(
            "export converts through TensorFlow; run it with KERAS_BACKEND=tensorflow "
            f"(now {keras.backend.backend()!r})."
        )
    if args.image_size is not None and len(args.image_size) > 2:
        raise CommandError(f"--image-size takes H or H W, got {args.image_size}")
    if args.int8 and args.format != "litert":
        raise CommandError("--int8 is available with --format litert only")
    if args.int8 and not args.calibration_data:
        raise CommandError("--int8 needs --calibration-data DIR: a folder of images like the ones the model will see")
    expected_suffix = export.SUFFIXES[args.format]
    if not args.out.endswith(expected_suffix):
        raise CommandError(f"OUT must end with {expected_suffix} for --format {args.format}, got {args.out!r}")
    try:
        model, normalize = export.load_model(args.model, task=args.task, load_weights=args.load_weights)
        image_size = args.image_size  # [H] or [H, W]
        if image_size is not None and len(image_size) == 1:
            image_size = image_size[0]
        if image_size is None and args.model in PRESETS and None in model.inputs[0].shape[1:3]:
            image_size = PRESETS[args.model].resolution
        image_size = export.model_image_size(model, image_size)
        if args.calibration_data:
            pixels = export.read_images(args.calibration_data, image_size, args.num_calibration)
        else:
            pixels = export.random_images(image_size, count=4)
        inputs = normalize(pixels)
        export.export_model(
            model,
            args.out,
            args.format,
            image_size,
            int8=args.int8,
            calibration_images=inputs if args.int8 else None,
            batch_size=args.batch_size,
        )
    except (ValueError, FileNotFoundError) as error:
        raise CommandError(str(error)) from None
    report = export.compare(model, args.out, inputs)
    print(f"wrote {args.out} ({os.path.getsize(args.out) / 2**20:.1f} MiB), input {image_size[0]} x {image_size[1]}")
    what = "calibration images" if args.calibration_data else "random images (pass --calibration-data for real ones)"
    for key, value in report.items():
        print(f"{key.replace('_', ' ')} on {len(inputs)} {what}: {value:.3g}")
    return 0


# --------------------------------------------------------------------------
COMMANDS = (add_list, add_summary, add_convert, add_demo, add_bench, add_export)


def build_parser():
    parser = argparse.ArgumentParser(prog=PROG, description="MobileNet V1-V4 backbones for keras-hub.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subcommands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add_command in COMMANDS:
        add_command(subcommands)
    return parser


def main(argv=None):
    """Run the command line on `argv` (default: `sys.argv[1:]`); return the exit status."""
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except CommandError as error:
        print(f"{PROG} {args.command}: error: {error}", file=sys.stderr)
        return 2
