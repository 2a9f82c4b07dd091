"""torchvision checkpoints (`.pth` state_dicts) -> our models.

torchvision publishes its MobileNets as `torch.save`d state_dicts named after
the builder (`mobilenet_v3_large-5c1a4163.pth`, the hex digits the file's
SHA-256 prefix). Their models are ours under one convention
(`TORCHVISION_CONVENTION`): PyTorch's symmetric padding, BatchNorm epsilon
1e-3 (MobileNetV3; V2 keeps PyTorch's 1e-5), and with `dilated=True` the
block that gives up its stride dilated too.

The mapping walks the architecture table in torchvision's `features` order:
index 0 the stem, 1..N the blocks in order, the last the final 1x1
convolution (in MobileNetV3 the table's last row, in V2 `final_conv`).
Inside a block torchvision numbers the parts it has: MobileNetV3's
`block.{j}` (expansion, depthwise, squeeze-excite `fc1`/`fc2`, projection)
and MobileNetV2's `conv.{j}` (expansion, depthwise, then the projection's
bare conv and BatchNorm). Heads built on a torchvision backbone pass their
own slots beside `backbone_slots` to one `load_slots` call.
"""

import json
import os
import pickle
import re
import tempfile
import urllib.error
import urllib.request

from mnet_backbones import architectures, files
from mnet_backbones.architectures import UIB, Conv
from mnet_backbones.constants import IMAGENET_CLASSES, IMAGENET_MEAN, IMAGENET_STD
from mnet_backbones.convert.mapping import (
    WeightMismatchError,
    conv_bn_slots,
    conv_kernel,
    dense_kernel,
    identity,
    load_slots,
)

# Backbone arguments of every torchvision MobileNetV3 checkpoint.
TORCHVISION_CONVENTION = dict(padding="symmetric", bn_epsilon=1e-3, dilate_strided_block=True)
# torchvision's MobileNetV2 uses nn.BatchNorm2d's default epsilon.
TORCHVISION_V2_CONVENTION = dict(TORCHVISION_CONVENTION, bn_epsilon=1e-5)

# torchvision builder -> our architecture.
BUILDERS = {
    "mobilenet_v2": "mobilenetv2",
    "mobilenet_v3_large": "mobilenetv3_large",
    "mobilenet_v3_small": "mobilenetv3_small",
}
REDUCED_TAIL = {"mobilenet_v3_large": "mobilenetv3_large_reduced_tail"}
# Builder keyword arguments this converter understands (besides num_classes).
BUILDER_KWARGS = ("width_mult", "reduced_tail", "dilated", "dropout")

TORCH_EXTRA = 'pip install "mnet-backbones[torch]"'
CONFIG_FILE = "config.json"
CHECKPOINT_FILE = "model.pth"
CHECKPOINT_SUFFIXES = (".pth", ".pt")
# torchvision's eval transform (`ImageClassification`) without a published
# recipe: resize the short side to 256, centre-crop 224.
DEFAULT_RESIZE, DEFAULT_CROP = 256, 224

CACHE_ENV = "MNET_BACKBONES_CACHE"  # the variable mnet_backbones.weights reads too


def convention_for(architecture):
    """Backbone keyword arguments of a torchvision checkpoint of `architecture`."""
    arch = architectures.get_architecture(architecture)
    return dict(TORCHVISION_V2_CONVENTION if arch.generation == 2 else TORCHVISION_CONVENTION)


# ---------------------------------------------------------------------------
# Reading .pth files.


