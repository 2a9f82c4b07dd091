"""Moved to `heads.detection.anchors`; this old path re-exports what callers import from it.

SSD's default boxes, beside the other head's anchors. Old code and saved files
name this module; new code imports the new one.
"""

from heads.detection.anchors import box_sizes, boxes_per_position, default_box_scales, default_boxes

__all__ = [
    "box_sizes",
    "boxes_per_position",
    "default_box_scales",
    "default_boxes",
]
