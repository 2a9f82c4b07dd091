"""The `mnet-backbones` command line (also `python -m mnet_tools`).

    mnet-backbones list [--no-params]
    mnet-backbones summary PRESET [--size H W] [--num-classes N]
    mnet-backbones convert SOURCE OUT_DIR
    mnet-backbones demo detection|segmentation [DEMO OPTIONS]
    mnet-backbones bench [PRESETS...] [--repeats N] [--plot PNG] [--quick]
    mnet-backbones bench --train [TRAIN BENCH OPTIONS]
    mnet-backbones export MODEL OUT [--format litert|onnx] [--int8 --calibration-data DIR]
    mnet-backbones train classification|detection|segmentation --train ... --val ... --out-dir DIR [OPTIONS]

A subcommand is a pair of functions: `add_<name>(subcommands)` declares its
arguments and sets `run`, and `run_<name>(args)` does the work and returns the
exit status. `COMMANDS` lists the `add_*` functions, so a new subcommand is
one more pair and one more entry. A `CommandError` is a user error: `main`
prints it as one line and returns 2, as argparse does for bad arguments; an
`OSError` (a disk full, a file that cannot be read) or a missing optional
package is one line and status 1; Ctrl-C is one line and status 130, and
leaves no half-written output.

Importing Keras starts TensorFlow, which takes seconds and prints its start-up
log. So this module imports only the standard library: `--help`, `--version`
and argument errors answer at once; `main` starts Keras (quietly, see
`start_keras`) only to run a command, and each `run_*` imports the models it
needs.
"""

import argparse
import contextlib
import importlib.util
import math
import os
import sys
import time

from mnet_tools.demo_options import positive_int

PROG = "mnet-backbones"
# What `export` writes, repeated from `mnet_tools.export` (which imports Keras)
# so that the arguments are declared without it; tests/test_cli.py checks they agree.
EXPORT_SUFFIXES = {"litert": ".tflite", "onnx": ".onnx"}
EXPORT_TASKS = ("classifier", "backbone")
DEFAULT_CALIBRATION_IMAGES = 100
# The pyproject extra that brings each command's optional dependencies.
EXTRAS = {"export": "export", "bench": "bench", "demo": "demo"}
INTERRUPTED = 130  # the shell's status for a command ended by SIGINT
TF_LOG_LEVEL = "TF_CPP_MIN_LOG_LEVEL"


class CommandError(Exception):
    """A mistake in the command's arguments or inputs, reported without a traceback."""


# --------------------------------------------------------------------------
# Starting Keras without TensorFlow's log.
@contextlib.contextmanager
def _stderr_silenced():
    """Send file descriptor 2 to /dev/null: TensorFlow's C++ start-up lines bypass Python."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


def tensorflow_log_wanted():
    return os.environ.get(TF_LOG_LEVEL, "") in ("0", "1", "2")


def start_keras():
    """Import Keras (and with it TensorFlow) without TensorFlow's log on the terminal.

    TensorFlow prints oneDNN, CUDA and CPU-feature notices while it loads,
    before its own log level applies: those lines are dropped. Its later C++
    log is turned off (TF_CPP_MIN_LOG_LEVEL=3: on a machine without a GPU it
    logs a CUDA *error* at first use) and absl's Python log shows errors only;
    TensorFlow's real failures still come as Python exceptions.
    TF_CPP_MIN_LOG_LEVEL=0, 1 or 2 in the environment keeps the log at that level.
    """
    if tensorflow_log_wanted() or "keras" in sys.modules:
        import keras  # noqa: F401

        return
    os.environ[TF_LOG_LEVEL] = "3"
    with _stderr_silenced():
        import keras  # noqa: F401
    with contextlib.suppress(ImportError):
        from absl import logging as absl_logging

        absl_logging.set_verbosity(absl_logging.ERROR)


def package_version():
    """`mnet_backbones.__version__`, read without importing the package (which imports Keras)."""
    package = importlib.util.find_spec("mnet_backbones")
    path = os.path.join(package.submodule_search_locations[0], "_version.py")
    spec = importlib.util.spec_from_file_location("mnet_backbones_version", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.__version__


class VersionAction(argparse.Action):
    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"{parser.prog} {package_version()}")
        parser.exit()


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose description may be a function, called only to show the help.

    A description that quotes a constant from a module that imports Keras
    (bench's default presets) then costs nothing on other calls.
    """

    def format_help(self):
        if callable(self.description):
            self.description = self.description()
        return super().format_help()


# --------------------------------------------------------------------------
# Shared helpers.
def pyramid_levels():
    from mnet_backbones.builder import PYRAMID_STRIDES, pyramid_level

    return tuple(pyramid_level(stride) for stride in PYRAMID_STRIDES)


def trainable_parameters(model):
    return sum(math.prod(weight.shape) for weight in model.trainable_weights)


