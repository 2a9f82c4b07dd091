"""The layer vocabulary: formulas, padding conventions, attention, configs."""

import math

import keras
import numpy as np
import pytest
from keras import ops

from mnet_backbones.layers import (
    ConvBNAct,
    FusedInvertedBottleneck,
    InvertedBottleneck,
    MobileMultiQueryAttention,
    SqueezeExcite,
    gelu,
    get_activation,
    hard_sigmoid,
    hard_swish,
    hard_swish_int8,
    map_size,
    symmetric_pads,
)

RNG = np.random.default_rng(0)


def _images(shape):
    return RNG.normal(size=shape).astype("float32")


def _randomize(layer):
    for variable in layer.weights:
        value = RNG.normal(0, 0.3, tuple(variable.shape))
        if variable.path.endswith("moving_variance"):
            value = np.abs(value) + 0.5
        variable.assign(value.astype("float32"))


def test_activation_formulas():
    x = np.linspace(-6, 6, 49).astype("float32")
    tensor = ops.convert_to_tensor(x)
    relu6 = np.clip(x + 3, 0, 6)
    np.testing.assert_allclose(ops.convert_to_numpy(hard_sigmoid(tensor)), relu6 / 6, atol=1e-7)
    np.testing.assert_allclose(ops.convert_to_numpy(hard_swish(tensor)), x * relu6 / 6, atol=1e-6)
    exact = 0.5 * x * (1 + np.array([math.erf(v / math.sqrt(2)) for v in x]))
    np.testing.assert_allclose(ops.convert_to_numpy(gelu(tensor)), exact, atol=1e-6)


def test_int8_form_of_hard_swish_is_the_same_function():
    x = np.linspace(-6, 6, 49).astype("float32")
    expected = x * np.clip(x + 3, 0, 6) / 6
    np.testing.assert_allclose(ops.convert_to_numpy(hard_swish_int8(ops.convert_to_tensor(x))), expected, atol=1e-6)
    assert get_activation("hard_swish") is hard_swish
    assert get_activation("hard_swish", "int8") is hard_swish_int8
    assert get_activation("relu", "int8") is get_activation("relu")  # the form only touches hard-swish


def test_hard_swish_form_is_a_layer_argument():
    # Two layers of either form side by side in one process: nothing global.
    fused = ConvBNAct(8, 3, activation="hard_swish")
    integer = ConvBNAct(8, 3, activation="hard_swish", hard_swish_form="int8")
    x = _images((1, 6, 6, 4))
    fused(x), integer(x)
    integer.set_weights(fused.get_weights())
    np.testing.assert_allclose(ops.convert_to_numpy(integer(x)), ops.convert_to_numpy(fused(x)), atol=1e-6)
    assert fused._activation_fn is hard_swish and integer._activation_fn is hard_swish_int8
    assert ConvBNAct.from_config(integer.get_config()).hard_swish_form == "int8"
    # Blocks hand it to their convolutions.
    block = InvertedBottleneck(8, 2.0, mid_kernel=3, activation="hard_swish", hard_swish_form="int8")
    block(x[..., :4].repeat(2, axis=-1))
    assert block.expand._activation_fn is hard_swish_int8
    with pytest.raises(ValueError, match="hard_swish_form"):
        ConvBNAct(8, activation="hard_swish", hard_swish_form="quantized")


def test_map_size_is_constant_where_the_map_size_is_known():
    assert map_size(ops.ones((2, 5, 7, 3))) == (-1, 5, 7)
    # Unknown sizes are read at run time, so one traced graph serves every size.
    inputs = keras.Input((None, None, 3))
    batch, height, width = map_size(inputs)
    assert not isinstance(height, int) and not isinstance(width, int)


def test_conv_bn_act_takes_a_kernel_initializer():
    he = ConvBNAct(8, 3)
    glorot = ConvBNAct(8, 3, kernel_initializer="glorot_uniform")
    assert isinstance(he.conv.kernel_initializer, keras.initializers.VarianceScaling)
    assert isinstance(glorot.conv.kernel_initializer, keras.initializers.GlorotUniform)
    restored = ConvBNAct.from_config(glorot.get_config())
    assert isinstance(restored.conv.kernel_initializer, keras.initializers.GlorotUniform)
    assert ConvBNAct.from_config(he.get_config()).kernel_initializer is None


