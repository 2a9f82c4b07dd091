"""SSDLite object detection on any keras-hub feature pyramid: the task, and `create_ssdlite` for both heads.

SSDLite as the MobileNetV2 paper (Sandler et al., 2018, section 6.2) and the
MobileNetV3 paper (Howard et al., 2019, section 6.2) define it: SSD with
every regular convolution of the prediction layers replaced by a
depthwise-separable one. Predictors sit on the stride-16 and stride-32
features (`P4`, `P5`) and on extra depthwise-separable layers that halve the
map down to 1x1.

The detector is assembled from parts, each in its own module, as keras-hub's
RetinaNet and torchvision's SSD are: the levels and anchors
(`heads.detection.anchors`), the box coding (`heads.detection.box_coding`),
the training targets (`heads.detection.matching`, `heads.detection.targets`),
the head layers (`heads.detection.layers`) and the input normalisation
(`heads.preprocessing`). keras-hub components reused: `AnchorGenerator`,
`BoxMatcher`, `NonMaxSuppression` (decoding).

The two heads have one name each, in Python as in the CLI and `train`'s
config (`HEADS`): `"ssdlite"` (this `SSDLiteObjectDetector`) and
`"ssdlite320"` (`heads.detection.ssdlite320.SSDLite320ObjectDetector`).
"""

import math
import warnings

import keras
from keras import ops
from keras_hub.layers import NonMaxSuppression

# Registers the MobileNet backbones and presets, so that saved detectors on
# them load and preset names resolve.
import mnet_backbones  # noqa: F401
from heads.configs import config_entries
from heads.detection.anchors import DEFAULT_ASPECT_RATIOS, anchor_boxes, ssdlite_anchor_generator, ssdlite_levels
from heads.detection.base import SSDLiteBase, default_optimizer
from heads.detection.box_coding import SSD_BOX_VARIANCE, check_box_format, decode_boxes
from heads.detection.layers import SSDLiteExtraBlock, SSDLitePredictor, ssdlite_head
from heads.detection.matching import SSDLiteLabelEncoder, count_positives
from heads.detection.ssdlite320 import SSDLite320ObjectDetector
from heads.detection.targets import clean_detection_targets
from heads.preprocessing import pixel_normalizer
from heads.pyramid import check_pyramid_backbone, pyramid_model, resolve_backbone, split_task_kwargs
from mnet_backbones.constants import IMAGENET_PIXEL_MEAN, IMAGENET_PIXEL_VARIANCE
from mnet_backbones.validation import check_image_size, check_positive_int

bounding_boxes = keras.utils.bounding_boxes

DEFAULT_EXTRA_FILTERS = (256, 256, 128, 128, 64, 64)


def _given_or_default(layer, make_default):
    """A layer given as its config (as `from_config` passes it) rebuilt, a layer as it is, None as `make_default()`."""
    if isinstance(layer, dict):
        return keras.layers.deserialize(layer)
    return make_default() if layer is None else layer