def read_state_dict(path):
    """{key: float32 numpy array} of a `.pth` state_dict, BatchNorm counters dropped.

    Raises:
        FileNotFoundError: no file at `path`.
        ImportError: torch is not installed (the `torch` extra).
        ValueError: the file is not a PyTorch state_dict.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"No torchvision checkpoint at {path!r}.")
    files.check_regular_file(path)  # a FIFO would hang torch.load
    try:
        # The one backend import of model code (tests/test_layering.py allows
        # exactly this): only torch's unpickler reads a .pth file. Lazy, so
        # that torch stays optional.
        import torch
    except ImportError as error:
        raise ImportError(
            f"Reading the PyTorch checkpoint {path!r} needs torch, an optional dependency: "
            f"{TORCH_EXTRA} (or pip install torch)."
        ) from error
    try:
        # weights_only: a state_dict needs no arbitrary unpickling.
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise WeightMismatchError(_pickled_objects_message(path, error)) from None
    except Exception as error:  # torch raises RuntimeError, EOFError, ...
        raise WeightMismatchError(
            f"Cannot read {path!r} as a PyTorch checkpoint ({type(error).__name__}: {_torch_reason(error)}). "
            "Expected a state_dict saved with torch.save, as torchvision publishes them."
        ) from None
    if not isinstance(loaded, dict) or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
        raise WeightMismatchError(
            f"{path!r} holds a {type(loaded).__name__}, not a state_dict (a dict of tensors). "
            "Save model.state_dict(), not the model or a training checkpoint."
        )
    return {
        key: value.detach().to(torch.float32).numpy()
        for key, value in loaded.items()
        if not key.endswith("num_batches_tracked")
    }


_TERMINAL_CODES = re.compile(r"\x1b\[[0-9;]*m")
# torch's weights-only unpickler names the first class it refused.
_REFUSED_GLOBAL = re.compile(r"Unsupported global: GLOBAL ([\w.]+)")


def _torch_reason(error):
    """torch's error as one plain line: no terminal colour codes, none of its advice to unpickle anyway."""
    text = _TERMINAL_CODES.sub("", str(error))
    first = text.strip().splitlines()[0] if text.strip() else type(error).__name__
    return "its content is not plain tensors" if "weights_only" in first else first


def _pickled_objects_message(path, error):
    refused = _REFUSED_GLOBAL.search(_TERMINAL_CODES.sub("", str(error)))
    names = f" (it names {refused.group(1)})" if refused else ""
    return (
        f"{path} holds pickled Python objects, not only tensors{names}: probably a whole model or a "
        "training checkpoint saved with torch.save(model, path). Such a file is not unpickled here, since "
        "unpickling runs code the file chooses. Save the weights alone, as torchvision publishes them: "
        "torch.save(model.state_dict(), path), and load that file."
    )


# ---------------------------------------------------------------------------
# The mapping.


def _check_torchvision_family(arch):
    if arch.generation not in (2, 3):
        raise ValueError(
            f"torchvision has no MobileNet with architecture {arch.name!r}; its checkpoints "
            f"map to {sorted(set(BUILDERS.values()) | set(REDUCED_TAIL.values()))}."
        )


def feature_entries(backbone):
    """[(torchvision `features` index, tap name, layer, table row)] in order.

    The tap names are `MobileNetBackbone.feature_taps`' (`"stem"`,
    `"blocks.{s}.{i}"`, `"final"` for V2's `final_conv`; V3's final conv is
    its last block)."""
    arch = backbone.architecture_spec
    _check_torchvision_family(arch)
    entries = [(0, "stem", backbone.get_layer("stem"), None)]
    for s, stage in enumerate(arch.stages):
        for i, block in enumerate(stage):
            entries.append((len(entries), f"blocks.{s}.{i}", backbone.get_layer(f"blocks_{s}_{i}"), block))
    if arch.final_conv:
        entries.append((len(entries), "final", backbone.get_layer("final_conv"), None))
    return entries


def _conv_norm_act(layer, key):
    # torchvision's Conv2dNormActivation: `.0` the conv, `.1` the BatchNorm.
    yield from conv_bn_slots(layer, f"{key}.0", f"{key}.1")


def _v3_block(layer, key):
    parts = [layer.expand, layer.dw_mid, layer.se, layer.project]
    for j, part in enumerate(p for p in parts if p is not None):
        if part is layer.se:
            yield part.reduce.kernel, f"{key}.block.{j}.fc1.weight", conv_kernel
            yield part.reduce.bias, f"{key}.block.{j}.fc1.bias", identity
            yield part.expand.kernel, f"{key}.block.{j}.fc2.weight", conv_kernel
            yield part.expand.bias, f"{key}.block.{j}.fc2.bias", identity
        else:
            yield from _conv_norm_act(part, f"{key}.block.{j}")


