"""The backbone pieces torchvision's models need: feature taps, the reduced
tail, torchvision's dilation, and the `.pth` mapping (issue 11).

Expected channel counts and strides come from torchvision's tables
(`torchvision/models/mobilenetv3.py`, `mobilenetv2.py`) and the MobileNetV4
paper, written out in `tests/data/torchvision_taps.csv`, not read from the code under test.
"""

import csv
import os

import keras
import numpy as np
import pytest

from conftest import PARITY_DIR, trainable_count
from mnet_backbones import MobileNetBackbone, MobileNetImageClassifier
from mnet_backbones.architectures import ARCHITECTURES
from mnet_backbones.convert import torchvision as tv
from mnet_backbones.convert.mapping import WeightMismatchError, load_slots
from mnet_backbones.layers import FusedInvertedBottleneck, InvertedBottleneck

TV_DIR = os.path.join(PARITY_DIR, "torchvision")
SMALL_PTH = os.path.join(TV_DIR, "mobilenet_v3_small", "model.pth")
requires_tv_fixtures = pytest.mark.skipif(
    not os.path.isfile(SMALL_PTH), reason=f"torchvision parity fixtures not found at {TV_DIR}"
)
SIZE = 64  # taps are read at ceil(64 / stride)


# (channels, stride) of some taps of each architecture: tests/data/torchvision_taps.csv,
# from torchvision's tables and the MobileNetV4 paper (its note column says where it matters).
def expected_taps():
    with open(os.path.join(os.path.dirname(__file__), "data", "torchvision_taps.csv"), newline="") as file:
        rows = list(csv.DictReader(file))
    taps = {}
    for row in rows:
        taps.setdefault(row["architecture"], {})[row["tap"]] = (int(row["channels"]), int(row["stride"]))
    return taps


EXPECTED_TAPS = expected_taps()
# Blocks with stride 2 and an expansion conv: exactly those have an expansion tap.
EXPANSION_TAPS = {
    "mobilenetv3_large": ["blocks.1.0", "blocks.2.0", "blocks.3.0", "blocks.5.0"],
    "mobilenetv3_large_reduced_tail": ["blocks.1.0", "blocks.2.0", "blocks.3.0", "blocks.5.0"],
    "mobilenetv3_small": ["blocks.1.0", "blocks.2.0", "blocks.4.0"],
    "mobilenetv2": ["blocks.1.0", "blocks.2.0", "blocks.3.0", "blocks.5.0"],
    "mobilenetv4_conv_small": ["blocks.2.0", "blocks.3.0"],
}


@pytest.fixture(scope="module")
def backbones():
    return {name: MobileNetBackbone(name) for name in EXPECTED_TAPS}


