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

# Registers the MobileNet backbones and presets, so that saved segmenters on
# them load and preset names resolve.
import mnet_backbones  # noqa: F401
from heads.configs import config_entries
from heads.pyramid import check_pyramid_backbone, pyramid_model, resolve_backbone, split_task_kwargs
from heads.segmentation.layers import AtrousSpatialPyramidPooling, BilinearResize, atrous_rates_for, conv_bn_relu
from heads.segmentation.segmenter import Segmenter
from mnet_backbones.constants import IMAGENET_PIXEL_MEAN, IMAGENET_PIXEL_VARIANCE
from mnet_backbones.validation import check_image_size, check_positive_int


def _deepest_stride(image_size, deepest_map_size):
    """The real stride of a map, as the power of two nearest `image / map`."""
    ratio = image_size[0] / max(1, deepest_map_size[0])
    return 2 ** int(round(math.log2(ratio)))


@keras.saving.register_keras_serializable(package="heads")
class DeepLabV3PlusSegmenter(Segmenter):
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

        # === Layers ===
        head_dtype = self._set_up(backbone, num_classes, image_size, pixel_mean, pixel_variance, preprocessor, dtype)
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
        self.aspp_filters = self.aspp.filters
        self.atrous_rates = self.aspp.atrous_rates
        self.low_level_filters = int(low_level_filters)
        self.decoder_filters = int(decoder_filters)
        self.dropout = float(dropout)

    def get_config(self):
        names = ("aspp_filters", "atrous_rates", "low_level_filters", "decoder_filters", "dropout")
        return {**super().get_config(), **config_entries(self, *names)}


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


__all__ = ["DeepLabV3PlusSegmenter", "create_deeplabv3plus"]
