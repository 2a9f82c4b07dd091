"""The SSDLite head: its extra layers, its predictors, how they join, and the taps the paper head reads.

Both are depthwise-separable, as SSDLite replaces every regular convolution
of SSD's head, and built from the backbones' `ConvBNAct`. One extra block
and one predictor serve both heads; their options are the two conventions:

- `SSDLiteExtraBlock`, `SSDLitePredictor` (`SSDLiteObjectDetector`): Keras'
  own defaults, Glorot initialisation, "same" padding, BatchNorm epsilon
  1e-3, momentum 0.9; the class predictors' bias starts at the focal-loss
  prior (`bias_value`).
- `SSDLitePaperExtraBlock`, `SSDLitePaperPredictor` (`SSDLite320ObjectDetector`):
  the same layers, only their defaults changed to torchvision's conventions
  (normal initialisation with standard deviation 0.03, symmetric padding,
  BatchNorm momentum 0.97, torchvision's 0.03, bias starting at 0). They keep
  their own registered names and class names, which saved files name (a
  `.keras` file's weight paths name each layer's class).
"""

import re

import keras
from keras import ops

from heads.configs import config_entries
from mnet_backbones.layers import ConvBNAct, map_size
from mnet_backbones.validation import check_positive_int

# torchvision initialises every SSDLite convolution so (`_normal_init`).
TORCHVISION_INITIALIZER = {"class_name": "RandomNormal", "config": {"mean": 0.0, "stddev": 0.03}}
# The two conventions: BatchNorm momentum and epsilon, the convolutions' initializer, the stride-2 padding.
KERAS_CONVENTIONS = {"bn_momentum": 0.9, "bn_epsilon": 1e-3, "kernel_initializer": "glorot_uniform", "padding": "same"}
# torchvision's BatchNorm momentum 0.03 is Keras' 0.97; torch pads a stride-2 depthwise 1 on every side.
TORCHVISION_CONVENTIONS = {
    "bn_momentum": 0.97,
    "bn_epsilon": 1e-3,
    "kernel_initializer": TORCHVISION_INITIALIZER,
    "padding": "symmetric",
}


def _initializer_config(initializer):
    """A kernel initializer as `get_config` keeps it: a name or a config dict as given, an instance serialised."""
    if isinstance(initializer, keras.initializers.Initializer):
        return keras.initializers.serialize(initializer)
    return initializer


class _SSDLiteLayer(keras.layers.Layer):
    """The conventions both SSDLite layers take, and their convolution + BatchNorm + ReLU6.

    Args:
        bn_momentum, bn_epsilon: the BatchNorms' settings.
        kernel_initializer: the convolutions' initializer (a name or config).
        padding: "same" (TensorFlow's: the extra pixel of a stride-2
            depthwise last) or "symmetric" (torch's: one on every side).

    Each left None takes the class's `conventions`.
    """

    conventions = KERAS_CONVENTIONS

    def __init__(self, bn_momentum=None, bn_epsilon=None, kernel_initializer=None, padding=None, **kwargs):
        super().__init__(**kwargs)
        given = dict(bn_momentum=bn_momentum, bn_epsilon=bn_epsilon, kernel_initializer=kernel_initializer,
                     padding=padding)  # fmt: skip
        settings = {key: self.conventions[key] if value is None else value for key, value in given.items()}
        self.bn_momentum = float(settings["bn_momentum"])
        self.bn_epsilon = float(settings["bn_epsilon"])
        self.kernel_initializer = _initializer_config(settings["kernel_initializer"])
        self.padding = settings["padding"]

    def conv_bn_relu6(self, filters, kernel_size=1, strides=1, depthwise=False, name=None):
        """A convolution (full or depthwise), BatchNorm and ReLU6, with this layer's conventions."""
        return ConvBNAct(
            filters,
            kernel_size,
            strides=strides,
            depthwise=depthwise,
            activation="relu6",
            kernel_initializer=self.kernel_initializer,
            padding=self.padding,
            bn_epsilon=self.bn_epsilon,
            bn_momentum=self.bn_momentum,
            dtype=self.dtype_policy,
            name=name,
        )

    def get_config(self):
        names = ("bn_momentum", "bn_epsilon", "kernel_initializer", "padding")
        return {**super().get_config(), **config_entries(self, *names)}


