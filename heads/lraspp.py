"""Moved: Lite R-ASPP is `heads.segmentation.lraspp`, its head layer `heads.segmentation.layers`."""

from heads.segmentation.layers import LRASPPHead
from heads.segmentation.lraspp import LRASPPSegmenter, create_lraspp

__all__ = ["LRASPPHead", "LRASPPSegmenter", "create_lraspp"]
