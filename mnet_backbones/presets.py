"""The built-in presets: one row per published MobileNet configuration.

Each preset names an architecture table, a width multiplier and the padding
and BatchNorm epsilon its reference weights were trained with: timm's own
models pad symmetrically with epsilon 1e-5, keras.applications (and timm's
`tf_*` ports) use TensorFlow "same" padding with epsilon 1e-3.

`PRESETS` are the 21 configurations of the reference figures table, one per
architecture and width. `TORCHVISION_PRESETS` add torchvision's published
ImageNet checkpoints of three of those architectures, under their own names
(`*_torchvision`); `BUILTIN_PRESETS` holds both.
"""

import dataclasses
import difflib
import json
import os
from typing import Any

from mnet_backbones import files, keras_hub_internals
from mnet_backbones.constants import IMAGENET_MEAN, IMAGENET_STD

# The shipped preset folders: config and image converter, and a placeholder
# in place of weights (see `is_builtin_placeholder`).
PRESET_DIR = os.path.join(os.path.dirname(__file__), "preset_files")


@dataclasses.dataclass(frozen=True)
class Preset:
    name: str
    architecture: str
    width_multiplier: float
    resolution: int
    padding: str
    bn_epsilon: float
    description: str
    weights: tuple[str, ...] = ()  # timm hub tags, best ImageNet top-1 at `resolution` first
    # keras.applications constructor and arguments, where only it has weights
    keras_application: tuple[str, dict[str, Any]] | None = None
    # Input normalisation of the reference weights, on [0, 1] pixels.
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    interpolation: str = "bicubic"
    # torchvision's published file: (url, weights enum name, ImageNet top-1 it reports)
    torchvision: tuple[str, str, float] | None = None
    # Evaluation crop as a fraction of the short side (torchvision: crop / resize); 1: no margin.
    crop_fraction: float = 1.0
    antialias: bool = False

    @property
    def backbone_config(self):
        config = dict(
            architecture=self.architecture,
            width_multiplier=self.width_multiplier,
            padding=self.padding,
            bn_epsilon=self.bn_epsilon,
        )
        if self.torchvision:
            config["dilate_strided_block"] = True  # torchvision's dilated=True convention
        return config


TIMM = dict(padding="symmetric", bn_epsilon=1e-5)
# keras.applications scales pixels to [-1, 1] and resizes bilinearly.
TF = dict(padding="same", bn_epsilon=1e-3, mean=(0.5,) * 3, std=(0.5,) * 3, interpolation="bilinear")
INCEPTION_NORM = dict(mean=(0.5,) * 3, std=(0.5,) * 3)


def _preset(name, architecture, width, resolution, convention, description, weights=(), keras=None):
    return Preset(
        name,
        architecture,
        width,
        resolution,
        description=description,
        weights=weights,
        keras_application=keras,
        **convention,
    )