@keras.saving.register_keras_serializable(package="heads")
class SSDLiteExtraBlock(_SSDLiteLayer):
    """One SSDLite extra layer: 1x1 conv to `filters // 2`, depthwise 3x3 stride 2, 1x1 conv to `filters`.

    Each convolution is followed by BatchNorm and ReLU6; the map halves
    (rounding up) and ends with `filters` channels. The other arguments are
    the conventions (see the module docstring): BatchNorm `bn_momentum` and
    `bn_epsilon`, `kernel_initializer`, `padding` of the stride-2 depthwise;
    None takes the class's (`conventions`: Keras' here).

    Example:
    ```python
    block = SSDLiteExtraBlock(128)
    block(keras.ops.ones((1, 5, 5, 96))).shape  # (1, 3, 3, 128)
    ```
    """

    def __init__(self, filters, bn_momentum=None, bn_epsilon=None, kernel_initializer=None, padding=None, **kwargs):
        super().__init__(bn_momentum, bn_epsilon, kernel_initializer, padding, **kwargs)
        self.filters = check_positive_int("filters", filters)
        reduced = max(self.filters // 2, 1)
        self.reduce = self.conv_bn_relu6(reduced, name="reduce")
        self.depthwise = self.conv_bn_relu6(reduced, 3, strides=2, depthwise=True, name="depthwise")
        self.project = self.conv_bn_relu6(self.filters, name="project")

    def build(self, input_shape):
        shape = tuple(input_shape)
        for layer in (self.reduce, self.depthwise, self.project):
            layer.build(shape)
            shape = layer.compute_output_shape(shape)

    def call(self, inputs, training=None):
        x = self.reduce(inputs, training=training)
        x = self.depthwise(x, training=training)
        return self.project(x, training=training)

    def compute_output_shape(self, input_shape):
        shape = self.depthwise.compute_output_shape(tuple(input_shape))
        return shape[:-1] + (self.filters,)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters}


@keras.saving.register_keras_serializable(package="heads")
class SSDLitePredictor(_SSDLiteLayer):
    """An SSDLite predictor: depthwise 3x3, BatchNorm, ReLU6, then a 1x1 conv with bias.

    Outputs `(batch, height * width * num_anchors, values_per_anchor)`, anchors
    ordered row-major over the map, then anchor by anchor (as
    `keras_hub.layers.AnchorGenerator` and torchvision order them).

    Args:
        num_anchors: anchors per map position.
        values_per_anchor: 4 for box deltas, the number of classes for scores.
        bias_value: initial bias of the 1x1 conv; a negative value starts
            classification at a low foreground probability (focal loss prior).
        bn_momentum, bn_epsilon, kernel_initializer, padding: the
            conventions (see the module docstring); None takes the class's
            (`conventions`: Keras' here). The initializer serves both
            convolutions.

    Example:
    ```python
    predictor = SSDLitePredictor(num_anchors=6, values_per_anchor=4)
    predictor(keras.ops.ones((2, 5, 5, 96))).shape  # (2, 150, 4)
    ```
    """

    def __init__(self, num_anchors, values_per_anchor, bias_value=0.0, bn_momentum=None, bn_epsilon=None,
                 kernel_initializer=None, padding=None, **kwargs):  # fmt: skip
        super().__init__(bn_momentum, bn_epsilon, kernel_initializer, padding, **kwargs)
        self.num_anchors = check_positive_int("num_anchors", num_anchors)
        self.values_per_anchor = check_positive_int("values_per_anchor", values_per_anchor)
        self.bias_value = float(bias_value)
        self.depthwise = self.conv_bn_relu6(None, 3, depthwise=True, name="depthwise")
        # A plain Conv2D: ConvBNAct's bias (without BatchNorm) always starts at
        # zero, and the class predictors' may start at the focal-loss prior.
        self.pointwise = keras.layers.Conv2D(
            self.num_anchors * self.values_per_anchor,
            1,
            kernel_initializer=self.kernel_initializer,
            bias_initializer=keras.initializers.Constant(self.bias_value),
            dtype=self.dtype_policy,
            name="pointwise",
        )

    def build(self, input_shape):
        shape = tuple(input_shape)
        self.depthwise.build(shape)
        self.pointwise.build(shape)

    def call(self, inputs, training=None):
        x = self.pointwise(self.depthwise(inputs, training=training))
        batch, height, width = map_size(x)
        return ops.reshape(x, (batch, height * width * self.num_anchors, self.values_per_anchor))

    def compute_output_shape(self, input_shape):
        height, width = input_shape[1], input_shape[2]
        count = None if height is None or width is None else height * width * self.num_anchors
        return (input_shape[0], count, self.values_per_anchor)

    def get_config(self):
        return {**super().get_config(), **config_entries(self, "num_anchors", "values_per_anchor", "bias_value")}