def _v2_block(layer, key):
    j = 0
    for part in (layer.expand, layer.dw_mid):
        if part is not None:
            yield from _conv_norm_act(part, f"{key}.conv.{j}")
            j += 1
    # The projection is a bare Conv2d and BatchNorm2d, one index each.
    yield from conv_bn_slots(layer.project, f"{key}.conv.{j}", f"{key}.conv.{j + 1}")


def backbone_slots(backbone, prefix="features."):
    """(variable, torchvision key, transform) for every weight of a V2 / V3 backbone.

    Keys are `f"{prefix}{k}..."` with `k` torchvision's `features` index.
    A detector or segmenter whose backbone torchvision stores under another
    name passes that prefix (e.g. `"backbone.features."`)."""
    generation = backbone.architecture_spec.generation
    for index, _, layer, block in feature_entries(backbone):
        key = f"{prefix}{index}"
        if block is None or isinstance(block, Conv):
            yield from _conv_norm_act(layer, key)
        elif isinstance(block, UIB):
            yield from (_v3_block if generation == 3 else _v2_block)(layer, key)
        else:  # pragma: no cover - _check_torchvision_family excludes V4's blocks
            raise ValueError(f"torchvision has no block like {block!r}.")


def torchvision_index(backbone, tap_name):
    """torchvision's `features` index of one of `backbone.feature_taps`.

    `"stem"` is 0, `"blocks.{s}.{i}"` (and its `.expansion`, which is that
    block's `block.0` / `conv.0`) the block's index, `"final"` the last.

    Example: on mobilenetv3_large, `"blocks.5.0"` (the first stride-32
    block, SSDLite's C4) is 13 and `"final"` 16.
    """
    entries = feature_entries(backbone)
    names = {name: index for index, name, _, _ in entries}
    names["final"] = entries[-1][0]
    base = tap_name[: -len(".expansion")] if tap_name.endswith(".expansion") else tap_name
    if tap_name not in backbone.feature_taps or base not in names:
        raise ValueError(
            f"{tap_name!r} is not a feature tap of this {backbone.architecture} backbone. "
            f"Valid names: {sorted(backbone.feature_taps)}."
        )
    return names[base]


def classifier_slots(classifier, prefix="features."):
    """Slots of a `MobileNetImageClassifier`: the backbone's and torchvision's classifier.

    MobileNetV3's classifier is Linear, Hardswish, Dropout, Linear
    (`classifier.0`, `classifier.3`); MobileNetV2's Dropout, Linear (`classifier.1`)."""
    yield from backbone_slots(classifier.backbone, prefix)
    if classifier.head_dense is not None:
        yield classifier.head_dense.kernel, "classifier.0.weight", dense_kernel
        yield classifier.head_dense.bias, "classifier.0.bias", identity
        output = "classifier.3"
    else:
        output = "classifier.1"
    yield classifier.output_dense.kernel, f"{output}.weight", dense_kernel
    yield classifier.output_dense.bias, f"{output}.bias", identity


# ---------------------------------------------------------------------------
# Checkpoint files and folders.


def is_checkpoint_file(path):
    return isinstance(path, (str, os.PathLike)) and os.path.isfile(path)


def builder_from_file_name(path):
    """The builder a torchvision file name starts with (`mobilenet_v3_large-8738ca79.pth`)."""
    name = os.path.basename(os.fspath(path))
    for builder in sorted(BUILDERS, key=len, reverse=True):
        if re.match(rf"{builder}(?![a-z0-9])", name):
            return builder
    raise ValueError(
        f"Cannot tell the architecture of {os.fspath(path)!r} from its name: a bare torchvision "
        f"checkpoint's file name starts with its builder, one of {sorted(BUILDERS)} (as torchvision "
        f"publishes them, e.g. 'mobilenet_v3_large-5c1a4163.pth'). Rename it, or put it in a folder as "
        f"{CHECKPOINT_FILE} beside a {CONFIG_FILE} such as "
        '{"builder": "mobilenet_v3_large", "task": "classification", "num_classes": 1000, "kwargs": {}}.'
    )


