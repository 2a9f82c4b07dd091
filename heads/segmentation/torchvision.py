"""torchvision's MobileNetV3 segmentation checkpoints: the built-in names and the converter.

torchvision publishes `deeplabv3_mobilenet_v3_large` and
`lraspp_mobilenet_v3_large` as `.pth` state_dicts: a MobileNetV3-Large
backbone built with `dilated=True` (output stride 16, the stride-32 stage
dilated instead) under the keys `backbone.{k}.…` (`k` its `features` index),
the head under `classifier.…` and DeepLabV3's auxiliary FCN head under
`aux_classifier.…`. Both were trained on the COCO train2017 images that hold
the 20 Pascal VOC categories, with VOC's 21 labels; they take images
normalised with ImageNet's mean and standard deviation, at any size.

A checkpoint loads into `DeepLabV3Segmenter` / `LRASPPSegmenter` on a
`MobileNetBackbone` built with torchvision's conventions; every tensor is
checked before any is assigned (nothing half-loaded), and every tensor of
the file must be used.
"""

import json
import os

import mnet_backbones
from mnet_backbones.convert.mapping import conv_kernel, identity
from mnet_backbones.convert.torchvision import (
    TORCHVISION_CONVENTION,
    backbone_slots,
    download_checkpoint,
    load_slots,
    read_state_dict,
)

# torchvision's `_VOC_CATEGORIES`: index = label.
VOC_CLASS_NAMES = (
    "__background__",
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)

# The published checkpoints, with the figures torchvision reports for them
# (COCO val2017, VOC labels, images resized to 520 on the short side).
# name, torchvision builder, the file's digest, auxiliary head, parameters, mIoU, pixel accuracy
PUBLISHED = (
    ("deeplabv3_mobilenetv3_large_voc", "deeplabv3_mobilenet_v3_large", "fc3c493d", True, 11029328, 60.3, 91.2),
    ("lraspp_mobilenetv3_large_voc", "lraspp_mobilenet_v3_large", "d234d4ea", False, 3221538, 57.9, 91.2),
)
PRESETS = {
    name: dict(
        builder=builder,
        url=f"https://download.pytorch.org/models/{builder}-{digest}.pth",
        class_names=VOC_CLASS_NAMES,
        aux=aux,
        num_params=num_params,
        metrics={"mIoU": miou, "pixel_accuracy": pixel_accuracy},
    )
    for name, builder, digest, aux, num_params, miou, pixel_accuracy in PUBLISHED
}

# torchvision builder name -> the segmenter class that loads it; each class
# registers itself when its module is imported (`import heads` imports both).
SEGMENTER_CLASSES = {}

# torchvision's MobileNetV3-Large as these segmenters build it: dilated, so
# the deepest map has stride 16.
BACKBONE_ARCHITECTURE = "mobilenetv3_large"
BACKBONE_OUTPUT_STRIDE = 16
CHECKPOINT_FILE = "model.pth"


def conv_slots(conv, key):
    """`(variable, key, transform)` for a Keras Conv2D (no BatchNorm) and torchvision's `nn.Conv2d` at `key`.

    A head's `ConvBNAct` maps with `mnet_backbones.convert.mapping.conv_bn_slots`.
    """
    slots = [(conv.kernel, f"{key}.weight", conv_kernel)]
    if conv.use_bias:
        slots.append((conv.bias, f"{key}.bias", identity))
    return slots


def is_torchvision_source(preset):
    """True for a built-in name, a `.pth` file, or a folder holding `model.pth`.

    Example:
    ```python
    is_torchvision_source("lraspp_mobilenetv3_large_voc")  # True
    is_torchvision_source("mobilenet_v3_large-8738ca79.pth")  # True: any .pth (see is_segmentation_source)
    ```
    """
    if not isinstance(preset, (str, os.PathLike)):
        return False
    preset = os.fspath(preset)
    return preset in PRESETS or preset.endswith(".pth") or os.path.isfile(os.path.join(preset, CHECKPOINT_FILE))


