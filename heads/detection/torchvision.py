"""torchvision's `ssdlite320_mobilenet_v3_large` checkpoints as `SSDLite320ObjectDetector`s: the converter.

A checkpoint is torchvision's `state_dict` file (`.pth`, read by
`mnet_backbones.convert.torchvision.read_state_dict`, which needs torch).
Its keys follow torchvision's SSDLite feature extractor, which splits
MobileNetV3's `features` at the expansion layer of the first stride-32 block
(`c4`, index 13 on V3-Large):

- `backbone.features.0.{k}` for `k < c4`: torchvision's `features.{k}`;
- `backbone.features.0.{c4}`: that block's expansion (`features.{c4}.block.0`);
- `backbone.features.1.0.{j}`: the rest of that block (`features.{c4}.block.{j}`);
- `backbone.features.1.{m}`, `m >= 1`: `features.{c4 + m}`;
- `backbone.extra.{i}.{0,1,2}`: the extra blocks' three conv+BN;
- `head.{classification,regression}_head.module_list.{i}`: the predictors
  (`.0.0` depthwise conv, `.0.1` BatchNorm, `.1` the 1x1 conv with bias).

The backbone's slots come from `backbone_slots` under torchvision's own
`features.*` names and are renamed to the checkpoint's keys, so that an error
names the tensor as the file has it. Everything is checked before anything is
assigned (`load_slots`): every slot filled, every tensor used, shapes equal.

The built-in name `ssdlite320_mobilenetv3_large_coco` is torchvision's COCO
checkpoint (box mAP 21.3 on COCO val2017 as torchvision reports it, 3.44M
parameters), downloaded once into the cache; its 91 class indices and names
(`COCO_CATEGORY_NAMES`, torchvision's, with "N/A" for the ids COCO leaves
unused) travel with the model.
"""

import json
import os
import re

import mnet_backbones
import mnet_backbones.convert.torchvision as tv_convert
from mnet_backbones.convert.mapping import conv_bn_slots, conv_kernel, identity, load_slots

TORCHVISION_BUILDER = "ssdlite320_mobilenet_v3_large"
BACKBONE_ARCHITECTURE = "mobilenetv3_large_reduced_tail"
IMAGE_SIZE = 320

# COCO's category ids 1..90 as torchvision indexes them; index 0 is the background, and ids
# that the 2017 annotations leave unused are "N/A".
COCO_CATEGORY_NAMES = (
    "__background__", "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "N/A", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse",
    "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "N/A", "backpack", "umbrella", "N/A", "N/A", "handbag",
    "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove",
    "skateboard", "surfboard", "tennis racket", "bottle", "N/A", "wine glass", "cup", "fork", "knife", "spoon",
    "bowl", "banana", "apple", "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake",
    "chair", "couch", "potted plant", "bed", "N/A", "dining table", "N/A", "N/A", "toilet", "N/A", "tv", "laptop",
    "mouse", "remote", "keyboard", "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "N/A",
    "book", "clock", "vase", "scissors", "teddy bear", "hair drier", "toothbrush",
)  # fmt: skip

BUILTIN_SSDLITE = {
    "ssdlite320_mobilenetv3_large_coco": {
        "url": "https://download.pytorch.org/models/ssdlite320_mobilenet_v3_large_coco-a79551df.pth",
        "num_classes": 91,
        "class_names": COCO_CATEGORY_NAMES,
        # As torchvision reports them for these weights (COCO val2017, its own evaluation).
        "box_map": 21.3,
        "num_params": 3_440_060,
    },
}


def is_torchvision_source(source):
    """True for a built-in SSDLite name or a folder holding a torchvision SSDLite `config.json`.

    Example:
    ```python
    is_torchvision_source("ssdlite320_mobilenetv3_large_coco")  # True
    ```
    """
    if not isinstance(source, (str, os.PathLike)):
        return False
    source = os.fspath(source)
    if source in BUILTIN_SSDLITE:
        return True
    if os.path.isfile(source):
        return _is_bare_checkpoint(source)
    config_path = os.path.join(source, "config.json")
    if not os.path.isfile(config_path):
        return False
    try:
        with open(config_path, encoding="utf-8") as file:
            config = json.load(file)
    except (OSError, ValueError):
        return False  # not ours to judge: the preset loader reports the file
    return isinstance(config, dict) and config.get("builder") == TORCHVISION_BUILDER


