"""Moved to `heads.detection.ssdlite`; this old path re-exports what callers import from it.

The SSDLite task (`SSDLiteObjectDetector`) and `create_ssdlite`. Old code and
saved files name this module; new code imports the new one.
"""

from heads.detection.box_coding import check_box_format
from heads.detection.ssdlite import (
    DEFAULT_EXTRA_FILTERS,
    DEPRECATED_HEADS,
    HEADS,
    SSDLiteObjectDetector,
    create_ssdlite,
    ssdlite_class,
)

__all__ = [
    "DEFAULT_EXTRA_FILTERS",
    "DEPRECATED_HEADS",
    "HEADS",
    "SSDLiteObjectDetector",
    "check_box_format",
    "create_ssdlite",
    "ssdlite_class",
]
