"""keras.applications MobileNet, MobileNetV2, MobileNetV3Small/Large -> our models.

One mapping for all three families: our model's weighted Keras layers, listed
in the order the architecture table computes them, pair one for one with the
keras.applications model's weighted layers in graph order (both compute the
same blocks in the same order: expansion, depthwise, squeeze-excite,
projection). Every pair is checked for kind and shape before anything is
assigned.

keras.applications uses TensorFlow "same" padding and BatchNorm epsilon 1e-3,
and scales pixels to [-1, 1] (V1/V2 in `preprocess_input`, V3 inside the model).
One difference remains: V1 pads its stride-2 depthwise convolutions
bottom/right by one pixel whatever the input size, which equals "same" padding
on even sizes only; on odd sizes keras.applications' V1 gives smaller maps
than `ceil(size / stride)`, ours keeps the pyramid rule.
"""

import re

import keras

from mnet_backbones.convert.mapping import WeightMismatchError, assign_all
from mnet_backbones.layers import (
    ConvBNAct,
    FusedInvertedBottleneck,
    InvertedBottleneck,
    SqueezeExcite,
)

SUPPORTED = "keras.applications MobileNet, MobileNetV2, MobileNetV3Small or MobileNetV3Large"
_WEIGHTED = (
    keras.layers.Conv2D,
    keras.layers.DepthwiseConv2D,
    keras.layers.BatchNormalization,
    keras.layers.Dense,
)


def _layer_names(model):
    return {layer.name for layer in model.layers}


def _filters(model, name):
    return model.get_layer(name).kernel.shape[-1]


def _alpha_from_name(model, prefix):
    match = re.match(rf"{prefix}_(\d+\.\d+)_\d+$", model.name)
    return float(match.group(1)) if match else None


def describe(model):
    """(architecture, width multiplier) of a keras.applications MobileNet."""
    names = _layer_names(model)
    if "conv_dw_13" in names:  # V1: int(1024 * alpha) filters in the last block
        alpha = _alpha_from_name(model, "mobilenet") or _filters(model, "conv_pw_13") / 1024
        return "mobilenetv1", alpha
    if "block_16_project" in names:  # V2
        alpha = _alpha_from_name(model, "mobilenetv2") or _filters(model, "block_16_project") / 320
        return "mobilenetv2", alpha
    blocks = [n for n in names if re.fullmatch(r"expanded_conv(_\d+)?_project", n)]
    if blocks:  # V3: Small has 11 blocks, Large 15
        size = "small" if len(blocks) == 11 else "large"
        last = max(blocks, key=lambda n: int(n.split("_")[2]) if n.count("_") == 3 else 0)
        alpha = _filters(model, last) / (96 if size == "small" else 160)
        minimal = not any("squeeze_excite" in n for n in names)
        return f"mobilenetv3_{size}{'_minimal' if minimal else ''}", alpha
    raise ValueError(f"Model {model.name!r} is not a {SUPPORTED} (no MobileNet block layer names found).")


def _ours_in_order(model):
    """Our weighted Keras layers in compute order, walking our own layers."""

    def walk(layer):
        if isinstance(layer, ConvBNAct):
            yield layer.conv
            if layer.bn is not None:
                yield layer.bn
        elif isinstance(layer, SqueezeExcite):
            yield layer.reduce
            yield layer.expand
        elif isinstance(layer, (InvertedBottleneck, FusedInvertedBottleneck)):
            parts = ("dw_start", "expand", "dw_mid", "se", "project", "dw_end")
            for part in parts:
                sublayer = getattr(layer, part, None)
                if sublayer is not None:
                    yield from walk(sublayer)
        elif isinstance(layer, keras.Model):
            for sublayer in layer.layers:
                yield from walk(sublayer)
        elif isinstance(layer, _WEIGHTED):
            yield layer
        elif layer.weights:
            raise WeightMismatchError(
                f"keras.applications has no counterpart for layer {layer.name!r} ({type(layer).__name__})."
            )

    return list(walk(model))


