"""The segmentation heads' layers: conv-BN-ReLU, one ASPP, the FCN and LR-ASPP heads, one bilinear resize.

The ASPP serves both conventions: DeepLabV3+'s mobile one (depthwise-separable
atrous branches, Keras' BatchNorm epsilon 1e-3: `AtrousSpatialPyramidPooling`'s
defaults) and torchvision's DeepLabV3 (full 3x3 atrous convolutions, PyTorch's
epsilon 1e-5, 256 filters, rates (12, 24, 36), dropout 0.5: `DeepLabV3ASPP`,
the same layer with those defaults, under the name its saved files use).

Every resize is `resize_bilinear`: half-pixel centres, no antialiasing
(PyTorch's `F.interpolate(mode="bilinear", align_corners=False)`), one resize
op where the size is known when traced, gathers where it is read at run time.
"""

import keras
from keras import ops

from heads.configs import config_entries
from mnet_backbones.layers import ConvBNAct, map_size
from mnet_backbones.validation import check_positive_int

# DeepLabV3's atrous rates at output stride 16 (Chen et al., 2017).
ATROUS_RATES_AT_16 = (6, 12, 18)
# DeepLabV3's rates for an output stride of 16 with image-level features, as
# torchvision's DeepLabHead uses them (the paper's (6, 12, 18) doubled).
DEEPLABV3_ATROUS_RATES = (12, 24, 36)
# PyTorch's BatchNorm2d default, which torchvision's segmentation heads keep
# (their MobileNetV3 backbone uses 1e-3).
TORCH_BN_EPSILON = 1e-5
# Keras' BatchNormalization default, which the mobile DeepLabV3+ head keeps.
KERAS_BN_EPSILON = 1e-3


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


def check_dropout(dropout, name="dropout"):
    """`dropout` as a float in [0, 1), else a ValueError naming `name`."""
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
        raise ValueError(f"`{name}` must be a number in [0, 1), got {dropout!r}.")
    return float(dropout)


