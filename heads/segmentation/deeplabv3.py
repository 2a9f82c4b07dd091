"""DeepLabV3 (Chen et al., 2017) with an optional auxiliary FCN head, as torchvision builds it on MobileNetV3.

The head reads two maps of the backbone by name: `high_feature` (default
`"final"`, the last conv's output: 960 channels at stride 16 on a dilated
MobileNetV3-Large) and, for the auxiliary head, `low_feature` (default
`"blocks.2.0"`, the first stride-8 block: 40 channels).

- ASPP on the high map: a 1x1 convolution, one 3x3 atrous convolution per
  rate (12, 24, 36), and image pooling (global mean, 1x1 convolution,
  broadcast back), each to 256 channels with BatchNorm and ReLU;
  concatenated, projected by a 1x1 convolution (BatchNorm, ReLU) and
  dropped out (0.5) in training. Then a 3x3 convolution (BatchNorm, ReLU)
  and a 1x1 convolution with bias to the classes.
- The auxiliary FCN head on the low map: a 3x3 convolution to a quarter of
  its channels (BatchNorm, ReLU, dropout 0.1) and a 1x1 convolution with
  bias to the classes. torchvision trains with its loss at weight 0.5.

Both logits are resized bilinearly (half-pixel centres) to the image size.
Unlike the mobile DeepLabV3+ of `heads.segmentation.deeplabv3plus`, every 3x3 convolution is a
full one, as in the paper and in torchvision, so that torchvision's
checkpoints load (`DeepLabV3Segmenter.from_preset`).
"""

import keras

from heads.configs import config_entries
from heads.segmentation.layers import (
    DEEPLABV3_ATROUS_RATES,
    TORCH_BN_EPSILON,
    DeepLabV3ASPP,
    FCNHead,
    ResizeToMatch,
    check_dropout,
    head_conv,
)
from heads.segmentation.segmenter import TapSegmenter, check_image_size_or_none, create_segmenter
from heads.segmentation.torchvision import conv_slots
from mnet_backbones.constants import IMAGENET_PIXEL_MEAN, IMAGENET_PIXEL_VARIANCE
from mnet_backbones.convert.mapping import conv_bn_slots
from mnet_backbones.validation import check_positive_int