def is_torchvision_folder(path):
    config_path = os.path.join(os.fspath(path), CONFIG_FILE)
    if not os.path.isfile(config_path):
        return False
    try:
        with open(config_path, encoding="utf-8") as f:
            config = json.load(f)
    except (OSError, json.JSONDecodeError):
        return False
    return isinstance(config, dict) and "builder" in config and "registered_name" not in config


def is_classifier_checkpoint(preset):
    """Whether `preset` is a torchvision ImageNet-classifier checkpoint we convert, without reading weights.

    A `.pth` file named after a classifier builder (`mobilenet_v3_large-5c1a4163.pth`),
    or a folder whose `config.json` names one.
    """
    if not isinstance(preset, (str, os.PathLike)):
        return False
    path = os.fspath(preset)
    if os.path.isfile(path) and path.endswith(CHECKPOINT_SUFFIXES):
        name = os.path.basename(path)
        return any(re.match(rf"{builder}(?![a-z0-9])", name) for builder in BUILDERS)
    if os.path.isdir(path) and is_torchvision_folder(path):
        with open(os.path.join(path, CONFIG_FILE), encoding="utf-8") as f:
            return json.load(f).get("builder") in BUILDERS
    return False


def resolve_checkpoint(preset):
    """`(config, .pth path)` if `preset` is a torchvision checkpoint, else None.

    `preset` is a folder with `config.json` (`builder`, `task`, `num_classes`,
    `kwargs`) and `model.pth`, or a bare `.pth` file named after its builder
    (then 1000 ImageNet classes and default builder arguments). Any other
    file is refused: presets are folders, handles or names.
    """
    if not isinstance(preset, (str, os.PathLike)):
        return None
    path = os.fspath(preset)
    if os.path.isfile(path):
        if not path.endswith(CHECKPOINT_SUFFIXES):
            raise ValueError(
                f"{path!r} is a file but not a PyTorch checkpoint (.pth): from_preset takes a "
                "built-in name, a preset folder, a timm or torchvision checkpoint folder, a "
                "torchvision .pth file or a handle."
            )
        config = {"builder": builder_from_file_name(path), "task": "classification", "kwargs": {}}
        config.update(KNOWN_FILES.get(os.path.basename(path), {}))
        return config, path
    if os.path.isdir(path) and is_torchvision_folder(path):
        with open(os.path.join(path, CONFIG_FILE), encoding="utf-8") as f:
            config = json.load(f)
        checkpoint = os.path.join(path, CHECKPOINT_FILE)
        if not os.path.isfile(checkpoint):
            raise FileNotFoundError(f"torchvision checkpoint folder {path!r} has no {CHECKPOINT_FILE}.")
        return config, checkpoint
    return None


def backbone_config_for(config, source_name="torchvision checkpoint"):
    """Our backbone arguments for a torchvision `config.json` dict."""
    builder = config.get("builder")
    if builder not in BUILDERS:
        raise ValueError(
            f"{source_name}: builder {builder!r} is not a torchvision classifier backbone this "
            f"package converts. Valid builders: {sorted(BUILDERS)}."
        )
    kwargs = dict(config.get("kwargs") or {})
    unknown = sorted(set(kwargs) - set(BUILDER_KWARGS) - {"num_classes"})
    if unknown:
        raise ValueError(
            f"{source_name}: builder argument(s) {unknown} of {builder} are not supported. "
            f"Supported: {list(BUILDER_KWARGS)}."
        )
    architecture = BUILDERS[builder]
    if kwargs.get("reduced_tail"):
        if builder not in REDUCED_TAIL:
            raise ValueError(f"{source_name}: reduced_tail=True is supported for {sorted(REDUCED_TAIL)} only.")
        architecture = REDUCED_TAIL[builder]
    if kwargs.get("dilated") and builder == "mobilenet_v2":
        raise ValueError(f"{source_name}: torchvision's mobilenet_v2 has no 'dilated' argument.")
    return dict(
        architecture=architecture,
        width_multiplier=float(kwargs.get("width_mult", 1.0)),
        output_stride=16 if kwargs.get("dilated") else 32,
        **convention_for(architecture),
    )


