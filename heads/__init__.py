"""Dense-prediction heads (SSDLite, DeepLabV3+) on any keras-hub feature pyramid.

Heads see only a backbone's `pyramid_outputs`; they never import backbone
internals. The heads themselves arrive with their own issues.
"""

from heads.coco_eval import evaluate_coco
from heads.ssdlite import SSDLiteObjectDetector, create_ssdlite
from heads.deeplab import DeepLabV3PlusSegmenter, create_deeplabv3plus
from heads.segmentation_eval import evaluate_segmentation
