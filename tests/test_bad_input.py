"""Bad input fails early with a message naming the value and what is allowed."""

import numpy as np
import pytest

from mnet_backbones import MobileNetBackbone, MobileNetImageClassifier


@pytest.mark.parametrize("width", [0, -0.5, 0.0])
def test_non_positive_width_multiplier(width):
    with pytest.raises(ValueError, match="width_multiplier must be positive"):
        MobileNetBackbone("mobilenetv3_large", width_multiplier=width)


def test_non_numeric_width_multiplier():
    with pytest.raises(TypeError, match="width_multiplier must be a number"):
        MobileNetBackbone("mobilenetv3_large", width_multiplier="1.0")


def test_unknown_architecture_lists_valid_names():
    with pytest.raises(ValueError, match="mobilenetv4_conv_small"):
        MobileNetBackbone("mobilenetv9")


@pytest.mark.parametrize(
    "image_shape, message",
    [
        ((224, 224), "height, width, channels"),
        ((3, 224, 224, 1), "height, width, channels"),
        ((224, 224, 0), "channel count"),
        ((16, 224, 3), "at least 32"),
    ],
)
def test_bad_image_shape(image_shape, message):
    with pytest.raises(ValueError, match=message):
        MobileNetBackbone("mobilenetv2", image_shape=image_shape)


def test_input_of_wrong_rank_or_channels():
    backbone = MobileNetBackbone("mobilenetv4_conv_small")
    # Keras' input-spec check names both shapes for a wrong channel count.
    with pytest.raises(ValueError, match=r"expected shape=\(None, None, None, 3\), found shape=\(1, 64, 64, 4\)"):
        backbone(np.zeros((1, 64, 64, 4), "float32"))
    with pytest.raises(ValueError, match=r"\(batch, height, width, 3\).*\(64, 64, 3\)"):
        backbone(np.zeros((64, 64, 3), "float32"))
    with pytest.raises(ValueError, match=r"\(batch, height, width, 3\)"):
        backbone.predict(np.zeros((2, 64, 64, 1), "float32"), verbose=0)


def test_bad_padding():
    with pytest.raises(ValueError, match="symmetric"):
        MobileNetBackbone("mobilenetv1", padding="valid")


def test_classifier_arguments():
    backbone = MobileNetBackbone("mobilenetv3_small")
    with pytest.raises(ValueError, match="`num_classes` must be a positive int"):
        MobileNetImageClassifier(backbone=backbone, num_classes=0)
    with pytest.raises(TypeError, match="MobileNetBackbone"):
        MobileNetImageClassifier(backbone="mobilenetv3_small", num_classes=3)
