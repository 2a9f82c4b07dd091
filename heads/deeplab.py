"""DeepLabV3+ semantic segmentation on any keras-hub feature pyramid, mobile-sized.

DeepLabV3+ (Chen et al., 2018): atrous spatial pyramid pooling (ASPP) on the
deepest feature map, a decoder that upsamples it to stride 4 and fuses the
projected stride-4 features, then per-pixel logits upsampled to the input.
As in the paper's mobile variants, every 3x3 convolution of the head is
depthwise-separable (the ASPP's atrous branches included).

The head reads only `backbone.pyramid_outputs["P2"]` (stride 4) and `["P5"]`
(the deepest map: stride 32, or 16 / 8 for a MobileNet backbone built with
`output_stride`). The atrous rates follow the deepest map's real stride:
(6, 12, 18) at stride 16, doubled at 8, halved at 32.

keras-hub's own `DeepLabV3Backbone` / `DeepLabV3ImageSegmenter` also accept a
MobileNet backbone as `image_encoder`; this head differs in being
depthwise-separable throughout (the keras-hub one uses full 3x3 atrous
convolutions), in following the backbone's output stride, and in taking raw
0..255 pixels.
"""

import math

import keras
from keras import ops

# Registers the MobileNet backbones and presets, so that saved segmenters on
# them load and preset names resolve.
import mnet_backbones  # noqa: F401
from heads.losses import IGNORE_LABEL, MaskedSparseCrossentropy
from heads.preprocessing import pixel_normalizer
from heads.pyramid import check_pyramid_backbone, pyramid_model, resolve_backbone, split_task_kwargs
from heads.tasks import PyramidImageSegmenter
from mnet_backbones.constants import IMAGENET_PIXEL_MEAN, IMAGENET_PIXEL_VARIANCE
from mnet_backbones.keras_hub_internals import load_task_preset
from mnet_backbones.layers import ConvBNAct, map_size
from mnet_backbones.validation import check_image_size, check_positive_int

# DeepLabV3's atrous rates at output stride 16 (Chen et al., 2017).
ATROUS_RATES_AT_16 = (6, 12, 18)


