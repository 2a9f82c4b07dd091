"""Every preset matches REFERENCE.md to the parameter and to the channel."""

import math

import keras
import keras_hub
import numpy as np
import pytest

import mnet_backbones
from conftest import ALL_PRESETS, REFERENCE, trainable_count
from mnet_backbones import MobileNetBackbone, MobileNetImageClassifier

LEVELS = ("P2", "P3", "P4", "P5")


@pytest.mark.parametrize("name", ALL_PRESETS)
def test_parameters_and_pyramid_channels(name):
    backbone = keras_hub.models.Backbone.from_preset(name, load_weights=False)
    assert isinstance(backbone, MobileNetBackbone)
    classifier = MobileNetImageClassifier(backbone=backbone, num_classes=1000)
    assert trainable_count(classifier) == REFERENCE[name]["classifier_params"]
    assert sorted(backbone.pyramid_outputs) == list(LEVELS)
    channels = tuple(backbone.pyramid_outputs[k].shape[-1] for k in LEVELS)
    assert channels == REFERENCE[name]["pyramid_channels"]


@pytest.mark.parametrize(
    "name", ["mobilenetv1_025", "mobilenetv2_035", "mobilenetv3_small_050", "mobilenetv4_hybrid_medium"]
)
@pytest.mark.parametrize("size", [(32, 32), (33, 47), (161, 193), (64, 96), (97, 65)])
def test_pyramid_sizes_are_ceil_of_stride(name, size):
    backbone = MobileNetBackbone.from_preset(name, load_weights=False)
    pyramid = keras.Model(backbone.input, backbone.pyramid_outputs)
    features = pyramid.predict(np.zeros((1, *size, 3), "float32"), verbose=0)
    for level, stride in zip(LEVELS, (4, 8, 16, 32)):
        expected = (1, math.ceil(size[0] / stride), math.ceil(size[1] / stride))
        assert features[level].shape[:3] == expected, (level, features[level].shape)


@pytest.mark.parametrize(
    "name, output_channels",
    [
        ("mobilenetv1_100", 1024),  # last depthwise-separable block
        ("mobilenetv2_100", 1280),  # the 1x1 conv after the pyramid's 320
        ("mobilenetv2_140", 1792),  # ... widened with the multiplier
        ("mobilenetv3_large_100", 960),
        ("mobilenetv4_conv_small", 960),
    ],
)
def test_backbone_output_feeds_the_head(name, output_channels):
    backbone = MobileNetBackbone.from_preset(name, load_weights=False)
    assert backbone.output.shape[-1] == output_channels
    if name.startswith(("mobilenetv3", "mobilenetv4")):
        assert backbone.output is backbone.pyramid_outputs["P5"]


# Channels hand-computed from each reference's rounding rule: timm's
# make_divisible(c * m, 8) (never more than 10% down) for V2-V4, and
# keras.applications' int(c * m) for V1.
@pytest.mark.parametrize(
    "architecture, width, channels",
    [
        ("mobilenetv1", 0.3, (38, 76, 153, 307)),
        ("mobilenetv2", 0.6, (16, 24, 56, 192)),
        ("mobilenetv3_large", 0.6, (16, 24, 64, 576)),
        ("mobilenetv3_small", 1.25, (24, 32, 64, 720)),
        ("mobilenetv4_conv_small", 0.5, (16, 32, 48, 480)),
        ("mobilenetv4_hybrid_medium", 0.5, (24, 40, 80, 480)),
    ],
)
def test_width_multiplier_rounds_like_the_reference(architecture, width, channels):
    backbone = MobileNetBackbone(architecture, width_multiplier=width)
    assert tuple(backbone.pyramid_outputs[k].shape[-1] for k in LEVELS) == channels
    outputs = backbone.predict(np.zeros((1, 32, 32, 3), "float32"), verbose=0)
    assert outputs.shape[:3] == (1, 1, 1)


def test_classifier_outputs_logits_with_the_generation_head():
    backbone = MobileNetBackbone("mobilenetv4_conv_small")
    classifier = MobileNetImageClassifier(backbone=backbone, num_classes=7)
    names = [layer.name for layer in classifier.layers]
    assert "head_dense" in names and "head_norm" in names
    logits = classifier.predict(np.random.rand(2, 40, 56, 3).astype("float32"), verbose=0)
    assert logits.shape == (2, 7)
    assert not np.allclose(logits.sum(-1), 1.0)  # logits, not probabilities
    v2 = MobileNetImageClassifier(backbone=MobileNetBackbone("mobilenetv2"), num_classes=7)
    assert "head_dense" not in [layer.name for layer in v2.layers]


def test_backbone_alias_and_exports():
    assert mnet_backbones.Backbone is MobileNetBackbone
    assert issubclass(MobileNetBackbone, keras_hub.models.FeaturePyramidBackbone)
    assert issubclass(MobileNetImageClassifier, keras_hub.models.ImageClassifier)
