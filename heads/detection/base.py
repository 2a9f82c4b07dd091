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

import contextlib
import math

import keras

from heads.configs import config_entries
from heads.detection import postprocess
from heads.tasks import PyramidObjectDetector
from mnet_backbones.validation import check_positive_int, is_int


def default_optimizer():
    """Both heads' `optimizer="auto"`: AdamW (learning rate 1e-3, weight decay 1e-4, gradient norm clipped at 10)."""
    return keras.optimizers.AdamW(1e-3, weight_decay=1e-4, global_clipnorm=10.0)


def check_score_threshold(value):
    """`value` as a float in [0, 1), or a ValueError naming `score_threshold`."""
    if not (is_int(value) or isinstance(value, float)) or math.isnan(value) or not 0.0 <= value < 1.0:
        raise ValueError(f"`score_threshold` must be a number in [0, 1), got {value!r}.")
    return float(value)


def check_max_detections(value):
    return check_positive_int("max_detections", value)


# The settings both detectors keep and write to their config, in `_keep_settings`' order, each with its type.
SHARED_SETTINGS = dict(num_classes=int, image_size=tuple, bounding_box_format=str, extra_filters=tuple)
SHARED_SETTINGS.update(score_threshold=check_score_threshold, iou_threshold=float)
SHARED_SETTINGS.update(max_detections=check_max_detections, bn_momentum=float)


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

    # --- what predict keeps: a display choice, settable after construction -----
    @property
    def score_threshold(self):
        """Detections scoring at most this are dropped by `predict` and export.

        A display (or deployment) choice, not part of what the model learns:
        set it at any time (`detector.score_threshold = 0.5`); the next
        `predict` uses it and a saved file keeps it. `heads.evaluate_coco`
        scores at its own near-zero threshold, whatever this is.
        """
        return self._score_threshold

    @score_threshold.setter
    def score_threshold(self, value):
        self._score_threshold = check_score_threshold(value)
        self._decoding_changed()

    @property
    def max_detections(self):
        """The most detections `predict` and export keep per image; settable like `score_threshold`."""
        return self._max_detections

    @max_detections.setter
    def max_detections(self, value):
        self._max_detections = check_max_detections(value)
        self._decoding_changed()

    def _decoding_changed(self):
        """Called when `score_threshold` or `max_detections` changes: a traced predict is traced again."""
        self.predict_function = None

    @contextlib.contextmanager
    def decoding(self, score_threshold=None, max_detections=None):
        """`score_threshold` and `max_detections` set inside a `with` block, restored after it.

        Example:
        ```python
        with detector.decoding(score_threshold=0.001, max_detections=100):
            everything = detector.predict(images)  # as COCO evaluation scores it
        ```
        """
        kept = self.score_threshold, self.max_detections
        try:
            if score_threshold is not None:
                self.score_threshold = score_threshold
            if max_detections is not None:
                self.max_detections = max_detections
            yield self
        finally:
            self.score_threshold, self.max_detections = kept

    def get_config(self):
        return {**super().get_config(), **config_entries(self, *SHARED_SETTINGS)}