def atrous_rates_for(output_stride):
    """DeepLab's ASPP rates for a deepest map at `output_stride`.

    Example:
    ```python
    atrous_rates_for(16)  # (6, 12, 18)
    atrous_rates_for(8)   # (12, 24, 36)
    atrous_rates_for(32)  # (3, 6, 9)
    ```
    """
    output_stride = check_positive_int("output_stride", output_stride)
    return tuple(max(1, rate * 16 // output_stride) for rate in ATROUS_RATES_AT_16)


def conv_bn_relu(filters, kernel_size=1, separable=False, dilation_rate=1, bn_momentum=0.9, dtype=None, name=None):
    """The head's convolution: full, or depthwise-separable, each part with BatchNorm and ReLU.

    A list of `ConvBNAct` layers, to apply in turn: one `kernel_size`
    convolution, or with `separable=True` a depthwise `kernel_size` one
    (dilated by `dilation_rate`) then a 1x1 one to `filters`. Stride 1,
    "same" padding: the map keeps its size. Keras' defaults otherwise
    (Glorot initialisation, BatchNorm epsilon 1e-3); BatchNorm momentum 0.9
    as in the backbones, because from-scratch training runs are short and
    Keras' 0.99 leaves the moving statistics far behind the weights.

    Example:
    ```python
    x = keras.ops.ones((1, 16, 16, 32))
    for layer in conv_bn_relu(64, kernel_size=3, separable=True, dilation_rate=6):
        x = layer(x)
    x.shape  # (1, 16, 16, 64)
    ```
    """
    filters = check_positive_int("filters", filters)
    kernel_size = check_positive_int("kernel_size", kernel_size)
    dilation_rate = check_positive_int("dilation_rate", dilation_rate)
    common = dict(
        activation="relu",
        kernel_initializer="glorot_uniform",
        padding="same",
        bn_epsilon=1e-3,
        bn_momentum=bn_momentum,
        dtype=dtype,
    )
    if not separable:
        return [ConvBNAct(filters, kernel_size, dilation_rate=dilation_rate, name=name, **common)]
    return [
        ConvBNAct(None, kernel_size, depthwise=True, dilation_rate=dilation_rate, name=f"{name}_depthwise", **common),
        ConvBNAct(filters, 1, name=f"{name}_pointwise", **common),
    ]


def _apply(layers, x, training=None):
    for layer in layers:
        x = layer(x, training=training)
    return x


@keras.saving.register_keras_serializable(package="heads")
class AtrousSpatialPyramidPooling(keras.layers.Layer):
    """ASPP with depthwise-separable atrous branches and image pooling.

    Branches, each ending in `filters` channels: a 1x1 convolution, one
    separable 3x3 convolution per rate in `atrous_rates`, and the image
    pooling branch (global mean, 1x1 convolution, broadcast back over the
    map). They are concatenated and projected by a 1x1 convolution, with
    dropout during training.

    Example:
    ```python
    aspp = AtrousSpatialPyramidPooling(128, atrous_rates=(6, 12, 18))
    aspp(keras.ops.ones((2, 8, 8, 960))).shape  # (2, 8, 8, 128)
    ```
    """

    def __init__(self, filters=128, atrous_rates=ATROUS_RATES_AT_16, dropout=0.1, **kwargs):
        super().__init__(**kwargs)
        self.filters = check_positive_int("filters", filters)
        self.atrous_rates = tuple(check_positive_int("atrous_rates", r) for r in atrous_rates)
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"`dropout` must be in [0, 1), got {dropout!r}.")
        self.dropout = float(dropout)
        dtype = self.dtype_policy
        # Each branch a list of layers applied in turn: one for the 1x1 branch,
        # depthwise and pointwise for the separable atrous ones.
        self.branches = [conv_bn_relu(self.filters, 1, dtype=dtype, name="branch_1x1")] + [
            conv_bn_relu(self.filters, 3, separable=True, dilation_rate=rate, dtype=dtype, name=f"branch_rate{rate}")
            for rate in self.atrous_rates
        ]
        (self.pooling_conv,) = conv_bn_relu(self.filters, 1, dtype=dtype, name="image_pooling")
        (self.projection,) = conv_bn_relu(self.filters, 1, dtype=dtype, name="projection")
        self.dropout_layer = keras.layers.Dropout(self.dropout, dtype=dtype, name="dropout")

    def build(self, input_shape):
        shape = tuple(input_shape)
        for branch in self.branches:
            branch_shape = shape
            for layer in branch:
                layer.build(branch_shape)
                branch_shape = layer.compute_output_shape(branch_shape)
        self.pooling_conv.build((shape[0], 1, 1, shape[-1]))
        self.projection.build(shape[:-1] + (self.filters * (len(self.branches) + 1),))

    def call(self, inputs, training=None):
        outputs = [_apply(branch, inputs, training=training) for branch in self.branches]
        pooled = self.pooling_conv(ops.mean(inputs, axis=(1, 2), keepdims=True), training=training)
        # Broadcast (B, 1, 1, F) over the map by a multiply with ones: a
        # constant where the map's size is known (as in an exported file,
        # where XNNPACK then runs it), else ones of the run-time size.
        _, height, width = map_size(inputs)
        outputs.append(pooled * ops.ones((1, height, width, 1), dtype=pooled.dtype))
        x = self.projection(ops.concatenate(outputs, axis=-1), training=training)
        return self.dropout_layer(x, training=training)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.filters,)

    def get_config(self):
        config = super().get_config()
        config.update(filters=self.filters, atrous_rates=list(self.atrous_rates), dropout=self.dropout)
        return config


@keras.saving.register_keras_serializable(package="heads")
class BilinearResize(keras.layers.Layer):
    """Resizes maps to a fixed `(height, width)`, bilinearly (half-pixel centres).

    Example:
    ```python
    BilinearResize((64, 48))(keras.ops.ones((1, 16, 12, 5))).shape  # (1, 64, 48, 5)
    ```
    """

    def __init__(self, size, **kwargs):
        super().__init__(**kwargs)
        self.size = tuple(check_positive_int("size", side) for side in size)

    def call(self, inputs):
        return ops.image.resize(inputs, self.size, interpolation="bilinear")

    def compute_output_shape(self, input_shape):
        return (input_shape[0],) + self.size + (input_shape[-1],)

    def get_config(self):
        config = super().get_config()
        config.update(size=list(self.size))
        return config


def segmentation_metrics(num_classes):
    """The default metrics: mean IoU of the logits' argmax, ignoring label 255.

    Example:
    ```python
    (mean_iou,) = segmentation_metrics(4)
    ```
    """
    return [keras.metrics.MeanIoU(num_classes, sparse_y_pred=False, ignore_class=IGNORE_LABEL, name="mean_iou")]


def _deepest_stride(image_size, deepest_map_size):
    """The real stride of a map, as the power of two nearest `image / map`."""
    ratio = image_size[0] / max(1, deepest_map_size[0])
    return 2 ** int(round(math.log2(ratio)))


