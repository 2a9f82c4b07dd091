"""SSDLite's head layers: the extra layers below P5 and the predictors on every map.

Both are depthwise-separable, as SSDLite replaces every regular
convolution of SSD's head, and built from the backbones' `ConvBNAct`
(with Keras' own defaults: Glorot initialisation, BatchNorm epsilon 1e-3,
"same" padding).
"""

import keras
from keras import ops

from mnet_backbones.layers import ConvBNAct, map_size
from mnet_backbones.validation import check_positive_int


def _conv_bn_relu6(filters, kernel_size=1, strides=1, depthwise=False, bn_momentum=0.9, dtype=None, name=None):
    return ConvBNAct(
        filters,
        kernel_size,
        strides=strides,
        depthwise=depthwise,
        activation="relu6",
        kernel_initializer="glorot_uniform",
        padding="same",
        bn_epsilon=1e-3,
        bn_momentum=bn_momentum,
        dtype=dtype,
        name=name,
    )


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
        reduced = max(self.filters // 2, 1)
        common = dict(bn_momentum=self.bn_momentum, dtype=self.dtype_policy)
        self.reduce = _conv_bn_relu6(reduced, name="reduce", **common)
        self.depthwise = _conv_bn_relu6(reduced, 3, strides=2, depthwise=True, name="depthwise", **common)
        self.project = _conv_bn_relu6(self.filters, name="project", **common)

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
        self.depthwise = _conv_bn_relu6(
            None, 3, depthwise=True, bn_momentum=self.bn_momentum, dtype=dtype, name="depthwise"
        )
        # A plain Conv2D: ConvBNAct's bias (without BatchNorm) always starts at
        # zero, and the class predictors' starts at the focal-loss prior.
        self.pointwise = keras.layers.Conv2D(
            self.num_anchors * self.values_per_anchor,
            1,
            bias_initializer=keras.initializers.Constant(self.bias_value),
            dtype=dtype,
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
        config = super().get_config()
        config.update(
            num_anchors=self.num_anchors,
            values_per_anchor=self.values_per_anchor,
            bias_value=self.bias_value,
            bn_momentum=self.bn_momentum,
        )
        return config