_PRESET_LIST = [
    _preset(
        "mobilenetv1_025",
        "mobilenetv1",
        0.25,
        224,
        TF,
        "MobileNetV1, width 0.25 (keras.applications).",
        keras=("MobileNet", {"alpha": 0.25}),
    ),
    _preset(
        "mobilenetv1_050",
        "mobilenetv1",
        0.5,
        224,
        TF,
        "MobileNetV1, width 0.5 (keras.applications).",
        keras=("MobileNet", {"alpha": 0.5}),
    ),
    _preset(
        "mobilenetv1_075",
        "mobilenetv1",
        0.75,
        224,
        TF,
        "MobileNetV1, width 0.75 (keras.applications).",
        keras=("MobileNet", {"alpha": 0.75}),
    ),
    _preset(
        "mobilenetv1_100",
        "mobilenetv1",
        1.0,
        224,
        {**TIMM, **INCEPTION_NORM, "interpolation": "bilinear"},
        "MobileNetV1, width 1.0 (timm).",
        ("ra4_e3600_r224_in1k",),
    ),
    _preset(
        "mobilenetv2_035",
        "mobilenetv2",
        0.35,
        224,
        TF,
        "MobileNetV2, width 0.35 (keras.applications).",
        keras=("MobileNetV2", {"alpha": 0.35}),
    ),
    _preset("mobilenetv2_050", "mobilenetv2", 0.5, 224, TIMM, "MobileNetV2, width 0.5 (timm).", ("lamb_in1k",)),
    _preset(
        "mobilenetv2_075",
        "mobilenetv2",
        0.75,
        224,
        TF,
        "MobileNetV2, width 0.75 (keras.applications).",
        keras=("MobileNetV2", {"alpha": 0.75}),
    ),
    _preset(
        "mobilenetv2_100",
        "mobilenetv2",
        1.0,
        224,
        {**TIMM, "interpolation": "bilinear"},
        "MobileNetV2, width 1.0 (timm).",
        ("ra_in1k",),
    ),
    _preset(
        "mobilenetv2_140",
        "mobilenetv2",
        1.4,
        224,
        {**TIMM, "interpolation": "bilinear"},
        "MobileNetV2, width 1.4 (timm).",
        ("ra_in1k",),
    ),
    _preset(
        "mobilenetv3_small_050", "mobilenetv3_small", 0.5, 224, TIMM, "MobileNetV3-Small, width 0.5.", ("lamb_in1k",)
    ),
    _preset(
        "mobilenetv3_small_075", "mobilenetv3_small", 0.75, 224, TIMM, "MobileNetV3-Small, width 0.75.", ("lamb_in1k",)
    ),
    _preset(
        "mobilenetv3_small_100", "mobilenetv3_small", 1.0, 224, TIMM, "MobileNetV3-Small, width 1.0.", ("lamb_in1k",)
    ),
    _preset(
        "mobilenetv3_large_075",
        "mobilenetv3_large",
        0.75,
        224,
        TF,
        "MobileNetV3-Large, width 0.75 (keras.applications).",
        keras=("MobileNetV3Large", {"alpha": 0.75}),
    ),
    _preset(
        "mobilenetv3_large_100",
        "mobilenetv3_large",
        1.0,
        224,
        # the ImageNet-21k-pretrained checkpoint expects [0, 1] pixels
        {**TIMM, "mean": (0.0,) * 3, "std": (1.0,) * 3, "interpolation": "bilinear"},
        "MobileNetV3-Large, width 1.0.",
        ("miil_in21k_ft_in1k", "ra4_e3600_r224_in1k", "ra_in1k"),
    ),
    _preset(
        "mobilenetv3_small_minimal_100",
        "mobilenetv3_small_minimal",
        1.0,
        224,
        TF,
        "MobileNetV3-Small minimalistic (ReLU, 3x3, no SE).",
        keras=("MobileNetV3Small", {"minimalistic": True}),
    ),
    _preset(
        "mobilenetv3_large_minimal_100",
        "mobilenetv3_large_minimal",
        1.0,
        224,
        TF,
        "MobileNetV3-Large minimalistic (ReLU, 3x3, no SE).",
        keras=("MobileNetV3Large", {"minimalistic": True}),
    ),
    _preset(
        "mobilenetv4_conv_small",
        "mobilenetv4_conv_small",
        1.0,
        224,
        TIMM,
        "MobileNetV4 conv small.",
        ("e2400_r224_in1k", "e1200_r224_in1k", "e3600_r256_in1k"),
    ),
    _preset(
        "mobilenetv4_conv_medium",
        "mobilenetv4_conv_medium",
        1.0,
        256,
        TIMM,
        "MobileNetV4 conv medium.",
        ("e500_r256_in1k", "e500_r224_in1k", "e250_r384_in12k_ft_in1k"),
    ),
    _preset(
        "mobilenetv4_conv_large",
        "mobilenetv4_conv_large",
        1.0,
        384,
        TIMM,
        "MobileNetV4 conv large.",
        ("e600_r384_in1k", "e500_r256_in1k"),
    ),
    _preset(
        "mobilenetv4_hybrid_medium",
        "mobilenetv4_hybrid_medium",
        1.0,
        256,
        TIMM,
        "MobileNetV4 hybrid medium (conv + mobile MQA).",
        ("e200_r256_in12k_ft_in1k", "ix_e550_r256_in1k", "e500_r224_in1k"),
    ),
    _preset(
        "mobilenetv4_hybrid_large",
        "mobilenetv4_hybrid_large",
        1.0,
        384,
        TIMM,
        "MobileNetV4 hybrid large (conv + mobile MQA, GELU).",
        ("ix_e600_r384_in1k", "e600_r384_in1k"),
    ),
]

