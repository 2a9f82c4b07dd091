"""What the two SSDLite tasks share: their settings, the default optimiser, and what the tools read.

`SSDLiteObjectDetector` and `SSDLite320ObjectDetector` both derive from
`SSDLiteBase`. Beside the settings both keep (classes, input size, box
format, extra layers, the post-processing's thresholds, BatchNorm momentum),
it carries what code outside the heads needs to know of a detector, so that
it never asks for its class:

- `label_offset`: the label of the first object class. 0 where every class
  is an object (sigmoid scores); 1 where class 0 is the background and
  `num_classes` counts it (`SSDLite320ObjectDetector`, torchvision's
  convention). `mnet_tools.train` shifts its data's labels by it and builds
  a head for K object classes with `num_classes = K + label_offset`.
- `postprocessing`: how raw outputs become detections outside the model,
  one of the kinds of `heads.detection.postprocess` (the LiteRT export
  stores it beside the `.tflite` file and runs the same post-processing).
"""

import keras

from heads.configs import config_entries
from heads.detection import postprocess
from heads.tasks import PyramidObjectDetector


def default_optimizer():
    """Both heads' `optimizer="auto"`: AdamW (learning rate 1e-3, weight decay 1e-4, gradient norm clipped at 10)."""
    return keras.optimizers.AdamW(1e-3, weight_decay=1e-4, global_clipnorm=10.0)


# The settings both detectors keep and write to their config, in `_keep_settings`' order, each with its type.
SHARED_SETTINGS = dict(num_classes=int, image_size=tuple, bounding_box_format=str, extra_filters=tuple)
SHARED_SETTINGS.update(score_threshold=float, iou_threshold=float, max_detections=int, bn_momentum=float)


class SSDLiteBase(PyramidObjectDetector):
    """Base of the SSDLite detectors (see the module docstring); not built itself."""

    label_offset = 0
    postprocessing = postprocess.SIGMOID_CLASS_AGNOSTIC_NMS

    def _keep_settings(self, num_classes, image_size, bounding_box_format, extra_filters, score_threshold,
                       iou_threshold, max_detections, bn_momentum):  # fmt: skip
        """Stores the settings both detectors keep (`SHARED_SETTINGS`) after the functional model is built."""
        given = dict(zip(SHARED_SETTINGS, (num_classes, image_size, bounding_box_format, extra_filters,
                                           score_threshold, iou_threshold, max_detections, bn_momentum)))  # fmt: skip
        for name, kind in SHARED_SETTINGS.items():
            setattr(self, name, kind(given[name]))

    def get_config(self):
        return {**super().get_config(), **config_entries(self, *SHARED_SETTINGS)}