def _pairs(ours, theirs):
    """(our variable, array, source name) for every weight, kind-checked."""
    if len(ours) != len(theirs):
        raise WeightMismatchError(
            f"keras.applications model has {len(theirs)} weighted layers, ours "
            f"{len(ours)}: not the same architecture. Nothing was loaded."
        )
    for our, their in zip(ours, theirs):
        depthwise = isinstance(our, keras.layers.DepthwiseConv2D)
        if depthwise != isinstance(their, keras.layers.DepthwiseConv2D) or isinstance(
            our, keras.layers.BatchNormalization
        ) != isinstance(their, keras.layers.BatchNormalization):
            raise WeightMismatchError(
                f"layer {their.name!r} ({type(their).__name__}) cannot fill "
                f"{our.path!r} ({type(our).__name__}). Nothing was loaded."
            )
        for variable, value in zip(our.weights, their.weights):
            array = keras.ops.convert_to_numpy(value)
            if len(variable.shape) == 2 and array.ndim == 4:  # 1x1 conv head -> dense
                array = array.reshape(array.shape[-2], array.shape[-1])
            yield variable, array, value.path


def _scaling_layer(model):
    return any(isinstance(layer, keras.layers.Rescaling) for layer in model.layers)


# Our classifier, by its Keras registered name: this module sits below the
# model classes (their pretrained-weights cache converts through it), so it
# takes the class as an argument and, when none is given, finds the one that
# `import mnet_backbones` registered.
CLASSIFIER_CLASS = "mnet_backbones>MobileNetImageClassifier"


def classifier_class():
    """`mnet_backbones.MobileNetImageClassifier`, looked up by its registered name."""
    cls = keras.saving.get_registered_object(CLASSIFIER_CLASS)
    if cls is None:
        raise RuntimeError(f"{CLASSIFIER_CLASS} is not registered: import mnet_backbones first.")
    return cls


def from_keras_application(model, classifier_cls=None):
    """Convert a keras.applications MobileNet (V1, V2, V3 Small/Large).

    Args:
        model: a `keras.applications.MobileNet`, `MobileNetV2`,
            `MobileNetV3Small` or `MobileNetV3Large` instance, any alpha,
            minimalistic or not, with or without its top.
        classifier_cls: the classifier class to build (default:
            `MobileNetImageClassifier`); its `backbone_cls` and
            `preprocessor_cls` give the other classes.

    Returns:
        With the top: a `MobileNetImageClassifier` with the same classes and
        final activation (softmax unless the model was built with
        `classifier_activation=None`), whose preprocessor scales raw pixels
        to [-1, 1] as `preprocess_input` does (no resizing), so that
        `ours.predict(raw_images)` equals
        `model.predict(<module>.preprocess_input(raw_images))`.
        Without the top: a `MobileNetBackbone`, which expects inputs already
        scaled to [-1, 1].
    """
    classifier_cls = classifier_cls or classifier_class()
    preprocessor_cls = classifier_cls.preprocessor_cls
    if not isinstance(model, keras.Model):
        raise TypeError(f"Expected a keras.Model ({SUPPORTED}); got {type(model).__name__}.")
    architecture, alpha = describe(model)
    norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    backbone = classifier_cls.backbone_cls(
        architecture,
        width_multiplier=alpha,
        padding="same",
        bn_epsilon=norms[0].epsilon,
        image_shape=(None, None, model.input_shape[-1]),  # any size, unlike the source
    )
    theirs = [layer for layer in model.layers if isinstance(layer, _WEIGHTED)]
    has_top = isinstance(model.layers[-1], (keras.layers.Activation, keras.layers.Dense)) and (
        "predictions" in model.layers[-1].name.lower()
    )
    if not has_top:
        assign_all(_pairs(_ours_in_order(backbone), theirs), "keras.applications model")
        return backbone
    num_classes = theirs[-1].weights[0].shape[-1]
    final = model.layers[-1]
    activation = "softmax" if getattr(final, "activation", None) is keras.activations.softmax else None
    # V3 scales pixels inside the model unless built with include_preprocessing=False.
    v3_without_scaling = architecture.startswith("mobilenetv3") and not _scaling_layer(model)
    converter = preprocessor_cls.image_converter_cls(
        image_size=None,
        scale=1.0 if v3_without_scaling else 1.0 / 127.5,
        offset=0.0 if v3_without_scaling else -1.0,
    )
    classifier = classifier_cls(
        backbone=backbone,
        num_classes=num_classes,
        activation=activation,
        preprocessor=preprocessor_cls(image_converter=converter),
    )
    assign_all(_pairs(_ours_in_order(classifier), theirs), "keras.applications model")
    return classifier
