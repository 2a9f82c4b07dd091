"""`MobileNetImageClassifier`: a backbone plus its generation's reference head."""

import keras
import keras_hub
from keras_hub.models import Task

from mnet_backbones import weights
from mnet_backbones.backbone import MobileNetBackbone
from mnet_backbones.convert import timm
from mnet_backbones.layers import get_activation
from mnet_backbones.presets import PRESETS, check_preset_name
from mnet_backbones.validation import check_positive_int


@keras.saving.register_keras_serializable(package="mnet_backbones")
class MobileNetImageConverter(keras_hub.layers.ImageConverter):
    """Resizes and normalises images as a preset's weights expect."""

    backbone_cls = MobileNetBackbone


@keras.saving.register_keras_serializable(package="mnet_backbones")
class MobileNetImageClassifierPreprocessor(keras_hub.models.ImageClassifierPreprocessor):
    """Applies a `MobileNetImageConverter` before classification."""

    backbone_cls = MobileNetBackbone
    image_converter_cls = MobileNetImageConverter


@keras.saving.register_keras_serializable(package="mnet_backbones")
class MobileNetImageClassifier(keras_hub.models.ImageClassifier):
    """A MobileNet classifier with the reference head of its generation.

    Global average pooling, then:
    - V1 and V2: dropout and a dense layer to the classes;
    - V3: a dense layer (1280 or 1024 units, with bias), the model's
      activation, dropout, the dense classes layer;
    - V4: a dense layer (1280 units, no bias), BatchNorm, the activation,
      dropout, the dense classes layer.

    The output is logits. With 1000 classes the trainable parameter count
    equals the reference ImageNet model's.

    Args:
        backbone: a `MobileNetBackbone`.
        num_classes: number of classes.
        preprocessor: optional `MobileNetImageClassifierPreprocessor`; presets
            attach one that resizes and normalises raw images.
        dropout: dropout rate before the classes layer.
        activation: activation of the outputs (None: logits).
        head_dtype: dtype policy of the head (default: the backbone's).

    Example:
    ```python
    import numpy as np
    import mnet_backbones

    classifier = mnet_backbones.MobileNetImageClassifier.from_preset(
        "mobilenetv3_small_100", num_classes=10, load_weights=False
    )
    logits = classifier.predict(np.random.randint(0, 256, (2, 224, 224, 3)))
    logits.shape  # (2, 10)
    ```
    """

    backbone_cls = MobileNetBackbone
    preprocessor_cls = MobileNetImageClassifierPreprocessor

    def __init__(
        self,
        backbone,
        num_classes,
        preprocessor=None,
        dropout=0.0,
        activation=None,
        head_dtype=None,
        **kwargs,
    ):
        if not isinstance(backbone, MobileNetBackbone):
            raise TypeError(
                f"backbone must be a mnet_backbones.MobileNetBackbone. Received: {type(backbone).__name__}."
            )
        num_classes = check_positive_int("num_classes", num_classes)
        head_dtype = head_dtype or backbone.dtype_policy
        arch = backbone.architecture_spec

        # === Layers ===
        self.backbone = backbone
        self.preprocessor = preprocessor
        self.pooler = keras.layers.GlobalAveragePooling2D(dtype=head_dtype, name="pooler")
        self.head_dense = None
        self.head_norm = None
        if arch.head_filters:
            self.head_dense = keras.layers.Dense(
                arch.head_filters, use_bias=arch.head_bias, dtype=head_dtype, name="head_dense"
            )
            if arch.head_norm:
                self.head_norm = keras.layers.BatchNormalization(
                    epsilon=backbone.bn_epsilon,
                    momentum=backbone.bn_momentum,
                    dtype=head_dtype,
                    name="head_norm",
                )
        self.output_dropout = keras.layers.Dropout(dropout, dtype=head_dtype, name="output_dropout")
        self.output_dense = keras.layers.Dense(num_classes, activation=activation, dtype=head_dtype, name="predictions")

        # === Functional model ===
        inputs = self.backbone.input
        x = self.pooler(self.backbone(inputs))
        if self.head_dense is not None:
            x = self.head_dense(x)
            if self.head_norm is not None:
                x = self.head_norm(x)
            # Keras' own relu, relu6 and gelu are the same functions as ours;
            # hard-swish is ours, in the backbone's form (see `layers.HARD_SWISH_FORMS`).
            head_activation = arch.activation
            if head_activation == "hard_swish":
                head_activation = get_activation(head_activation, backbone.hard_swish_form)
            x = keras.layers.Activation(head_activation, dtype=head_dtype, name="head_activation")(x)
        outputs = self.output_dense(self.output_dropout(x))
        Task.__init__(self, inputs=inputs, outputs=outputs, **kwargs)

        # === Config ===
        self.num_classes = num_classes
        self.dropout = dropout
        self.activation = activation
        self.head_dtype = head_dtype
        self.pooling = "avg"

    def get_config(self):
        config = Task.get_config(self)
        config.update(
            num_classes=self.num_classes,
            dropout=self.dropout,
            activation=self.activation,
            head_dtype=(
                None
                if self.head_dtype is None
                else keras.dtype_policies.serialize(keras.dtype_policies.get(self.head_dtype))
            ),
        )
        return config

    def compile_from_config(self, config):
        # keras-hub's compile() has its own signature, so Keras does not
        # restore a saved compile; do it here, optimizer state included.
        self.compile(**keras.saving.deserialize_keras_object(config))
        if self.built:
            self.optimizer.build(self.trainable_variables)

    @classmethod
    def from_preset(cls, preset, load_weights=True, **kwargs):
        """Build a classifier from a built-in preset name or a preset folder.

        Args:
            preset: a built-in name, a keras-hub preset folder, a timm
                snapshot folder or `hf://timm/<name>.<tag>` handle (converted on
                load, with timm's head and normalisation), or another handle.
            load_weights: load pretrained weights: the ImageNet head too,
                unless `num_classes` is given (then a new, random head). For a
                built-in name they come from the cache, or are downloaded and
                converted once; `False` gives random weights offline.
            **kwargs: e.g. `num_classes`, `dropout`.
        """
        check_preset_name(preset)
        snapshot = timm.resolve_snapshot(preset)
        if snapshot is not None:
            return timm.classifier_from_snapshot(cls, snapshot, load_weights=load_weights, **kwargs)
        if load_weights and preset in PRESETS:
            preset = weights.ensure_cached(preset, cls)
        return super().from_preset(preset, load_weights=load_weights, **kwargs)