PRESETS = {preset.name: preset for preset in _PRESET_LIST}

# torchvision's ImageNet checkpoints (torchvision 0.28 `models/mobilenetv3.py`,
# `mobilenetv2.py`): the default (best) weights of each builder, with the
# eval transform they publish: bilinear resize of the short side, centre crop
# 224, ImageNet mean/std. MobileNetV3 uses BatchNorm epsilon 1e-3, V2 PyTorch's 1e-5.
_TORCHVISION_URL = "https://download.pytorch.org/models/"


def _torchvision_preset(architecture, title, bn_epsilon, resize, file, weights, top1):
    """`{architecture}_100_torchvision`: torchvision's `file` (its `weights` enum, `top1` as it reports),
    evaluated at 224 pixels cropped from a short side of `resize`."""
    return Preset(
        f"{architecture}_100_torchvision",
        architecture,
        1.0,
        224,
        padding="symmetric",
        bn_epsilon=bn_epsilon,
        description=f"{title}, torchvision {weights} weights (ImageNet top-1 {top1}).",
        interpolation="bilinear",
        torchvision=(_TORCHVISION_URL + file, weights, top1),
        crop_fraction=224 / resize,
        antialias=True,
    )


# fmt: off
_TORCHVISION_LIST = [
    _torchvision_preset("mobilenetv3_large", "MobileNetV3-Large", 1e-3, 232, "mobilenet_v3_large-5c1a4163.pth",
                        "IMAGENET1K_V2", 75.274),
    _torchvision_preset("mobilenetv3_small", "MobileNetV3-Small", 1e-3, 256, "mobilenet_v3_small-047dcff4.pth",
                        "IMAGENET1K_V1", 67.668),
    _torchvision_preset("mobilenetv2", "MobileNetV2", 1e-5, 232, "mobilenet_v2-7ebf99e0.pth", "IMAGENET1K_V2", 72.154),
]
# fmt: on
TORCHVISION_PRESETS = {preset.name: preset for preset in _TORCHVISION_LIST}
BUILTIN_PRESETS = {**PRESETS, **TORCHVISION_PRESETS}


def is_builtin_placeholder(filepath):
    """Whether `filepath` is the weights placeholder of a shipped preset folder."""
    path = os.path.abspath(str(filepath))
    return path.startswith(os.path.abspath(PRESET_DIR) + os.sep)


def did_you_mean(name, valid):
    """ " Did you mean 'x'?" with the closest of `valid` names to a mistyped `name`, or "" when none is close.

    Example:
    ```python
    did_you_mean("mobilenetv4_small", PRESETS)  # " Did you mean 'mobilenetv4_conv_small'?"
    ```
    """
    close = difflib.get_close_matches(str(name), sorted(valid), n=2, cutoff=0.75)
    return f" Did you mean {' or '.join(repr(match) for match in close)}?" if close else ""


def is_builtin_preset(name):
    """Whether `name` is a built-in preset name (timm / keras.applications or torchvision)."""
    return isinstance(name, str) and name in BUILTIN_PRESETS


def get_preset(name):
    if not is_builtin_preset(name):
        raise ValueError(
            f"Unknown preset {name!r}.{did_you_mean(name, BUILTIN_PRESETS)} Valid presets: {sorted(BUILTIN_PRESETS)}."
        )
    return BUILTIN_PRESETS[name]


def check_local_preset(preset, load_weights=True):
    """A local preset or snapshot folder's files, checked before a loader reads them.

    A broken `config.json`, a truncated `model.weights.h5` or `model.safetensors`,
    weights of another width, anything but a regular file (a FIFO would hang
    the loader) is named with what is wrong (`files.check_preset_folder`)
    instead of surfacing as the loader's bare JSON, HDF5 or Keras error. A
    preset given as a file (a `.pth`) must be a regular file.
    """
    if not isinstance(preset, str):
        return
    if os.path.isdir(preset):
        files.check_preset_folder(preset, weights=load_weights)
    elif os.path.lexists(preset):
        files.check_regular_file(preset)


