"""The layer vocabulary of the MobileNet family.

Five layers build every variant: `ConvBNAct`, `SqueezeExcite`,
`InvertedBottleneck` (the universal inverted bottleneck), `FusedInvertedBottleneck`
and `MobileMultiQueryAttention`. All use `keras.ops` only, so they run on
TensorFlow, JAX and PyTorch, and all round-trip through `get_config`.

Padding is configuration. `"symmetric"` pads `k // 2` on every side of a
strided convolution, as PyTorch (and so timm) does; `"same"` is TensorFlow's
rule, which pads a stride-2 convolution on an even input only at the bottom and
right. Both give the same shapes; weights are only correct under the
convention they were trained with.
"""

import keras
from keras import ops

from mnet_backbones.architectures import make_divisible

PADDINGS = ("symmetric", "same")


def hard_sigmoid(x):
    return ops.relu6(x + 3.0) / 6.0


# How hard-swish is traced: one function, two forms of the graph.
# "fused": `x * relu6(x + 3) / 6`, which TensorFlow's LiteRT converter fuses
# into one HARD_SWISH operator, the fastest in float32. XNNPACK does not run
# HARD_SWISH in int8, so in a full-integer file every hard-swish would split
# the graph (MobileNetV3-Small: 20 XNNPACK partitions).
# "int8": `relu6(x + 3) * (x / 6)`, the same function, which becomes an ADD
# with a fused RELU6 and two MULs that XNNPACK's int8 path takes: the whole
# network runs as one partition. The exporter builds int8 files with it.
HARD_SWISH_FORMS = ("fused", "int8")


def check_hard_swish_form(form):
    if form not in HARD_SWISH_FORMS:
        raise ValueError(f"Unknown hard_swish_form {form!r}. Valid values: {HARD_SWISH_FORMS}.")
    return form


@keras.saving.register_keras_serializable(package="mnet_backbones")
def hard_swish(x):
    return x * ops.relu6(x + 3.0) / 6.0


def hard_swish_int8(x):
    """`hard_swish` as XNNPACK's int8 path runs it (see `HARD_SWISH_FORMS`)."""
    return ops.relu6(x + 3.0) * (x * (1.0 / 6.0))


def gelu(x):
    # timm's nn.GELU is the exact (erf) form; keras.ops.gelu defaults to tanh.
    return ops.gelu(x, approximate=False)


ACTIVATIONS = {
    "relu": ops.relu,
    "relu6": ops.relu6,
    "hard_swish": hard_swish,
    "hard_sigmoid": hard_sigmoid,
    "gelu": gelu,
    "sigmoid": ops.sigmoid,
    None: None,
}


def get_activation(name, hard_swish_form="fused"):
    """The activation function named `name` (None: no activation)."""
    if name not in ACTIVATIONS:
        raise ValueError(f"Unknown activation {name!r}. Valid names: {sorted(k for k in ACTIVATIONS if k)}.")
    if name == "hard_swish" and check_hard_swish_form(hard_swish_form) == "int8":
        return hard_swish_int8
    return ACTIVATIONS[name]


def he_normal(depthwise=False):
    """He initialisation over each kernel's true fan-in, so that activations
    keep their scale through an untrained network.

    Keras' Glorot default counts every channel of a depthwise kernel
    `(k, k, C, 1)` in its fan-in and shrinks activations some 30x per block;
    for that kernel the true fan-in, `k * k`, is what Keras calls fan-out."""
    mode = "fan_out" if depthwise else "fan_in"
    return keras.initializers.VarianceScaling(2.0, mode=mode, distribution="untruncated_normal")


def check_padding(padding):
    if padding not in PADDINGS:
        raise ValueError(f"Unknown padding {padding!r}. Valid values: {PADDINGS}.")
    return padding


