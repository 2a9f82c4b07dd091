"""Moved to `heads.detection.box_coding`; this old path re-exports what callers import from it.

SSD box coding. Old code and saved files name this module; new code imports the
new one.
"""

from heads.detection.box_coding import SSD_BOX_VARIANCE, decode_boxes, encode_boxes

__all__ = [
    "SSD_BOX_VARIANCE",
    "decode_boxes",
    "encode_boxes",
]