@pytest.mark.parametrize("size", [8, 9])
def test_symmetric_and_same_padding_differ_only_when_strided(size):
    x = _images((1, size, size, 4))
    outputs = {}
    for padding in ("symmetric", "same"):
        for strides in (1, 2):
            layer = ConvBNAct(5, 3, strides=strides, padding=padding, use_bn=False)
            layer.build(x.shape)
            layer.conv.kernel.assign(np.ones((3, 3, 4, 5), "float32"))
            outputs[padding, strides] = ops.convert_to_numpy(layer(x))
    np.testing.assert_allclose(outputs["symmetric", 1], outputs["same", 1], atol=1e-5)
    half = math.ceil(size / 2)
    assert outputs["symmetric", 2].shape == outputs["same", 2].shape == (1, half, half, 5)
    # Symmetric pads the top-left; "same" on an even size pads only bottom-right.
    same_at_origin = outputs["same", 2][0, 0, 0]
    expected_same = x[0, 0:3, 0:3].sum() if size % 2 == 0 else x[0, 0:2, 0:2].sum()
    np.testing.assert_allclose(same_at_origin, expected_same, rtol=1e-5)
    np.testing.assert_allclose(outputs["symmetric", 2][0, 0, 0], x[0, 0:2, 0:2].sum(), rtol=1e-5)


@pytest.mark.parametrize(
    "size, kernel_size, expected",
    # Worked by hand: the last of ceil(size / 2) windows starts at
    # 2 * (outputs - 1) - kernel_size // 2 and is kernel_size wide.
    [(224, 3, (1, 0)), (225, 3, (1, 1)), (112, 5, (2, 1)), (113, 5, (2, 2)), (None, 3, (1, 1)), (None, 5, (2, 2))],
)
def test_symmetric_padding_adds_only_the_zeros_a_window_reads(size, kernel_size, expected):
    assert symmetric_pads(size, kernel_size, strides=2) == expected


@pytest.mark.parametrize("size", [8, 9, 10, 11])
@pytest.mark.parametrize("kernel_size", [3, 5])
def test_trimmed_symmetric_padding_equals_timms(size, kernel_size):
    x = _images((1, size, size, 2))
    layer = ConvBNAct(3, kernel_size, strides=2, padding="symmetric", use_bn=False)
    layer.build(x.shape)
    kernel = RNG.normal(size=(kernel_size, kernel_size, 2, 3)).astype("float32")
    layer.conv.kernel.assign(kernel)
    # timm: kernel_size // 2 zeros on every side, then a strided valid convolution.
    pad = kernel_size // 2
    padded = np.pad(x[0], [(pad, pad), (pad, pad), (0, 0)])
    outputs = math.ceil(size / 2)
    expected = np.empty((outputs, outputs, 3), "float32")
    for i in range(outputs):
        for j in range(outputs):
            window = padded[2 * i : 2 * i + kernel_size, 2 * j : 2 * j + kernel_size]
            expected[i, j] = np.einsum("hwc,hwco->o", window, kernel)
    np.testing.assert_allclose(ops.convert_to_numpy(layer(x))[0], expected, rtol=1e-5, atol=1e-5)


def _numpy_batch_norm(x, bn):
    mean, var = ops.convert_to_numpy(bn.moving_mean), ops.convert_to_numpy(bn.moving_variance)
    gamma, beta = ops.convert_to_numpy(bn.gamma), ops.convert_to_numpy(bn.beta)
    return (x - mean) / np.sqrt(var + bn.epsilon) * gamma + beta


def test_multi_query_attention_matches_a_numpy_reference():
    heads, key_dim, channels = 3, 8, 12
    layer = MobileMultiQueryAttention(channels, num_heads=heads, key_dim=key_dim, layer_scale=0.5)
    x = _images((2, 5, 7, channels))
    layer.build(x.shape)
    _randomize(layer)
    actual = ops.convert_to_numpy(layer(x, training=False))

    normed = _numpy_batch_norm(x, layer.norm).reshape(2, 35, channels)
    wq = ops.convert_to_numpy(layer.query.kernel)[0, 0]
    wk = ops.convert_to_numpy(layer.key.kernel)[0, 0]
    wv = ops.convert_to_numpy(layer.value.kernel)[0, 0]
    wo = ops.convert_to_numpy(layer.output_proj.kernel)[0, 0]
    q = (normed @ wq).reshape(2, 35, heads, key_dim)
    k, v = normed @ wk, normed @ wv
    logits = np.einsum("blhd,bpd->bhlp", q, k) / np.sqrt(key_dim)
    weights = np.exp(logits - logits.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    attended = np.einsum("bhlp,bpd->blhd", weights, v).reshape(2, 35, heads * key_dim)
    branch = (attended @ wo) * ops.convert_to_numpy(layer.gamma)
    expected = x + branch.reshape(2, 5, 7, channels)
    np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-4)