def _is_bare_checkpoint(path):
    """A `.pth` file named as torchvision publishes SSDLite (`ssdlite320_mobilenet_v3_large_coco-a79551df.pth`)."""
    name = os.path.basename(path)
    return name.startswith(TORCHVISION_BUILDER) and name.endswith((".pth", ".pt"))


def read_checkpoint_config(folder):
    """The `config.json` of a torchvision checkpoint folder, checked: `(num_classes, class_names)`.

    The file names torchvision's `builder` (`"ssdlite320_mobilenet_v3_large"`)
    and `num_classes` (background included); `class_names` is optional (91
    classes default to COCO's); `kwargs`, the builder's arguments, must be
    empty (the published model's settings).
    """
    path = os.path.join(os.fspath(folder), "config.json")
    try:
        with open(path, encoding="utf-8") as file:
            config = json.load(file)
    except OSError as error:
        raise OSError(f"Cannot read {path}: {error}") from error
    except ValueError as error:
        raise ValueError(f"{path} is not valid JSON: {error}") from error
    if not isinstance(config, dict) or config.get("builder") != TORCHVISION_BUILDER:
        builder = config.get("builder") if isinstance(config, dict) else None
        raise ValueError(f"{path}: builder {builder!r} is not {TORCHVISION_BUILDER!r}.")
    num_classes = config.get("num_classes")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"{path}: num_classes must be an integer >= 2 (background included), got {num_classes!r}.")
    if config.get("kwargs"):
        raise ValueError(
            f"{path}: builder arguments {sorted(config['kwargs'])} are not supported; only the published "
            "model's settings (empty `kwargs`) convert."
        )
    class_names = config.get("class_names")
    if class_names is None and num_classes == len(COCO_CATEGORY_NAMES):
        class_names = COCO_CATEGORY_NAMES
    if class_names is not None and len(class_names) != num_classes:
        raise ValueError(f"{path}: {len(class_names)} class_names for num_classes={num_classes}.")
    return num_classes, class_names


def build_ssdlite(detector_cls, num_classes=91, class_names=None, **kwargs):
    """The torchvision model's architecture as `detector_cls`, randomly initialised.

    The backbone is `mobilenetv3_large_reduced_tail` with torchvision's
    conventions (symmetric padding, BatchNorm epsilon 1e-3) and SSDLite's
    BatchNorm momentum (torchvision's 0.03, Keras' 0.97).
    """
    backbone = mnet_backbones.MobileNetBackbone(
        BACKBONE_ARCHITECTURE,
        padding=tv_convert.TORCHVISION_CONVENTION["padding"],
        bn_epsilon=tv_convert.TORCHVISION_CONVENTION["bn_epsilon"],
        bn_momentum=0.97,
        image_shape=(IMAGE_SIZE, IMAGE_SIZE, 3),
    )
    return detector_cls(backbone, num_classes=num_classes, image_size=IMAGE_SIZE, class_names=class_names, **kwargs)


def _checkpoint_key(key, c4):
    """A backbone key under torchvision's `features.*` names -> the key SSDLite's checkpoint stores it under."""
    match = re.fullmatch(r"features\.(\d+)\.(.+)", key)
    if match is None:
        raise ValueError(f"backbone_slots gave {key!r}, not a `features.<index>.` key.")
    index, rest = int(match.group(1)), match.group(2)
    if index < c4:
        return f"backbone.features.0.{index}.{rest}"
    if index > c4:
        return f"backbone.features.1.{index - c4}.{rest}"
    block = re.fullmatch(r"block\.(\d+)\.(.+)", rest)
    if block is None:
        raise ValueError(f"backbone_slots gave {key!r}: block {c4} has no `block.<j>.` part.")
    j, inner = int(block.group(1)), block.group(2)
    return f"backbone.features.0.{c4}.{inner}" if j == 0 else f"backbone.features.1.0.{j}.{inner}"


