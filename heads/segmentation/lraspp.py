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

from heads.segmentation.layers import TORCH_BN_EPSILON, LRASPPHead, ResizeToMatch
from heads.segmentation.segmenter import TapSegmenter, check_image_size_or_none, create_segmenter
from heads.segmentation.torchvision import conv_slots
from mnet_backbones.constants import IMAGENET_PIXEL_MEAN, IMAGENET_PIXEL_VARIANCE
from mnet_backbones.convert.mapping import conv_bn_slots
from mnet_backbones.validation import check_positive_int


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
    # image_size None: any size, as torchvision's model takes.
    segmenter = heads.LRASPPSegmenter(backbone, num_classes=4, high_feature="P5", low_feature="P3")
    segmenter.compile()
    pixels, labels = np.random.uniform(0, 255, (2, 64, 64, 3)), np.random.randint(0, 4, (2, 64, 64, 1))
    segmenter.fit(pixels, labels, epochs=1, verbose=0)
    segmenter.predict(np.random.uniform(0, 255, (1, 72, 96, 3)), verbose=0).shape  # (1, 72, 96, 4)
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

        # === Layers ===
        head_dtype = self._set_up(backbone, num_classes, image_size, pixel_mean, pixel_variance, preprocessor, dtype)
        taps = (high_feature, low_feature)
        inputs, features = self._read_taps("LR-ASPP", taps, high_feature, low_feature, bn_epsilon, class_names)
        self.head = LRASPPHead(
            num_classes, inter_filters=inter_filters, bn_epsilon=bn_epsilon, dtype=head_dtype, name="lraspp"
        )

        # === Functional model ===
        x = self.head([features[low_feature], features[high_feature]])
        outputs = ResizeToMatch(dtype="float32", name="logits")(x, inputs)
        super().__init__(inputs=inputs, outputs=outputs, dtype=dtype, **kwargs)

        # === Config ===
        self.inter_filters = self.head.inter_filters

    def get_config(self):
        return {**super().get_config(), "inter_filters": self.inter_filters}

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


__all__ = ["LRASPPSegmenter", "create_lraspp"]