def symmetric_pads(size, kernel_size, strides):
    """(before, after) zeros for timm's symmetric padding of a strided convolution.

    timm pads `kernel_size // 2` on each side. On a known `size` the last
    window of a strided convolution often stops short of the trailing zeros
    (on even sizes with a 3x3 kernel, it never reaches them), so only the
    ones it reads are added: the output is unchanged and the PAD is as small
    as TensorFlow's "same". An unknown size (None) keeps both sides.
    """
    before = (kernel_size - 1) // 2
    if size is None:
        return before, before
    outputs = -(-size // strides)
    return before, max(0, (outputs - 1) * strides + kernel_size - size - before)


def _pad_symmetric(x, kernel_size, strides):
    rows, cols = (symmetric_pads(size, kernel_size, strides) for size in x.shape[1:3])
    return ops.pad(x, [[0, 0], list(rows), list(cols), [0, 0]])


def _check_dilation(dilation_rate, strides):
    if isinstance(dilation_rate, bool) or not isinstance(dilation_rate, int) or dilation_rate < 1:
        raise ValueError(f"dilation_rate must be a positive int, got {dilation_rate!r}.")
    if dilation_rate > 1 and strides > 1:
        # Keras convolutions refuse strides and dilation together.
        raise ValueError(f"dilation_rate > 1 needs strides=1, got dilation_rate={dilation_rate}, strides={strides}.")
    return dilation_rate


def _ceil_div(size, stride):
    return None if size is None else -(-size // stride)


def _arguments(layer, *names):
    """`{name: layer.name}`: constructor arguments that `layer` keeps under their own names."""
    return {name: getattr(layer, name) for name in names}


class _MobileLayer(keras.layers.Layer):
    """Shared plumbing: BatchNorm settings and sublayer dtype."""

    # What every block passes on to its convolutions, and returns in its config.
    SETTINGS = ("padding", "bn_epsilon", "bn_momentum", "hard_swish_form")

    def __init__(self, padding="symmetric", bn_epsilon=1e-5, bn_momentum=0.9, hard_swish_form="fused", **kwargs):
        super().__init__(**kwargs)
        self.padding = check_padding(padding)
        self.bn_epsilon = bn_epsilon
        self.bn_momentum = bn_momentum
        self.hard_swish_form = check_hard_swish_form(hard_swish_form)

    def _batch_norm(self, name):
        return keras.layers.BatchNormalization(
            epsilon=self.bn_epsilon,
            momentum=self.bn_momentum,
            dtype=self.dtype_policy,
            name=name,
        )

    def _conv(self, filters, kernel_size=1, strides=1, name=None, **kwargs):
        settings = _arguments(self, *self.SETTINGS)
        return ConvBNAct(
            filters, kernel_size, strides=strides, dtype=self.dtype_policy, name=name, **settings, **kwargs
        )

    def get_config(self):
        return {**super().get_config(), **_arguments(self, *self.SETTINGS)}


@keras.saving.register_keras_serializable(package="mnet_backbones")
class ConvBNAct(_MobileLayer):
    """Convolution (full or depthwise), optional BatchNorm, optional activation.

    Args:
        filters: output channels; ignored (must equal the input) when
            `depthwise=True`.
        kernel_size: square kernel size.
        strides: 1 or 2.
        depthwise: a depthwise convolution instead of a full one.
        activation: a name from `ACTIVATIONS` or None.
        use_bn: follow the convolution with BatchNorm.
        use_bias: give the convolution a bias (only without BatchNorm).
        dilation_rate: dilation of the kernel.
        kernel_initializer: None for He initialisation over the kernel's true
            fan-in (the backbones), or any Keras initializer (the heads keep
            Keras' default, "glorot_uniform").
        padding: `"symmetric"` (timm) or `"same"` (TensorFlow).
        bn_epsilon, bn_momentum: the BatchNorm's settings.
        hard_swish_form: how a hard-swish activation is traced, `"fused"` or
            `"int8"` (see `HARD_SWISH_FORMS`); the exporter picks it.

    Example:
    ```python
    layer = ConvBNAct(64, kernel_size=3, strides=2, activation="relu6")
    layer(keras.ops.ones((1, 32, 32, 16))).shape  # (1, 16, 16, 64)
    ```
    """

    def __init__(
        self,
        filters,
        kernel_size=1,
        strides=1,
        depthwise=False,
        activation=None,
        use_bn=True,
        use_bias=False,
        dilation_rate=1,
        kernel_initializer=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.filters = filters
        self.kernel_size = kernel_size
        self.strides = strides
        self.depthwise = depthwise
        self.activation = activation
        self.use_bn = use_bn
        self.use_bias = use_bias
        self.dilation_rate = dilation_rate
        self.kernel_initializer = kernel_initializer
        self._activation_fn = get_activation(activation, self.hard_swish_form)
        # Stride-1 convolutions with odd kernels pad alike in both conventions.
        self._pad_explicitly = self.padding == "symmetric" and strides > 1
        conv_padding = "valid" if self._pad_explicitly else "same"
        common = dict(
            kernel_size=kernel_size,
            strides=strides,
            padding=conv_padding,
            dilation_rate=dilation_rate,
            use_bias=use_bias,
            dtype=self.dtype_policy,
            name="conv",
        )
        self._initializer = keras.initializers.get(kernel_initializer or he_normal(depthwise=depthwise))
        if depthwise:
            self.conv = keras.layers.DepthwiseConv2D(depthwise_initializer=self._initializer, **common)
        else:
            self.conv = keras.layers.Conv2D(filters, kernel_initializer=self._initializer, **common)
        self.bn = self._batch_norm("bn") if use_bn else None

    def build(self, input_shape):
        shape = input_shape
        if self._pad_explicitly:  # strided, so not dilated
            padded = [
                None if size is None else size + sum(symmetric_pads(size, self.kernel_size, self.strides))
                for size in shape[1:3]
            ]
            shape = (shape[0], *padded, shape[3])
        self.conv.build(shape)
        if self.bn is not None:
            self.bn.build(self.conv.compute_output_shape(shape))

    def call(self, x, training=None):
        if self._pad_explicitly:
            x = _pad_symmetric(x, self.kernel_size, self.strides)
        x = self.conv(x)
        if self.bn is not None:
            x = self.bn(x, training=training)
        if self._activation_fn is not None:
            x = self._activation_fn(x)
        return x

    def compute_output_shape(self, input_shape):
        channels = input_shape[-1] if self.depthwise else self.filters
        return (
            input_shape[0],
            _ceil_div(input_shape[1], self.strides),
            _ceil_div(input_shape[2], self.strides),
            channels,
        )

    def get_config(self):
        names = ("filters", "kernel_size", "strides", "depthwise", "activation", "use_bn", "use_bias", "dilation_rate")
        initializer = None if self.kernel_initializer is None else keras.initializers.serialize(self._initializer)
        return {**super().get_config(), **_arguments(self, *names), "kernel_initializer": initializer}


@keras.saving.register_keras_serializable(package="mnet_backbones")
class SqueezeExcite(keras.layers.Layer):
    """Squeeze-and-excitation: global pool, 1x1 reduce, 1x1 expand, gate.

    Args:
        reduced_filters: channels of the bottleneck.
        activation: activation after the reduction (ReLU in V3).
        gate: gating activation (hard sigmoid in V3).
    """

    def __init__(self, reduced_filters, activation="relu", gate="hard_sigmoid", **kwargs):
        super().__init__(**kwargs)
        self.reduced_filters = reduced_filters
        self.activation = activation
        self.gate = gate
        self._activation_fn = get_activation(activation)
        self._gate_fn = get_activation(gate)

    def build(self, input_shape):
        channels = input_shape[-1]
        self.reduce = keras.layers.Conv2D(self.reduced_filters, 1, dtype=self.dtype_policy, name="reduce")
        self.expand = keras.layers.Conv2D(channels, 1, dtype=self.dtype_policy, name="expand")
        self.reduce.build((None, 1, 1, channels))
        self.expand.build((None, 1, 1, self.reduced_filters))

    def call(self, x):
        scale = ops.mean(x, axis=(1, 2), keepdims=True)
        scale = self._activation_fn(self.reduce(scale))
        return x * self._gate_fn(self.expand(scale))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), **_arguments(self, "reduced_filters", "activation", "gate")}


class _ResidualBlock(_MobileLayer):
    """Residual plumbing shared by the bottleneck and attention blocks."""

    def __init__(self, filters, strides=1, residual=True, layer_scale=None, **kwargs):
        super().__init__(**kwargs)
        if strides not in (1, 2):
            raise ValueError(f"strides must be 1 or 2, got {strides!r}.")
        self.filters = filters
        self.strides = strides
        self.residual = residual
        self.layer_scale = layer_scale

    def _build_residual(self, input_shape):
        self._use_residual = self.residual and self.strides == 1 and input_shape[-1] == self.filters
        if self.layer_scale is not None:
            # timm scales every branch, residual or not, and starts all at
            # `layer_scale` (1e-5). Without a residual the small start does not
            # stabilise anything, and in float16 it pushes activations below
            # the normal range so that gradients overflow; those start at 1.
            # Pretrained values replace either start.
            initial = self.layer_scale if self._use_residual else 1.0
            self.gamma = self.add_weight(
                name="gamma",
                shape=(self.filters,),
                initializer=keras.initializers.Constant(initial),
            )

    def _finish(self, x, shortcut):
        if self.layer_scale is not None:
            x = x * ops.cast(self.gamma, x.dtype)
        if self._use_residual:
            x = x + shortcut
        return x

    def compute_output_shape(self, input_shape):
        return (
            input_shape[0],
            _ceil_div(input_shape[1], self.strides),
            _ceil_div(input_shape[2], self.strides),
            self.filters,
        )

    def get_config(self):
        return {**super().get_config(), **_arguments(self, "filters", "strides", "residual", "layer_scale")}


def _build_chain(layers, shape):
    for layer in layers:
        if layer is not None:
            layer.build(shape)
            shape = layer.compute_output_shape(shape)
    return shape


@keras.saving.register_keras_serializable(package="mnet_backbones")
class InvertedBottleneck(_ResidualBlock):
    """Universal inverted bottleneck (MobileNetV4), covering V1-V3 blocks too.

    `[dw start + BN] -> [1x1 expand + BN + act] -> [dw mid + BN + act] -> [SE]
    -> 1x1 project + BN [+ act] -> [dw end + BN] -> [layer scale] -> [+ input]`

    Args:
        filters: output channels.
        expand_ratio: expansion of the input channels (rounded to a multiple
            of 8); 0 for no expansion convolution (depthwise-separable).
        start_kernel / mid_kernel / end_kernel: depthwise kernel sizes before
            the expansion, after it, and after the projection; 0 for none.
            The stride goes to the first depthwise convolution present of
            mid, start, end.
        strides: 1 or 2.
        se_ratio: squeeze-excite reduction of the expanded channels; 0: none.
        activation: activation of expansion and mid depthwise.
        project_activation: apply the activation after the projection too
            (the V1 depthwise-separable block).
        residual: add the input when shapes allow.
        layer_scale: initial per-channel scale of the branch, or None.
        dilation_rate: dilation of every depthwise convolution; above 1 only
            with `strides=1` (a backbone built with `output_stride` < 32
            trades its later strides for dilation).
        return_expansion: also return the output of the expansion
            convolution (after its BatchNorm and activation, before the
            middle depthwise): the block then returns `(output, expansion)`.
            The backbone builds its strided blocks this way so that a head
            can tap the expansion (the MobileNetV3 paper's SSDLite C4 map)
            without a second graph. Needs an expansion convolution.
    """

    def __init__(
        self,
        filters,
        expand_ratio=4.0,
        start_kernel=0,
        mid_kernel=3,
        end_kernel=0,
        strides=1,
        se_ratio=0.0,
        activation="relu",
        project_activation=False,
        se_activation="relu",
        se_gate="hard_sigmoid",
        residual=True,
        layer_scale=None,
        dilation_rate=1,
        return_expansion=False,
        **kwargs,
    ):
        super().__init__(filters, strides=strides, residual=residual, layer_scale=layer_scale, **kwargs)
        if strides > 1 and not (start_kernel or mid_kernel or end_kernel):
            raise ValueError("A strided InvertedBottleneck needs a depthwise kernel.")
        if return_expansion and not expand_ratio:
            raise ValueError(
                f"return_expansion=True needs an expansion convolution, but expand_ratio={expand_ratio!r}."
            )
        self.return_expansion = bool(return_expansion)
        self.dilation_rate = _check_dilation(dilation_rate, strides)
        self.expand_ratio = expand_ratio
        self.start_kernel = start_kernel
        self.mid_kernel = mid_kernel
        self.end_kernel = end_kernel
        self.se_ratio = se_ratio
        self.activation = activation
        self.project_activation = project_activation
        self.se_activation = se_activation
        self.se_gate = se_gate
        get_activation(activation)

    def build(self, input_shape):
        in_channels = input_shape[-1]
        mid_channels = self._mid_channels(in_channels)
        stride_start = self.strides if self.start_kernel and not self.mid_kernel else 1
        stride_end = self.strides if self.end_kernel and not (self.start_kernel or self.mid_kernel) else 1
        dw = dict(depthwise=True, dilation_rate=self.dilation_rate)
        self.dw_start = (
            self._conv(in_channels, self.start_kernel, stride_start, name="dw_start", **dw)
            if self.start_kernel
            else None
        )
        self.expand = (
            self._conv(mid_channels, 1, activation=self.activation, name="expand") if self.expand_ratio else None
        )
        self.dw_mid = (
            self._conv(
                mid_channels,
                self.mid_kernel,
                self.strides,
                activation=self.activation,
                name="dw_mid",
                **dw,
            )
            if self.mid_kernel
            else None
        )
        self.se = None
        if self.se_ratio:
            self.se = SqueezeExcite(
                make_divisible(mid_channels * self.se_ratio),
                activation=self.se_activation,
                gate=self.se_gate,
                dtype=self.dtype_policy,
                name="se",
            )
        self.project = self._conv(
            self.filters,
            1,
            activation=self.activation if self.project_activation else None,
            name="project",
        )
        self.dw_end = (
            self._conv(self.filters, self.end_kernel, stride_end, name="dw_end", **dw) if self.end_kernel else None
        )
        _build_chain(
            [self.dw_start, self.expand, self.dw_mid, self.se, self.project, self.dw_end],
            input_shape,
        )
        self._build_residual(input_shape)

    def _mid_channels(self, in_channels):
        return make_divisible(in_channels * self.expand_ratio) if self.expand_ratio else in_channels

    def call(self, inputs, training=None):
        x = inputs
        expansion = None
        for layer in (self.dw_start, self.expand, self.dw_mid):
            if layer is not None:
                x = layer(x, training=training)
                if layer is self.expand:
                    expansion = x
        if self.se is not None:
            x = self.se(x)
        x = self.project(x, training=training)
        if self.dw_end is not None:
            x = self.dw_end(x, training=training)
        x = self._finish(x, inputs)
        return (x, expansion) if self.return_expansion else x

    def compute_output_shape(self, input_shape):
        output_shape = super().compute_output_shape(input_shape)
        if not self.return_expansion:
            return output_shape
        # Only a start-only block (no mid kernel) strides before its expansion.
        stride = self.strides if self.start_kernel and not self.mid_kernel else 1
        expansion_shape = (
            input_shape[0],
            _ceil_div(input_shape[1], stride),
            _ceil_div(input_shape[2], stride),
            self._mid_channels(input_shape[-1]),
        )
        return output_shape, expansion_shape

    def get_config(self):
        names = ("expand_ratio", "start_kernel", "mid_kernel", "end_kernel", "se_ratio", "activation")
        names += ("project_activation", "se_activation", "se_gate", "dilation_rate", "return_expansion")
        return {**super().get_config(), **_arguments(self, *names)}


@keras.saving.register_keras_serializable(package="mnet_backbones")
class FusedInvertedBottleneck(_ResidualBlock):
    """Fused inverted bottleneck: k x k expansion conv + BN + act, 1x1 project + BN.

    Args:
        filters: output channels.
        expand_ratio: expansion of the input channels (rounded to 8).
        kernel_size: kernel of the expansion convolution, which carries the stride.
        strides: 1 or 2.
        activation: activation after the expansion.
        dilation_rate: dilation of the expansion convolution (only with
            `strides=1`).
        return_expansion: also return the expansion convolution's output
            (after BatchNorm and activation; it carries the stride): the
            block then returns `(output, expansion)`.
    """

    def __init__(
        self,
        filters,
        expand_ratio=4.0,
        kernel_size=3,
        strides=1,
        activation="relu",
        dilation_rate=1,
        return_expansion=False,
        **kwargs,
    ):
        super().__init__(filters, strides=strides, **kwargs)
        self.return_expansion = bool(return_expansion)
        self.expand_ratio = expand_ratio
        self.kernel_size = kernel_size
        self.activation = activation
        self.dilation_rate = _check_dilation(dilation_rate, strides)
        get_activation(activation)

    def build(self, input_shape):
        mid_channels = make_divisible(input_shape[-1] * self.expand_ratio)
        self.expand = self._conv(
            mid_channels,
            self.kernel_size,
            self.strides,
            activation=self.activation,
            dilation_rate=self.dilation_rate,
            name="expand",
        )
        self.project = self._conv(self.filters, 1, name="project")
        _build_chain([self.expand, self.project], input_shape)
        self._build_residual(input_shape)

    def call(self, inputs, training=None):
        expansion = self.expand(inputs, training=training)
        x = self._finish(self.project(expansion, training=training), inputs)
        return (x, expansion) if self.return_expansion else x

    def compute_output_shape(self, input_shape):
        output_shape = super().compute_output_shape(input_shape)
        if not self.return_expansion:
            return output_shape
        channels = make_divisible(input_shape[-1] * self.expand_ratio)
        return output_shape, (*output_shape[:3], channels)

    def get_config(self):
        names = ("expand_ratio", "kernel_size", "activation", "dilation_rate", "return_expansion")
        return {**super().get_config(), **_arguments(self, *names)}


def map_size(x):
    """(batch, height, width) of a (B, H, W, C) map, for the shape of a reshape or broadcast.

    Where H and W are known when the graph is traced (always in an exported
    file), they come back as Python ints and the batch as -1, so that the
    converted graph has constant shapes (a RESHAPE that XNNPACK runs, not
    SHAPE / STRIDED_SLICE / PACK ops that split the graph). Otherwise all
    three are read at run time, and one traced graph serves every size.

    Example:
    ```python
    batch, height, width = map_size(keras.ops.ones((2, 5, 7, 16)))  # (-1, 5, 7)
    ```
    """
    height, width = x.shape[1], x.shape[2]
    if height is not None and width is not None:
        return -1, height, width
    shape = ops.shape(x)
    return shape[0], shape[1], shape[2]


@keras.saving.register_keras_serializable(package="mnet_backbones")
class MobileMultiQueryAttention(_ResidualBlock):
    """Mobile multi-query attention block (MobileNetV4 hybrid models).

    BatchNorm, then attention in which all heads share one key and one value
    projection; keys and values may first be downsampled by a strided
    depthwise convolution + BatchNorm. The branch is scaled per channel
    (layer scale) and added to the input.

    Args:
        filters: output channels.
        num_heads: query heads.
        key_dim: channels per head of queries, and of the shared key and value.
        kv_strides: spatial downsampling of keys and values (1 or 2).
        kernel_size: depthwise kernel of that downsampling.
        layer_scale: initial per-channel scale of the branch, or None.
    """

    def __init__(self, filters, num_heads=4, key_dim=64, kv_strides=1, kernel_size=3, **kwargs):
        super().__init__(filters, strides=1, **kwargs)
        self.num_heads = num_heads
        self.key_dim = key_dim
        self.kv_strides = kv_strides
        self.kernel_size = kernel_size

    def build(self, input_shape):
        channels = input_shape[-1]
        self.norm = self._batch_norm("norm")
        self.norm.build(input_shape)

        def projection(filters, name):
            layer = keras.layers.Conv2D(filters, 1, use_bias=False, dtype=self.dtype_policy, name=name)
            layer.build((None, None, None, channels))
            return layer

        def downsample(name):
            if self.kv_strides == 1:
                return None
            layer = self._conv(channels, self.kernel_size, self.kv_strides, depthwise=True, name=name)
            layer.build(input_shape)
            return layer

        self.query = projection(self.num_heads * self.key_dim, "query")
        self.key_down = downsample("key_down")
        self.key = projection(self.key_dim, "key")
        self.value_down = downsample("value_down")
        self.value = projection(self.key_dim, "value")
        self.output_proj = keras.layers.Conv2D(self.filters, 1, use_bias=False, dtype=self.dtype_policy, name="output")
        self.output_proj.build((None, None, None, self.num_heads * self.key_dim))
        self._build_residual(input_shape)

    def _key_value(self, x, down, proj, training):
        if down is not None:
            x = down(x, training=training)
        batch, height, width = map_size(x)
        return ops.reshape(proj(x), (batch, 1, height * width, self.key_dim))  # (B, 1, P, d)

    def call(self, inputs, training=None):
        x = self.norm(inputs, training=training)
        batch, height, width = map_size(x)
        q = ops.reshape(self.query(x), (batch, height * width, self.num_heads, self.key_dim))
        q = ops.transpose(q, (0, 2, 1, 3))  # (B, heads, L, d)
        k = self._key_value(x, self.key_down, self.key, training)
        v = self._key_value(x, self.value_down, self.value, training)
        q = q * ops.cast(self.key_dim**-0.5, q.dtype)
        scores = ops.matmul(q, ops.transpose(k, (0, 1, 3, 2)))  # (B, heads, L, P)
        # Softmax in float32: float16 logits overflow in long sequences.
        weights = ops.cast(ops.softmax(ops.cast(scores, "float32"), axis=-1), v.dtype)
        out = ops.matmul(weights, v)  # (B, heads, L, d)
        out = ops.transpose(out, (0, 2, 1, 3))
        out = ops.reshape(out, (batch, height, width, self.num_heads * self.key_dim))
        return self._finish(self.output_proj(out), inputs)

    def get_config(self):
        config = super().get_config()
        del config["strides"], config["residual"]
        return {**config, **_arguments(self, "num_heads", "key_dim", "kv_strides", "kernel_size")}