@keras.saving.register_keras_serializable(package="heads")
class SSDLitePaperExtraBlock(SSDLiteExtraBlock):
    """`SSDLiteExtraBlock` with torchvision's conventions as defaults (the paper head's).

    Example:
    ```python
    block = SSDLitePaperExtraBlock(512)
    block(keras.ops.ones((1, 10, 10, 480))).shape  # (1, 5, 5, 512)
    ```
    """

    conventions = TORCHVISION_CONVENTIONS


@keras.saving.register_keras_serializable(package="heads")
class SSDLitePaperPredictor(SSDLitePredictor):
    """`SSDLitePredictor` with torchvision's conventions as defaults (the paper head's); the bias starts at 0.

    Example:
    ```python
    predictor = SSDLitePaperPredictor(num_anchors=6, values_per_anchor=91)
    predictor(keras.ops.ones((1, 20, 20, 672))).shape  # (1, 2400, 91)
    ```
    """

    conventions = TORCHVISION_CONVENTIONS


def concatenate_anchors(tensors, dtype, name, max_inputs=None):
    """The maps' predictions joined along the anchor axis; with `max_inputs`, at most that many at a time.

    XNNPACK (LiteRT's CPU delegate) runs a concatenation of up to four or
    five inputs; one of six would stay outside it and split the graph (the
    paper head joins four at a time).
    """
    while max_inputs is not None and len(tensors) > max_inputs:
        tensors = [
            keras.layers.Concatenate(axis=1, dtype=dtype, name=f"{name}_{len(tensors)}")(tensors[: max_inputs - 1]),
            *tensors[max_inputs - 1 :],
        ]
    return keras.layers.Concatenate(axis=1, dtype=dtype, name=name)(tensors)


def ssdlite_head(maps, extra_blocks, box_predictors, class_predictors, dtype, max_inputs=None):
    """The head on the backbone's maps: extra blocks below the last, a predictor pair on every map.

    Returns `(maps, outputs)`: every map the predictors read, and the raw
    outputs `{"bbox_regression": (B, N, 4), "cls_logits": (B, N, classes)}`
    (class logits in float32 under any dtype policy).
    """
    maps = list(maps)
    for block in extra_blocks:
        maps.append(block(maps[-1]))
    box_outputs = [predictor(x) for predictor, x in zip(box_predictors, maps)]
    class_outputs = [predictor(x) for predictor, x in zip(class_predictors, maps)]
    return maps, {
        "bbox_regression": concatenate_anchors(box_outputs, dtype, "bbox_regression", max_inputs),
        "cls_logits": concatenate_anchors(class_outputs, "float32", "cls_logits", max_inputs),
    }


# --- what the paper head reads of its backbone -------------------------------------
def backbone_taps(backbone):
    """The backbone's named feature taps (`MobileNetBackbone.feature_taps`); a TypeError without them."""
    taps = getattr(backbone, "feature_taps", None)
    if not isinstance(backbone, keras.Model) or not isinstance(taps, dict):
        raise TypeError(
            "SSDLite (paper) needs a backbone with `feature_taps` (a mnet_backbones.MobileNetBackbone), "
            f"got {type(backbone).__name__}."
        )
    return taps


def default_feature_taps(backbone):
    """The paper's two taps on `backbone`: the last strided block's expansion, and `"final"`.

    On mobilenetv3_large (reduced tail or not) that is
    `("blocks.5.0.expansion", "final")`: 672 channels at stride 16 and the
    last 1x1 conv at stride 32.

    Example:
    ```python
    default_feature_taps(backbone)  # ("blocks.5.0.expansion", "final")
    ```
    """
    taps = backbone_taps(backbone)
    expansions = [name for name in taps if re.fullmatch(r"blocks\.\d+\.\d+\.expansion", name)]
    if not expansions or "final" not in taps:
        raise ValueError(
            f"SSDLite (paper) taps the last strided block's expansion layer and 'final'; backbone "
            f"{backbone.name!r} has taps {sorted(taps)}. Pass feature_taps=(name, name) explicitly."
        )
    last = max(expansions, key=lambda name: tuple(int(part) for part in name.split(".")[1:3]))
    return (last, "final")