def detector_slots(detector):
    """(variable, checkpoint key, transform) for every weight of a torchvision-layout detector.

    Example:
    ```python
    keys = [key for _, key, _ in detector_slots(detector)]  # "backbone.features.0.0.0.weight", ...
    ```
    """
    expansion_tap = detector.feature_taps[0]
    if not expansion_tap.endswith(".expansion"):
        raise ValueError(f"The checkpoint layout needs the first tap at an expansion layer, got {expansion_tap!r}.")
    c4 = tv_convert.torchvision_index(detector.backbone, expansion_tap[: -len(".expansion")])
    for variable, key, transform in tv_convert.backbone_slots(detector.backbone, prefix="features."):
        yield variable, _checkpoint_key(key, c4), transform
    for i, block in enumerate(detector.extra_blocks):
        for j, layer in enumerate((block.reduce, block.depthwise, block.project)):
            yield from conv_bn_slots(layer, f"backbone.extra.{i}.{j}.0", f"backbone.extra.{i}.{j}.1")
    for head, predictors in (
        ("classification_head", detector.class_predictors),
        ("regression_head", detector.box_predictors),
    ):
        for i, predictor in enumerate(predictors):
            key = f"head.{head}.module_list.{i}"
            yield from conv_bn_slots(predictor.depthwise, f"{key}.0.0", f"{key}.0.1")
            yield predictor.pointwise.kernel, f"{key}.1.weight", conv_kernel
            yield predictor.pointwise.bias, f"{key}.1.bias", identity


def load_torchvision_weights(detector, checkpoint, source_name=None):
    """Fill `detector` from a torchvision SSDLite state_dict (a dict of arrays, or a `.pth` path).

    All or nothing: a missing, unused or wrongly shaped tensor raises a
    `ValueError` naming it (and both shapes) before any weight is assigned.

    Example:
    ```python
    detector = build_ssdlite(heads.SSDLite320ObjectDetector)
    load_torchvision_weights(detector, "model.pth")
    ```
    """
    if isinstance(checkpoint, (str, os.PathLike)):
        source_name = source_name or os.fspath(checkpoint)
        checkpoint = tv_convert.read_state_dict(checkpoint)
    load_slots(detector_slots(detector), checkpoint, source_name or "checkpoint")
    return detector


def load_ssdlite(detector_cls, source, load_weights=True, **kwargs):
    """A built-in name, a torchvision checkpoint folder or the published `.pth` file as a `detector_cls`.

    `load_weights=False` builds the same model without reading (or
    downloading) the weights. Other keyword arguments go to the detector
    (post-processing thresholds, `bounding_box_format`, ...).
    """
    source = os.fspath(source)
    if source in BUILTIN_SSDLITE:
        spec = BUILTIN_SSDLITE[source]
        num_classes, class_names = spec["num_classes"], spec["class_names"]
        checkpoint = tv_convert.download_checkpoint(spec["url"]) if load_weights else None
    elif os.path.isfile(source) and _is_bare_checkpoint(source):
        # The published file, downloaded by hand: torchvision's 91 COCO indices.
        num_classes, class_names, checkpoint = len(COCO_CATEGORY_NAMES), COCO_CATEGORY_NAMES, source
    else:
        num_classes, class_names = read_checkpoint_config(source)
        checkpoint = os.path.join(source, "model.pth")
        if load_weights and not os.path.isfile(checkpoint):
            raise FileNotFoundError(f"{source} has a config.json but no model.pth (torchvision's state_dict).")
    detector = build_ssdlite(detector_cls, num_classes, list(class_names) if class_names else None, **kwargs)
    if load_weights:
        load_torchvision_weights(detector, checkpoint)
    return detector