# Eval transforms of the files torchvision publishes (its weights' `transforms`).
KNOWN_FILES = {
    "mobilenet_v3_large-5c1a4163.pth": {"resize_size": 232, "crop_size": 224},
    "mobilenet_v2-7ebf99e0.pth": {"resize_size": 232, "crop_size": 224},
}


def image_converter_for(config, converter_cls):
    """A `converter_cls` doing torchvision's eval transform for ImageNet classifiers.

    Resize the short side to `resize_size` (bilinear), centre-crop
    `crop_size`, then ImageNet mean/std on [0, 1] pixels; `config` may give
    `resize_size` and `crop_size` (default 256 and 224)."""
    resize = int(config.get("resize_size", DEFAULT_RESIZE))
    crop = int(config.get("crop_size", DEFAULT_CROP))
    return converter_cls(
        image_size=(crop, crop),
        scale=[1.0 / (255.0 * s) for s in IMAGENET_STD],
        offset=[-m / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD)],
        interpolation="bilinear",
        antialias=True,  # torchvision's resize antialiases
        crop_to_aspect_ratio=True,
        crop_fraction=crop / resize,
    )


def _check_task(config, source_name):
    task = config.get("task", "classification")
    if task != "classification":
        raise ValueError(
            f"{source_name} is a torchvision {task} checkpoint ({config.get('builder')}); "
            "load it with the matching heads task, not a classifier or backbone."
        )


# The model classes come in as arguments: this module sits below them.


def backbone_from_checkpoint(backbone_cls, preset, load_weights=True, **kwargs):
    """A `backbone_cls` (MobileNetBackbone) from a torchvision checkpoint folder or file.

    The classifier's own tensors in the file are not needed and not checked."""
    config, checkpoint = resolve_checkpoint(preset)
    source_name = os.fspath(preset)
    _check_task(config, source_name)
    backbone = backbone_cls(**{**backbone_config_for(config, source_name), **kwargs})
    if load_weights:
        state_dict = read_state_dict(checkpoint)
        load_slots(backbone_slots(backbone), state_dict, source_name, allowed_unused_prefixes=("classifier.",))
    return backbone


def classifier_from_checkpoint(classifier_cls, preset, load_weights=True, num_classes=None, **kwargs):
    """A `classifier_cls` (MobileNetImageClassifier) from a torchvision checkpoint.

    With the checkpoint's class count (default) the whole classifier is
    loaded; another `num_classes` gets a new, random classes layer (and the
    V3 hidden layer stays pretrained)."""
    config, checkpoint = resolve_checkpoint(preset)
    source_name = os.fspath(preset)
    _check_task(config, source_name)
    checkpoint_classes = int(config.get("num_classes", IMAGENET_CLASSES))
    num_classes = num_classes or checkpoint_classes
    backbone_kwargs = {k: kwargs.pop(k) for k in ("image_shape", "dtype") if k in kwargs}
    backbone = classifier_cls.backbone_cls(**backbone_config_for(config, source_name), **backbone_kwargs)
    preprocessor_cls = classifier_cls.preprocessor_cls
    preprocessor = kwargs.pop("preprocessor", None) or preprocessor_cls(
        image_converter=image_converter_for(config, preprocessor_cls.image_converter_cls)
    )
    kwargs.setdefault("dropout", float((config.get("kwargs") or {}).get("dropout", 0.2)))
    classifier = classifier_cls(backbone=backbone, num_classes=num_classes, preprocessor=preprocessor, **kwargs)
    if load_weights:
        state_dict = read_state_dict(checkpoint)
        slots = list(classifier_slots(classifier))
        if num_classes != checkpoint_classes:
            output_keys = (
                ("classifier.3.", "classifier.1.") if classifier.head_dense is not None else ("classifier.1.",)
            )
            slots = [slot for slot in slots if not slot[1].startswith(output_keys)]
            load_slots(slots, state_dict, source_name, allowed_unused_prefixes=output_keys)
        else:
            load_slots(slots, state_dict, source_name)
    return classifier


# ---------------------------------------------------------------------------
# Downloads.


class DownloadError(ConnectionError):
    """A checkpoint could not be downloaded (offline, or no such file)."""


