"""Dense-prediction heads (SSDLite, DeepLabV3+) on any keras-hub feature pyramid.

Heads see only a backbone's `pyramid_outputs`; they never import backbone
internals, so any `keras_hub.models.FeaturePyramidBackbone` with the levels
they read serves.

Modules:
- `heads.detection`: the two SSDLite heads, named as in the CLI and
  `train`'s config: `"ssdlite"` (`SSDLiteObjectDetector`: P4/P5 pyramid
  levels, sigmoid classes, focal loss) and `"ssdlite320"`
  (`SSDLite320ObjectDetector`: SSDLite exactly as the MobileNetV3 paper and
  torchvision's `ssdlite320_mobilenet_v3_large` build it), `create_ssdlite`
  for both, on shared parts: `anchors`, `box_coding` (`encode_boxes`,
  `decode_boxes`), `matching` (`SSDLiteLabelEncoder`), `postprocess` (one
  IoU, one NMS), `layers`, `targets`; `torchvision` loads torchvision's
  checkpoints (the built-in `ssdlite320_mobilenetv3_large_coco`);
  `coco_eval` (`evaluate_coco`). The former flat modules (`heads.ssdlite`,
  `heads.ssdlite_paper`, `heads.anchors`, `heads.torchvision_ssdlite`, ...)
  re-export them.
- `heads.segmentation`: the segmenters on one base (`segmenter`) and one
  layer set (`layers`: ASPP, FCN and LR-ASPP heads, bilinear resize):
  `deeplabv3plus` (`DeepLabV3PlusSegmenter`, `create_deeplabv3plus`),
  `deeplabv3` and `lraspp`, torchvision's DeepLabV3 (with its auxiliary FCN
  head) and Lite R-ASPP (`DeepLabV3Segmenter`, `LRASPPSegmenter`,
  `create_deeplabv3`, `create_lraspp`) on backbone maps named as in
  `feature_taps`; `torchvision` loads torchvision's checkpoints of them
  (`load_torchvision_segmenter`, the built-in `*_voc` names); `evaluation`
  (`evaluate_segmentation`). The former flat modules (`heads.deeplab`,
  `heads.deeplabv3`, `heads.lraspp`, `heads.tap_segmenter`,
  `heads.torchvision_segmentation`, `heads.segmentation_eval`) re-export them.
- `heads.losses`: `MaskedSparseCrossentropy` (the segmenters' default loss) and
  `sum_over_replicas`: losses normalised by counts of the global batch, so
  that several devices take the step of one.
- `heads.preprocessing`: `pixel_normalizer`, the input normalisation of both.
- `heads.pyramid`: how a head takes a backbone (checks, the models reading
  its pyramid levels or named taps, a preset name's backbone).
- `heads.detection.coco_eval`, `heads.segmentation.evaluation`: whole-set metrics
  (`evaluate_coco`, `evaluate_segmentation`).
- `heads.datasets`: `tf.data` loaders (COCO, VOC-style segmentation) and the
  synthetic shapes set.

`import heads` loads the models only: the evaluation modules and the
TensorFlow data stack load on first use (`heads.evaluate_coco`,
`heads.datasets`, or an explicit import).
"""

import importlib

from heads.detection import (
    SSDLite320ObjectDetector,
    SSDLiteLabelEncoder,
    SSDLiteObjectDetector,
    create_ssdlite,
    decode_boxes,
    encode_boxes,
)
from heads.segmentation import (
    DeepLabV3PlusSegmenter,
    DeepLabV3Segmenter,
    LRASPPSegmenter,
    TapSegmenter,
    create_deeplabv3,
    create_deeplabv3plus,
    create_lraspp,
    load_torchvision_segmenter,
)

# The heads' checkpoint sources (torchvision's SSDLite, DeepLabV3 and LR-ASPP), registered with the
# core's registry: the tasks' from_preset, keras-hub's generic entry points and `convert` take them.
from heads import sources  # noqa: E402,F401  isort: skip

# Names loaded on first use (PEP 562): name -> (module, attribute or None for the module).
_LAZY = {
    "datasets": ("heads.datasets", None),
    "evaluate_coco": ("heads.detection.coco_eval", "evaluate_coco"),
    "evaluate_segmentation": ("heads.segmentation.evaluation", "evaluate_segmentation"),
}

__all__ = [
    "DeepLabV3PlusSegmenter",
    "DeepLabV3Segmenter",
    "LRASPPSegmenter",
    "SSDLiteLabelEncoder",
    "SSDLite320ObjectDetector",
    "SSDLiteObjectDetector",
    "create_deeplabv3",
    "create_deeplabv3plus",
    "create_lraspp",
    "create_ssdlite",
    "datasets",
    "decode_boxes",
    "encode_boxes",
    "evaluate_coco",
    "evaluate_segmentation",
    "load_torchvision_segmenter",
]


def __getattr__(name):
    if name not in _LAZY:
        raise AttributeError(f"module 'heads' has no attribute {name!r}")
    module_name, attribute = _LAZY[name]
    module = importlib.import_module(module_name)
    return module if attribute is None else getattr(module, attribute)


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