@keras.saving.register_keras_serializable(package="heads")
class DeepLabV3PlusSegmenter(PyramidImageSegmenter):
    """DeepLabV3+ on a feature-pyramid backbone: per-pixel class logits.

    Maps images `(batch, height, width, 3)` in 0..255 (normalised inside
    with ImageNet statistics) to logits `(batch, height, width, num_classes)`.
    The ASPP runs on `P5`; its output is upsampled to `P2` (stride 4),
    concatenated with `P2` projected to `low_level_filters` channels, refined
    by two separable 3x3 convolutions and classified per pixel; the logits
    are upsampled bilinearly to the input size.

    `compile()` defaults: Adam (1e-3), sparse categorical cross-entropy from
    logits that ignores label 255, and mean IoU (also ignoring 255). Train
    with `fit(images, masks)`, masks `(batch, height, width, 1)` integer.

    Args:
        backbone: a `keras_hub.models.FeaturePyramidBackbone` with `"P2"` and
            `"P5"` in its `pyramid_outputs`.
        num_classes: classes, background included.
        image_size: int or `(height, width)`, each at least 32.
        aspp_filters: channels of every ASPP branch and of its output.
        atrous_rates: ASPP rates; None: DeepLab's, scaled to the real stride
            of `P5` (see `atrous_rates_for`).
        low_level_filters: channels `P2` is projected to.
        decoder_filters: channels of the decoder's separable convolutions.
        dropout: dropout after the ASPP projection.
        pixel_mean / pixel_variance: per-channel input normalisation.
        preprocessor: optional keras-hub preprocessor.

    Example:
    ```python
    import keras_hub, numpy as np
    import heads, mnet_backbones

    backbone = keras_hub.models.Backbone.from_preset(
        "mobilenetv4_conv_small", load_weights=False, output_stride=16
    )
    segmenter = heads.DeepLabV3PlusSegmenter(backbone, num_classes=4, image_size=64)
    segmenter.compile()
    images = np.random.uniform(0, 255, (2, 64, 64, 3))
    masks = np.random.randint(0, 4, (2, 64, 64, 1))
    segmenter.fit(images, masks, epochs=1, verbose=0)
    segmenter.predict(images, verbose=0).shape  # (2, 64, 64, 4)
    ```
    """

    backbone_cls = None
    preprocessor_cls = None

    def __init__(
        self,
        backbone,
        num_classes,
        image_size=512,
        aspp_filters=128,
        atrous_rates=None,
        low_level_filters=48,
        decoder_filters=128,
        dropout=0.1,
        pixel_mean=IMAGENET_PIXEL_MEAN,
        pixel_variance=IMAGENET_PIXEL_VARIANCE,
        preprocessor=None,
        dtype=None,
        **kwargs,
    ):
        check_pyramid_backbone(backbone, ("P2", "P5"), "DeepLabV3+")
        num_classes = check_positive_int("num_classes", num_classes)
        image_size = check_image_size(image_size)
        head_dtype = dtype or backbone.dtype_policy

        # === Layers ===
        self.backbone = backbone
        self.preprocessor = preprocessor
        self.num_classes = num_classes  # before the functional init, whose compile() reads it
        self.normalizer = pixel_normalizer(pixel_mean, pixel_variance, head_dtype)
        # The head sees only the pyramid, through a model on the backbone's inputs.
        self.feature_extractor = pyramid_model(backbone, ("P2", "P5"))

        # === Functional model ===
        inputs = keras.Input(shape=image_size + (3,), name="images")
        pyramid = self.feature_extractor(self.normalizer(inputs))
        low_level, deepest = pyramid["P2"], pyramid["P5"]
        if atrous_rates is None:
            atrous_rates = atrous_rates_for(_deepest_stride(image_size, deepest.shape[1:3]))
        self.aspp = AtrousSpatialPyramidPooling(
            aspp_filters, atrous_rates=atrous_rates, dropout=dropout, dtype=head_dtype, name="aspp"
        )
        (self.low_level_projection,) = conv_bn_relu(low_level_filters, 1, dtype=head_dtype, name="low_level_projection")
        self.decoder_convs = [
            layer
            for i in range(2)
            for layer in conv_bn_relu(decoder_filters, 3, separable=True, dtype=head_dtype, name=f"decoder_conv{i}")
        ]
        self.classifier = keras.layers.Conv2D(num_classes, 1, dtype=head_dtype, name="classifier")
        x = self.aspp(deepest)
        x = BilinearResize(tuple(low_level.shape[1:3]), dtype=head_dtype, name="upsample_to_P2")(x)
        x = keras.layers.Concatenate(axis=-1, dtype=head_dtype, name="decoder_concat")(
            [x, self.low_level_projection(low_level)]
        )
        for conv in self.decoder_convs:
            x = conv(x)
        x = self.classifier(x)
        outputs = BilinearResize(image_size, dtype="float32", name="logits")(x)
        super().__init__(inputs=inputs, outputs=outputs, dtype=dtype, **kwargs)

        # === Config ===
        self.image_size = image_size
        self.aspp_filters = self.aspp.filters
        self.atrous_rates = self.aspp.atrous_rates
        self.low_level_filters = int(low_level_filters)
        self.decoder_filters = int(decoder_filters)
        self.dropout = float(dropout)
        self.pixel_mean = tuple(float(v) for v in pixel_mean)
        self.pixel_variance = tuple(float(v) for v in pixel_variance)

    def compile(self, optimizer="auto", loss="auto", *, metrics="auto", **kwargs):
        """Configures training; "auto" picks the segmentation defaults.

        Defaults: `Adam(1e-3)`; `heads.losses.MaskedSparseCrossentropy()`
        (softmax cross-entropy averaged over the pixels not labelled 255,
        counted over the global batch on several devices);
        `MeanIoU(num_classes, ignore_class=255)` on the argmax of the logits.
        """
        if optimizer == "auto":
            optimizer = keras.optimizers.Adam(1e-3)
        if loss == "auto":
            loss = MaskedSparseCrossentropy(ignore_class=IGNORE_LABEL)
        if metrics == "auto":
            metrics = segmentation_metrics(self.num_classes)
        # Skip ImageSegmenter.compile: its defaults are one-hot (categorical) ones.
        keras.Model.compile(self, optimizer=optimizer, loss=loss, metrics=metrics, **kwargs)

    def compile_from_config(self, config):
        # compile() has its own signature, so Keras does not restore a saved
        # compile by itself; do it here, optimizer state included.
        self.compile(**keras.saving.deserialize_keras_object(config))
        if self.built:
            self.optimizer.build(self.trainable_variables)

    def get_config(self):
        config = super().get_config()
        config.update(
            num_classes=self.num_classes,
            image_size=list(self.image_size),
            aspp_filters=self.aspp_filters,
            atrous_rates=list(self.atrous_rates),
            low_level_filters=self.low_level_filters,
            decoder_filters=self.decoder_filters,
            dropout=self.dropout,
            pixel_mean=list(self.pixel_mean),
            pixel_variance=list(self.pixel_variance),
        )
        return config

    @classmethod
    def from_preset(cls, preset, load_weights=True, **kwargs):
        """Loads a segmenter saved with `save_to_preset`.

        `Task.from_preset` looks for a task subclass registered for the
        preset's backbone class; this head takes any backbone, so this loads
        the saved task config directly.

        Example:
        ```python
        segmenter.save_to_preset("my_deeplab")
        segmenter = heads.DeepLabV3PlusSegmenter.from_preset("my_deeplab")
        ```
        """
        return load_task_preset(cls, preset, load_weights, **kwargs)