def build_classifier(preset, image_shape=(None, None, 3), num_classes=None):
    """A randomly initialised classifier on the preset's backbone.

    A bad preset name, a broken preset folder or a bad image shape becomes a
    `CommandError`.
    """
    from mnet_backbones import files
    from mnet_backbones.backbone import MobileNetBackbone
    from mnet_backbones.classifier import MobileNetImageClassifier
    from mnet_backbones.constants import IMAGENET_CLASSES

    try:
        if os.path.isdir(preset):
            files.check_preset_folder(preset, weights=False)  # random weights: the folder's are not read
        backbone = MobileNetBackbone.from_preset(preset, load_weights=False, image_shape=image_shape)
    except (ValueError, OSError) as error:
        raise CommandError(str(error)) from None
    return MobileNetImageClassifier(backbone, num_classes=num_classes or IMAGENET_CLASSES)


def macs_millions(model, image_shape):
    """MACs in millions as text; "n/a" off TensorFlow, whose graph the counter reads."""
    import keras

    from mnet_tools.macs import count_macs

    if keras.backend.backend() != "tensorflow":
        return "n/a"
    return f"{count_macs(model, image_shape) / 1e6:,.1f}"


def download_failed(what, error, instead):
    """A failed download (`PretrainedWeightsUnavailableError`, `DownloadError`) in one line.

    The error's own text is for Python callers (it names `load_weights=False`
    and lists the ways out over several lines): here the first line of its
    cause says what failed, and `instead` the flag or command that helps.
    """
    cause = error.__cause__ or error
    lines = str(cause).strip().splitlines() or [""]
    return CommandError(f"{what}: {type(cause).__name__}: {lines[0]}. {instead}")


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
    parser.add_argument(
        "--sources",
        action="store_true",
        help="list the checkpoint sources instead: what from_preset, convert and export take",
    )
    parser.set_defaults(run=run_list)


def run_sources_list():
    import heads  # noqa: F401  (registers the heads' sources)
    from mnet_backbones import sources
    from mnet_tools.tables import markdown_table

    rows = [[source.name, ", ".join(source.kinds), source.description] for source in sources.registered_sources()]
    print(markdown_table(["source", "gives", "takes"], rows))
    return 0


def run_list(args):
    from mnet_backbones.architectures import get_architecture
    from mnet_backbones.constants import IMAGENET_CLASSES
    from mnet_backbones.presets import PRESETS
    from mnet_tools.tables import markdown_table

    if args.sources:
        return run_sources_list()
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
        levels = pyramid_levels()
        header += [f"params ({IMAGENET_CLASSES} classes)", *levels, "MACs (M)"]
        right_aligned |= set(range(5, len(header)))
        for row in rows:
            classifier = build_classifier(row[0])
            pyramid = classifier.backbone.pyramid_outputs
            row.append(f"{trainable_parameters(classifier):,}")
            row.extend(str(pyramid[level].shape[-1]) for level in levels)
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
        metavar="N",
        help="classes of the classifier whose parameters are counted (default: ImageNet's 1000)",
    )
    parser.set_defaults(run=run_summary)


def reference_size(preset):
    from mnet_backbones.presets import PRESETS, check_preset_name

    if preset in PRESETS:
        resolution = PRESETS[preset].resolution
        return resolution, resolution
    try:
        check_preset_name(preset)
    except ValueError as error:
        raise CommandError(str(error)) from None
    raise CommandError(f"{preset!r} is not a built-in preset: give its input size with --size H W.")


def run_summary(args):
    from mnet_backbones.builder import PYRAMID_STRIDES
    from mnet_tools.tables import markdown_table

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
        (level, stride, backbone.pyramid_outputs[level]) for level, stride in zip(pyramid_levels(), PYRAMID_STRIDES)
    ]
    outputs.append(("output", PYRAMID_STRIDES[-1], backbone.output))
    rows = [[name, str(stride), str(tuple(tensor.shape[1:]))] for name, stride, tensor in outputs]
    print(markdown_table(["level", "stride", "shape (H, W, C)"], rows, right_aligned={1}))
    print()
    print(f"backbone parameters:   {backbone.count_params():,} ({trainable_parameters(backbone):,} trainable)")
    print(f"classifier parameters: {trainable_parameters(classifier):,} trainable ({classifier.num_classes} classes)")
    print(f"classifier MACs:       {macs_millions(classifier, (height, width, 3))} M")
    return 0


# --------------------------------------------------------------------------
# mnet-backbones convert
def add_convert(subcommands):
    parser = subcommands.add_parser(
        "convert",
        help="convert a checkpoint into a keras-hub preset folder",
        description=(
            "Convert SOURCE (a built-in preset name, torchvision's included; a timm "
            "snapshot folder with config.json and model.safetensors or an "
            "hf://timm/<name>.<tag> handle; a torchvision checkpoint: an ImageNet "
            "classifier, ssdlite320_mobilenetv3_large_coco, deeplabv3_/lraspp_"
            "mobilenetv3_large_voc, as a built-in name, a published .pth or a "
            "config.json + model.pth folder) into a keras-hub preset folder OUT_DIR that "
            "from_preset(OUT_DIR) and `mnet-backbones export OUT_DIR` load offline. "
            "OUT_DIR appears only when complete: an error or Ctrl-C leaves none."
        ),
    )
    parser.add_argument("source")
    parser.add_argument("out_dir")
    parser.set_defaults(run=run_convert)


def convert_sources():
    """The checkpoint sources `convert` takes, in the order they are tried (the heads' included)."""
    import heads  # noqa: F401  (registers the heads' sources)
    from mnet_backbones import sources

    return [source for source in sources.registered_sources() if source.convert is not None]