@keras.saving.register_keras_serializable(package="heads")
class SSDLiteObjectDetector(SSDLiteBase):
    """SSDLite: depthwise-separable SSD on a feature pyramid backbone.

    The head reads the backbone's `pyramid_outputs["P4"]` and `["P5"]`
    (strides 16 and 32), adds `SSDLiteExtraBlock`s down to a 1x1 map, and
    puts an `SSDLitePredictor` pair (box deltas, class logits) on every map.
    Anchors come from a `keras_hub.layers.AnchorGenerator`: per level
    `num_scales` sizes `anchor_size * stride * 2**(i / num_scales)` times the
    `aspect_ratios` (see `heads.detection.anchors`).

    Model outputs are raw: `{"bbox_regression": (B, anchors, 4) deltas,
    "cls_logits": (B, anchors, num_classes)}`. `predict` decodes them into
    `{"boxes", "confidence", "labels", "num_detections"}`: boxes in
    `bounding_box_format`, in pixels of the input image, after a score
    threshold and class-agnostic NMS (`prediction_decoder`).

    Inputs are RGB images in 0..255 of `image_size`; the model normalises them
    with `pixel_mean`/`pixel_variance` (ImageNet statistics by default).

    Args:
        backbone: a `keras_hub.models.FeaturePyramidBackbone` with P4 and P5.
        num_classes: number of object classes (no background class: scores
            are per-class sigmoids).
        image_size: int or (height, width) of the inputs.
        bounding_box_format: format of targets and predictions.
        extra_filters: channels of the extra layers, in order (repeats the
            last entry when more layers are needed).
        num_scales, aspect_ratios, anchor_size: the default anchors, see
            above.
        positive_threshold, negative_threshold: IoU thresholds of the
            default label encoder's matching.
        box_variance: scaling of the box deltas (the default label
            encoder's, and the decoding's).
        score_threshold, iou_threshold, max_detections: the default
            prediction decoder's settings. `score_threshold` and
            `max_detections` are what `predict` keeps, a display choice:
            settable after construction (a given decoder follows them from
            then on); `heads.evaluate_coco` scores at its own.
        classification_prior: initial foreground probability of every anchor.
        bn_momentum: momentum of the head's BatchNorm statistics (0.9, as the
            MobileNet backbones; Keras' 0.99 lags behind in short trainings).
        pixel_mean, pixel_variance: per-channel input normalisation.
        anchor_generator: a layer like `keras_hub.layers.AnchorGenerator`
            (images to `{level: (N, 4) anchors}`, with `num_base_anchors`
            and `bounding_box_format`) over the detector's levels; None
            builds the default from `num_scales`, `aspect_ratios` and
            `anchor_size` (`heads.detection.anchors.ssdlite_anchor_generator`).
        label_encoder: a layer from `(images, boxes, labels)` to per-anchor
            `(box_deltas, classes)` targets on the same anchors; None: an
            `SSDLiteLabelEncoder` on `anchor_generator`.
        prediction_decoder: a layer from xyxy boxes and class logits to
            `{"boxes", "confidence", "labels", "num_detections"}`; None:
            `keras_hub.layers.NonMaxSuppression` with the settings above.
        preprocessor: optional `keras_hub` preprocessor.

    Example:
    ```python
    import heads, numpy as np
    detector = heads.create_ssdlite("mobilenetv4_conv_small", num_classes=3,
                                    image_size=128, load_weights=False)
    detector.compile()
    images = np.random.uniform(0, 255, (2, 128, 128, 3)).astype("float32")
    targets = {"boxes": np.array([[[10, 10, 60, 60], [-1, -1, -1, -1]]] * 2, "float32"),
               "labels": np.array([[1, -1]] * 2)}
    detector.fit(images, targets, epochs=1)
    detections = detector.predict(images)  # boxes, confidence, labels, num_detections
    ```
    """

    backbone_cls = None
    preprocessor_cls = None

    def __init__(
        self,
        backbone,
        num_classes,
        image_size=320,
        bounding_box_format="xyxy",
        extra_filters=DEFAULT_EXTRA_FILTERS,
        num_scales=2,
        aspect_ratios=DEFAULT_ASPECT_RATIOS,
        anchor_size=3.0,
        positive_threshold=0.5,
        negative_threshold=0.4,
        box_variance=SSD_BOX_VARIANCE,
        score_threshold=0.3,
        iou_threshold=0.5,
        max_detections=100,
        classification_prior=0.01,
        bn_momentum=0.9,
        pixel_mean=IMAGENET_PIXEL_MEAN,
        pixel_variance=IMAGENET_PIXEL_VARIANCE,
        anchor_generator=None,
        label_encoder=None,
        prediction_decoder=None,
        preprocessor=None,
        dtype=None,
        **kwargs,
    ):
        check_pyramid_backbone(backbone, ("P4", "P5"), "SSDLite")
        num_classes = check_positive_int("num_classes", num_classes)
        image_size = check_image_size(image_size)
        check_box_format(bounding_box_format)
        if isinstance(extra_filters, int):
            extra_filters = (extra_filters,)
        extra_filters = tuple(check_positive_int("extra_filters", f) for f in extra_filters)
        if not extra_filters:
            raise ValueError("`extra_filters` must name at least one channel count, got ().")
        if not 0.0 < classification_prior < 1.0:
            raise ValueError(f"`classification_prior` must be in (0, 1), got {classification_prior!r}.")
        levels = ssdlite_levels(image_size)
        head_dtype = dtype or backbone.dtype_policy

        # === Layers ===
        self.backbone = backbone
        self.preprocessor = preprocessor
        self.anchor_generator = anchor_generator = _given_or_default(
            anchor_generator, lambda: ssdlite_anchor_generator(image_size, num_scales, aspect_ratios, anchor_size)
        )
        self.label_encoder = _given_or_default(
            label_encoder,
            lambda: SSDLiteLabelEncoder(
                anchor_generator,
                bounding_box_format=bounding_box_format,
                positive_threshold=positive_threshold,
                negative_threshold=negative_threshold,
                box_variance=box_variance,
                name="label_encoder",
            ),
        )
        self.normalizer = pixel_normalizer(pixel_mean, pixel_variance, head_dtype)
        # The head sees only the pyramid, through a model on the backbone's inputs.
        self.feature_extractor = pyramid_model(backbone, ("P4", "P5"))
        num_extra = len(levels) - 2
        common = dict(bn_momentum=bn_momentum, dtype=head_dtype)
        self.extra_blocks = [
            SSDLiteExtraBlock(extra_filters[min(i, len(extra_filters) - 1)], name=f"extra_P{level}", **common)
            for i, level in enumerate(levels[2:])
        ]
        anchors_per_position = self.anchor_generator.num_base_anchors
        prior_bias = -math.log((1.0 - classification_prior) / classification_prior)
        self.box_predictors = [
            SSDLitePredictor(anchors_per_position, 4, name=f"box_P{level}", **common) for level in levels
        ]
        self.class_predictors = [
            SSDLitePredictor(anchors_per_position, num_classes, bias_value=prior_bias, name=f"class_P{level}", **common)
            for level in levels
        ]

        # === Functional model ===
        inputs = keras.Input(shape=image_size + (3,), name="images")
        pyramid = self.feature_extractor(self.normalizer(inputs))
        _, outputs = ssdlite_head(
            [pyramid["P4"], pyramid["P5"]], self.extra_blocks, self.box_predictors, self.class_predictors, head_dtype
        )
        num_anchors = ops.shape(anchor_boxes(anchor_generator, ops.zeros((1,) + image_size + (3,))))[0]
        if num_anchors != outputs["bbox_regression"].shape[1]:
            raise ValueError(
                f"`anchor_generator` gives {num_anchors} anchors for {image_size} images, but the predictors "
                f"on levels {levels} make {outputs['bbox_regression'].shape[1]}: it must span exactly those levels."
            )
        super().__init__(inputs=inputs, outputs=outputs, dtype=dtype, **kwargs)

        # === Config ===
        self._keep_settings(num_classes, image_size, bounding_box_format, extra_filters, score_threshold,
                            iou_threshold, max_detections, bn_momentum)  # fmt: skip
        # After the settings: a given decoder keeps its own thresholds until they are set on the detector.
        self._prediction_decoder = _given_or_default(
            prediction_decoder,
            lambda: NonMaxSuppression(
                bounding_box_format="xyxy",
                from_logits=True,
                iou_threshold=iou_threshold,
                confidence_threshold=score_threshold,
                max_detections=max_detections,
                name="prediction_decoder",
            ),
        )
        self.num_scales = num_scales
        self.aspect_ratios = tuple(float(r) for r in aspect_ratios)
        self.anchor_size = float(anchor_size)
        self.positive_threshold = float(positive_threshold)
        self.negative_threshold = float(negative_threshold)
        self.box_variance = tuple(float(v) for v in box_variance)
        self.classification_prior = float(classification_prior)
        self.pixel_mean = tuple(float(v) for v in pixel_mean)
        self.pixel_variance = tuple(float(v) for v in pixel_variance)
        self.levels = levels
        self.num_extra_layers = num_extra

    # --- training -----------------------------------------------------------
    def compile(self, optimizer="auto", box_loss="auto", classification_loss="auto", metrics=None, **kwargs):
        """Configures training; defaults suit SSDLite trained from scratch.

        `optimizer="auto"`: AdamW (learning rate 1e-3, weight decay 1e-4,
        gradient norm clipped at 10). `box_loss="auto"`: Huber (smooth L1) on
        the positives' deltas. `classification_loss="auto"`: sigmoid focal
        loss (alpha 0.25, gamma 2) over positives and negatives, which copes
        with the background imbalance without hard-negative mining. Both are
        summed and divided by the number of positive anchors.

        Example:
        ```python
        detector.compile(optimizer=keras.optimizers.AdamW(3e-3))
        ```
        """
        if optimizer == "auto":
            optimizer = default_optimizer()
        if box_loss == "auto":
            box_loss = keras.losses.Huber(delta=1.0, reduction="sum")
        if classification_loss == "auto":
            classification_loss = keras.losses.BinaryFocalCrossentropy(
                apply_class_balancing=True, alpha=0.25, gamma=2.0, from_logits=True, reduction="sum"
            )
        super().compile(
            optimizer=optimizer,
            box_loss=box_loss,
            classification_loss=classification_loss,
            metrics=metrics,
            **kwargs,
        )

    def compute_loss(self, x, y, y_pred, sample_weight=None, **kwargs):
        box_targets, class_targets = self.label_encoder(x, y["boxes"], y["labels"])
        positive = ops.cast(ops.greater_equal(class_targets, 0.0), "float32")
        num_positive = count_positives(positive)
        class_weights = ops.cast(ops.not_equal(class_targets, -2.0), "float32") / num_positive
        box_weights = positive / num_positive
        one_hot = ops.one_hot(ops.cast(ops.maximum(class_targets, 0.0), "int32"), self.num_classes)
        one_hot = one_hot * positive[..., None]
        return super().compute_loss(
            x=x,
            y={"bbox_regression": box_targets, "cls_logits": one_hot},
            y_pred=y_pred,
            sample_weight={"bbox_regression": box_weights, "cls_logits": class_weights},
            **kwargs,
        )

    def _clean_targets(self, x, y):
        """Array targets checked and clipped to the images they describe (see `fit`); anything else as it is."""
        if not (isinstance(y, dict) and "boxes" in y and "labels" in y):
            return y
        shape = tuple(getattr(x, "shape", ()))
        # The boxes are in the pixels of the images given, which an attached
        # preprocessor then resizes, boxes with them.
        image_size = shape[1:3] if len(shape) == 4 and all(shape[1:3]) else self.image_size
        return clean_detection_targets(y, self.num_classes, image_size, bounding_box_format=self.bounding_box_format)

    def fit(self, x=None, y=None, *args, **kwargs):
        """keras-hub's `fit` (an attached preprocessor runs first); array targets are checked and cleaned first.

        With `y={"boxes", "labels"}` given as arrays, boxes are clipped to the
        images given (before a preprocessor resizes both), degenerate ones
        dropped (padded with -1), and a label outside `[0, num_classes)`
        raises a ValueError naming it.
        """
        return super().fit(x, self._clean_targets(x, y), *args, **kwargs)

    def evaluate(self, x=None, y=None, *args, **kwargs):
        """keras-hub's `evaluate`, with array targets checked and cleaned as `fit` does."""
        return super().evaluate(x, self._clean_targets(x, y), *args, **kwargs)

    # --- prediction ---------------------------------------------------------
    @property
    def prediction_decoder(self):
        return self._prediction_decoder

    def _decoding_changed(self):
        """A changed `score_threshold` or `max_detections` reaches the decoder (its NMS settings)."""
        super()._decoding_changed()
        decoder = getattr(self, "_prediction_decoder", None)  # None while the constructor keeps its settings
        if decoder is not None:
            decoder.confidence_threshold = self.score_threshold
            decoder.max_detections = self.max_detections

    def anchors(self):
        """The detector's anchors: (N, 4) xyxy input pixels, in the order of its outputs.

        Example:
        ```python
        detector.anchors().shape  # (detector.output["bbox_regression"].shape[1], 4)
        ```
        """
        return anchor_boxes(self.anchor_generator, ops.zeros((1,) + self.image_size + (3,)))

    def decode_raw_outputs(self, box_deltas, class_logits):
        """Raw model outputs to boxes in xyxy input pixels and class logits."""
        return decode_boxes(self.anchors(), box_deltas, self.box_variance, self.image_size), class_logits

    def decode_predictions(self, predictions, data=None):
        boxes, logits = self.decode_raw_outputs(predictions["bbox_regression"], predictions["cls_logits"])
        # keras_hub's NMS needs a static batch size, which a predict graph over a
        # dataset does not have: run it per image, each a static batch of one.
        num_anchors = ops.shape(boxes)[1]
        boxes = ops.reshape(boxes, (-1, num_anchors, 4))
        logits = ops.reshape(logits, (-1, num_anchors, self.num_classes))

        def decode_one(image_outputs):
            one = self._prediction_decoder(image_outputs[0][None], image_outputs[1][None])
            return (
                ops.cast(one["boxes"][0], "float32"),
                ops.cast(one["confidence"][0], "float32"),
                ops.cast(one["labels"][0], "int32"),
                ops.cast(one["num_detections"][0], "int32"),
            )

        decoded = ops.map(decode_one, (boxes, ops.cast(logits, "float32")))
        detections = dict(zip(("boxes", "confidence", "labels", "num_detections"), decoded))
        height, width = self.image_size
        detections["boxes"] = bounding_boxes.convert_format(
            detections["boxes"], source="xyxy", target=self.bounding_box_format, height=height, width=width
        )
        return detections

    def predict_step(self, *args):
        outputs = super().predict_step(*args)
        if isinstance(outputs, tuple):
            return self.decode_predictions(outputs[0]), outputs[1]
        return self.decode_predictions(outputs)

    # --- serialisation ------------------------------------------------------
    def get_config(self):
        names = ("num_scales", "aspect_ratios", "anchor_size", "positive_threshold", "negative_threshold")
        names += ("box_variance", "classification_prior", "pixel_mean", "pixel_variance")
        return {
            **super().get_config(),
            **config_entries(self, *names),
            "anchor_generator": keras.layers.serialize(self.anchor_generator),
            "label_encoder": keras.layers.serialize(self.label_encoder),
            "prediction_decoder": keras.layers.serialize(self._prediction_decoder),
        }


