"""Moved to `heads.detection.torchvision`; this old path re-exports what callers import from it.

torchvision's SSDLite checkpoints as `SSDLite320ObjectDetector`s. Old code and
saved files name this module; new code imports the new one.
"""

from heads.detection.torchvision import (
    BACKBONE_ARCHITECTURE,
    BUILTIN_SSDLITE,
    COCO_CATEGORY_NAMES,
    IMAGE_SIZE,
    TORCHVISION_BUILDER,
    build_ssdlite,
    detector_slots,
    is_torchvision_source,
    load_ssdlite,
    load_torchvision_weights,
    read_checkpoint_config,
)

__all__ = [
    "BACKBONE_ARCHITECTURE",
    "BUILTIN_SSDLITE",
    "COCO_CATEGORY_NAMES",
    "IMAGE_SIZE",
    "TORCHVISION_BUILDER",
    "build_ssdlite",
    "detector_slots",
    "is_torchvision_source",
    "load_ssdlite",
    "load_torchvision_weights",
    "read_checkpoint_config",
]
