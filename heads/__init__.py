"""Dense-prediction heads (SSDLite, DeepLabV3+) on any keras-hub feature pyramid.

Heads see only a backbone's `pyramid_outputs`; they never import backbone
internals, so any `keras_hub.models.FeaturePyramidBackbone` with P2-P5 serves.
Data loaders and the synthetic shapes set are in `heads.datasets`.
"""

from heads.coco_eval import evaluate_coco
from heads.deeplab import DeepLabV3PlusSegmenter, create_deeplabv3plus
from heads.segmentation_eval import evaluate_segmentation
from heads.ssdlite import SSDLiteObjectDetector, create_ssdlite
