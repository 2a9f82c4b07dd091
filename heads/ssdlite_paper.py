"""Moved to `heads.detection.ssdlite320`; this old path re-exports what callers import from it.

`SSDLite320ObjectDetector` is in `heads.detection.ssdlite320`; its layers in
`heads.detection.layers`, its matcher in `heads.detection.matching`, its
resizing in `heads.detection.resizing`, its decoding and post-processing in
`heads.detection.postprocess`. Old code and saved files name this module; new
code imports the new one.
"""

from heads.detection.layers import SSDLitePaperExtraBlock, SSDLitePaperPredictor, default_feature_taps
from heads.detection.matching import match_anchors
from heads.detection.postprocess import MAX_LOG_SIZE_DELTA, decode_paper_boxes, postprocess_detections
from heads.detection.resizing import resize_images
from heads.detection.ssdlite320 import (
    PAPER_ASPECT_RATIOS,
    PAPER_EXTRA_FILTERS,
    PAPER_PIXEL_MEAN,
    PAPER_PIXEL_VARIANCE,
    SSDLite320ObjectDetector,
)

__all__ = [
    "MAX_LOG_SIZE_DELTA",
    "PAPER_ASPECT_RATIOS",
    "PAPER_EXTRA_FILTERS",
    "PAPER_PIXEL_MEAN",
    "PAPER_PIXEL_VARIANCE",
    "SSDLite320ObjectDetector",
    "SSDLitePaperExtraBlock",
    "SSDLitePaperPredictor",
    "decode_paper_boxes",
    "default_feature_taps",
    "match_anchors",
    "postprocess_detections",
    "resize_images",
]
