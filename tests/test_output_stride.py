"""`output_stride`: later strides become dilation, on every generation.

The atrous trick is exact where every block is local: a stride-16 network's
deepest map, sampled every other pixel, is the stride-32 network's map (with
symmetric padding the zero padding lines up too). Squeeze-excite (V3) and
attention (V4 hybrid) pool over the whole, now denser, map, so there it
holds only approximately and the tests check shapes and weights.
"""

import keras
import numpy as np
import pytest

import mnet_backbones
from mnet_backbones.layers import FusedInvertedBottleneck, InvertedBottleneck

RNG = np.random.default_rng(0)
SIZE = (64, 96)  # expected sizes below: ceil(side / stride)
EXPECTED = {
    32: {"P2": (16, 24), "P3": (8, 12), "P4": (4, 6), "P5": (2, 3)},
    16: {"P2": (16, 24), "P3": (8, 12), "P4": (4, 6), "P5": (4, 6)},
    8: {"P2": (16, 24), "P3": (8, 12), "P4": (8, 12), "P5": (8, 12)},
}
# One small model per generation; the last two have SE / attention.
GENERATIONS = [
    ("mobilenetv1", 0.25),
    ("mobilenetv2", 0.35),
    ("mobilenetv4_conv_small", 0.5),
    ("mobilenetv3_small", 0.5),
    ("mobilenetv4_hybrid_medium", 0.25),
]
LOCAL_GENERATIONS = GENERATIONS[:3]


def _backbone(architecture, width, output_stride):
    return mnet_backbones.MobileNetBackbone(architecture, width_multiplier=width, output_stride=output_stride)


def _pyramid(backbone, images):
    model = keras.Model(backbone.input, backbone.pyramid_outputs)
    return {k: keras.ops.convert_to_numpy(v) for k, v in model(images, training=False).items()}


@pytest.mark.parametrize("architecture,width", GENERATIONS)
def test_pyramid_keys_and_real_strides(architecture, width):
    images = RNG.normal(size=(1,) + SIZE + (3,)).astype("float32")
    reference = _backbone(architecture, width, 32)
    for output_stride in (16, 8):
        backbone = _backbone(architecture, width, output_stride)
        assert backbone.count_params() == reference.count_params()
        backbone.set_weights(reference.get_weights())  # same variables, same shapes
        features = _pyramid(backbone, images)
        assert sorted(features) == ["P2", "P3", "P4", "P5"]
        shapes = {k: v.shape[1:3] for k, v in features.items()}
        assert shapes == EXPECTED[output_stride], (architecture, output_stride)
        assert all(np.isfinite(v).all() for v in features.values())


@pytest.mark.parametrize("architecture,width", LOCAL_GENERATIONS)
def test_dilated_maps_sampled_equal_the_strided_ones(architecture, width):
    images = RNG.normal(size=(1, 64, 64, 3)).astype("float32")
    reference = _backbone(architecture, width, 32)
    expected = _pyramid(reference, images)
    for output_stride, level_steps in ((16, {"P5": 2}), (8, {"P4": 2, "P5": 4})):
        backbone = _backbone(architecture, width, output_stride)
        backbone.set_weights(reference.get_weights())
        features = _pyramid(backbone, images)
        np.testing.assert_allclose(features["P3"], expected["P3"], rtol=1e-5, atol=1e-5)
        for level, step in level_steps.items():
            sampled = features[level][:, ::step, ::step]
            # Float32 error scales with the map's values (deep random-init maps reach tens):
            # the absolute part is relative to the map's largest value.
            scale = max(1.0, float(np.abs(expected[level]).max()))
            np.testing.assert_allclose(sampled, expected[level], rtol=1e-4, atol=1e-4 * scale, err_msg=level)


def test_from_preset_output_stride_and_round_trip(tmp_path):
    backbone = mnet_backbones.Backbone.from_preset("mobilenetv3_small_050", load_weights=False, output_stride=16)
    assert backbone.output_stride == 16
    assert backbone.get_config()["output_stride"] == 16
    images = RNG.normal(size=(2, 64, 64, 3)).astype("float32")
    expected = keras.ops.convert_to_numpy(backbone(images))
    assert expected.shape[1:3] == (4, 4)
    path = str(tmp_path / "backbone.keras")
    backbone.save(path)
    restored = keras.models.load_model(path)
    assert restored.output_stride == 16
    np.testing.assert_allclose(keras.ops.convert_to_numpy(restored(images)), expected, rtol=1e-5, atol=1e-5)
    # A stride-32 config (as every shipped preset has) still loads at stride 32.
    config = mnet_backbones.Backbone.from_preset("mobilenetv3_small_050", load_weights=False).get_config()
    assert config["output_stride"] == 32


@pytest.mark.parametrize("output_stride", [4, 64, "16", True])
def test_bad_output_stride(output_stride):
    with pytest.raises(ValueError, match="output_stride must be one of"):
        mnet_backbones.MobileNetBackbone("mobilenetv1", width_multiplier=0.25, output_stride=output_stride)


def test_blocks_store_dilation_and_refuse_it_with_strides():
    block = InvertedBottleneck(16, start_kernel=3, mid_kernel=5, dilation_rate=2)
    assert block.get_config()["dilation_rate"] == 2
    assert InvertedBottleneck.from_config(block.get_config()).dilation_rate == 2
    block.build((None, 8, 8, 16))
    assert block.dw_start.dilation_rate == 2 and block.dw_mid.dilation_rate == 2
    fused = FusedInvertedBottleneck(16, dilation_rate=4)
    assert FusedInvertedBottleneck.from_config(fused.get_config()).dilation_rate == 4
    with pytest.raises(ValueError, match="needs strides=1"):
        InvertedBottleneck(16, strides=2, dilation_rate=2)
    with pytest.raises(ValueError, match="positive int"):
        FusedInvertedBottleneck(16, dilation_rate=0)
