"""Object detection: the two SSDLite heads on shared parts.

The heads, by the one name each has in Python, the CLI and `train`'s config:

- `"ssdlite"`: `SSDLiteObjectDetector` (`heads.detection.ssdlite`, with
  `create_ssdlite` for both heads), on a feature pyramid's P4 and P5,
  sigmoid classes, focal loss, keras-hub's anchors and NMS.
- `"ssdlite320"`: `SSDLite320ObjectDetector` (`heads.detection.ssdlite320`),
  the MobileNetV3 paper's and torchvision's SSDLite, softmax with a
  background class 0, hard-negative mining, torchvision's post-processing;
  `heads.detection.torchvision` loads torchvision's checkpoints of it.

Their parts:

- `anchors`: both heads' anchors (keras-hub's `AnchorGenerator` on pyramid
  levels; SSD's default boxes).
- `box_coding`: boxes as deltas against anchors and back.
- `matching`: ground truth matched to anchors (`SSDLiteLabelEncoder`,
  `match_anchors`; `claim_best_anchors`, SSD's "each box claims its best
  anchor", for both).
- `postprocess`: one IoU, one greedy NMS, decoding, and both heads' numpy
  post-processing (which the LiteRT export runs too).
- `layers`: the extra block and the predictor (with Keras' or torchvision's
  conventions), how the head joins its maps, the taps the paper head reads.
- `base`: what the two tasks share (settings, default optimiser, what the
  tools read: `label_offset`, `postprocessing`).
- `resizing`: images of any size to the paper head's input, boxes with them.
- `targets`: numpy checks of training targets.
- `coco_eval`: COCO metrics (pycocotools), loaded on first use
  (`heads.evaluate_coco`).
"""

from heads.detection.box_coding import decode_boxes, encode_boxes
from heads.detection.matching import SSDLiteLabelEncoder
from heads.detection.ssdlite import HEADS, SSDLiteObjectDetector, create_ssdlite, ssdlite_class
from heads.detection.ssdlite320 import SSDLite320ObjectDetector

__all__ = [
    "HEADS",
    "SSDLite320ObjectDetector",
    "SSDLiteLabelEncoder",
    "SSDLiteObjectDetector",
    "create_ssdlite",
    "decode_boxes",
    "encode_boxes",
    "ssdlite_class",
]
