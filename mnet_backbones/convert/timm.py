"""timm checkpoints (`config.json` + `model.safetensors`) -> our models.

One mapping for the whole family: it walks the same architecture table the
builder walked, and for every layer names the timm tensors that fill it.
"""

import json
import os
import re

import keras_hub
import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load_file

from mnet_backbones import architectures, files
from mnet_backbones.architectures import MQA, UIB, Conv, FusedIB
from mnet_backbones.constants import IMAGENET_MEAN, IMAGENET_STD
from mnet_backbones.convert.mapping import (
    WeightMismatchError,
    batch_norm_slots,
    conv_bn_slots,
    conv_kernel,
    dense_kernel,
    identity,
    load_slots,
)
from mnet_backbones.presets import PRESETS

TIMM_CONFIG = "config.json"
TIMM_WEIGHTS = "model.safetensors"
# timm's `tf_*` models are ports of TensorFlow checkpoints: TF padding and eps.
TF_PREFIX = "tf_"


def is_timm_snapshot(path):
    """Whether `path` is a local folder holding a timm hub snapshot."""
    config_path = os.path.join(str(path), TIMM_CONFIG)
    if not os.path.isfile(config_path):
        return False
    with open(config_path, encoding="utf-8") as f:
        try:
            config = json.load(f)
        except json.JSONDecodeError:
            return False
    return "architecture" in config and "registered_name" not in config


# timm names an architecture and its width: "mobilenetv3_large_075",
# "mobilenetv4_hybrid_medium_075", "mobilenetv4_conv_small" (width 1.0).
_TIMM_NAME = re.compile(r"(?P<architecture>mobilenetv\d(?:_[a-z]+)*?)(?:_(?P<width>\d{3}))?")


def backbone_config_for(timm_architecture):
    """Our backbone arguments for a timm architecture name, any width."""
    tf_port = timm_architecture.startswith(TF_PREFIX)
    name = timm_architecture[len(TF_PREFIX) :] if tf_port else timm_architecture
    match = _TIMM_NAME.fullmatch(name)
    if not match or match["architecture"] not in architectures.ARCHITECTURES:
        raise ValueError(
            f"timm architecture {timm_architecture!r} is not a MobileNet this package "
            "builds. Supported: [tf_]<architecture>[_<width x 100>] with <architecture> "
            f"one of {sorted(architectures.ARCHITECTURES)}, e.g. {sorted(PRESETS)}."
        )
    return dict(
        architecture=match["architecture"],
        width_multiplier=int(match["width"]) / 100 if match["width"] else 1.0,
        padding="same" if tf_port else "symmetric",
        bn_epsilon=1e-3 if tf_port else 1e-5,
    )


def read_state_dict(folder):
    """Every tensor of the snapshot as float32 numpy (float16 is widened)."""
    path = os.path.join(str(folder), TIMM_WEIGHTS)
    if not os.path.lexists(path):
        raise FileNotFoundError(f"No {TIMM_WEIGHTS} in timm snapshot folder {folder!r}.")
    files.check_regular_file(path)  # a FIFO would hang the reader
    try:
        tensors = load_file(path)
    except (SafetensorError, OSError, ValueError) as error:
        raise WeightMismatchError(
            f"Cannot read {path!r} ({error}); the file is truncated or not safetensors."
        ) from error
    return {
        key: value.astype(np.float32) if np.issubdtype(value.dtype, np.floating) else value
        for key, value in tensors.items()
    }


def read_config(folder):
    with open(os.path.join(str(folder), TIMM_CONFIG), encoding="utf-8") as f:
        return json.load(f)


# ---------------------------------------------------------------------------
# The mapping: (our variable, timm key, transform) for every weight.


def _squeeze_excite(se, key):
    yield se.reduce.kernel, f"{key}.conv_reduce.weight", conv_kernel
    yield se.reduce.bias, f"{key}.conv_reduce.bias", identity
    yield se.expand.kernel, f"{key}.conv_expand.weight", conv_kernel
    yield se.expand.bias, f"{key}.conv_expand.bias", identity


def _optional(layer, conv_key, bn_key):
    if layer is not None:
        yield from conv_bn_slots(layer, conv_key, bn_key)


def _inverted_bottleneck(layer, key, generation):
    if generation == 4:  # timm UniversalInvertedResidual
        for part, timm_part in (
            ("dw_start", "dw_start"),
            ("expand", "pw_exp"),
            ("dw_mid", "dw_mid"),
            ("project", "pw_proj"),
            ("dw_end", "dw_end"),
        ):
            yield from _optional(getattr(layer, part), f"{key}.{timm_part}.conv", f"{key}.{timm_part}.bn")
    elif not layer.expand_ratio:  # timm DepthwiseSeparableConv
        yield from conv_bn_slots(layer.dw_mid, f"{key}.conv_dw", f"{key}.bn1")
        yield from conv_bn_slots(layer.project, f"{key}.conv_pw", f"{key}.bn2")
    else:  # timm InvertedResidual
        yield from conv_bn_slots(layer.expand, f"{key}.conv_pw", f"{key}.bn1")
        yield from conv_bn_slots(layer.dw_mid, f"{key}.conv_dw", f"{key}.bn2")
        yield from conv_bn_slots(layer.project, f"{key}.conv_pwl", f"{key}.bn3")
    if layer.se is not None:
        yield from _squeeze_excite(layer.se, f"{key}.se")
    if layer.layer_scale is not None:
        yield layer.gamma, f"{key}.layer_scale.gamma", identity


