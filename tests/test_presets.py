"""Built-in presets: registered with keras-hub, offline, round-trip, clear errors."""

import os

import keras_hub
import numpy as np
import pytest

from conftest import ALL_PRESETS, randomize_statistics
from mnet_backbones import (
    MobileNetBackbone,
    MobileNetImageClassifier,
)
from mnet_backbones.presets import PRESET_DIR, get_preset, preset_files

# torchvision's published ImageNet checkpoints, beside the reference table's presets.
TORCHVISION_NAMES = [
    "mobilenetv2_100_torchvision",
    "mobilenetv3_large_100_torchvision",
    "mobilenetv3_small_100_torchvision",
]
BUILTIN_NAMES = sorted(ALL_PRESETS + TORCHVISION_NAMES)


def test_presets_are_listed_on_every_entry_point():
    assert sorted(MobileNetBackbone.presets) == BUILTIN_NAMES
    assert set(BUILTIN_NAMES) <= set(keras_hub.models.Backbone.presets)
    assert set(BUILTIN_NAMES) <= set(MobileNetImageClassifier.presets)


def test_shipped_preset_folders_are_generated_from_the_table():
    """The folders are `python -m mnet_backbones.presets` output, unedited."""
    assert sorted(os.listdir(PRESET_DIR)) == BUILTIN_NAMES
    for name in BUILTIN_NAMES:
        for file_name, text in preset_files(get_preset(name)).items():
            with open(os.path.join(PRESET_DIR, name, file_name), encoding="utf-8") as f:
                assert f.read() == text, (name, file_name)


def test_classifier_from_preset_offline():
    classifier = MobileNetImageClassifier.from_preset("mobilenetv4_conv_small", num_classes=5, load_weights=False)
    assert classifier.num_classes == 5
    # The preset's converter resizes and normalises raw pixels.
    converter = classifier.preprocessor.image_converter
    assert tuple(converter.image_size) == (224, 224)
    out = classifier.predict(np.random.randint(0, 256, (2, 100, 130, 3)).astype("float32"), verbose=0)
    assert out.shape == (2, 5) and np.all(np.isfinite(out))
    via_base = keras_hub.models.ImageClassifier.from_preset("mobilenetv3_small_050", num_classes=3, load_weights=False)
    assert isinstance(via_base, MobileNetImageClassifier)


def test_unknown_preset_lists_valid_names():
    for load in (MobileNetBackbone.from_preset, MobileNetImageClassifier.from_preset):
        with pytest.raises(ValueError, match="mobilenetv4_hybrid_medium") as info:
            load("mobilenetv5_tiny", load_weights=False)
        assert "mobilenetv5_tiny" in str(info.value)
        with pytest.raises(ValueError, match=r"'mobilenetv4_small'.* Did you mean 'mobilenetv4_conv_small' or"):
            load("mobilenetv4_small", load_weights=False)
    with pytest.raises(ValueError, match=r"'resnet50'\. Valid presets"):  # nothing close: no guess
        get_preset("resnet50")
    with pytest.raises(ValueError, match=r"Did you mean 'mobilenetv4_hybrid_medium'"):
        get_preset("mobilenetv4_hybrid_med")


def test_backbone_save_to_preset_round_trip(tmp_path):
    backbone = MobileNetBackbone.from_preset("mobilenetv4_hybrid_medium", load_weights=False)
    randomize_statistics(backbone)
    images = np.random.default_rng(1).normal(size=(2, 64, 80, 3)).astype("float32")
    expected = backbone.predict(images, verbose=0)
    backbone.save_to_preset(str(tmp_path))
    for cls in (keras_hub.models.Backbone, MobileNetBackbone):
        restored = cls.from_preset(str(tmp_path))
        assert isinstance(restored, MobileNetBackbone)
        for a, b in zip(restored.get_weights(), backbone.get_weights()):
            np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(restored.predict(images, verbose=0), expected)


def test_classifier_save_to_preset_round_trip(tmp_path):
    classifier = MobileNetImageClassifier.from_preset("mobilenetv3_large_100", num_classes=4, load_weights=False)
    randomize_statistics(classifier)
    images = np.random.default_rng(2).integers(0, 256, (2, 150, 120, 3)).astype("float32")
    expected = classifier.predict(images, verbose=0)
    classifier.save_to_preset(str(tmp_path))
    restored = MobileNetImageClassifier.from_preset(str(tmp_path))
    assert restored.num_classes == 4
    np.testing.assert_allclose(restored.predict(images, verbose=0), expected, rtol=1e-6, atol=1e-6)


def test_image_shape_override_from_preset():
    backbone = MobileNetBackbone.from_preset("mobilenetv2_100", load_weights=False, image_shape=(96, 128, 3))
    assert tuple(backbone.pyramid_outputs["P5"].shape) == (None, 3, 4, 320)