@pytest.mark.parametrize("name", sorted(EXPECTED_TAPS))
def test_tap_channels_and_strides(backbones, name):
    backbone = backbones[name]
    taps = backbone.feature_taps
    expected = EXPECTED_TAPS[name]
    model = keras.Model(backbone.input, {k: taps[k] for k in expected})
    outputs = model(np.zeros((1, SIZE, SIZE, 3), "float32"))
    for tap, (channels, stride) in expected.items():
        side = -(-SIZE // stride)
        assert tuple(outputs[tap].shape) == (1, side, side, channels), tap
    expansions = sorted(k[: -len(".expansion")] for k in taps if k.endswith(".expansion"))
    assert expansions == EXPANSION_TAPS[name]
    arch = ARCHITECTURES[name]
    blocks = [f"blocks.{s}.{i}" for s, stage in enumerate(arch.stages) for i in range(len(stage))]
    assert set(taps) == {"stem", "final", *blocks, *(f"{b}.expansion" for b in expansions)}
    assert taps["final"] is backbone.output


def test_tapped_model_shares_the_backbone_weights(backbones):
    backbone = backbones["mobilenetv3_large"]
    taps = backbone.feature_taps
    tapped = keras.Model(backbone.input, [taps["blocks.5.0.expansion"], taps["final"]])
    assert {id(v) for v in tapped.weights} == {id(v) for v in backbone.weights}
    assert len(tapped.weights) == len(backbone.weights)
    # Changing a backbone variable changes the tapped model's output.
    images = np.random.default_rng(0).normal(size=(1, SIZE, SIZE, 3)).astype("float32")
    before = keras.ops.convert_to_numpy(tapped(images)[1])
    bias = backbone.get_layer("blocks_6_0").bn.beta
    old = keras.ops.convert_to_numpy(bias)
    bias.assign(old + 1.0)
    after = keras.ops.convert_to_numpy(tapped(images)[1])
    bias.assign(old)
    assert not np.allclose(before, after)
    # The pyramid is untouched.
    assert sorted(backbone.pyramid_outputs) == ["P2", "P3", "P4", "P5"]


def _hard_swish(x):
    return x * np.clip(x + 3.0, 0.0, 6.0) / 6.0


def test_expansion_tap_is_the_expansion_computed_by_hand(backbones):
    backbone = backbones["mobilenetv3_large"]
    taps = backbone.feature_taps
    model = keras.Model(backbone.input, [taps["blocks.4.1"], taps["blocks.5.0.expansion"]])
    layer = backbone.get_layer("blocks_5_0")
    rng = np.random.default_rng(1)
    for variable in layer.expand.bn.weights:  # BatchNorm statistics that matter
        variable.assign(rng.uniform(0.5, 1.5, variable.shape).astype("float32"))
    images = rng.normal(size=(1, SIZE, SIZE, 3)).astype("float32")
    block_input, expansion = (keras.ops.convert_to_numpy(t) for t in model(images))
    kernel = keras.ops.convert_to_numpy(layer.expand.conv.kernel)[0, 0]  # (112, 672)
    bn = layer.expand.bn
    gamma, beta, mean, var = (
        keras.ops.convert_to_numpy(v) for v in (bn.gamma, bn.beta, bn.moving_mean, bn.moving_variance)
    )
    by_hand = block_input @ kernel
    by_hand = (by_hand - mean) / np.sqrt(var + bn.epsilon) * gamma + beta
    by_hand = _hard_swish(by_hand)
    assert expansion.shape == (1, 4, 4, 672)
    np.testing.assert_allclose(expansion, by_hand, rtol=1e-4, atol=1e-4 * np.abs(by_hand).max())


def test_fused_block_returns_its_expansion():
    layer = FusedInvertedBottleneck(24, expand_ratio=4, strides=2, return_expansion=True)
    x = np.random.default_rng(2).normal(size=(1, 8, 8, 16)).astype("float32")
    output, expansion = (keras.ops.convert_to_numpy(t) for t in layer(x))
    assert output.shape == (1, 4, 4, 24) and expansion.shape == (1, 4, 4, 64)
    by_parts = keras.ops.convert_to_numpy(layer.expand(x))
    np.testing.assert_allclose(expansion, by_parts, rtol=1e-6)
    np.testing.assert_allclose(output, keras.ops.convert_to_numpy(layer.project(by_parts)), rtol=1e-5, atol=1e-6)
    assert layer.compute_output_shape((1, 8, 8, 16)) == ((1, 4, 4, 24), (1, 4, 4, 64))


def test_block_expansion_option_round_trips_and_old_configs_load():
    layer = InvertedBottleneck(24, expand_ratio=6, strides=2, return_expansion=True)
    config = layer.get_config()
    assert config["return_expansion"] is True
    assert InvertedBottleneck.from_config(config).return_expansion is True
    del config["return_expansion"]  # a config saved before the option existed
    assert InvertedBottleneck.from_config(config).return_expansion is False
    fused = FusedInvertedBottleneck(24, return_expansion=True).get_config()
    del fused["return_expansion"]
    assert FusedInvertedBottleneck.from_config(fused).return_expansion is False
    with pytest.raises(ValueError, match="expansion convolution"):
        InvertedBottleneck(24, expand_ratio=0, return_expansion=True)


def test_taps_survive_config_and_keras_file(backbones, tmp_path):
    backbone = backbones["mobilenetv3_small"]
    path = str(tmp_path / "backbone.keras")
    backbone.save(path)
    loaded = keras.saving.load_model(path)
    assert sorted(loaded.feature_taps) == sorted(backbone.feature_taps)
    images = np.random.default_rng(3).normal(size=(1, SIZE, SIZE, 3)).astype("float32")

    def run(model):
        taps = model.feature_taps
        out = keras.Model(model.input, taps["blocks.4.0.expansion"])(images)
        return keras.ops.convert_to_numpy(out)

    np.testing.assert_allclose(run(loaded), run(backbone), rtol=1e-6)


# ---------------------------------------------------------------------------
# The reduced tail.


def _make_divisible(value, divisor=8):
    # torchvision's `_make_divisible`, written out.
    new = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return new + divisor if new < 0.9 * value else new


def torchvision_v3_large_trainable(reduced_tail, num_classes=1000):
    """Trainable parameters of torchvision's mobilenet_v3_large, from its table.

    Each conv has no bias and is followed by BatchNorm (weight + bias
    trainable); squeeze-excite is two biased 1x1 convs with
    `_make_divisible(expanded // 4, 8)` squeeze channels; the classifier is
    Linear(6 * last, head) + Linear(head, classes)."""
    d = 2 if reduced_tail else 1
    # (input, kernel, expanded, output, squeeze-excite): torchvision's bneck_conf rows
    rows = [
        (16, 3, 16, 16, False),
        (16, 3, 64, 24, False),
        (24, 3, 72, 24, False),
        (24, 5, 72, 40, True),
        (40, 5, 120, 40, True),
        (40, 5, 120, 40, True),
        (40, 3, 240, 80, False),
        (80, 3, 200, 80, False),
        (80, 3, 184, 80, False),
        (80, 3, 184, 80, False),
        (80, 3, 480, 112, True),
        (112, 3, 672, 112, True),
        (112, 5, 672, 160 // d, True),
        (160 // d, 5, 960 // d, 160 // d, True),
        (160 // d, 5, 960 // d, 160 // d, True),
    ]
    total = 3 * 3 * 3 * 16 + 2 * 16  # stem conv + BN
    for cin, k, exp, cout, se in rows:
        if exp != cin:
            total += cin * exp + 2 * exp  # 1x1 expansion + BN
        total += k * k * exp + 2 * exp  # depthwise + BN
        if se:
            squeeze = _make_divisible(exp // 4)
            total += exp * squeeze + squeeze + squeeze * exp + exp
        total += exp * cout + 2 * cout  # projection + BN
    last_in = rows[-1][3]
    last = 6 * last_in
    total += last_in * last + 2 * last  # final 1x1 conv + BN
    head = _make_divisible(1280 // d)
    total += last * head + head + head * num_classes + num_classes
    return total


def test_hand_arithmetic_matches_torchvisions_published_count():
    # torchvision's MobileNet_V3_Large_Weights meta: num_params 5483032 (all
    # parameters; BatchNorm's running statistics are buffers, not parameters).
    assert torchvision_v3_large_trainable(reduced_tail=False) == 5_483_032


def test_reduced_tail_classifier_matches_torchvision():
    expected = torchvision_v3_large_trainable(reduced_tail=True)
    classifier = MobileNetImageClassifier(MobileNetBackbone("mobilenetv3_large_reduced_tail"), num_classes=1000)
    assert trainable_count(classifier) == expected
    assert classifier.head_dense.units == 640


# ---------------------------------------------------------------------------
# Dilation.


def _dilations(backbone):
    return {
        layer.name: layer.get_config().get("dilation_rate")
        for layer in backbone.layers
        if layer.name.startswith("blocks_")
    }


def test_dilate_strided_block_changes_only_the_first_dilated_block():
    timm_style = _dilations(MobileNetBackbone("mobilenetv3_small", width_multiplier=0.5, output_stride=16))
    torchvision_style = MobileNetBackbone(
        "mobilenetv3_small", width_multiplier=0.5, output_stride=16, dilate_strided_block=True
    )
    differing = {k for k in timm_style if timm_style[k] != _dilations(torchvision_style)[k]}
    assert differing == {"blocks_4_0"}  # torchvision's C4 block: stride 1, dilation 2
    assert timm_style["blocks_4_0"] == 1 and _dilations(torchvision_style)["blocks_4_0"] == 2
    assert timm_style["blocks_4_1"] == 2 and timm_style["blocks_3_1"] == 1
    assert torchvision_style.get_layer("blocks_4_0").strides == 1
    assert torchvision_style.get_config()["dilate_strided_block"] is True
    rebuilt = MobileNetBackbone.from_config(torchvision_style.get_config())
    assert _dilations(rebuilt) == _dilations(torchvision_style)
    # At output stride 32 nothing is dilated either way.
    plain = MobileNetBackbone("mobilenetv3_small", width_multiplier=0.5, dilate_strided_block=True)
    assert set(_dilations(plain).values()) == {1}


def test_dilate_strided_block_at_output_stride_8():
    dilations = _dilations(
        MobileNetBackbone("mobilenetv3_small", width_multiplier=0.5, output_stride=8, dilate_strided_block=True)
    )
    assert dilations["blocks_2_0"] == 2 and dilations["blocks_4_0"] == 4
    assert dilations["blocks_1_1"] == 1 and dilations["blocks_4_2"] == 4


def test_old_backbone_config_without_the_option_loads():
    config = MobileNetBackbone("mobilenetv3_small", width_multiplier=0.5).get_config()
    del config["dilate_strided_block"]
    assert MobileNetBackbone.from_config(config).dilate_strided_block is False


def test_dilate_strided_block_must_be_a_bool():
    with pytest.raises(TypeError, match="dilate_strided_block"):
        MobileNetBackbone("mobilenetv3_small", dilate_strided_block="yes")


# ---------------------------------------------------------------------------
# Architecture names.


def test_a_preset_name_as_architecture_points_to_from_preset():
    with pytest.raises(ValueError) as error:
        MobileNetBackbone("mobilenetv3_small_100")
    message = str(error.value)
    assert 'MobileNetBackbone.from_preset("mobilenetv3_small_100")' in message or (
        "MobileNetBackbone.from_preset('mobilenetv3_small_100')" in message
    )
    assert "mobilenetv3_small" in message and "mobilenetv4_conv_small" in message
    with pytest.raises(ValueError, match="Valid names"):
        MobileNetBackbone("no_such_architecture")


# ---------------------------------------------------------------------------
# The .pth mapping.


@requires_tv_fixtures
def test_read_state_dict_gives_float32_numpy_without_counters():
    state_dict = tv.read_state_dict(SMALL_PTH)
    assert all(isinstance(v, np.ndarray) and v.dtype == np.float32 for v in state_dict.values())
    assert not any(k.endswith("num_batches_tracked") for k in state_dict)
    assert state_dict["features.0.0.weight"].shape == (16, 3, 3, 3)


@requires_tv_fixtures
def test_backbone_slots_name_every_feature_tensor_of_the_checkpoint():
    state_dict = tv.read_state_dict(SMALL_PTH)
    backbone = MobileNetBackbone("mobilenetv3_small", **tv.TORCHVISION_CONVENTION)
    slots = list(tv.backbone_slots(backbone))
    keys = [key for _, key, _ in slots]
    assert len(keys) == len(set(keys)) == len(backbone.weights)
    assert set(keys) == {k for k in state_dict if k.startswith("features.")}
    # torchvision's names: the SE of block 1 (stride 2, no expansion) is block.1.
    assert "features.1.block.1.fc1.weight" in keys and "features.12.1.running_var" in keys
    load_slots(slots, state_dict, "fixture", allowed_unused_prefixes=("classifier.",))
    kernel = keras.ops.convert_to_numpy(backbone.get_layer("stem").conv.kernel)
    np.testing.assert_array_equal(kernel, state_dict["features.0.0.weight"].transpose(2, 3, 1, 0))


def test_backbone_slots_prefix_and_v2_names(backbones):
    backbone = backbones["mobilenetv2"]
    keys = [key for _, key, _ in tv.backbone_slots(backbone, prefix="backbone.")]
    # features.1: no expansion (dw conv.0, projection conv.1 + BN conv.2); later blocks four parts.
    for key in (
        "backbone.0.0.weight",
        "backbone.1.conv.0.0.weight",
        "backbone.1.conv.1.weight",
        "backbone.1.conv.2.running_mean",
        "backbone.2.conv.0.1.weight",
        "backbone.2.conv.2.weight",
        "backbone.2.conv.3.bias",
        "backbone.18.0.weight",
        "backbone.18.1.running_var",
    ):
        assert key in keys, key
    assert not any(key.startswith("backbone.19") for key in keys)


def test_torchvision_index(backbones):
    backbone = backbones["mobilenetv3_large"]
    assert tv.torchvision_index(backbone, "stem") == 0
    assert tv.torchvision_index(backbone, "blocks.0.0") == 1
    assert tv.torchvision_index(backbone, "blocks.2.0") == 4  # segmentation's low-level tap
    assert tv.torchvision_index(backbone, "blocks.5.0") == 13  # SSDLite's C4
    assert tv.torchvision_index(backbone, "blocks.5.0.expansion") == 13
    assert tv.torchvision_index(backbone, "final") == 16
    assert tv.torchvision_index(backbones["mobilenetv2"], "final") == 18
    with pytest.raises(ValueError, match="blocks.9.9"):
        tv.torchvision_index(backbone, "blocks.9.9")
    with pytest.raises(ValueError, match="torchvision has no MobileNet"):
        tv.torchvision_index(backbones["mobilenetv4_conv_small"], "stem")


def test_load_slots_names_the_tensor_and_both_shapes_and_assigns_nothing():
    backbone = MobileNetBackbone("mobilenetv3_small", width_multiplier=0.5, **tv.TORCHVISION_CONVENTION)
    slots = list(tv.backbone_slots(backbone))
    rng = np.random.default_rng(4)
    state_dict = {}
    for variable, key, transform in slots:  # a consistent checkpoint in PyTorch's layout
        shape = tuple(variable.shape)
        if len(shape) == 4:
            shape = (shape[2], shape[3], shape[0], shape[1]) if shape[3] == 1 else (shape[3], shape[2], *shape[:2])
        state_dict[key] = rng.normal(size=shape).astype("float32")
    before = [keras.ops.convert_to_numpy(v).copy() for v in backbone.weights]
    bad = dict(state_dict, **{"features.3.block.0.0.weight": np.zeros((7, 3, 1, 1), "float32")})
    with pytest.raises(WeightMismatchError) as error:
        load_slots(slots, bad, "bad.pth")
    message = str(error.value)
    assert "features.3.block.0.0.weight" in message and "(7, 3, 1, 1)" in message and "bad.pth" in message
    assert "Nothing was loaded" in message
    missing = dict(state_dict)
    del missing["features.5.block.2.fc2.bias"]
    with pytest.raises(WeightMismatchError, match=r"features\.5\.block\.2\.fc2\.bias.*missing"):
        load_slots(slots, missing, "missing.pth")
    extra = dict(state_dict, **{"features.99.0.weight": np.zeros((1,), "float32")})
    with pytest.raises(WeightMismatchError, match=r"features\.99\.0\.weight"):
        load_slots(slots, extra, "extra.pth")
    for variable, value in zip(backbone.weights, before):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(variable), value)
    load_slots(slots, state_dict, "good.pth")  # and the consistent one loads
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(backbone.get_layer("stem").bn.moving_mean), state_dict["features.0.1.running_mean"]
    )
