"""SSDLite object detection on any keras-hub feature pyramid.

SSDLite as the MobileNetV2 paper (Sandler et al., 2018, section 6.2) and the
MobileNetV3 paper (Howard et al., 2019, section 6.2) define it: SSD with
every regular convolution of the prediction layers replaced by a
depthwise-separable one. Predictors sit on the stride-16 and stride-32
features (`P4`, `P5`) and on extra depthwise-separable layers that halve the
map down to 1x1.

keras-hub components reused here: `AnchorGenerator` (anchors per level),
`BoxMatcher` (anchor/ground-truth matching), `NonMaxSuppression` (decoding),
and `keras.utils.bounding_boxes` (format conversion, IoU, delta encoding).
"""

import math

import keras
import numpy as np
from keras import ops
from keras_hub.layers import AnchorGenerator, NonMaxSuppression
from keras_hub.models import ObjectDetector
from keras_hub.src.layers.modeling.box_matcher import BoxMatcher
from keras_hub.src.utils.preset_utils import get_preset_loader

# Registers the MobileNet backbones and presets, so that saved detectors on
# them load and preset names resolve; nothing else of the package is used.
import mnet_backbones  # noqa: F401,E402
from heads._validation import check_image_size, check_positive_int

bounding_boxes = keras.utils.bounding_boxes

# ImageNet statistics in 0..255 pixels: the normalisation the MobileNet presets
# were trained with, so raw uint8-range images go straight into `predict`.
IMAGENET_MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)
IMAGENET_VARIANCE = ((0.229 * 255) ** 2, (0.224 * 255) ** 2, (0.225 * 255) ** 2)
# SSD's box-delta scaling (Liu et al., 2016): centre offsets / 0.1, log sizes / 0.2.
SSD_BOX_VARIANCE = (0.1, 0.1, 0.2, 0.2)
DEFAULT_EXTRA_FILTERS = (256, 256, 128, 128, 64, 64)


def pixel_normalizer(mean, variance, dtype=None):
    """(pixels - mean) / sqrt(variance) per channel, as one scale and offset.

    A `Rescaling` rather than a `Normalization` layer: its constants are
    created inside the traced graph, which tf2onnx folds into the ONNX file
    (a `Normalization`'s captured tensors become extra graph inputs).
    """
    std = [math.sqrt(v) for v in variance]
    return keras.layers.Rescaling(
        scale=[1.0 / s for s in std], offset=[-m / s for m, s in zip(mean, std)], dtype=dtype, name="normalizer"
    )


def ssdlite_levels(image_size, min_level=4):
    """Pyramid levels SSDLite predicts on: `min_level` up to the first 1x1 map.

    Example:
    ```python
    ssdlite_levels(320)  # [4, 5, 6, 7, 8, 9]: maps of 20, 10, 5, 3, 2, 1
    ```
    """
    height, width = check_image_size(image_size)
    max_level = max(min_level + 1, math.ceil(math.log2(max(height, width))))
    return list(range(min_level, max_level + 1))