def test_attention_key_value_downsampling_shapes():
    layer = MobileMultiQueryAttention(16, num_heads=2, key_dim=8, kv_strides=2)
    out = layer(_images((1, 9, 11, 16)))
    assert tuple(out.shape) == (1, 9, 11, 16)
    assert layer.key_down is not None and layer.key_down.strides == 2


def test_inverted_bottleneck_variants():
    x = _images((1, 8, 8, 16))
    # V4 ExtraDW with layer scale: residual branch starts scaled by 1e-5.
    extra_dw = InvertedBottleneck(16, 4, start_kernel=3, mid_kernel=5, layer_scale=1e-5)
    out = ops.convert_to_numpy(extra_dw(x))
    np.testing.assert_allclose(out, x, atol=1e-3)
    assert extra_dw.dw_start.depthwise and extra_dw.expand.filters == 64
    # V1 depthwise-separable: no expansion, activation after projection, no skip.
    separable = InvertedBottleneck(
        24, 0, mid_kernel=3, strides=2, activation="relu6", project_activation=True, residual=False
    )
    out = ops.convert_to_numpy(separable(x))
    assert out.shape == (1, 4, 4, 24) and out.min() >= 0 and out.max() <= 6
    assert separable.expand is None
    # FFN (no depthwise) and ConvNeXt (start only) keep the resolution.
    assert tuple(InvertedBottleneck(16, 2, mid_kernel=0)(x).shape) == (1, 8, 8, 16)
    convnext = InvertedBottleneck(16, 4, start_kernel=3, mid_kernel=0, strides=2)
    assert tuple(convnext(x).shape) == (1, 4, 4, 16) and convnext.dw_start.strides == 2
    # V3 block with squeeze-excite on the expanded channels (72 -> 24).
    se_block = InvertedBottleneck(24, 4.5, mid_kernel=5, se_ratio=0.25)
    se_block(x)
    assert se_block.se.reduced_filters == 24 and se_block.expand.filters == 72


def test_strided_bottleneck_without_depthwise_is_rejected():
    with pytest.raises(ValueError, match="depthwise kernel"):
        InvertedBottleneck(16, 2, mid_kernel=0, strides=2)


def test_unknown_activation_and_padding_are_rejected():
    with pytest.raises(ValueError, match="hard_swish"):
        ConvBNAct(8, activation="swishy")
    with pytest.raises(ValueError, match="symmetric"):
        ConvBNAct(8, padding="valid")


LAYERS = [
    lambda: ConvBNAct(8, 3, strides=2, activation="hard_swish", padding="same", bn_epsilon=1e-3),
    lambda: SqueezeExcite(4, activation="relu", gate="hard_sigmoid"),
    lambda: InvertedBottleneck(16, 4.0, start_kernel=3, mid_kernel=5, se_ratio=0.25, layer_scale=1e-5),
    lambda: FusedInvertedBottleneck(24, 4.0, kernel_size=3, strides=2),
    lambda: MobileMultiQueryAttention(16, num_heads=2, key_dim=8, kv_strides=2, layer_scale=1e-5),
]


@pytest.mark.parametrize("make_layer", LAYERS)
def test_layers_round_trip_through_config_and_keras_files(make_layer, tmp_path):
    x = _images((2, 10, 12, 16))
    inputs = keras.Input((None, None, 16))
    model = keras.Model(inputs, make_layer()(inputs))
    _randomize(model)
    expected = model.predict(x, verbose=0)
    clone = keras.Model.from_config(model.get_config())
    clone.set_weights(model.get_weights())
    np.testing.assert_allclose(clone.predict(x, verbose=0), expected, rtol=1e-6, atol=1e-6)
    path = str(tmp_path / "layer.keras")
    model.save(path)
    restored = keras.models.load_model(path)
    np.testing.assert_array_equal(restored.predict(x, verbose=0), expected)


def test_layer_scale_starts_small_only_on_residual_branches():
    x = _images((1, 8, 8, 16))
    residual = InvertedBottleneck(16, 2, mid_kernel=3, layer_scale=1e-5)
    strided = InvertedBottleneck(24, 2, mid_kernel=3, strides=2, layer_scale=1e-5)
    residual(x), strided(x)
    np.testing.assert_array_equal(ops.convert_to_numpy(residual.gamma), np.full(16, 1e-5, "float32"))
    np.testing.assert_array_equal(ops.convert_to_numpy(strided.gamma), np.ones(24, "float32"))
