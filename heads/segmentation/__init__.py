"""Semantic segmentation heads on any keras-hub feature pyramid.

Modules:
- `heads.segmentation.layers`: the heads' layers (conv-BN-ReLU, one ASPP
  for DeepLabV3+'s and torchvision's conventions, the FCN and LR-ASPP
  heads, one bilinear resize for fixed and run-time sizes).
- `heads.segmentation.segmenter`: `Segmenter`, the base of every segmenter
  (compile defaults, parts and config), and `TapSegmenter`, the base of the
  torchvision-style ones (named taps, any size, checkpoints).
- `heads.segmentation.deeplabv3plus`, `heads.segmentation.deeplabv3`,
  `heads.segmentation.lraspp`: the tasks and their `create_*` functions.
- `heads.segmentation.torchvision`: torchvision's DeepLabV3 / LR-ASPP
  checkpoints (the built-in `*_voc` names, the converter).
- `heads.segmentation.evaluation`: `evaluate_segmentation`, whole-set
  metrics; not imported here (it loads TensorFlow's data stack): import it,
  or use `heads.evaluate_segmentation`.
"""

from heads.segmentation.deeplabv3 import DeepLabV3Segmenter, create_deeplabv3
from heads.segmentation.deeplabv3plus import DeepLabV3PlusSegmenter, create_deeplabv3plus
from heads.segmentation.lraspp import LRASPPSegmenter, create_lraspp
from heads.segmentation.segmenter import Segmenter, TapSegmenter
from heads.segmentation.torchvision import is_segmentation_source, load_torchvision_segmenter

__all__ = [
    "DeepLabV3PlusSegmenter",
    "DeepLabV3Segmenter",
    "LRASPPSegmenter",
    "Segmenter",
    "TapSegmenter",
    "create_deeplabv3",
    "create_deeplabv3plus",
    "create_lraspp",
    "is_segmentation_source",
    "load_torchvision_segmenter",
]
