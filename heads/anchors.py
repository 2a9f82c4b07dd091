"""Moved to `heads.detection.anchors`; this old path re-exports what callers import from it.

Both SSDLite heads' anchors. Old code and saved files name this module; new code
imports the new one.
"""

from heads.detection.anchors import DEFAULT_ASPECT_RATIOS, anchor_boxes, ssdlite_anchor_generator, ssdlite_levels

__all__ = [
    "DEFAULT_ASPECT_RATIOS",
    "anchor_boxes",
    "ssdlite_anchor_generator",
    "ssdlite_levels",
]