def checkpoint_cache_dir():
    """Where downloaded torchvision files are kept.

    `$MNET_BACKBONES_CACHE/torchvision` or `$KERAS_HOME/mnet_backbones/torchvision`
    (`KERAS_HOME` defaults to `~/.keras`)."""
    if os.environ.get(CACHE_ENV):
        return os.path.join(os.environ[CACHE_ENV], "torchvision")
    keras_home = os.environ.get("KERAS_HOME", os.path.join(os.path.expanduser("~"), ".keras"))
    return os.path.join(keras_home, "mnet_backbones", "torchvision")


# torchvision file names end with the first hex digits of the file's SHA-256.
_HASH_SUFFIX = re.compile(r"-([0-9a-f]{6,64})\.pth?$")


def _fetch(url, destination):
    """Write `url`'s body to `destination`. Tests monkeypatch this (no network in CI)."""
    with urllib.request.urlopen(url, timeout=60) as response, open(destination, "wb") as f:
        while chunk := response.read(1 << 20):
            f.write(chunk)


def _check_published_hash(path, file_name, what, downloaded=False):
    """Raise a `ValueError` unless `path`'s SHA-256 starts with the prefix `file_name` publishes.

    The message names the file and both digests. Hashing costs about 0.1 s for
    torchvision's largest MobileNet file (42 MB), next to seconds of
    conversion, so a cached file is hashed on each use rather than trusted
    from a marker that a copy could carry along.
    """
    expected = _HASH_SUFFIX.search(file_name)
    files.check_regular_file(path)
    if not expected:
        return
    digest = files.sha256_of(path)
    if digest.startswith(expected.group(1)):
        return
    if downloaded:
        raise ValueError(
            f"{what} has SHA-256 {digest}, which does not start with {expected.group(1)} as its name "
            "says: the download is corrupt. Try again."
        )
    raise ValueError(
        f"{what}, has SHA-256 {digest}, but its published name says the SHA-256 starts with "
        f"{expected.group(1)}: it is not the published file (another checkpoint copied under this name, or a "
        "damaged copy) and is not used. Delete it and run again with network access, or copy the published "
        "file there; to load a checkpoint of your own, pass its path to from_preset()."
    )


def download_checkpoint(url, progress=None):
    """The local path of the torchvision file at `url`, downloaded once.

    The file goes to `checkpoint_cache_dir()`, written to a temporary name,
    its SHA-256 checked against the prefix in its name, then renamed; later
    calls find it and need no network. A file found there (downloaded
    earlier or copied by hand) has its SHA-256 checked too, on every use.

    Args:
        url: e.g. `"https://download.pytorch.org/models/mobilenet_v3_large-5c1a4163.pth"`.
        progress: a callable taking a message string, True (print), or
            None / False (silent).

    Raises:
        DownloadError: the file cannot be fetched (offline); the message says
            how to bring it here by hand.
        ValueError: the downloaded or cached file's hash does not match its name.
    """
    file_name = url.rstrip("/").rsplit("/", 1)[-1]
    folder = checkpoint_cache_dir()
    path = os.path.join(folder, file_name)
    if os.path.lexists(path):
        # Put here by an earlier download or by hand (the offline error says how): checked on every
        # use, since the name alone does not make it the published file.
        _check_published_hash(path, file_name, f"{path}, in the download cache as {url}")
        return path
    os.makedirs(folder, exist_ok=True)
    if progress:
        (print if progress is True else progress)(f"downloading {url} to {path}")
    handle, staging = tempfile.mkstemp(prefix=".downloading-", dir=folder)
    os.close(handle)
    try:
        try:
            _fetch(url, staging)
        except (OSError, urllib.error.URLError, ValueError) as error:
            raise DownloadError(
                f"Could not download {url} ({type(error).__name__}: {error}). If this machine is "
                f"offline: download that file elsewhere, copy it here (to {path} to have it found "
                "automatically), and pass its local path to from_preset(); or pass "
                "load_weights=False to build the model with random weights."
            ) from error
        _check_published_hash(staging, file_name, f"The file downloaded from {url}", downloaded=True)
        os.replace(staging, path)
    finally:
        if os.path.exists(staging):
            os.remove(staging)
    return path