def _attention(layer, key):
    yield from batch_norm_slots(layer.norm, f"{key}.norm")
    attn = f"{key}.attn"
    yield layer.query.kernel, f"{attn}.query.proj.weight", conv_kernel
    for name in ("key", "value"):
        yield from _optional(getattr(layer, f"{name}_down"), f"{attn}.{name}.down_conv", f"{attn}.{name}.norm")
        yield getattr(layer, name).kernel, f"{attn}.{name}.proj.weight", conv_kernel
    yield layer.output_proj.kernel, f"{attn}.output.proj.weight", conv_kernel
    if layer.layer_scale is not None:
        yield layer.gamma, f"{key}.layer_scale.gamma", identity


def backbone_slots(backbone):
    """(variable, timm key, transform) for every weight of the backbone."""
    arch = backbone.architecture_spec
    yield from conv_bn_slots(backbone.get_layer("stem"), "conv_stem", "bn1")
    for s, stage in enumerate(arch.stages):
        for i, block in enumerate(stage):
            layer = backbone.get_layer(f"blocks_{s}_{i}")
            key = f"blocks.{s}.{i}"
            if isinstance(block, Conv):
                yield from conv_bn_slots(layer, f"{key}.conv", f"{key}.bn1")
            elif isinstance(block, UIB):
                yield from _inverted_bottleneck(layer, key, arch.generation)
            elif isinstance(block, FusedIB):
                yield from conv_bn_slots(layer.expand, f"{key}.conv_exp", f"{key}.bn1")
                yield from conv_bn_slots(layer.project, f"{key}.conv_pwl", f"{key}.bn2")
            elif isinstance(block, MQA):
                yield from _attention(layer, key)
    if arch.final_conv:
        yield from conv_bn_slots(backbone.get_layer("final_conv"), "conv_head", "bn2")


def classifier_slots(classifier):
    yield from backbone_slots(classifier.backbone)
    if classifier.head_dense is not None:
        yield classifier.head_dense.kernel, "conv_head.weight", dense_kernel
        if classifier.head_dense.use_bias:
            yield classifier.head_dense.bias, "conv_head.bias", identity
        if classifier.head_norm is not None:
            yield from batch_norm_slots(classifier.head_norm, "norm_head")
    yield classifier.output_dense.kernel, "classifier.weight", dense_kernel
    yield classifier.output_dense.bias, "classifier.bias", identity


def load_state_dict(model, state_dict, source_name="timm checkpoint", with_head=None):
    """Fill `model` (backbone or classifier) from a timm state dict.

    Every model weight must be found with the right shape; with `with_head`
    (default: whether `model` is a classifier) every checkpoint tensor must
    be used too. On any mismatch nothing is assigned.
    """
    is_classifier = isinstance(model, keras_hub.models.ImageClassifier)
    slots = classifier_slots(model) if is_classifier else backbone_slots(model)
    with_head = is_classifier if with_head is None else with_head
    # Without the head, the checkpoint's head tensors are left unused.
    unused = () if with_head else ("conv_head.", "norm_head.", "classifier.")
    load_slots(slots, state_dict, source_name, allowed_unused_prefixes=unused)


# ---------------------------------------------------------------------------
# Snapshots -> models.

HF_SCHEME = "hf://"


class DownloadError(ConnectionError):
    """A checkpoint could not be downloaded (offline, or no such repository)."""


def download_snapshot(handle):
    """`hf://org/name` -> local folder with `config.json` and `model.safetensors`."""
    repo_id = handle[len(HF_SCHEME) :] if handle.startswith(HF_SCHEME) else handle
    try:
        import huggingface_hub
    except ImportError as error:
        raise ImportError(
            f"Loading {handle!r} needs the huggingface_hub package: pip install huggingface_hub"
        ) from error
    try:
        folder = huggingface_hub.snapshot_download(
            repo_id, allow_patterns=[TIMM_CONFIG, TIMM_WEIGHTS], library_name="mnet-backbones"
        )
    except Exception as error:  # the hub raises many types for "offline"/"not found"
        raise DownloadError(
            f"Could not download {handle!r} from the Hugging Face hub ({type(error).__name__}: "
            f"{error}). If this machine is offline: download the snapshot elsewhere "
            f"(`mnet-backbones convert {handle} OUT_DIR` writes a preset folder you can "
            "copy here) and pass the local folder to from_preset(), or pass "
            "load_weights=False to build the model with random weights."
        ) from error
    check_cached_blob(os.path.join(folder, TIMM_WEIGHTS), handle)
    return folder


_SHA256_NAME = re.compile(r"[0-9a-f]{64}")