def check_preset_name(preset):
    """Raise a ValueError listing the valid names for an unknown preset name.

    Handles (`hf://...`, `kaggle://...`) and existing folders pass through.
    """
    if not isinstance(preset, str):
        raise TypeError(
            "preset must be a preset name, a folder path or a handle string. "
            f"Received: {preset!r} of type {type(preset).__name__}."
        )
    if "://" in preset or os.path.exists(preset) or preset in BUILTIN_PRESETS:
        return
    raise ValueError(
        f"Unknown preset {preset!r}: not a built-in name, an existing folder or a "
        f"handle.{did_you_mean(preset, BUILTIN_PRESETS)} Valid built-in presets: {sorted(BUILTIN_PRESETS)}."
    )


def image_converter_config(preset):
    """keras-hub serialisation of the preset's image converter."""
    # pixels in [0, 255] -> (pixel / 255 - mean) / std
    scale = [1.0 / (255.0 * s) for s in preset.std]
    offset = [-m / s for m, s in zip(preset.mean, preset.std)]
    crop = {"crop_fraction": preset.crop_fraction} if preset.crop_fraction != 1.0 else {}
    return {
        "module": "mnet_backbones.classifier",
        "class_name": "MobileNetImageConverter",
        "config": {
            "name": "mobile_net_image_converter",
            "trainable": True,
            "dtype": {"module": "keras", "class_name": "DTypePolicy", "config": {"name": "float32"}},
            "image_size": [preset.resolution, preset.resolution],
            "scale": scale,
            "offset": offset,
            "interpolation": preset.interpolation,
            "antialias": preset.antialias,
            "crop_to_aspect_ratio": True,
            "pad_to_aspect_ratio": False,
            "bounding_box_format": "yxyx",
            **crop,
        },
        "registered_name": "mnet_backbones>MobileNetImageConverter",
    }


def preset_files(preset):
    """The files of a built-in preset folder, as {file name: text}."""
    config = {
        "module": "mnet_backbones.backbone",
        "class_name": "MobileNetBackbone",
        "config": {
            "name": "mobile_net_backbone",
            "trainable": True,
            "dtype": {"module": "keras", "class_name": "DTypePolicy", "config": {"name": "float32"}},
            **preset.backbone_config,
            "bn_momentum": 0.9,
            "image_shape": [None, None, 3],
        },
        "registered_name": "mnet_backbones>MobileNetBackbone",
    }
    metadata = {
        "keras_version": "3",
        "keras_hub_version": "0",
        "parameter_count": None,
        "date_saved": None,
        "preset": preset.name,
        "description": preset.description,
    }
    placeholder = (
        "Placeholder: mnet-backbones resolves the weights of built-in presets on "
        "demand (MobileNetBackbone.load_weights). This is not an HDF5 file.\n"
    )
    return {
        "config.json": json.dumps(config, indent=4) + "\n",
        "image_converter.json": json.dumps(image_converter_config(preset), indent=4) + "\n",
        "metadata.json": json.dumps(metadata, indent=4) + "\n",
        "model.weights.h5": placeholder,
    }


def write_preset_files(root):
    """Write every built-in preset folder under `root` (run by `make_presets`)."""
    for preset in BUILTIN_PRESETS.values():
        folder = os.path.join(root, preset.name)
        os.makedirs(folder, exist_ok=True)
        for file_name, text in preset_files(preset).items():
            with open(os.path.join(folder, file_name), "w", encoding="utf-8") as f:
                f.write(text)


def register_presets(backbone_cls):
    """Make the built-in names known to keras-hub's `from_preset`, as presets of `backbone_cls`.

    `import mnet_backbones` calls it with `MobileNetBackbone`.
    """
    keras_hub_internals.register_presets(
        {
            name: {
                "metadata": {
                    "description": preset.description,
                    "params": None,
                    "path": "mnet_backbones",
                },
                "kaggle_handle": os.path.join(PRESET_DIR, name),
            }
            for name, preset in BUILTIN_PRESETS.items()
        },
        backbone_cls,
    )


if __name__ == "__main__":
    # python -m mnet_backbones.presets: regenerate the shipped preset folders.
    write_preset_files(PRESET_DIR)