def is_segmentation_source(source):
    """True only for what is recognisably one of these segmenters, without reading any weights.

    A built-in name; a folder whose `config.json` names a segmentation
    builder; a `.pth` file named after one (as torchvision publishes them,
    `lraspp_mobilenet_v3_large-d234d4ea.pth`). For a tool that dispatches
    many kinds of sources (`is_torchvision_source` claims every `.pth`).

    Example:
    ```python
    is_segmentation_source("lraspp_mobilenetv3_large_voc")  # True
    is_segmentation_source("mobilenet_v3_large-8738ca79.pth")  # False: a classifier
    ```
    """
    if not isinstance(source, (str, os.PathLike)):
        return False
    source = os.fspath(source)
    builders = {row["builder"] for row in PRESETS.values()}
    if source in PRESETS:
        return True
    if os.path.isdir(source):
        return _read_folder_config(source).get("builder") in builders
    name = os.path.basename(source)
    return name.endswith(".pth") and any(
        name.startswith(f"{builder}-") or name == f"{builder}.pth" for builder in builders
    )


def _read_folder_config(folder):
    path = os.path.join(folder, "config.json")
    if not os.path.isfile(path):
        return {}
    try:
        with open(path, encoding="utf-8") as f:
            config = json.load(f)
    except (OSError, ValueError) as error:
        raise ValueError(f"Cannot read {path!r} as JSON: {error}") from error
    if not isinstance(config, dict):
        raise ValueError(f"{path!r} must hold a JSON object, got {type(config).__name__}.")
    return config


def infer_builder(state_dict, source_name):
    """The torchvision builder a segmentation state_dict comes from, read off its keys.

    Example:
    ```python
    infer_builder({"classifier.cbr.0.weight": ...}, "model.pth")  # "lraspp_mobilenet_v3_large"
    ```
    """
    if "classifier.cbr.0.weight" in state_dict:
        return "lraspp_mobilenet_v3_large"
    if "classifier.0.convs.0.0.weight" in state_dict:
        return "deeplabv3_mobilenet_v3_large"
    raise ValueError(
        f"{source_name}: not a torchvision DeepLabV3 or LR-ASPP state_dict (neither "
        "'classifier.0.convs.0.0.weight' nor 'classifier.cbr.0.weight' is in it)."
    )


def resolve_source(preset, load_weights=True, progress=None):
    """`(checkpoint path or None, builder or None, preset row or {})` for a torchvision source.

    A built-in name is downloaded once (or read from the cache) unless
    `load_weights` is False.
    """
    preset = os.fspath(preset)
    if preset in PRESETS:
        row = PRESETS[preset]
        path = download_checkpoint(row["url"], progress=progress) if load_weights else None
        return path, row["builder"], row
    if os.path.isdir(preset):
        config = _read_folder_config(preset)
        builder = config.get("builder")
        if builder is not None and not isinstance(builder, str):
            raise ValueError(f"{os.path.join(preset, 'config.json')!r}: `builder` must be a string, got {builder!r}.")
        return os.path.join(preset, CHECKPOINT_FILE), builder, {}
    if not os.path.isfile(preset):
        raise OSError(
            f"No torchvision checkpoint at {preset!r}: give a `.pth` state_dict file, a folder holding "
            f"{CHECKPOINT_FILE!r}, or a built-in name ({', '.join(sorted(PRESETS))})."
        )
    return preset, None, {}


def torchvision_backbone(**kwargs):
    """MobileNetV3-Large as torchvision's segmenters build it (dilated to stride 16, its conventions).

    Example:
    ```python
    backbone = torchvision_backbone()
    backbone.output_stride  # 16
    ```
    """
    return mnet_backbones.MobileNetBackbone(
        BACKBONE_ARCHITECTURE, output_stride=BACKBONE_OUTPUT_STRIDE, **TORCHVISION_CONVENTION, **kwargs
    )