def create_deeplabv3plus(backbone, num_classes, image_size=512, output_stride=16, **kwargs):
    """Builds a `DeepLabV3PlusSegmenter` on a preset name or a backbone.

    Args:
        backbone: a preset name (e.g. `"mobilenetv4_conv_small"`; loaded with
            `keras_hub.models.Backbone.from_preset(name, output_stride=...)`)
            or any `FeaturePyramidBackbone` instance. An instance with an
            `output_stride` option other than `output_stride` is rebuilt at
            that stride with the same weights; other backbones are used as
            they are, and the atrous rates follow the real stride of `P5`.
        num_classes: classes, background included.
        image_size: int or (height, width) of the segmenter's inputs.
        output_stride: 32, 16 (DeepLab's default) or 8: the stride of `P5`.
        **kwargs: `load_weights` and other `from_preset` arguments go to the
            backbone when it is a name; the rest to `DeepLabV3PlusSegmenter`.

    Example:
    ```python
    import heads
    segmenter = heads.create_deeplabv3plus(
        "mobilenetv4_conv_small", num_classes=4, image_size=128, load_weights=False
    )
    segmenter.output_shape  # (None, 128, 128, 4)
    ```
    """
    segmenter_kwargs, backbone_kwargs = split_task_kwargs(DeepLabV3PlusSegmenter, kwargs)
    backbone = resolve_backbone(backbone, backbone_kwargs, output_stride=output_stride)
    # A preset is loaded at `output_stride`; an instance at another stride is rebuilt.
    if getattr(backbone, "output_stride", output_stride) != output_stride:
        weights = backbone.get_weights()
        backbone = backbone.__class__.from_config({**backbone.get_config(), "output_stride": output_stride})
        backbone.set_weights(weights)
    return DeepLabV3PlusSegmenter(backbone, num_classes=num_classes, image_size=image_size, **segmenter_kwargs)