# The two heads' names, as the CLI's `--head` and `train`'s config spell them.
HEADS = ("ssdlite", "ssdlite320")
# The Python spellings before the heads had one name each: still accepted, with a DeprecationWarning.
DEPRECATED_HEADS = {"pyramid": "ssdlite", "paper": "ssdlite320"}


def ssdlite_class(head, stacklevel=2):
    """The detector class of an SSDLite head name: `"ssdlite"` or `"ssdlite320"`.

    `"pyramid"` and `"paper"`, the old Python spellings, still name them,
    with a DeprecationWarning naming the new spelling; anything else is a
    ValueError.

    Example:
    ```python
    ssdlite_class("ssdlite320")  # SSDLite320ObjectDetector
    ssdlite_class("ssdlite320").label_offset  # 1: class 0 is the background
    ```
    """
    if head in DEPRECATED_HEADS:
        warnings.warn(
            f"head={head!r} is deprecated: use head={DEPRECATED_HEADS[head]!r}, the name the CLI and `train` use.",
            DeprecationWarning,
            stacklevel=stacklevel + 1,
        )
        head = DEPRECATED_HEADS[head]
    if head not in HEADS:
        raise ValueError(f"Unknown SSDLite head {head!r}; expected one of {HEADS}.")
    return SSDLite320ObjectDetector if head == "ssdlite320" else SSDLiteObjectDetector


