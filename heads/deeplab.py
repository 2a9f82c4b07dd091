"""Moved: DeepLabV3+ is `heads.segmentation.deeplabv3plus`, its layers `heads.segmentation.layers`."""

from heads.segmentation.deeplabv3plus import DeepLabV3PlusSegmenter, _deepest_stride, create_deeplabv3plus
from heads.segmentation.layers import (
    ATROUS_RATES_AT_16,
    AtrousSpatialPyramidPooling,
    BilinearResize,
    atrous_rates_for,
    conv_bn_relu,
)
from heads.segmentation.segmenter import segmentation_metrics

__all__ = [
    "ATROUS_RATES_AT_16",
    "AtrousSpatialPyramidPooling",
    "BilinearResize",
    "DeepLabV3PlusSegmenter",
    "_deepest_stride",
    "atrous_rates_for",
    "conv_bn_relu",
    "create_deeplabv3plus",
    "segmentation_metrics",
]
