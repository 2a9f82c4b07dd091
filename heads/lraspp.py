"""Lite R-ASPP (MobileNetV3 paper, section 6.4) as torchvision builds it.

The head reads two maps of the backbone by name: `high_feature` (default
`"final"`: 960 channels at stride 16 on a dilated MobileNetV3-Large) and
`low_feature` (default `"blocks.2.0"`, the first stride-8 block: 40
channels).

- On the high map: a 1x1 convolution to `inter_filters` (128) channels with
  BatchNorm and ReLU, multiplied by a per-channel gate: global mean, 1x1
  convolution to the same channels (no bias, no BatchNorm), sigmoid (the
  paper's large-kernel pooling is global pooling in torchvision's
  inference form); the product resized bilinearly to the low map's size.
- Logits: a 1x1 convolution with bias of the low map plus a 1x1
  convolution with bias of that product; resized bilinearly (half-pixel
  centres) to the image size.
"""

import keras
from keras import ops

from heads.deeplabv3 import TORCH_BN_EPSILON, head_conv
from heads.preprocessing import pixel_normalizer
from heads.tap_segmenter import (
    ResizeToMatch,
    TapSegmenter,
    check_class_names,
    check_image_size_or_none,
    create_segmenter,
    tap_model,
)
from heads.torchvision_segmentation import conv_bn_slots, conv_slots
from mnet_backbones.constants import IMAGENET_PIXEL_MEAN, IMAGENET_PIXEL_VARIANCE
from mnet_backbones.validation import check_positive_int