def create_ssdlite(backbone, num_classes, image_size=320, bounding_box_format="xyxy", head="ssdlite", **kwargs):
    """Builds an SSDLite detector on a preset name or a backbone.

    Args:
        backbone: a preset name (e.g. `"mobilenetv3_large_100"`; loaded with
            `keras_hub.models.Backbone.from_preset`) or a backbone instance
            (any `FeaturePyramidBackbone` for `head="ssdlite"`, a
            `MobileNetBackbone` for `head="ssdlite320"`).
        num_classes: number of object classes; with `head="ssdlite320"` the
            background 0 counts as one (torchvision's convention): K object
            classes need `K + ssdlite_class(head).label_offset`.
        image_size: int or (height, width) of the detector's inputs.
        bounding_box_format: format of targets and predictions.
        head: `"ssdlite"` (`SSDLiteObjectDetector`: the P4/P5 pyramid levels,
            sigmoid classes, focal loss) or `"ssdlite320"`
            (`SSDLite320ObjectDetector`: the MobileNetV3 paper's and
            torchvision's SSDLite, on the last strided block's expansion
            layer and the last conv, softmax with a background class,
            hard-negative mining). The old spellings `"pyramid"` and
            `"paper"` still work, with a DeprecationWarning.
        **kwargs: `load_weights` and other `from_preset` arguments go to the
            backbone when it is a name; the rest to the detector.

    Example:
    ```python
    import heads
    detector = heads.create_ssdlite("mobilenetv4_conv_small", num_classes=3,
                                    image_size=224, load_weights=False)
    paper = heads.create_ssdlite("mobilenetv3_large_100", num_classes=4, head="ssdlite320",
                                 load_weights=False)
    ```
    """
    detector_cls = ssdlite_class(head, stacklevel=2)
    num_classes = check_positive_int("num_classes", num_classes)
    image_size = check_image_size(image_size)
    detector_kwargs, backbone_kwargs = split_task_kwargs(detector_cls, kwargs)
    backbone = resolve_backbone(backbone, backbone_kwargs)
    return detector_cls(
        backbone,
        num_classes=num_classes,
        image_size=image_size,
        bounding_box_format=bounding_box_format,
        **detector_kwargs,
    )
