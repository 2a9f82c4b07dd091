"""Moved: DeepLabV3 is `heads.segmentation.deeplabv3`, its layers `heads.segmentation.layers`."""

from heads.segmentation.deeplabv3 import DeepLabV3Segmenter, create_deeplabv3
from heads.segmentation.layers import (
    DEEPLABV3_ATROUS_RATES,
    TORCH_BN_EPSILON,
    DeepLabV3ASPP,
    FCNHead,
    head_conv,
)
from heads.segmentation.layers import check_dropout as _check_dropout

__all__ = [
    "DEEPLABV3_ATROUS_RATES",
    "TORCH_BN_EPSILON",
    "DeepLabV3ASPP",
    "DeepLabV3Segmenter",
    "FCNHead",
    "_check_dropout",
    "create_deeplabv3",
    "head_conv",
]