def convert_source(source):
    """The registered checkpoint source that converts SOURCE, or None.

    The sources' tests read SOURCE's config.json: a broken one is named here,
    in one line, and a FIFO refused before any of them opens it.
    """
    import heads  # noqa: F401  (registers the heads' sources)
    from mnet_backbones import files, sources

    if os.path.isdir(source):
        files.check_preset_folder(source, weights=False)
    elif os.path.lexists(source):
        files.check_regular_file(source)
    return sources.find_source(source, convertible=True)


def convert_with(checkpoint_source, source, folder, progress):
    """`checkpoint_source` writes SOURCE into `folder`; a failed download is one line with what to do instead."""
    from mnet_backbones import weights
    from mnet_backbones.convert import timm

    try:
        checkpoint_source.convert(source, folder, progress)
    except weights.PretrainedWeightsUnavailableError as error:
        raise download_failed(
            f"no pretrained weights for {source!r} here",
            error,
            "convert downloads the checkpoint once: run it where there is network, then copy OUT_DIR here.",
        ) from None
    except timm.DownloadError as error:
        raise download_failed(
            f"could not download {source}",
            error,
            "Run convert where there is network and copy OUT_DIR here, or give a local timm snapshot folder.",
        ) from None


def check_new_folder(path, flag):
    """`path` may be made as a new folder: absent, or an empty folder."""
    if os.path.isfile(path):
        raise CommandError(f"{flag} {path!r} is a file; give a new folder.")
    if os.path.isdir(path) and os.listdir(path):
        raise CommandError(f"{flag} {path!r} exists and is not empty; choose a new folder.")


def run_convert(args):
    from mnet_backbones import files

    start = time.perf_counter()
    steps = iter(range(1, 4))

    def progress(message):
        print(f"[{next(steps, 3)}/3 {time.perf_counter() - start:6.1f}s] {message}", file=sys.stderr, flush=True)

    check_new_folder(args.out_dir, "OUT_DIR")
    try:
        checkpoint_source = convert_source(args.source)
    except (ValueError, OSError) as error:
        raise CommandError(str(error)) from None
    if checkpoint_source is None:
        kinds = ", ".join(source.description for source in convert_sources())
        raise CommandError(
            f"{args.source!r} is none of: {kinds} (config.json with 'architecture' + model.safetensors)."
        )
    parent = os.path.dirname(os.path.abspath(args.out_dir))
    if not os.path.exists(parent):
        try:
            os.makedirs(parent)
        except OSError as error:
            raise CommandError(f"cannot create OUT_DIR's folder {parent!r}: {error.strerror}.") from None
    try:
        # The folder the preset is written to is made first, beside OUT_DIR: an
        # unwritable place fails now, not after the conversion.
        staging = files.make_staging_folder(args.out_dir)
        with files.atomic_folder(args.out_dir, staging=staging):
            convert_with(checkpoint_source, args.source, staging, progress)
    except (ValueError, OSError) as error:  # ConnectionError is an OSError
        raise CommandError(str(error)) from None
    print(
        f"wrote {args.out_dir} ({time.perf_counter() - start:.1f}s): load it with "
        f"MobileNetImageClassifier.from_preset({args.out_dir!r}) or Backbone.from_preset(...), "
        f"or export it with `{PROG} export {args.out_dir} OUT.tflite`"
    )
    return 0