def conv_bn_relu(
    filters,
    kernel_size=1,
    separable=False,
    dilation_rate=1,
    bn_epsilon=KERAS_BN_EPSILON,
    bn_momentum=0.9,
    dtype=None,
    name=None,
):
    """The heads' convolution: full, or depthwise-separable, each part with BatchNorm and ReLU.

    A list of `ConvBNAct` layers, to apply in turn: one `kernel_size`
    convolution, or with `separable=True` a depthwise `kernel_size` one
    (dilated by `dilation_rate`) then a 1x1 one to `filters`. Stride 1,
    "same" padding (PyTorch's `padding=dilation`): the map keeps its size.
    Glorot initialisation; BatchNorm epsilon `bn_epsilon` (Keras' 1e-3, or
    PyTorch's 1e-5 for torchvision's heads); BatchNorm momentum 0.9 as in the
    backbones, because from-scratch training runs are short and Keras' 0.99
    leaves the moving statistics far behind the weights.

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
        bn_epsilon=bn_epsilon,
        bn_momentum=bn_momentum,
        dtype=dtype,
    )
    if not separable:
        return [ConvBNAct(filters, kernel_size, dilation_rate=dilation_rate, name=name, **common)]
    return [
        ConvBNAct(None, kernel_size, depthwise=True, dilation_rate=dilation_rate, name=f"{name}_depthwise", **common),
        ConvBNAct(filters, 1, name=f"{name}_pointwise", **common),
    ]


def head_conv(filters, kernel_size=1, dilation_rate=1, bn_epsilon=TORCH_BN_EPSILON, dtype=None, name=None):
    """One full `conv_bn_relu` layer, with torchvision's BatchNorm epsilon by default.

    Example:
    ```python
    head_conv(256, 3, dilation_rate=12)(keras.ops.ones((1, 14, 14, 960))).shape  # (1, 14, 14, 256)
    ```
    """
    (layer,) = conv_bn_relu(
        filters, kernel_size, dilation_rate=dilation_rate, bn_epsilon=bn_epsilon, dtype=dtype, name=name
    )
    return layer


def _layers_of(branch):
    return branch if isinstance(branch, (list, tuple)) else (branch,)


@keras.saving.register_keras_serializable(package="heads")
class AtrousSpatialPyramidPooling(keras.layers.Layer):
    """ASPP: atrous branches and image pooling, concatenated and projected.

    Branches, each ending in `filters` channels with BatchNorm and ReLU: a
    1x1 convolution; one 3x3 convolution per rate in `atrous_rates`
    (depthwise-separable with `separable=True`, as in DeepLabV3+'s mobile
    variants; full, as in DeepLabV3 and torchvision, otherwise); the image
    pooling branch (global mean, 1x1 convolution, broadcast back over the
    map). They are concatenated in that order and projected by a 1x1
    convolution, with dropout during training.

    Example:
    ```python
    aspp = AtrousSpatialPyramidPooling(128, atrous_rates=(6, 12, 18))
    aspp(keras.ops.ones((2, 8, 8, 960))).shape  # (2, 8, 8, 128)
    torchvision_aspp = AtrousSpatialPyramidPooling(
        256, atrous_rates=(12, 24, 36), dropout=0.5, separable=False, bn_epsilon=1e-5
    )
    ```
    """

    def __init__(
        self,
        filters=128,
        atrous_rates=ATROUS_RATES_AT_16,
        dropout=0.1,
        separable=True,
        bn_epsilon=KERAS_BN_EPSILON,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.filters = check_positive_int("filters", filters)
        self.atrous_rates = tuple(check_positive_int("atrous_rates", rate) for rate in atrous_rates)
        self.dropout = check_dropout(dropout)
        self.separable = bool(separable)
        self.bn_epsilon = float(bn_epsilon)
        common = dict(bn_epsilon=self.bn_epsilon, dtype=self.dtype_policy)
        branches = [conv_bn_relu(self.filters, 1, name="branch_1x1", **common)] + [
            conv_bn_relu(self.filters, 3, self.separable, rate, name=f"branch_rate{rate}", **common)
            for rate in self.atrous_rates
        ]
        # Saved files address the weights by this structure: each branch a
        # list of layers in the separable ASPP (depthwise, pointwise), one
        # layer in the full one (as torchvision's checkpoints map onto it).
        self.branches = branches if self.separable else [layer for (layer,) in branches]
        (self.pooling_conv,) = conv_bn_relu(self.filters, 1, name="image_pooling", **common)
        (self.projection,) = conv_bn_relu(self.filters, 1, name="projection", **common)
        self.dropout_layer = keras.layers.Dropout(self.dropout, dtype=self.dtype_policy, name="dropout")

    def build(self, input_shape):
        shape = tuple(input_shape)
        for branch in self.branches:
            branch_shape = shape
            for layer in _layers_of(branch):
                layer.build(branch_shape)
                branch_shape = layer.compute_output_shape(branch_shape)
        self.pooling_conv.build((shape[0], 1, 1, shape[-1]))
        self.projection.build(shape[:-1] + (self.filters * (len(self.branches) + 1),))

    def call(self, inputs, training=None):
        outputs = []
        for branch in self.branches:
            x = inputs
            for layer in _layers_of(branch):
                x = layer(x, training=training)
            outputs.append(x)
        pooled = self.pooling_conv(ops.mean(inputs, axis=(1, 2), keepdims=True), training=training)
        # Broadcast (B, 1, 1, F) over the map (torchvision resizes the 1x1 map
        # bilinearly, which is a broadcast) by a multiply with ones: a constant
        # where the map's size is known (as in an exported file, where XNNPACK
        # then runs it), else ones of the run-time size.
        _, height, width = map_size(inputs)
        outputs.append(pooled * ops.ones((1, height, width, 1), dtype=pooled.dtype))
        x = self.projection(ops.concatenate(outputs, axis=-1), training=training)
        return self.dropout_layer(x, training=training)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.filters,)

    def get_config(self):
        names = ("filters", "atrous_rates", "dropout", "separable", "bn_epsilon")
        return {**super().get_config(), **config_entries(self, *names)}


@keras.saving.register_keras_serializable(package="heads")
class DeepLabV3ASPP(AtrousSpatialPyramidPooling):
    """`AtrousSpatialPyramidPooling` with torchvision DeepLabV3's defaults: full 3x3 atrous convolutions.

    256 filters, rates (12, 24, 36), dropout 0.5, PyTorch's BatchNorm epsilon.

    Example:
    ```python
    aspp = DeepLabV3ASPP(256, atrous_rates=(12, 24, 36))
    aspp(keras.ops.ones((2, 14, 14, 960))).shape  # (2, 14, 14, 256)
    ```
    """

    def __init__(
        self,
        filters=256,
        atrous_rates=DEEPLABV3_ATROUS_RATES,
        dropout=0.5,
        bn_epsilon=TORCH_BN_EPSILON,
        separable=False,
        **kwargs,
    ):
        super().__init__(filters, atrous_rates, dropout, separable=separable, bn_epsilon=bn_epsilon, **kwargs)


@keras.saving.register_keras_serializable(package="heads")
class FCNHead(keras.layers.Layer):
    """The FCN head torchvision uses as DeepLabV3's auxiliary classifier.

    A 3x3 convolution to `filters` channels (torchvision: a quarter of the
    input's) with BatchNorm and ReLU, dropout in training, then a 1x1
    convolution with bias to `num_classes` logits.

    Example:
    ```python
    FCNHead(num_classes=21, filters=10)(keras.ops.ones((1, 28, 28, 40))).shape  # (1, 28, 28, 21)
    ```
    """

    def __init__(self, num_classes, filters, dropout=0.1, bn_epsilon=TORCH_BN_EPSILON, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = check_positive_int("num_classes", num_classes)
        self.filters = check_positive_int("filters", filters)
        self.dropout = check_dropout(dropout)
        self.bn_epsilon = float(bn_epsilon)
        self.conv = head_conv(self.filters, 3, bn_epsilon=self.bn_epsilon, dtype=self.dtype_policy, name="conv")
        self.dropout_layer = keras.layers.Dropout(self.dropout, dtype=self.dtype_policy, name="dropout")
        self.classifier = keras.layers.Conv2D(self.num_classes, 1, dtype=self.dtype_policy, name="classifier")

    def build(self, input_shape):
        self.conv.build(input_shape)
        self.classifier.build(tuple(input_shape[:-1]) + (self.filters,))

    def call(self, inputs, training=None):
        x = self.dropout_layer(self.conv(inputs, training=training), training=training)
        return self.classifier(x)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.num_classes,)

    def get_config(self):
        return {**super().get_config(), **config_entries(self, "num_classes", "filters", "dropout", "bn_epsilon")}


@keras.saving.register_keras_serializable(package="heads")
class LRASPPHead(keras.layers.Layer):
    """The Lite R-ASPP head: `call([low, high])` -> logits at the low map's size.

    On the high map: a 1x1 convolution to `inter_filters` channels with
    BatchNorm and ReLU, multiplied by a per-channel gate (global mean, 1x1
    convolution without bias, sigmoid), resized bilinearly to the low map's
    size. Logits: a 1x1 convolution with bias of the low map plus one of
    that product.

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
        return {**super().get_config(), **config_entries(self, "num_classes", "inter_filters", "bn_epsilon")}


def _source_rows(in_size, out_size, dtype):
    """Per output row: the two input rows it reads and the second one's weight (half-pixel centres)."""
    in_size = ops.cast(in_size, "int32")
    scale = ops.cast(in_size, "float32") / ops.cast(out_size, "float32")
    # (i + 0.5) * scale - 0.5, clamped at the first row, as PyTorch and TensorFlow do.
    centres = ops.maximum((ops.cast(ops.arange(out_size), "float32") + 0.5) * scale - 0.5, 0.0)
    low = ops.floor(centres)
    weight = ops.cast(centres - low, dtype)
    low = ops.minimum(ops.cast(low, "int32"), in_size - 1)
    high = ops.minimum(low + 1, in_size - 1)
    return low, high, weight


def resize_by_gathers(images, height, width):
    """Images (B, H, W, C) resized bilinearly to `height` x `width`, which may be tensors read at run time.

    Half-pixel centres, no antialiasing: the same values as
    `keras.ops.image.resize(images, (height, width), interpolation="bilinear")`,
    built from gathers so that a TensorFlow graph with unknown sizes can run it.

    Example:
    ```python
    resize_by_gathers(keras.ops.ones((1, 11, 13, 5)), 21, 25).shape  # (1, 21, 25, 5)
    ```
    """
    dtype = images.dtype
    shape = ops.shape(images)
    in_height, in_width = shape[1], shape[2]
    top, bottom, row_weight = _source_rows(in_height, height, dtype)
    rows = ops.take(images, top, axis=1)
    rows = rows + (ops.take(images, bottom, axis=1) - rows) * ops.reshape(row_weight, (1, -1, 1, 1))
    left, right, column_weight = _source_rows(in_width, width, dtype)
    columns = ops.take(rows, left, axis=2)
    return columns + (ops.take(rows, right, axis=2) - columns) * ops.reshape(column_weight, (1, 1, -1, 1))


def resize_bilinear(images, height, width):
    """Images (B, H, W, C) resized bilinearly (half-pixel centres, no antialiasing) to `height` x `width`.

    PyTorch's `F.interpolate(mode="bilinear", align_corners=False)`, which
    torchvision's segmenters use for every resize. Sizes given as Python
    ints (a fixed image size, an export) make one resize op, as exported
    files have it; sizes read at run time (tensors) go through
    `resize_by_gathers`, because `ops.image.resize` tests its size with Python
    comparisons, which a size read at run time in a TensorFlow graph cannot
    answer. Both give the same values.

    Example:
    ```python
    resize_bilinear(keras.ops.ones((1, 11, 13, 5)), 21, 25).shape  # (1, 21, 25, 5)
    ```
    """
    if isinstance(height, int) and isinstance(width, int):
        return ops.image.resize(images, (height, width), interpolation="bilinear")
    return resize_by_gathers(images, height, width)


# Two layers over the one resize, because saved files name both and they take
# their size differently: from the config (a fixed size) or from a reference map.


@keras.saving.register_keras_serializable(package="heads")
class BilinearResize(keras.layers.Layer):
    """Resizes maps to a fixed `(height, width)`, bilinearly (`resize_bilinear`).

    Example:
    ```python
    BilinearResize((64, 48))(keras.ops.ones((1, 16, 12, 5))).shape  # (1, 64, 48, 5)
    ```
    """

    def __init__(self, size, **kwargs):
        super().__init__(**kwargs)
        self.size = tuple(check_positive_int("size", side) for side in size)

    def call(self, inputs):
        return resize_bilinear(inputs, *self.size)

    def compute_output_shape(self, input_shape):
        return (input_shape[0],) + self.size + (input_shape[-1],)

    def get_config(self):
        return {**super().get_config(), "size": list(self.size)}


@keras.saving.register_keras_serializable(package="heads")
class ResizeToMatch(keras.layers.Layer):
    """Resizes a map bilinearly (`resize_bilinear`) to the height and width of a reference map.

    The reference's size is a constant where the graph knows it (one resize
    op, as exported files have it), else read at run time.

    Example:
    ```python
    ResizeToMatch()(keras.ops.ones((1, 11, 13, 5)), keras.ops.ones((1, 21, 25, 3))).shape  # (1, 21, 25, 5)
    ```
    """

    def call(self, inputs, reference):
        _, height, width = map_size(reference)
        return resize_bilinear(inputs, height, width)

    def compute_output_shape(self, inputs_shape, reference_shape):
        return (inputs_shape[0], reference_shape[1], reference_shape[2], inputs_shape[-1])