def load_segmenter(cls, preset, load_weights=True, progress=None, **kwargs):
    """A `cls` segmenter built and loaded from a torchvision checkpoint.

    The head's settings (classes, whether DeepLabV3 has its auxiliary head)
    are read off the checkpoint; `kwargs` go to `cls` (e.g. `image_size`).
    A built-in name brings its class names; a file's builder (from its
    folder's `config.json`, else from its keys) must be `cls`'s.

    Example:
    ```python
    segmenter = load_segmenter(heads.LRASPPSegmenter, "path/to/lraspp_mobilenet_v3_large-d234d4ea.pth")
    ```
    """
    if cls is None or getattr(cls, "torchvision_builder", None) is None:
        # The generic entry point: the builder picks the class.
        cls = None
    path, builder, row = resolve_source(preset, load_weights=load_weights, progress=progress)
    state_dict = read_state_dict(path) if path is not None else None
    source_name = os.fspath(path if path is not None else preset)
    if state_dict is not None:
        found = infer_builder(state_dict, source_name)
        if builder is not None and builder != found:
            raise ValueError(
                f"{source_name}: its config.json names builder {builder!r}, but its tensors are {found!r}'s."
            )
        builder = found
    if builder not in SEGMENTER_CLASSES:
        raise ValueError(
            f"{source_name}: torchvision builder {builder!r} is not one this converter loads "
            f"(it loads {sorted(SEGMENTER_CLASSES)})."
        )
    target = SEGMENTER_CLASSES[builder]
    if cls is not None and not issubclass(target, cls):
        raise ValueError(
            f"{source_name} holds a {builder!r} checkpoint, which {cls.__name__} cannot load; "
            f"use {target.__name__}.from_preset()."
        )
    if state_dict is not None:
        head_kwargs = target.torchvision_head_config(state_dict, source_name)
    else:
        head_kwargs = target.torchvision_head_config_of_preset(row)
    for key, value in head_kwargs.items():
        if kwargs.pop(key, value) != value:
            raise ValueError(f"{source_name}: the checkpoint's {key} is {value!r}; it cannot be changed on load.")
    if row.get("class_names") is not None:
        kwargs.setdefault("class_names", list(row["class_names"]))
    backbone = torchvision_backbone()
    segmenter = target(backbone, **head_kwargs, **kwargs)
    if state_dict is not None and load_weights:
        load_torchvision_weights(segmenter, state_dict, source_name)
    return segmenter


def convert_to_preset(source, folder, progress=None):
    """Converts a torchvision DeepLabV3 / LR-ASPP checkpoint into a keras-hub preset `folder`.

    `source` is anything `load_torchvision_segmenter` takes (a built-in
    name is downloaded once). The preset loads offline with
    `from_preset(folder)` (ours or keras-hub's `ImageSegmenter`), at any
    image size, class names included. `progress`, if given, is called with
    a short message before each step. Returns the segmenter.

    Example:
    ```python
    convert_to_preset("lraspp_mobilenetv3_large_voc", "lraspp_voc")
    segmenter = keras_hub.models.ImageSegmenter.from_preset("lraspp_voc")
    ```
    """
    if progress:
        progress(f"reading {os.fspath(source)}")
    segmenter = load_torchvision_segmenter(source, progress=progress)
    if progress:
        progress(f"writing {type(segmenter).__name__} to {os.fspath(folder)}")
    segmenter.save_to_preset(os.fspath(folder))
    return segmenter


def load_torchvision_weights(segmenter, state_dict, source_name="checkpoint"):
    """Fills `segmenter` from a torchvision state_dict `{key: array}`: every tensor, or none.

    The backbone's weights come from `backbone.{k}.…` (torchvision's
    `features` index `k`), the head's from `segmenter.torchvision_slots()`.
    Every key must be used and every shape fit; otherwise a
    `WeightMismatchError` (a ValueError) names the tensor and both shapes,
    and no variable has changed.

    Example:
    ```python
    state_dict = read_state_dict("lraspp_mobilenet_v3_large-d234d4ea.pth")
    load_torchvision_weights(segmenter, state_dict, "lraspp_mobilenet_v3_large-d234d4ea.pth")
    ```
    """
    slots = list(backbone_slots(segmenter.backbone, prefix="backbone.")) + list(segmenter.torchvision_slots())
    load_slots(slots, state_dict, source_name)


def load_torchvision_segmenter(preset, load_weights=True, **kwargs):
    """The segmenter of any torchvision DeepLabV3 / LR-ASPP checkpoint: the file decides which.

    Example:
    ```python
    segmenter = heads.load_torchvision_segmenter("deeplabv3_mobilenetv3_large_voc")
    type(segmenter).__name__  # "DeepLabV3Segmenter"
    ```
    """
    return load_segmenter(None, preset, load_weights=load_weights, **kwargs)