def check_cached_blob(path, handle):
    """Raise a `ValueError` unless the hub-cache file at `path` has the SHA-256 its blob is named after.

    The Hugging Face cache keeps a large (LFS) file as `blobs/<its SHA-256>`
    and links the snapshot's name to it; the hub checks it only while
    downloading, and a file copied into the cache by hand is served as it is.
    A file that is not such a link (another cache layout) is not checked.
    """
    if not os.path.lexists(path):
        return
    blob = os.path.realpath(path)
    expected = os.path.basename(blob)
    if not _SHA256_NAME.fullmatch(expected):
        return
    files.check_regular_file(blob)
    digest = files.sha256_of(blob)
    if digest != expected:
        raise ValueError(
            f"{path} (the cached {handle} file {blob}) has SHA-256 {digest}, but the hub's cache names it "
            f"after its SHA-256 {expected}: it is not the file the hub published (copied there by hand, or "
            "damaged) and is not used. Delete it and download again."
        )


def is_mobilenet_snapshot(preset):
    """Whether `preset` is a timm MobileNet checkpoint this package converts, without downloading.

    A local snapshot folder whose architecture we build, or an
    `hf://timm/<architecture>.<tag>` handle naming one.
    """
    if not isinstance(preset, str):
        return False
    if preset.startswith(HF_SCHEME + "timm/"):
        architecture = preset[len(HF_SCHEME + "timm/") :].split(".")[0]
    elif is_timm_snapshot(preset):
        architecture = read_config(preset)["architecture"]
    else:
        return False
    try:
        backbone_config_for(architecture)
    except ValueError:
        return False
    return True


def resolve_snapshot(preset):
    """The local timm snapshot folder `preset` refers to, or None if it is not one.

    `preset` may be a local folder or an `hf://` handle (downloaded here).
    """
    if not isinstance(preset, str):
        return None
    if preset.startswith(HF_SCHEME):
        folder = download_snapshot(preset)
        if not is_timm_snapshot(folder):
            raise ValueError(f"{preset!r} is not a timm checkpoint (its config.json has no 'architecture').")
        return folder
    return preset if is_timm_snapshot(preset) else None


def image_converter_for(config, converter_cls):
    """A `converter_cls` (a keras-hub ImageConverter) reproducing timm's `pretrained_cfg`.

    timm resizes the short side to `size / crop_pct` and centre-crops; keras-hub's
    converter centre-crops to the aspect ratio and resizes, which for the usual
    square inputs differs only by the crop margin.
    """
    cfg = config.get("pretrained_cfg", {})
    mean = cfg.get("mean", IMAGENET_MEAN)
    std = cfg.get("std", IMAGENET_STD)
    size = cfg.get("input_size", (3, 224, 224))[1:]
    interpolation = cfg.get("interpolation", "bilinear")
    if interpolation not in ("bilinear", "bicubic", "nearest"):
        interpolation = "bilinear"
    return converter_cls(
        image_size=tuple(size),
        scale=[1.0 / (255.0 * s) for s in std],
        offset=[-m / s for m, s in zip(mean, std)],
        interpolation=interpolation,
        crop_to_aspect_ratio=True,
    )


# The model classes come in as arguments: this module sits below them (the
# models' `from_preset` calls it), as keras-hub's converters take `cls`.


def backbone_from_snapshot(backbone_cls, folder, load_weights=True, **kwargs):
    """A `backbone_cls` (MobileNetBackbone) with the snapshot's architecture and weights."""
    config = read_config(folder)
    backbone = backbone_cls(**backbone_config_for(config["architecture"]), **kwargs)
    if load_weights:
        load_state_dict(backbone, read_state_dict(folder), source_name=str(folder))
    return backbone


def classifier_from_snapshot(classifier_cls, folder, load_weights=True, num_classes=None, **kwargs):
    """A `classifier_cls` with timm's head (or a new one if `num_classes` differs).

    The backbone, preprocessor and image converter classes are the
    classifier's own (`backbone_cls`, `preprocessor_cls`, its `image_converter_cls`).
    """
    preprocessor_cls = classifier_cls.preprocessor_cls
    config = read_config(folder)
    checkpoint_classes = config.get("num_classes", 1000)
    num_classes = num_classes or checkpoint_classes
    backbone_kwargs = {k: kwargs.pop(k) for k in ("image_shape", "dtype") if k in kwargs}
    backbone = backbone_from_snapshot(classifier_cls.backbone_cls, folder, load_weights=False, **backbone_kwargs)
    preprocessor = kwargs.pop("preprocessor", None) or preprocessor_cls(
        image_converter=image_converter_for(config, preprocessor_cls.image_converter_cls)
    )
    classifier = classifier_cls(backbone=backbone, num_classes=num_classes, preprocessor=preprocessor, **kwargs)
    if load_weights:
        state_dict = read_state_dict(folder)
        if num_classes == checkpoint_classes:
            load_state_dict(classifier, state_dict, source_name=str(folder))
        else:  # a new head for a new label set: only the backbone is pretrained
            load_state_dict(backbone, state_dict, source_name=str(folder))
    return classifier
