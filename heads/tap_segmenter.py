"""Moved: `TapSegmenter` is in `heads.segmentation.segmenter`, the taps in `heads.pyramid`, the resize in `heads.segmentation.layers`."""

from heads.pyramid import available_taps, tap_model
from heads.segmentation.layers import ResizeToMatch, _source_rows, resize_bilinear, resize_by_gathers
from heads.segmentation.segmenter import (
    TapSegmenter,
    check_class_names,
    check_image_size_or_none,
    create_segmenter,
    segmentation_metrics,
)

__all__ = [
    "ResizeToMatch",
    "TapSegmenter",
    "_source_rows",
    "available_taps",
    "check_class_names",
    "check_image_size_or_none",
    "create_segmenter",
    "resize_bilinear",
    "resize_by_gathers",
    "segmentation_metrics",
    "tap_model",
]