# --------------------------------------------------------------------------
# mnet-backbones demo detection|segmentation [DEMO OPTIONS]
DEMOS = {"detection": "mnet_tools.demos.detection", "segmentation": "mnet_tools.demos.segmentation"}


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
    # The choices as the name: a missing demo is reported as "required: {detection,segmentation}".
    parser.add_argument("demo", choices=sorted(DEMOS), metavar="{" + ",".join(sorted(DEMOS)) + "}")
    options = parser.add_argument("demo_options", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    # argparse counts a REMAINDER positional as required, and would name it
    # when the demo is missing; none is needed after the demo's name.
    options.required = False
    # The demo's own progress starts once TensorFlow has loaded, which alone can take 20 s.
    parser.set_defaults(run=run_demo, precheck=check_demo_options, announce="loading Keras and TensorFlow...")


def check_demo_options(args):
    """The demo's own options, parsed before TensorFlow loads (`--help` and errors answer at once)."""
    from mnet_tools import demo_options

    parser = {"detection": demo_options.detection_parser, "segmentation": demo_options.segmentation_parser}
    parser[args.demo]().parse_args(args.demo_options)


def run_demo(args):
    demo = DEMOS[args.demo]
    if isinstance(demo, str):
        demo = importlib.import_module(demo)
    return demo.main(args.demo_options)


# --------------------------------------------------------------------------
# mnet-backbones bench [PRESETS...]
def bench_description():
    start_keras()  # bench imports Keras
    from mnet_tools import bench

    return (
        "Time each preset's 1000-class classifier (random weights, its "
        "reference resolution) in Keras TensorFlow graph mode and in LiteRT float32 and "
        "int8, next to keras.applications' model of the same architecture for V1-V3, "
        "and print the medians and ratios as markdown tables. Needs KERAS_BACKEND="
        f"tensorflow. Default presets: {' '.join(bench.DEFAULT_PRESETS)}. With --train, training "
        "throughput instead, on every backend."
    )


def add_bench(subcommands):
    parser = subcommands.add_parser(
        "bench",
        help="latency, MACs and memory of presets, side by side with keras.applications",
        description=bench_description,
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
    parser.add_argument(
        "--pretrained",
        nargs="*",
        metavar="NAME",
        help="instead: the converted torchvision detectors/segmenters (default: LR-ASPP and SSDLite320) in TF "
        "graph and LiteRT float32/int8, beside torchvision's own CPU inference when it is installed",
    )
    parser.add_argument(
        "--checkpoint",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="with --pretrained: time NAME with the weights in the .pth at PATH (default: random weights)",
    )
    parser.add_argument(
        "--train",
        dest="train_bench",
        nargs=argparse.REMAINDER,
        help="instead: training throughput, images/s of the input pipeline, the train step and both, and 1 vs 2 "
        "devices, per task and backend, each backend in its own process (mnet_tools.train_bench). Everything "
        "after --train is its options: `bench --train --help` lists them",
    )
    own_defaults = vars(parser.parse_args([]))
    parser.set_defaults(run=run_bench, bench_defaults=own_defaults)


def require_tensorflow(command, why):
    import keras

    if keras.backend.backend() != "tensorflow":
        raise CommandError(f"{command} {why}; run it with KERAS_BACKEND=tensorflow (now {keras.backend.backend()!r}).")


class _UsageErrorCatcher:
    """Stands in for `sys.stderr` around another module's parser: its usage text and error line are held back.

    argparse writes a usage error as two writes, the usage and then
    "PROG: error: MESSAGE"; those are kept in `held`, everything else passes
    straight through (a long run's progress is not delayed).
    """

    def __init__(self, stream):
        self.stream = stream
        self.held = []

    def write(self, text):
        if text.startswith("usage:") or (self.held and ": error: " in text):
            self.held.append(text)
            return len(text)
        return self.stream.write(text)

    def error(self):
        """The held error's message, or None."""
        lines = [text for text in self.held if ": error: " in text]
        return lines[-1].split(": error: ", 1)[1].strip() if lines else None

    def __getattr__(self, name):
        return getattr(self.stream, name)


def run_train_bench(args):
    """`bench --train OPTIONS`: `mnet_tools.train_bench`'s own command line, its usage errors in one line.

    Its workers start their backends in their own interpreters; this process loads no Keras.
    """
    renamed = {"presets": "PRESET", "peers": "--no-peers", "int8": "--no-int8"}
    mixed = [renamed.get(dest, "--" + dest.replace("_", "-")) for dest, default in args.bench_defaults.items()
             if dest != "train_bench" and getattr(args, dest) != default]  # fmt: skip
    if mixed:
        raise CommandError(
            f"--train runs the training benchmark alone, without the inference bench's {', '.join(mixed)}; "
            "put the training benchmark's own options after --train (`bench --train --help` lists them)."
        )
    from mnet_tools import train_bench

    catcher = _UsageErrorCatcher(sys.stderr)
    try:
        with contextlib.redirect_stderr(catcher):
            status = train_bench.main(args.train_bench)
    except SystemExit as exit:
        if exit.code == 2 and catcher.error():
            raise CommandError(f"--train: {catcher.error()} (`bench --train --help` lists the options)") from None
        sys.stderr.write("".join(catcher.held))
        raise
    except RuntimeError as error:  # a backend's worker failed; its own error is printed above
        print(f"{PROG} bench: error: --train: {one_line(error)}", file=sys.stderr)
        return 1
    return status or 0


# The inference bench's options each of its modes uses (besides --repeats, --quick).
BENCH_MODE_OPTIONS = {
    "--pretrained": ("--no-int8", "--checkpoint"),
    "--blocks": ("PRESET",),
    "tables": ("PRESET", "--batch-sizes", "--no-peers", "--no-int8", "--plot"),
}
BENCH_OPTION_NAMES = {"presets": "PRESET", "peers": "--no-peers", "int8": "--no-int8"}


def given_bench_options(args):
    """The inference bench's options given on the command line (those differing from their defaults)."""
    return [
        BENCH_OPTION_NAMES.get(dest, "--" + dest.replace("_", "-"))
        for dest, default in args.bench_defaults.items()
        if dest not in ("train_bench", "pretrained", "blocks") and getattr(args, dest) != default
    ]


def check_bench_arguments(args):
    """Every check of bench's options that needs no model, before any work: a `CommandError` each.

    An option the chosen bench would ignore is refused, not dropped: --checkpoint
    without --pretrained, --plot with --blocks, --repeats beside --quick.
    """
    if args.pretrained is not None and args.blocks:
        raise CommandError("--pretrained and --blocks are two different benches; run them one at a time.")
    mode = "--pretrained" if args.pretrained is not None else "--blocks" if args.blocks else "tables"
    given = given_bench_options(args)
    ignored = [option for option in given if option not in BENCH_MODE_OPTIONS[mode] + ("--repeats", "--quick")]
    if ignored:
        what = f"with {mode}" if mode != "tables" else "without --pretrained"
        raise CommandError(f"{', '.join(ignored)} would be ignored {what}: {mode_uses(mode)}")
    if args.quick and ("--repeats" in given or "--batch-sizes" in given):
        raise CommandError("--quick sets 3 repeats at batch 1; give --quick or --repeats / --batch-sizes, not both.")
    if args.plot is not None:
        check_plot_path(args.plot)


def mode_uses(mode):
    uses = ", ".join(BENCH_MODE_OPTIONS[mode] + ("--repeats", "--quick"))
    return f"{'the tables' if mode == 'tables' else mode} take{'' if mode == 'tables' else 's'} {uses}."


def check_plot_path(path):
    """--plot's file can be written: a .png in an existing, writable folder, and matplotlib is there."""
    if not path.lower().endswith(".png"):
        raise CommandError(f"--plot writes a PNG picture: give a file name ending with .png, got {path!r}.")
    check_output_file(path, "--plot", "the .png file to write")
    if importlib.util.find_spec("matplotlib") is None:
        raise CommandError(f"--plot needs matplotlib; pip install 'mnet-backbones[{EXTRAS['bench']}]' installs it.")


def bench_checkpoints(args, names):
    """--checkpoint NAME=PATH as {name: path}, each name one benchmarked and each path a readable file."""
    from mnet_backbones import files

    checkpoints = {}
    for item in args.checkpoint:
        name, equals, path = item.partition("=")
        if not (equals and name and path):
            raise CommandError(f"--checkpoint takes NAME=PATH; got {item!r}.")
        if name in checkpoints:
            raise CommandError(f"--checkpoint names {name!r} twice.")
        if name not in names:
            raise CommandError(
                f"--checkpoint {item!r}: {name!r} is not benchmarked in this run (the heads timed: "
                f"{', '.join(names)}); name it after --pretrained too."
            )
        try:
            files.check_regular_file(path)
        except OSError as error:
            raise CommandError(f"--checkpoint {item!r}: {error}") from None
        checkpoints[name] = path
    return checkpoints


def run_bench(args):
    if args.train_bench is not None:
        return run_train_bench(args)
    check_bench_arguments(args)
    require_tensorflow("bench", "times TensorFlow graph mode and LiteRT")
    from mnet_tools import bench

    presets = tuple(args.presets) or bench.DEFAULT_PRESETS
    repeats, batch_sizes = (3, (1,)) if args.quick else (args.repeats, tuple(args.batch_sizes))
    if args.pretrained is not None:
        names = tuple(args.pretrained) or bench.DEFAULT_TASKS
        unknown = [name for name in names if name not in bench.TASKS]
        if unknown:
            raise CommandError(f"Unknown pretrained head {unknown[0]!r}. Valid names: {sorted(bench.TASKS)}.")
        checkpoints = bench_checkpoints(args, names)
        try:
            rows = bench.run_task_benchmark(
                names,
                repeats,
                int8=args.int8,
                checkpoints=checkpoints,
                progress=lambda name: print(f"measuring {name}", file=sys.stderr, flush=True),
            )
        except ValueError as error:
            raise CommandError(str(error)) from None
        print(bench.task_results_table(rows))
        return 0
    unknown = [preset for preset in presets if preset not in bench.PRESETS]
    if unknown:  # all of them, before the first is timed
        from mnet_backbones.presets import did_you_mean

        hint = did_you_mean(unknown[0], bench.PRESETS)
        raise CommandError(f"Unknown preset {unknown[0]!r}.{hint} Valid presets: {sorted(bench.PRESETS)}.")
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
            progress=lambda name: print(f"measuring {name}", file=sys.stderr, flush=True),
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
        "save_to_preset or `mnet-backbones convert`, any checkpoint convert takes (converted "
        "first: a timm snapshot, a torchvision checkpoint), or a .keras "
        "file: classifier, backbone, SSDLite detector or DeepLabV3+ segmenter) to OUT, "
        "then run the file beside the Keras model and print their agreement. OUT is "
        "written whole or not at all. Needs KERAS_BACKEND=tensorflow.",
    )
    parser.add_argument("model", metavar="MODEL", help="preset name, preset folder or .keras file")
    parser.add_argument("out", metavar="OUT", help="the file to write (.tflite or .onnx)")
    parser.add_argument("--format", choices=tuple(EXPORT_SUFFIXES), default="litert", help="default: litert")
    parser.add_argument(
        "--task",
        choices=EXPORT_TASKS,
        help="what to export: the classifier or the bare backbone (default: what MODEL holds; "
        "the 1000-class classifier for a preset name)",
    )
    parser.add_argument(
        "--no-weights",
        dest="load_weights",
        action="store_false",
        help="for a preset name: random weights instead of the pretrained ones (no download)",
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
        default=DEFAULT_CALIBRATION_IMAGES,
        metavar="N",
        help=f"images to use from DIR (default {DEFAULT_CALIBRATION_IMAGES})",
    )
    # A detector's display choices, for the file only (default: the detector's own).
    own = " (default: the detector's own)"
    parser.add_argument(
        "--score-threshold", type=score_threshold, help="detector: drop scores <= this, in [0, 1)" + own
    )
    parser.add_argument("--max-detections", type=positive_int, help="detector: keep at most this many per image" + own)
    parser.set_defaults(run=run_export)


def check_export_arguments(args):
    """The checks that need no model: each a `CommandError` before minutes of loading and converting."""
    if args.image_size is not None and len(args.image_size) > 2:
        raise CommandError(f"--image-size takes H or H W, got {args.image_size}")
    if args.int8 and args.format != "litert":
        raise CommandError("--int8 is available with --format litert only")
    if args.int8 and not args.calibration_data:
        raise CommandError("--int8 needs --calibration-data DIR: a folder of images like the ones the model will see")
    suffix = EXPORT_SUFFIXES[args.format]
    if not args.out.endswith(suffix):
        raise CommandError(f"OUT must end with {suffix} for --format {args.format}, got {args.out!r}")
    check_output_file(args.out, "OUT", f"the file to write, ending with {suffix}")
    if args.calibration_data is not None and not os.path.isdir(args.calibration_data):
        what = "is a file" if os.path.exists(args.calibration_data) else "does not exist"
        raise CommandError(f"--calibration-data {args.calibration_data!r} {what}; give a folder of images.")


def set_decoding(model, args):
    """`--score-threshold` and `--max-detections` set on a detector; on any other model a `CommandError`."""
    given = {"--score-threshold": args.score_threshold, "--max-detections": args.max_detections}
    given = {flag: value for flag, value in given.items() if value is not None}
    if given and not hasattr(model, "decoding"):
        verb = "apply" if len(given) > 1 else "applies"
        raise CommandError(
            f"{' and '.join(given)} {verb} to a detector; {args.model!r} holds a {type(model).__name__}."
        )
    if args.score_threshold is not None:
        model.score_threshold = args.score_threshold
    if args.max_detections is not None:
        model.max_detections = args.max_detections


def export_size(args, model, normalize, presets):
    """`(image_size, where it came from)`: `--image-size`, else the model's fixed input, else what MODEL records.

    What MODEL records: a preset folder's (or a task's preprocessor's) image
    converter, or a built-in preset's reference resolution.
    """
    from mnet_tools import export

    if args.image_size is not None:  # [H] or [H, W]
        size = args.image_size[0] if len(args.image_size) == 1 else args.image_size
        return export.model_image_size(model, size), "--image-size"
    if None not in model.inputs[0].shape[1:3]:
        return export.model_image_size(model), "the model's fixed input"
    if normalize.image_size is not None:
        return normalize.image_size, "recorded by its image converter; --image-size H W overrides"
    if args.model in presets:
        return export.model_image_size(model, presets[args.model].resolution), "the preset's resolution"
    raise CommandError(f"{args.model} takes images of any size and records none; pass --image-size H W.")


def check_output_file(path, option, what):
    """`path` (the value of `option`, `what` it should be) can be written: not a folder, in a folder that takes files."""
    if os.path.isdir(path):
        raise CommandError(f"{option} {path!r} is a folder; give {what}.")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        state = "is a file" if os.path.exists(folder) else "does not exist"
        raise CommandError(f"{option}'s folder {folder!r} {state}; create it first.")
    try:  # permissions alone do not tell (a read-only file system, root): try it
        with tempfile_in(folder):
            pass
    except OSError as error:
        raise CommandError(f"cannot write {option} {path!r}: no file can be created in {folder!r} ({error.strerror}).")


def tempfile_in(folder):
    import tempfile

    return tempfile.TemporaryFile(dir=folder)


@contextlib.contextmanager
def exportable(source):
    """MODEL as `export.load_model` takes it.

    A checkpoint a registered source converts (a torchvision checkpoint, a
    timm snapshot or `hf://timm` handle, a source a package registers) is
    converted by that source into a temporary preset folder first, as
    `convert` would write it; a built-in name (whose `--no-weights` and
    resolution `export.load_model` reads itself), a `.keras` file or a
    `save_to_preset` folder is given as it is.
    """
    import tempfile

    checkpoint_source = convert_source(source)
    if checkpoint_source is None or checkpoint_source.name == "built-in":
        yield source
        return
    with tempfile.TemporaryDirectory(prefix="mnet-export-") as folder:
        convert_with(checkpoint_source, source, folder, progress=lambda message: None)
        yield folder


def run_export(args):
    require_tensorflow("export", "converts through TensorFlow")
    check_export_arguments(args)
    from mnet_backbones.presets import PRESETS
    from mnet_backbones.weights import PretrainedWeightsUnavailableError
    from mnet_tools import export

    try:
        with exportable(args.model) as model_path:
            model, normalize = export.load_model(model_path, task=args.task, load_weights=args.load_weights)
        set_decoding(model, args)
        image_size, size_source = export_size(args, model, normalize, PRESETS)
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
    except PretrainedWeightsUnavailableError as error:
        raise download_failed(
            f"no pretrained weights for {args.model!r} here",
            error,
            "Pass --no-weights for random weights, or run `mnet-backbones convert "
            f"{args.model} DIR` where there is network, copy DIR here and export DIR.",
        ) from None
    except (ValueError, OSError) as error:
        raise CommandError(str(error)) from None
    # LiteRT prints "INFO: Created TensorFlow Lite XNNPACK delegate" for each interpreter.
    with contextlib.nullcontext() if tensorflow_log_wanted() else _stderr_silenced():
        report = export.compare(model, args.out, inputs)
    size = f"input {image_size[0]} x {image_size[1]} ({size_source})"
    print(f"wrote {args.out} ({os.path.getsize(args.out) / 2**20:.1f} MiB), {size}")
    what = "calibration images" if args.calibration_data else "random images (pass --calibration-data for real ones)"
    for key, value in report.items():
        print(f"{key.replace('_', ' ')} on {len(inputs)} {what}: {value:.3g}")
    return 0


# --------------------------------------------------------------------------
# mnet-backbones train classification|detection|segmentation --train ... --val ... --out-dir DIR
# Repeated from mnet_tools.train.config (which imports the models) so that --help needs no Keras;
# tests/test_train.py checks they agree.
TRAIN_DATA = {
    "classification": ("FOLDER",),
    "detection": ("ANNOTATIONS_JSON", "IMAGE_DIR"),
    "segmentation": ("IMAGE_DIR", "MASK_DIR"),
}
TRAIN_HEADS = ("ssdlite", "ssdlite320", "deeplabv3plus", "deeplabv3", "lraspp")


def non_negative_float(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
    return value


def score_threshold(text):
    value = non_negative_float(text)
    if value >= 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {text}")
    return value


def positive_float(text):
    value = non_negative_float(text)
    if value == 0:
        raise argparse.ArgumentTypeError("must be above 0, got 0")
    return value


class DefaultsShown(argparse.HelpFormatter):
    """Help that ends each option's line with its default, where it has one worth saying (not None or a flag's)."""

    def _get_help_string(self, action):
        text = action.help or ""
        default = action.default
        unsaid = default is None or isinstance(default, bool) or default is argparse.SUPPRESS
        if unsaid or not action.option_strings or "default" in text:
            return text
        return f"{text} (default: {default})".strip()


def add_train(subcommands):
    parser = subcommands.add_parser(
        "train",
        formatter_class=DefaultsShown,
        help="train a classifier, detector or segmenter on your data (resumable)",
        description="Train on your data: classification from a folder with one subfolder per class, detection "
        "from COCO JSON, segmentation from image and mask folders. Validates after every epoch (top-1/top-5, "
        "COCO AP/AP50, mIoU) and keeps OUT_DIR: config.json, last/ and best.keras (+ best_preset/, and with "
        "--export-litert best.tflite) written atomically, metrics.csv, tensorboard/. Run the same command again "
        "to resume after a crash or kill; another configuration on the same OUT_DIR is refused.",
    )
    parser.add_argument("task", choices=sorted(TRAIN_DATA), metavar="{" + ",".join(sorted(TRAIN_DATA)) + "}")
    data = " | ".join(f"{task}: {' '.join(parts)}" for task, parts in TRAIN_DATA.items())
    parser.add_argument("--train", nargs="+", required=True, metavar="PATH", help=f"training data ({data})")
    parser.add_argument("--val", nargs="+", required=True, metavar="PATH", help="validation data, as --train")
    parser.add_argument("--out-dir", required=True, help="the run folder (resumed if it holds this run)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--preset", help="backbone preset (a new head on it), e.g. mobilenetv3_large_100")
    source.add_argument(
        "--from", dest="from_model", metavar="MODEL", help="a .keras file or preset folder to continue from"
    )
    parser.add_argument("--no-weights", dest="load_weights", action="store_false", help="random backbone weights")
    parser.add_argument(
        "--head",
        choices=TRAIN_HEADS,
        help="detection: ssdlite (default; P4/P5, focal loss) or ssdlite320 (the MobileNetV3 paper's and torchvision's, background class, hard negatives); segmentation: deeplabv3plus (default), deeplabv3, lraspp",
    )
    parser.add_argument("--num-classes", type=positive_int, help="segmentation: classes including background")
    parser.add_argument("--image-size", type=positive_int, default=224, help="side of the square inputs")
    parser.add_argument("--epochs", type=positive_int, default=10, help="epochs of the whole run")
    parser.add_argument("--batch-size", type=positive_int, default=32, help="global batch size")
    parser.add_argument(
        "--optimizer", choices=("adamw", "sgd"), default="adamw", help="AdamW or SGD with Nesterov momentum"
    )
    parser.add_argument("--learning-rate", type=positive_float, default=1e-3, help="peak of the cosine schedule")
    parser.add_argument(
        "--weight-decay", type=non_negative_float, default=1e-4, help="not applied to BatchNorm and biases"
    )
    parser.add_argument("--momentum", type=non_negative_float, default=0.9, help="SGD momentum")
    parser.add_argument(
        "--warmup-epochs", type=non_negative_float, help="linear warmup (default 1, at most half the run)"
    )
    parser.add_argument("--frozen-epochs", type=int, default=0, help="first epochs with the backbone frozen")
    parser.add_argument("--mixed-precision", choices=("off", "float16", "bfloat16"), default="off", help="dtype policy")
    parser.add_argument("--no-augment", dest="augment", action="store_false", help="train without augmentation")
    parser.add_argument("--seed", type=int, default=0, help="initialisation, data order, augmentation")
    parser.add_argument(
        "--devices", type=positive_int, help="data-parallel on the first N devices (default: one, no strategy)"
    )
    parser.add_argument(
        "--deterministic", action="store_true", help="TensorFlow's deterministic ops (bit-exact resumes)"
    )
    parser.add_argument(
        "--stop-after", type=positive_int, metavar="EPOCHS", help="stop after this many epochs (resume later)"
    )
    parser.add_argument(
        "--export-litert",
        action="store_true",
        help="after the last epoch, also write the best model as OUT_DIR/best.tflite (LiteRT float32, as "
        "`export` writes it; a detector's best_postprocess.npz beside it); kept if already that of best.keras. "
        "Needs KERAS_BACKEND=tensorflow",
    )
    own = " (default: the head's own; validation scores the COCO way whatever it is)"
    parser.add_argument("--score-threshold", type=score_threshold, help="detection: drop scores <= this" + own)
    parser.add_argument("--max-detections", type=positive_int, help="detection: keep at most this many" + own)
    parser.add_argument("--quiet", action="store_true", help="one line per epoch instead of a progress bar")
    parser.set_defaults(run=run_train, announce="loading Keras and TensorFlow...")


def run_train(args):
    from mnet_tools.train import train

    parts = TRAIN_DATA[args.task]
    for option in ("train", "val"):
        given = getattr(args, option)
        if len(given) != len(parts):
            raise CommandError(f"--{option} for {args.task} takes {' '.join(parts)}; got {len(given)} path(s).")
    try:
        result = train(
            args.task, args.train, args.val, args.out_dir, preset=args.preset, from_model=args.from_model,
            load_weights=args.load_weights, head=args.head, num_classes=args.num_classes,
            image_size=args.image_size, epochs=args.epochs, batch_size=args.batch_size, optimizer=args.optimizer,
            learning_rate=args.learning_rate, weight_decay=args.weight_decay, momentum=args.momentum,
            warmup_epochs=args.warmup_epochs, frozen_epochs=args.frozen_epochs,
            mixed_precision=args.mixed_precision, augment=args.augment, seed=args.seed, devices=args.devices,
            deterministic=args.deterministic, stop_after_epochs=args.stop_after, export_litert=args.export_litert,
            score_threshold=args.score_threshold, max_detections=args.max_detections, verbose=2 if args.quiet else 1,
        )  # fmt: skip
    except (ValueError, TypeError) as error:
        raise CommandError(str(error)) from None
    best = result["best"]
    best_text = (
        "no finite validation score yet"
        if best is None
        else (f"best {best['metric']} {best['score']:.4f} at epoch {best['epoch']}")
    )
    print(f"{result['out_dir']}: {result['epochs_done']}/{args.epochs} epochs, {best_text}")
    if result.get("litert"):
        print(f"LiteRT: {result['litert']}")
    return 0


# --------------------------------------------------------------------------
COMMANDS = (add_list, add_summary, add_convert, add_demo, add_bench, add_export, add_train)


def build_parser():
    parser = Parser(prog=PROG, description="MobileNet V1-V4 backbones for keras-hub.")
    parser.add_argument("--version", action=VersionAction, help="show the version and exit")
    subcommands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=Parser)
    for add_command in COMMANDS:
        add_command(subcommands)
    return parser


def one_line(error):
    # Errors from below the CLI may span lines (lists of ways out, chained reasons).
    return " ".join(str(error).split())


def import_torch_first():
    """Import torch and torchvision, when installed, before TensorFlow loads.

    `bench --pretrained` runs torchvision in the same process as TensorFlow;
    PyTorch's CUDA wheels and torchvision's ops crash (SIGSEGV) when imported
    after TensorFlow, and work when imported before it (seen with torch 2.14.1,
    torchvision 0.29.1 and TensorFlow 2.21).
    """
    try:
        import torch  # noqa: F401
        import torchvision.models.detection  # noqa: F401  (its C++ ops load here)
        import torchvision.models.segmentation  # noqa: F401
    except Exception:  # not installed, or broken: the bench says torchvision is not compared
        pass


def main(argv=None):
    """Run the command line on `argv` (default: `sys.argv[1:]`); return the exit status."""
    args = build_parser().parse_args(argv)
    if getattr(args, "precheck", None):
        args.precheck(args)  # argparse's own exit (status 2, or 0 for --help), before Keras loads
    try:
        if getattr(args, "announce", None):
            print(f"[{PROG} {args.command}] {args.announce}", file=sys.stderr, flush=True)
        if getattr(args, "pretrained", None) is not None:
            import_torch_first()
        if getattr(args, "train_bench", None) is None:  # bench --train starts each backend in its own process
            start_keras()
        return args.run(args)
    except CommandError as error:
        print(f"{PROG} {args.command}: error: {one_line(error)}", file=sys.stderr)
        return 2
    except OSError as error:  # the machine's, not the arguments': a full disk, a lost connection
        print(f"{PROG} {args.command}: error: {one_line(error)}", file=sys.stderr)
        return 1
    except ModuleNotFoundError as error:  # an optional dependency (LiteRT, ONNX, matplotlib)
        extra = EXTRAS.get(args.command)
        hint = f"; pip install 'mnet-backbones[{extra}]' installs what {args.command} needs" if extra else ""
        print(f"{PROG} {args.command}: error: {one_line(error)}{hint}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"\n{PROG} {args.command}: interrupted; nothing half-written was left.", file=sys.stderr)
        return INTERRUPTED