@keras.saving.register_keras_serializable(package="heads")
class SSDLiteExtraBlock(keras.layers.Layer):
    """One SSDLite extra layer: 1x1 conv, depthwise 3x3 stride 2, 1x1 conv.

    Each convolution is followed by BatchNorm and ReLU6; the map halves
    (rounding up) and ends with `filters` channels.

    Example:
    ```python
    block = SSDLiteExtraBlock(128)
    block(keras.ops.ones((1, 5, 5, 96))).shape  # (1, 3, 3, 128)
    ```
    """

    def __init__(self, filters, bn_momentum=0.9, **kwargs):
        super().__init__(**kwargs)
        self.filters = check_positive_int("filters", filters)
        self.bn_momentum = float(bn_momentum)
        dtype = self.dtype_policy
        self.reduce = keras.layers.Conv2D(max(filters // 2, 1), 1, use_bias=False, dtype=dtype, name="reduce")
        self.reduce_norm = keras.layers.BatchNormalization(momentum=bn_momentum, dtype=dtype, name="reduce_norm")
        self.depthwise = keras.layers.DepthwiseConv2D(
            3, strides=2, padding="same", use_bias=False, dtype=dtype, name="depthwise"
        )
        self.depthwise_norm = keras.layers.BatchNormalization(momentum=bn_momentum, dtype=dtype, name="depthwise_norm")
        self.project = keras.layers.Conv2D(filters, 1, use_bias=False, dtype=dtype, name="project")
        self.project_norm = keras.layers.BatchNormalization(momentum=bn_momentum, dtype=dtype, name="project_norm")

    def build(self, input_shape):
        shape = tuple(input_shape)
        for conv, norm in (
            (self.reduce, self.reduce_norm),
            (self.depthwise, self.depthwise_norm),
            (self.project, self.project_norm),
        ):
            conv.build(shape)
            shape = conv.compute_output_shape(shape)
            norm.build(shape)

    def call(self, inputs, training=None):
        x = ops.relu6(self.reduce_norm(self.reduce(inputs), training=training))
        x = ops.relu6(self.depthwise_norm(self.depthwise(x), training=training))
        return ops.relu6(self.project_norm(self.project(x), training=training))

    def compute_output_shape(self, input_shape):
        shape = self.depthwise.compute_output_shape(tuple(input_shape))
        return shape[:-1] + (self.filters,)

    def get_config(self):
        config = super().get_config()
        config.update(filters=self.filters, bn_momentum=self.bn_momentum)
        return config


@keras.saving.register_keras_serializable(package="heads")
class SSDLitePredictor(keras.layers.Layer):
    """An SSDLite predictor: depthwise 3x3, BatchNorm, ReLU6, then a 1x1 conv.

    Outputs `(batch, height * width * num_anchors, values_per_anchor)`, anchors
    ordered as `keras_hub.layers.AnchorGenerator` orders them (row-major over
    the map, then anchor).

    Args:
        num_anchors: anchors per map position.
        values_per_anchor: 4 for box deltas, the number of classes for scores.
        bias_value: initial bias of the 1x1 conv; a negative value starts
            classification at a low foreground probability (focal loss prior).

    Example:
    ```python
    predictor = SSDLitePredictor(num_anchors=6, values_per_anchor=4)
    predictor(keras.ops.ones((2, 5, 5, 96))).shape  # (2, 150, 4)
    ```
    """

    def __init__(self, num_anchors, values_per_anchor, bias_value=0.0, bn_momentum=0.9, **kwargs):
        super().__init__(**kwargs)
        self.bn_momentum = float(bn_momentum)
        self.num_anchors = check_positive_int("num_anchors", num_anchors)
        self.values_per_anchor = check_positive_int("values_per_anchor", values_per_anchor)
        self.bias_value = float(bias_value)
        dtype = self.dtype_policy
        self.depthwise = keras.layers.DepthwiseConv2D(3, padding="same", use_bias=False, dtype=dtype, name="depthwise")
        self.depthwise_norm = keras.layers.BatchNormalization(momentum=bn_momentum, dtype=dtype, name="depthwise_norm")
        self.pointwise = keras.layers.Conv2D(
            num_anchors * values_per_anchor,
            1,
            bias_initializer=keras.initializers.Constant(self.bias_value),
            dtype=dtype,
            name="pointwise",
        )

    def build(self, input_shape):
        shape = tuple(input_shape)
        self.depthwise.build(shape)
        self.depthwise_norm.build(shape)
        self.pointwise.build(shape)

    def call(self, inputs, training=None):
        x = ops.relu6(self.depthwise_norm(self.depthwise(inputs), training=training))
        x = self.pointwise(x)
        height, width, channels = x.shape[1], x.shape[2], x.shape[3]
        if height is not None and width is not None:
            # Constant shape where the map's size is known (as in an exported
            # file): a RESHAPE that XNNPACK runs, not SHAPE/SLICE/PACK ops.
            return ops.reshape(x, (-1, height * width * channels // self.values_per_anchor, self.values_per_anchor))
        return ops.reshape(x, (ops.shape(x)[0], -1, self.values_per_anchor))

    def compute_output_shape(self, input_shape):
        height, width = input_shape[1], input_shape[2]
        count = None if height is None or width is None else height * width * self.num_anchors
        return (input_shape[0], count, self.values_per_anchor)

    def get_config(self):
        config = super().get_config()
        config.update(
            num_anchors=self.num_anchors,
            values_per_anchor=self.values_per_anchor,
            bias_value=self.bias_value,
            bn_momentum=self.bn_momentum,
        )
        return config


@keras.saving.register_keras_serializable(package="heads")
class SSDLiteLabelEncoder(keras.layers.Layer):
    """Turns padded ground truth into per-anchor SSD training targets.

    Anchors match the ground-truth box of highest IoU at or above
    `positive_threshold`; anchors between the two thresholds are ignored
    (class -2), the rest are background (class -1). As in SSD, every real box
    is also matched to its best anchor, so small boxes always train
    something. Box targets are centre/size deltas divided by `box_variance`.
    Padded boxes (label -1) never match.

    `keras_hub`'s `RetinaNetLabelEncoder` cannot be reused: it does not keep
    `force_match_for_each_col` in its config and it lets padded boxes be
    force-matched.

    Example:
    ```python
    anchors = keras_hub.layers.AnchorGenerator("xyxy", 4, 5, 1, [1.0], 2.0)
    encoder = SSDLiteLabelEncoder(anchors)
    deltas, classes = encoder(
        np.zeros((1, 64, 64, 3)), np.array([[[8, 8, 40, 40]]], "float32"), np.array([[0]])
    )
    ```
    """

    def __init__(
        self,
        anchor_generator,
        bounding_box_format="xyxy",
        positive_threshold=0.5,
        negative_threshold=0.4,
        box_variance=SSD_BOX_VARIANCE,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if isinstance(anchor_generator, dict):
            anchor_generator = keras.layers.deserialize(anchor_generator)
        self.anchor_generator = anchor_generator
        self.bounding_box_format = bounding_box_format
        self.positive_threshold = float(positive_threshold)
        self.negative_threshold = float(negative_threshold)
        self.box_variance = tuple(float(v) for v in box_variance)
        self.box_matcher = BoxMatcher(
            thresholds=[self.negative_threshold, self.positive_threshold],
            match_values=[-1, -2, 1],
            force_match_for_each_col=True,
        )

    def anchors(self, images):
        """All anchors for `images`' size, in xyxy pixels, level after level."""
        anchors = self.anchor_generator(images)
        anchors = ops.concatenate(list(anchors.values()), axis=0)
        return bounding_boxes.convert_format(anchors, source=self.anchor_generator.bounding_box_format, target="xyxy")

    def call(self, images, gt_boxes, gt_classes):
        height, width = ops.shape(images)[1], ops.shape(images)[2]
        anchors = self.anchors(images)
        gt_classes = ops.cast(gt_classes, "float32")
        gt_boxes = bounding_boxes.convert_format(
            ops.cast(gt_boxes, "float32"), source=self.bounding_box_format, target="xyxy", height=height, width=width
        )
        valid = ops.greater_equal(gt_classes, 0.0)
        gt_boxes = ops.where(valid[..., None], gt_boxes, -1.0)
        iou = bounding_boxes.compute_iou(anchors, gt_boxes, bounding_box_format="xyxy")
        # IoU -1 against padded boxes, so they lose every argmax. (compute_iou's
        # own `use_masking` fails for unbatched anchors against batched boxes.)
        iou = ops.where(valid[:, None, :], iou, -1.0)
        matched_index, matched_value = self.box_matcher(iou)
        matched_index = ops.cast(matched_index, "int32")
        # BoxMatcher adds a column of its own (index N, IoU -1) and may force-match
        # it too: give the gathers a padded box at that index.
        batch = ops.shape(gt_classes)[0]
        gt_classes = ops.concatenate([gt_classes, -ops.ones((batch, 1), "float32")], axis=1)
        gt_boxes = ops.concatenate([gt_boxes, -ops.ones((batch, 1, 4), "float32")], axis=1)
        matched_classes = ops.take_along_axis(gt_classes, matched_index, axis=1)
        matched_boxes = ops.take_along_axis(gt_boxes, matched_index[..., None], axis=1)
        # A force-match of a padded column (all IoU -1) lands on some anchor: not a positive.
        positive = ops.logical_and(ops.equal(matched_value, 1), ops.greater_equal(matched_classes, 0.0))
        ignored = ops.logical_and(ops.equal(matched_value, -2), ops.logical_not(positive))
        deltas = bounding_boxes.encode_box_to_deltas(
            anchors=anchors,
            boxes=matched_boxes,
            anchor_format="xyxy",
            box_format="xyxy",
            encoding_format="center_xywh",
            variance=self.box_variance,
        )
        deltas = ops.where(positive[..., None], deltas, 0.0)
        classes = ops.where(positive, matched_classes, ops.where(ignored, -2.0, -1.0))
        return deltas, classes

    def get_config(self):
        config = super().get_config()
        config.update(
            anchor_generator=keras.layers.serialize(self.anchor_generator),
            bounding_box_format=self.bounding_box_format,
            positive_threshold=self.positive_threshold,
            negative_threshold=self.negative_threshold,
            box_variance=list(self.box_variance),
        )
        return config


def _deserialize_if_config(value):
    return keras.layers.deserialize(value) if isinstance(value, dict) else value


@keras.saving.register_keras_serializable(package="heads")
class SSDLiteObjectDetector(ObjectDetector):
    """SSDLite: depthwise-separable SSD on a feature pyramid backbone.

    The head reads the backbone's `pyramid_outputs["P4"]` and `["P5"]`
    (strides 16 and 32), adds `SSDLiteExtraBlock`s down to a 1x1 map, and
    puts an `SSDLitePredictor` pair (box deltas, class logits) on every map.
    Anchors come from a `keras_hub.layers.AnchorGenerator`: per level
    `num_scales` sizes `anchor_size * stride * 2**(i / num_scales)` times the
    `aspect_ratios`. (SSD's linear scale schedule cannot be expressed with
    it; sizes here double per level, like RetinaNet's.)

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
        num_scales, aspect_ratios, anchor_size: the anchors, see above.
        positive_threshold, negative_threshold: IoU thresholds of matching.
        box_variance: scaling of the box deltas.
        score_threshold, iou_threshold, max_detections: decoding.
        classification_prior: initial foreground probability of every anchor.
        bn_momentum: momentum of the head's BatchNorm statistics (0.9, as the
            MobileNet backbones; Keras' 0.99 lags behind in short trainings).
        pixel_mean, pixel_variance: per-channel input normalisation.
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
        aspect_ratios=(0.5, 1.0, 2.0),
        anchor_size=3.0,
        positive_threshold=0.5,
        negative_threshold=0.4,
        box_variance=SSD_BOX_VARIANCE,
        score_threshold=0.3,
        iou_threshold=0.5,
        max_detections=100,
        classification_prior=0.01,
        bn_momentum=0.9,
        pixel_mean=IMAGENET_MEAN,
        pixel_variance=IMAGENET_VARIANCE,
        preprocessor=None,
        dtype=None,
        **kwargs,
    ):
        if not isinstance(backbone, keras.Model) or not hasattr(backbone, "pyramid_outputs"):
            raise TypeError(
                "`backbone` must be a keras_hub FeaturePyramidBackbone (a model with "
                f"`pyramid_outputs`), got {type(backbone).__name__}."
            )
        missing = {"P4", "P5"} - set(backbone.pyramid_outputs)
        if missing:
            raise ValueError(
                f"SSDLite needs pyramid levels P4 and P5; the backbone lacks {sorted(missing)} "
                f"(it has {sorted(backbone.pyramid_outputs)})."
            )
        num_classes = check_positive_int("num_classes", num_classes)
        image_size = check_image_size(image_size)
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
        self.anchor_generator = AnchorGenerator(
            "xyxy",
            min_level=levels[0],
            max_level=levels[-1],
            num_scales=num_scales,
            aspect_ratios=list(aspect_ratios),
            anchor_size=anchor_size,
            name="anchor_generator",
        )
        self.label_encoder = SSDLiteLabelEncoder(
            self.anchor_generator,
            bounding_box_format=bounding_box_format,
            positive_threshold=positive_threshold,
            negative_threshold=negative_threshold,
            box_variance=box_variance,
            name="label_encoder",
        )
        self._prediction_decoder = NonMaxSuppression(
            bounding_box_format="xyxy",
            from_logits=True,
            iou_threshold=iou_threshold,
            confidence_threshold=score_threshold,
            max_detections=max_detections,
            name="prediction_decoder",
        )
        self.normalizer = pixel_normalizer(pixel_mean, pixel_variance, head_dtype)
        # The head sees only the pyramid, through a model on the backbone's inputs.
        self.feature_extractor = keras.Model(
            backbone.inputs,
            {level: backbone.pyramid_outputs[level] for level in ("P4", "P5")},
            name="pyramid",
        )
        num_extra = len(levels) - 2
        self.extra_blocks = [
            SSDLiteExtraBlock(
                extra_filters[min(i, len(extra_filters) - 1)],
                bn_momentum=bn_momentum,
                dtype=head_dtype,
                name=f"extra_P{level}",
            )
            for i, level in enumerate(levels[2:])
        ]
        anchors_per_position = self.anchor_generator.num_base_anchors
        prior_bias = -math.log((1.0 - classification_prior) / classification_prior)
        self.box_predictors = [
            SSDLitePredictor(anchors_per_position, 4, bn_momentum=bn_momentum, dtype=head_dtype, name=f"box_P{level}")
            for level in levels
        ]
        self.class_predictors = [
            SSDLitePredictor(
                anchors_per_position,
                num_classes,
                bias_value=prior_bias,
                bn_momentum=bn_momentum,
                dtype=head_dtype,
                name=f"class_P{level}",
            )  # fmt: skip
            for level in levels
        ]

        # === Functional model ===
        inputs = keras.Input(shape=image_size + (3,), name="images")
        pyramid = self.feature_extractor(self.normalizer(inputs))
        maps = [pyramid["P4"], pyramid["P5"]]
        for block in self.extra_blocks:
            maps.append(block(maps[-1]))
        box_outputs = [predictor(x) for predictor, x in zip(self.box_predictors, maps)]
        class_outputs = [predictor(x) for predictor, x in zip(self.class_predictors, maps)]
        outputs = {
            "bbox_regression": keras.layers.Concatenate(axis=1, dtype=head_dtype, name="bbox_regression")(box_outputs),
            "cls_logits": keras.layers.Concatenate(axis=1, dtype="float32", name="cls_logits")(class_outputs),
        }
        super().__init__(inputs=inputs, outputs=outputs, dtype=dtype, **kwargs)

        # === Config ===
        self.num_classes = num_classes
        self.image_size = image_size
        self.bounding_box_format = bounding_box_format
        self.extra_filters = extra_filters
        self.num_scales = num_scales
        self.aspect_ratios = tuple(float(r) for r in aspect_ratios)
        self.anchor_size = float(anchor_size)
        self.positive_threshold = float(positive_threshold)
        self.negative_threshold = float(negative_threshold)
        self.box_variance = tuple(float(v) for v in box_variance)
        self.score_threshold = float(score_threshold)
        self.iou_threshold = float(iou_threshold)
        self.max_detections = int(max_detections)
        self.classification_prior = float(classification_prior)
        self.bn_momentum = float(bn_momentum)
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
            optimizer = keras.optimizers.AdamW(1e-3, weight_decay=1e-4, global_clipnorm=10.0)
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

    def compile_from_config(self, config):
        # Our compile() names its losses, so Keras cannot replay a saved
        # compile by itself; this restores it, optimizer state included.
        config = dict(keras.saving.deserialize_keras_object(config))
        losses = config.pop("loss", None) or {}
        config.pop("metrics", None)
        self.compile(
            optimizer=config.pop("optimizer", "auto"),
            box_loss=losses.get("bbox_regression", "auto"),
            classification_loss=losses.get("cls_logits", "auto"),
            **config,
        )
        if self.built:
            self.optimizer.build(self.trainable_variables)

    def compute_loss(self, x, y, y_pred, sample_weight=None, **kwargs):
        box_targets, class_targets = self.label_encoder(x, y["boxes"], y["labels"])
        positive = ops.cast(ops.greater_equal(class_targets, 0.0), "float32")
        num_positive = ops.maximum(ops.sum(positive), 1.0)
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

    def fit(self, x=None, y=None, *args, **kwargs):
        """`keras.Model.fit`; array targets are checked and cleaned first.

        With `y={"boxes", "labels"}` given as arrays, boxes are clipped to the
        image, degenerate ones dropped (padded with -1), and a label outside
        `[0, num_classes)` raises a ValueError naming it.
        """
        if isinstance(y, dict) and "boxes" in y and "labels" in y:
            y = clean_detection_targets(
                y, self.num_classes, self.image_size, bounding_box_format=self.bounding_box_format
            )
        return super().fit(x, y, *args, **kwargs)

    # --- prediction ---------------------------------------------------------
    @property
    def prediction_decoder(self):
        return self._prediction_decoder

    def decode_raw_outputs(self, box_deltas, class_logits):
        """Raw model outputs to boxes in xyxy input pixels and class logits."""
        height, width = self.image_size
        anchors = self.label_encoder.anchors(ops.zeros((1, height, width, 3)))
        boxes = bounding_boxes.decode_deltas_to_boxes(
            anchors=anchors,
            boxes_delta=box_deltas,
            anchor_format="xyxy",
            box_format="xyxy",
            encoded_format="center_xywh",
            variance=self.box_variance,
        )
        x0, y0, x1, y1 = ops.unstack(boxes, 4, axis=-1)
        boxes = ops.stack(
            [ops.clip(x0, 0.0, width), ops.clip(y0, 0.0, height), ops.clip(x1, 0.0, width), ops.clip(y1, 0.0, height)],
            axis=-1,
        )
        return boxes, class_logits

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
        config = super().get_config()
        config.update(
            num_classes=self.num_classes,
            image_size=list(self.image_size),
            bounding_box_format=self.bounding_box_format,
            extra_filters=list(self.extra_filters),
            num_scales=self.num_scales,
            aspect_ratios=list(self.aspect_ratios),
            anchor_size=self.anchor_size,
            positive_threshold=self.positive_threshold,
            negative_threshold=self.negative_threshold,
            box_variance=list(self.box_variance),
            score_threshold=self.score_threshold,
            iou_threshold=self.iou_threshold,
            max_detections=self.max_detections,
            classification_prior=self.classification_prior,
            bn_momentum=self.bn_momentum,
            pixel_mean=list(self.pixel_mean),
            pixel_variance=list(self.pixel_variance),
        )
        return config

    @classmethod
    def from_preset(cls, preset, load_weights=True, **kwargs):
        """Loads a detector saved with `save_to_preset`.

        `Task.from_preset` looks for a task subclass registered for the
        preset's backbone class; SSDLite takes any backbone, so this loads
        the saved task config directly.

        Example:
        ```python
        detector.save_to_preset("my_ssdlite")
        detector = heads.SSDLiteObjectDetector.from_preset("my_ssdlite")
        ```
        """
        loader = get_preset_loader(preset)
        return loader.load_task(cls, load_weights, True, **kwargs)


def clean_detection_targets(targets, num_classes, image_size, bounding_box_format="xyxy"):
    """Checks and cleans padded detection targets (numpy).

    Boxes are clipped to the image; boxes with no area after clipping become
    padding (-1 box, label -1). Labels must be -1 (padding) or in
    `[0, num_classes)`.

    Example:
    ```python
    clean_detection_targets({"boxes": [[[-5, 10, 20, 90]]], "labels": [[0]]}, 3, 64)
    # boxes [[[0, 10, 20, 64]]], labels [[0]]
    ```
    """
    height, width = check_image_size(image_size)
    boxes = np.array(keras.ops.convert_to_numpy(targets["boxes"]), dtype="float32")
    labels = np.array(keras.ops.convert_to_numpy(targets["labels"]))
    if boxes.shape[-1] != 4 or boxes.shape[:-1] != labels.shape:
        raise ValueError(
            f"`boxes` must have shape labels.shape + (4,); got boxes {boxes.shape} and labels {labels.shape}."
        )
    if labels.size and np.any(np.round(labels) != labels):
        raise ValueError(f"`labels` must be integers, got {labels[np.round(labels) != labels][:5].tolist()}.")
    labels = labels.astype("int32")
    bad = labels[(labels >= num_classes) | (labels < -1)]
    if bad.size:
        raise ValueError(
            f"labels must be in [0, {num_classes}) or -1 for padding; got {int(bad[0])} (num_classes={num_classes})."
        )
    padding = labels < 0
    xyxy = np.array(
        bounding_boxes.convert_format(boxes, source=bounding_box_format, target="xyxy", height=height, width=width)
    )
    xyxy[..., 0::2] = np.clip(xyxy[..., 0::2], 0, width)
    xyxy[..., 1::2] = np.clip(xyxy[..., 1::2], 0, height)
    degenerate = (xyxy[..., 2] <= xyxy[..., 0]) | (xyxy[..., 3] <= xyxy[..., 1])
    drop = padding | degenerate
    boxes = np.array(
        bounding_boxes.convert_format(xyxy, source="xyxy", target=bounding_box_format, height=height, width=width)
    )
    boxes[drop] = -1.0
    labels[drop] = -1
    return {"boxes": boxes.astype("float32"), "labels": labels}


def create_ssdlite(backbone, num_classes, image_size=320, bounding_box_format="xyxy", **kwargs):
    """Builds an `SSDLiteObjectDetector` on a preset name or a backbone.

    Args:
        backbone: a preset name (e.g. `"mobilenetv3_large_100"`; loaded with
            `keras_hub.models.Backbone.from_preset`) or any
            `FeaturePyramidBackbone` instance.
        num_classes: number of object classes.
        image_size: int or (height, width) of the detector's inputs.
        bounding_box_format: format of targets and predictions.
        **kwargs: `load_weights` and other `from_preset` arguments go to the
            backbone when it is a name; the rest to `SSDLiteObjectDetector`.

    Example:
    ```python
    import heads
    detector = heads.create_ssdlite("mobilenetv4_conv_small", num_classes=3,
                                    image_size=224, load_weights=False)
    ```
    """
    num_classes = check_positive_int("num_classes", num_classes)
    image_size = check_image_size(image_size)
    detector_args = set(SSDLiteObjectDetector.__init__.__code__.co_varnames) | {"name"}
    detector_kwargs = {k: v for k, v in kwargs.items() if k in detector_args}
    backbone_kwargs = {k: v for k, v in kwargs.items() if k not in detector_args}
    if isinstance(backbone, str):
        import keras_hub

        backbone = keras_hub.models.Backbone.from_preset(backbone, **backbone_kwargs)
    elif backbone_kwargs:
        raise TypeError(
            f"Unexpected arguments {sorted(backbone_kwargs)}: preset arguments only apply when "
            "`backbone` is a preset name."
        )
    return SSDLiteObjectDetector(
        backbone,
        num_classes=num_classes,
        image_size=image_size,
        bounding_box_format=bounding_box_format,
        **detector_kwargs,
    )