@keras.saving.register_keras_serializable(package="heads")
class LRASPPHead(keras.layers.Layer):
    """The Lite R-ASPP head: `call([low, high])` -> logits at the low map's size.

    Example:
    ```python
    head = LRASPPHead(num_classes=21, inter_filters=128)
    low, high = keras.ops.ones((1, 28, 28, 40)), keras.ops.ones((1, 14, 14, 960))
    head([low, high]).shape  # (1, 28, 28, 21)
    ```
    """

    def __init__(self, num_classes, inter_filters=128, bn_epsilon=TORCH_BN_EPSILON, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = check_positive_int("num_classes", num_classes)
        self.inter_filters = check_positive_int("inter_filters", inter_filters)
        self.bn_epsilon = float(bn_epsilon)
        dtype = self.dtype_policy
        self.cbr = head_conv(self.inter_filters, 1, bn_epsilon=self.bn_epsilon, dtype=dtype, name="cbr")
        self.scale = keras.layers.Conv2D(self.inter_filters, 1, use_bias=False, dtype=dtype, name="scale")
        self.low_classifier = keras.layers.Conv2D(self.num_classes, 1, dtype=dtype, name="low_classifier")
        self.high_classifier = keras.layers.Conv2D(self.num_classes, 1, dtype=dtype, name="high_classifier")
        self.resize = ResizeToMatch(dtype=dtype, name="resize_to_low")

    def build(self, input_shape):
        low_shape, high_shape = (tuple(shape) for shape in input_shape)
        self.cbr.build(high_shape)
        self.scale.build((high_shape[0], 1, 1, high_shape[-1]))
        self.low_classifier.build(low_shape)
        self.high_classifier.build(low_shape[:-1] + (self.inter_filters,))

    def call(self, inputs, training=None):
        low, high = inputs
        gate = ops.sigmoid(self.scale(ops.mean(high, axis=(1, 2), keepdims=True)))
        x = self.resize(self.cbr(high, training=training) * gate, low)
        return self.low_classifier(low) + self.high_classifier(x)

    def compute_output_shape(self, input_shape):
        low_shape = tuple(input_shape[0])
        return low_shape[:-1] + (self.num_classes,)

    def get_config(self):
        config = super().get_config()
        config.update(num_classes=self.num_classes, inter_filters=self.inter_filters, bn_epsilon=self.bn_epsilon)
        return config


@keras.saving.register_keras_serializable(package="heads")
class LRASPPSegmenter(TapSegmenter):
    """Lite R-ASPP: per-pixel class logits at the image size, from two backbone maps.

    Maps images `(batch, height, width, 3)` in 0..255 (normalised inside,
    by default with ImageNet's statistics, as torchvision's checkpoints
    expect) to logits `(batch, height, width, num_classes)`. With
    `image_size=None` any size is taken (as torchvision's model does);
    `evaluate_segmentation` and the LiteRT export need a fixed one.

    `compile()` defaults: Adam (1e-3), sparse categorical cross-entropy from
    logits that ignores label 255, and mean IoU (also ignoring 255).
    `from_preset("lraspp_mobilenetv3_large_voc")` loads torchvision's
    checkpoint (downloaded once), with VOC's class names.

    Args:
        backbone: a keras-hub feature-pyramid backbone with the maps
            `high_feature` and `low_feature` among its `feature_taps` or
            `pyramid_outputs`.
        num_classes: classes, background included.
        image_size: None (any size), an int or `(height, width)`.
        inter_filters: channels of the high map's branch.
        high_feature / low_feature: the backbone maps the head reads.
        bn_epsilon: the head's BatchNorm epsilon (PyTorch's 1e-5).
        pixel_mean / pixel_variance: per-channel input normalisation, on
            0..255 pixels.
        class_names: optional names of the classes, saved with the model.
        preprocessor: optional keras-hub preprocessor.

    Example:
    ```python
    import numpy as np
    import heads, mnet_backbones

    backbone = mnet_backbones.MobileNetBackbone("mobilenetv3_large", output_stride=16)
    segmenter = heads.LRASPPSegmenter(
        backbone, num_classes=4, image_size=64, high_feature="P5", low_feature="P3"
    )
    segmenter.compile()
    images = np.random.uniform(0, 255, (2, 64, 64, 3))
    masks = np.random.randint(0, 4, (2, 64, 64, 1))
    segmenter.fit(images, masks, epochs=1, verbose=0)
    segmenter.predict(images, verbose=0).shape  # (2, 64, 64, 4)
    ```
    """

    torchvision_builder = "lraspp_mobilenet_v3_large"

    def __init__(
        self,
        backbone,
        num_classes,
        image_size=None,
        inter_filters=128,
        high_feature="final",
        low_feature="blocks.2.0",
        bn_epsilon=TORCH_BN_EPSILON,
        pixel_mean=IMAGENET_PIXEL_MEAN,
        pixel_variance=IMAGENET_PIXEL_VARIANCE,
        class_names=None,
        preprocessor=None,
        dtype=None,
        **kwargs,
    ):
        num_classes = check_positive_int("num_classes", num_classes)
        image_size = check_image_size_or_none(image_size)
        class_names = check_class_names(class_names, num_classes)
        head_dtype = dtype or backbone.dtype_policy

        # === Layers ===
        self.backbone = backbone
        self.preprocessor = preprocessor
        self.num_classes = num_classes  # before the functional init, whose compile() reads it
        self.normalizer = pixel_normalizer(pixel_mean, pixel_variance, head_dtype)
        self.feature_extractor = tap_model(backbone, (high_feature, low_feature), "LR-ASPP")
        self.head = LRASPPHead(
            num_classes, inter_filters=inter_filters, bn_epsilon=bn_epsilon, dtype=head_dtype, name="lraspp"
        )

        # === Functional model ===
        inputs = keras.Input(shape=(image_size or (None, None)) + (3,), name="images")
        features = self.feature_extractor(self.normalizer(inputs))
        x = self.head([features[low_feature], features[high_feature]])
        outputs = ResizeToMatch(dtype="float32", name="logits")(x, inputs)
        super().__init__(inputs=inputs, outputs=outputs, dtype=dtype, **kwargs)

        # === Config ===
        self.image_size = image_size
        self.inter_filters = self.head.inter_filters
        self.high_feature = high_feature
        self.low_feature = low_feature
        self.bn_epsilon = float(bn_epsilon)
        self.pixel_mean = tuple(float(v) for v in pixel_mean)
        self.pixel_variance = tuple(float(v) for v in pixel_variance)
        self.class_names = class_names

    def get_config(self):
        config = super().get_config()
        config.update(
            num_classes=self.num_classes,
            image_size=None if self.image_size is None else list(self.image_size),
            inter_filters=self.inter_filters,
            high_feature=self.high_feature,
            low_feature=self.low_feature,
            bn_epsilon=self.bn_epsilon,
            pixel_mean=list(self.pixel_mean),
            pixel_variance=list(self.pixel_variance),
            class_names=None if self.class_names is None else list(self.class_names),
        )
        return config

    # === torchvision checkpoints ===

    @classmethod
    def torchvision_head_config(cls, state_dict, source_name):
        """The constructor arguments a torchvision state_dict implies: the classes."""
        key = "classifier.low_classifier.bias"
        if key not in state_dict:
            raise ValueError(f"{source_name}: {key!r} (the low classifier's bias) is missing.")
        return {"num_classes": int(state_dict[key].shape[0])}

    @classmethod
    def torchvision_head_config_of_preset(cls, row):
        return {"num_classes": len(row["class_names"])}

    def torchvision_slots(self):
        """`(variable, torchvision key, transform)` for every head weight, in torchvision's names."""
        head = self.head
        return (
            list(conv_bn_slots(head.cbr, "classifier.cbr.0", "classifier.cbr.1"))
            # The gate's Sequential starts with its AdaptiveAvgPool2d.
            + conv_slots(head.scale, "classifier.scale.1")
            + conv_slots(head.low_classifier, "classifier.low_classifier")
            + conv_slots(head.high_classifier, "classifier.high_classifier")
        )


def create_lraspp(backbone, num_classes=None, image_size=None, **kwargs):
    """Builds an `LRASPPSegmenter`, or loads torchvision's pretrained one by its built-in name.

    Args:
        backbone: `"lraspp_mobilenetv3_large_voc"` (torchvision's checkpoint,
            downloaded once; `num_classes` must then be None or 21), a
            backbone preset name (loaded at output stride 16 with
            `keras_hub.models.Backbone.from_preset`), or a backbone instance.
        num_classes: classes, background included.
        image_size: None (any size), an int or `(height, width)`.
        **kwargs: `load_weights` and other `from_preset` arguments go to the
            backbone when it is a name; the rest to `LRASPPSegmenter`.

    Example:
    ```python
    import heads
    segmenter = heads.create_lraspp(
        "mobilenetv3_large_100", num_classes=4, image_size=64, load_weights=False,
        high_feature="P5", low_feature="P3",
    )
    segmenter.output_shape  # (None, 64, 64, 4)
    ```
    """
    return create_segmenter(LRASPPSegmenter, backbone, num_classes, image_size, kwargs)
