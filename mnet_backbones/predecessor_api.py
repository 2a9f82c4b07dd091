"""The predecessor project's API: `MobileNetV1` ... `MobileNetV4` and `create_mobilenetv1` ...

The project this package grew from had one model class per generation, each
with a `MODEL_VARIANTS` dict and a `from_variant` constructor. These names
remain for code written against it, but they build nothing themselves: a predecessor
variant is another name for a built-in preset, and `from_variant` returns the
same `MobileNetImageClassifier` (softmax outputs) or, without the top,
`MobileNetBackbone` that the preset gives. Both save to and load from
`.keras` files like any other model of this package.
"""

from mnet_backbones.backbone import MobileNetBackbone
from mnet_backbones.classifier import MobileNetImageClassifier
from mnet_backbones.presets import PRESETS


def _describe(preset_name):
    preset = PRESETS[preset_name]
    return dict(
        preset=preset.name,
        architecture=preset.architecture,
        width_multiplier=preset.width_multiplier,
        resolution=preset.resolution,
        description=preset.description,
    )


class _PredecessorGeneration:
    """`MODEL_VARIANTS` and `from_variant`, shared by the four generations."""

    MODEL_VARIANTS = {}

    def __init__(self, *args, **kwargs):
        raise TypeError(
            f"{type(self).__name__} is not instantiated: call "
            f"{type(self).__name__}.from_variant(variant, ...), one of "
            f"{list(self.MODEL_VARIANTS)}."
        )

    @classmethod
    def from_variant(
        cls,
        variant,
        num_classes=1000,
        input_shape=(224, 224, 3),
        width_multiplier=None,
        include_top=True,
    ):
        """Build the model of one predecessor variant, with random weights.

        Args:
            variant: a key of `MODEL_VARIANTS`.
            num_classes: classes of the top; ignored without it.
            input_shape: `(height, width, channels)`, sizes of at least 32
                or `None`.
            width_multiplier: overrides the preset's width if given.
            include_top: `True`: a `MobileNetImageClassifier` whose outputs
                are softmax probabilities `(batch, num_classes)`. `False`: the
                `MobileNetBackbone`, whose output is the final stride-32
                feature map `(batch, height / 32, width / 32, channels)`.

        Inputs go to the network as given; normalise them as you train.
        """
        if not isinstance(variant, str) or variant not in cls.MODEL_VARIANTS:
            raise ValueError(f"Unknown {cls.__name__} variant {variant!r}. Valid variants: {list(cls.MODEL_VARIANTS)}.")
        preset = PRESETS[cls.MODEL_VARIANTS[variant]["preset"]]
        config = preset.backbone_config
        if width_multiplier is not None:
            config["width_multiplier"] = width_multiplier
        backbone = MobileNetBackbone(**config, image_shape=input_shape)
        if not include_top:
            return backbone
        return MobileNetImageClassifier(backbone, num_classes, activation="softmax")


class MobileNetV1(_PredecessorGeneration):
    """MobileNetV1 by its predecessor variant names, the width multipliers.

    Example:
    ```python
    import numpy as np
    from mnet_backbones.predecessor_api import MobileNetV1

    model = MobileNetV1.from_variant("0.25", num_classes=10, input_shape=(32, 32, 3))
    model.predict(np.zeros((2, 32, 32, 3))).shape  # (2, 10)
    ```
    """

    MODEL_VARIANTS = {
        "1.0": _describe("mobilenetv1_100"),
        "0.75": _describe("mobilenetv1_075"),
        "0.5": _describe("mobilenetv1_050"),
        "0.25": _describe("mobilenetv1_025"),
    }


class MobileNetV2(_PredecessorGeneration):
    """MobileNetV2 by its predecessor variant names, the width multipliers.

    Example:
    ```python
    from mnet_backbones.predecessor_api import MobileNetV2

    features = MobileNetV2.from_variant("0.35", include_top=False)
    features.output.shape  # (None, 7, 7, 1280)
    ```
    """

    MODEL_VARIANTS = {
        "1.4": _describe("mobilenetv2_140"),
        "1.0": _describe("mobilenetv2_100"),
        "0.75": _describe("mobilenetv2_075"),
        "0.5": _describe("mobilenetv2_050"),
        "0.35": _describe("mobilenetv2_035"),
    }


class MobileNetV3(_PredecessorGeneration):
    """MobileNetV3 Large and Small at width 1.0.

    Example:
    ```python
    from mnet_backbones.predecessor_api import MobileNetV3

    model = MobileNetV3.from_variant("small", width_multiplier=0.75)
    model.count_params()
    ```
    """

    MODEL_VARIANTS = {
        "large": _describe("mobilenetv3_large_100"),
        "small": _describe("mobilenetv3_small_100"),
    }


class MobileNetV4(_PredecessorGeneration):
    """MobileNetV4, convolutional and hybrid (mobile multi-query attention).

    Example:
    ```python
    import keras
    from mnet_backbones.predecessor_api import MobileNetV4

    model = MobileNetV4.from_variant("conv_small", num_classes=10, input_shape=(32, 32, 3))
    model.compile(keras.optimizers.AdamW(1e-3), "sparse_categorical_crossentropy")
    ```
    """

    MODEL_VARIANTS = {
        "conv_small": _describe("mobilenetv4_conv_small"),
        "conv_medium": _describe("mobilenetv4_conv_medium"),
        "conv_large": _describe("mobilenetv4_conv_large"),
        "hybrid_medium": _describe("mobilenetv4_hybrid_medium"),
        "hybrid_large": _describe("mobilenetv4_hybrid_large"),
    }


def create_mobilenetv1(
    variant="1.0", num_classes=1000, input_shape=(224, 224, 3), include_top=True, width_multiplier=None
):
    """`MobileNetV1.from_variant` under its predecessor function name."""
    return MobileNetV1.from_variant(variant, num_classes, input_shape, width_multiplier, include_top)


def create_mobilenetv2(
    variant="1.0", num_classes=1000, input_shape=(224, 224, 3), include_top=True, width_multiplier=None
):
    """`MobileNetV2.from_variant` under its predecessor function name."""
    return MobileNetV2.from_variant(variant, num_classes, input_shape, width_multiplier, include_top)


def create_mobilenetv3(
    variant="large", num_classes=1000, input_shape=(224, 224, 3), include_top=True, width_multiplier=None
):
    """`MobileNetV3.from_variant` under its predecessor function name."""
    return MobileNetV3.from_variant(variant, num_classes, input_shape, width_multiplier, include_top)


def create_mobilenetv4(
    variant="conv_small",
    num_classes=1000,
    input_shape=(224, 224, 3),
    include_top=True,
    width_multiplier=None,
):
    """`MobileNetV4.from_variant` under its predecessor function name.

    Example:
    ```python
    from mnet_backbones.predecessor_api import create_mobilenetv4

    model = create_mobilenetv4(variant="conv_small", num_classes=10, input_shape=(32, 32, 3))
    model.output.shape  # (None, 10)
    ```
    """
    return MobileNetV4.from_variant(variant, num_classes, input_shape, width_multiplier, include_top)