@keras.saving.register_keras_serializable(package="heads")
class DeepLabV3Segmenter(TapSegmenter):
    """DeepLabV3 with an optional auxiliary FCN head: per-pixel class logits at the image size.

    Maps images `(batch, height, width, 3)` in 0..255 (normalised inside,
    by default with ImageNet's statistics, as torchvision's checkpoints
    expect) to logits `(batch, height, width, num_classes)`. With
    `image_size=None` any size is taken (as torchvision's model does);
    `evaluate_segmentation` and the LiteRT export need a fixed one.

    With `aux_head=True` an FCN head on `low_feature` also predicts classes:
    `segmenter.aux_model` maps images to its logits (torchvision's `"aux"`
    output), and `compile()` adds its loss, at `aux_loss_weight` (0.5), to
    the main one in training. The segmenter's own output stays the main
    logits, so that `predict` and `evaluate_segmentation` see one map. (The
    auxiliary loss runs the backbone a second time in each training step.)

    `compile()` defaults: Adam (1e-3), sparse categorical cross-entropy from
    logits that ignores label 255, and mean IoU (also ignoring 255).

    Args:
        backbone: a keras-hub feature-pyramid backbone with the maps
            `high_feature` (and `low_feature` with `aux_head`) among its
            `feature_taps` or `pyramid_outputs`.
        num_classes: classes, background included.
        image_size: None (any size), an int or `(height, width)`.
        aux_head: add the auxiliary FCN head.
        aspp_filters: channels of the ASPP branches, of its output and of
            the 3x3 convolution after it.
        atrous_rates: the ASPP's 3x3 dilation rates.
        dropout: dropout after the ASPP projection.
        aux_dropout: dropout inside the auxiliary head.
        high_feature / low_feature: the backbone maps the heads read.
        bn_epsilon: the head's BatchNorm epsilon (PyTorch's 1e-5).
        pixel_mean / pixel_variance: per-channel input normalisation, on
            0..255 pixels.
        class_names: optional names of the classes (a checkpoint's travel
            with it), saved with the model.
        preprocessor: optional keras-hub preprocessor.

    Example:
    ```python
    import numpy as np
    import heads, mnet_backbones

    backbone = mnet_backbones.MobileNetBackbone("mobilenetv3_large", output_stride=16)
    segmenter = heads.DeepLabV3Segmenter(
        backbone, num_classes=4, image_size=64, aspp_filters=32, high_feature="P5", low_feature="P3", aux_head=True
    )
    segmenter.compile()  # the auxiliary head's loss at weight 0.5
    images = np.random.uniform(0, 255, (2, 64, 64, 3))
    segmenter.fit(images, np.random.randint(0, 4, (2, 64, 64, 1)), epochs=1, verbose=0)
    segmenter.predict(images, verbose=0).shape  # (2, 64, 64, 4)
    segmenter.aux_model.predict(images, verbose=0).shape  # (2, 64, 64, 4): torchvision's "aux" output
    ```
    """

    torchvision_builder = "deeplabv3_mobilenet_v3_large"

    def __init__(
        self,
        backbone,
        num_classes,
        image_size=None,
        aux_head=False,
        aspp_filters=256,
        atrous_rates=DEEPLABV3_ATROUS_RATES,
        dropout=0.5,
        aux_dropout=0.1,
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
        self.aux_head = aux_head = bool(aux_head)  # before the functional init, whose compile() reads it

        # === Layers ===
        head_dtype = self._set_up(backbone, num_classes, image_size, pixel_mean, pixel_variance, preprocessor, dtype)
        taps = (high_feature, low_feature) if aux_head else (high_feature,)
        inputs, features = self._read_taps("DeepLabV3", taps, high_feature, low_feature, bn_epsilon, class_names)
        self.aspp = DeepLabV3ASPP(
            aspp_filters,
            atrous_rates=atrous_rates,
            dropout=dropout,
            bn_epsilon=bn_epsilon,
            dtype=head_dtype,
            name="aspp",
        )
        self.head_conv = head_conv(aspp_filters, 3, bn_epsilon=bn_epsilon, dtype=head_dtype, name="head_conv")
        self.classifier = keras.layers.Conv2D(num_classes, 1, dtype=head_dtype, name="classifier")
        low_channels = self.feature_extractor.output[low_feature].shape[-1] if aux_head else None
        self.aux_classifier = (
            FCNHead(
                num_classes,
                max(1, low_channels // 4),
                dropout=aux_dropout,
                bn_epsilon=bn_epsilon,
                dtype=head_dtype,
                name="aux_classifier",
            )
            if aux_head
            else None
        )

        # === Functional model ===
        x = self.classifier(self.head_conv(self.aspp(features[high_feature])))
        outputs = ResizeToMatch(dtype="float32", name="logits")(x, inputs)
        aux_outputs = None
        if aux_head:
            aux = self.aux_classifier(features[low_feature])
            aux_outputs = ResizeToMatch(dtype="float32", name="aux_logits")(aux, inputs)
        super().__init__(inputs=inputs, outputs=outputs, dtype=dtype, **kwargs)
        # Shares every layer with the segmenter; its own output is the auxiliary logits.
        self.aux_model = keras.Model(inputs, aux_outputs, name="aux_model") if aux_head else None

        # === Config ===
        self.aspp_filters = self.aspp.filters
        self.atrous_rates = self.aspp.atrous_rates
        self.dropout = self.aspp.dropout
        self.aux_dropout = check_dropout(aux_dropout, "aux_dropout")

    def compile(self, optimizer="auto", loss="auto", *, metrics="auto", aux_loss_weight="auto", **kwargs):
        """Configures training; "auto" picks the segmentation defaults.

        Defaults as `Segmenter.compile`; with an auxiliary head its loss
        (the same loss on its logits) is added at `aux_loss_weight`, "auto"
        being torchvision's 0.5 (0 without the head).
        """
        if aux_loss_weight == "auto":
            aux_loss_weight = 0.5 if getattr(self, "aux_head", False) else 0.0
        if isinstance(aux_loss_weight, bool) or not isinstance(aux_loss_weight, (int, float)) or aux_loss_weight < 0:
            raise ValueError(f"`aux_loss_weight` must be a number >= 0 or 'auto', got {aux_loss_weight!r}.")
        if aux_loss_weight and not getattr(self, "aux_head", False):
            raise ValueError("`aux_loss_weight` needs the auxiliary head: build the segmenter with `aux_head=True`.")
        if aux_loss_weight and loss != "auto" and not callable(loss):
            raise ValueError(
                f"With the auxiliary loss, `loss` must be a loss object or function (applied to both heads' "
                f"logits), got {loss!r}; or pass aux_loss_weight=0."
            )
        self.aux_loss_weight = float(aux_loss_weight)
        super().compile(optimizer=optimizer, loss=loss, metrics=metrics, **kwargs)

    def get_compile_config(self):
        config = super().get_compile_config()
        if config is not None:
            config["aux_loss_weight"] = self.aux_loss_weight
        return config

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        loss = super().compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=training)
        if training and self.aux_loss_weight and self.aux_model is not None and y is not None:
            aux_logits = self.aux_model(x, training=True)
            loss = loss + self.aux_loss_weight * self.loss(y, aux_logits, sample_weight)
        return loss

    def get_config(self):
        names = ("aux_head", "aspp_filters", "atrous_rates", "dropout", "aux_dropout")
        return {**super().get_config(), **config_entries(self, *names)}

    # === torchvision checkpoints ===

    @classmethod
    def torchvision_head_config(cls, state_dict, source_name):
        """The constructor arguments a torchvision state_dict implies: classes and the auxiliary head."""
        key = "classifier.4.bias"
        if key not in state_dict:
            raise ValueError(f"{source_name}: {key!r} (the classifier's bias) is missing.")
        return {"num_classes": int(state_dict[key].shape[0]), "aux_head": "aux_classifier.4.bias" in state_dict}

    @classmethod
    def torchvision_head_config_of_preset(cls, row):
        return {"num_classes": len(row["class_names"]), "aux_head": row["aux"]}

    def torchvision_slots(self):
        """`(variable, torchvision key, transform)` for every head weight, in torchvision's names."""
        slots = []
        for i, branch in enumerate(self.aspp.branches):
            slots += conv_bn_slots(branch, f"classifier.0.convs.{i}.0", f"classifier.0.convs.{i}.1")
        # The pooling branch's Sequential starts with its AdaptiveAvgPool2d.
        pooling = f"classifier.0.convs.{len(self.aspp.branches)}"
        slots += conv_bn_slots(self.aspp.pooling_conv, f"{pooling}.1", f"{pooling}.2")
        slots += conv_bn_slots(self.aspp.projection, "classifier.0.project.0", "classifier.0.project.1")
        slots += conv_bn_slots(self.head_conv, "classifier.1", "classifier.2")
        slots += conv_slots(self.classifier, "classifier.4")
        if self.aux_classifier is not None:
            head = self.aux_classifier
            slots += conv_bn_slots(head.conv, "aux_classifier.0", "aux_classifier.1")
            slots += conv_slots(head.classifier, "aux_classifier.4")
        return slots


def create_deeplabv3(backbone, num_classes=None, image_size=None, **kwargs):
    """Builds a `DeepLabV3Segmenter`, or loads torchvision's pretrained one by its built-in name.

    Args:
        backbone: `"deeplabv3_mobilenetv3_large_voc"` (torchvision's
            checkpoint, downloaded once; `num_classes` must then be None or
            21), a backbone preset name (loaded at output stride 16 with
            `keras_hub.models.Backbone.from_preset`), or a backbone instance.
        num_classes: classes, background included.
        image_size: None (any size), an int or `(height, width)`.
        **kwargs: `load_weights` and other `from_preset` arguments go to the
            backbone when it is a name; the rest to `DeepLabV3Segmenter`.

    Example:
    ```python
    import heads
    segmenter = heads.create_deeplabv3(
        "mobilenetv3_large_100", num_classes=4, image_size=64, load_weights=False,
        high_feature="P5", low_feature="P3", aux_head=True,
    )
    segmenter.output_shape  # (None, 64, 64, 4)
    ```
    """
    return create_segmenter(DeepLabV3Segmenter, backbone, num_classes, image_size, kwargs)


__all__ = ["DeepLabV3Segmenter", "create_deeplabv3"]
