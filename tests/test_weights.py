"""Built-in presets with weights: cached conversions load offline; without a
cache or network the error names the three ways out. No test touches the network:
downloads are replaced by fakes."""

import os

import keras
import keras_hub
import numpy as np
import pytest

from conftest import PARITY_DIR, relative_error, requires_parity_fixtures
from mnet_backbones import (
    MobileNetBackbone,
    MobileNetImageClassifier,
    PretrainedWeightsUnavailableError,
    weights,
)
from mnet_backbones.convert import timm as timm_convert


@pytest.fixture
def empty_cache(tmp_path, monkeypatch):
    monkeypatch.setenv(weights.CACHE_ENV, str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def offline(monkeypatch):
    """Every download fails as it does without network."""
    import huggingface_hub

    def no_network(*args, **kwargs):
        raise OSError("[Errno 101] Network is unreachable")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", no_network)
    for name in ("MobileNet", "MobileNetV2", "MobileNetV3Small", "MobileNetV3Large"):
        monkeypatch.setattr(keras.applications, name, no_network)


LOADERS = [
    lambda name: keras_hub.models.Backbone.from_preset(name),
    lambda name: MobileNetBackbone.from_preset(name),
    lambda name: MobileNetImageClassifier.from_preset(name),
    lambda name: keras_hub.models.ImageClassifier.from_preset(name, num_classes=3),
]


@pytest.mark.parametrize("load", LOADERS)
@pytest.mark.parametrize("name", ["mobilenetv4_conv_small", "mobilenetv1_025"])
def test_offline_and_uncached_names_three_ways_out(load, name, empty_cache, offline):
    with pytest.raises(PretrainedWeightsUnavailableError) as info:
        load(name)
    message = str(info.value)
    assert name in message and "Network is unreachable" in message
    assert f"mnet-backbones convert {name}" in message
    assert "load_weights=False" in message
    assert str(empty_cache) in message
    assert not os.path.exists(empty_cache / name)  # nothing half-written


def test_checkpoint_sources_cover_every_preset():
    from mnet_backbones.presets import PRESETS

    assert weights.checkpoint_source("mobilenetv4_hybrid_medium") == (
        "hf://timm/mobilenetv4_hybrid_medium.e200_r256_in12k_ft_in1k"
    )
    assert weights.checkpoint_source("mobilenetv3_small_minimal_100").startswith(
        "keras.applications.MobileNetV3Small(minimalistic=True"
    )
    assert all(weights.checkpoint_source(name) for name in PRESETS)


def test_cache_location_follows_keras_home(monkeypatch, tmp_path):
    monkeypatch.delenv(weights.CACHE_ENV, raising=False)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    assert weights.cached_folder("mobilenetv2_100") == str(tmp_path / "mnet_backbones" / "presets" / "mobilenetv2_100")


@requires_parity_fixtures()
def test_cached_conversion_loads_offline_on_every_entry_point(empty_cache, offline, monkeypatch):
    """A converted checkpoint in the cache serves the built-in name, offline."""
    name = "mobilenetv4_conv_small"
    fixture = os.path.join(PARITY_DIR, name)
    # The "download" of the first use is the local fixture snapshot.
    monkeypatch.setattr(timm_convert, "download_snapshot", lambda handle: fixture)
    weights.ensure_cached(name)
    monkeypatch.setattr(timm_convert, "download_snapshot", lambda handle: 1 / 0)  # offline now

    reference = np.load(os.path.join(fixture, "reference.npz"))
    images = reference["square_input"]  # already normalised: call the model directly
    classifier = MobileNetImageClassifier.from_preset(name)
    assert classifier.num_classes == 1000
    assert classifier.preprocessor.image_converter.image_size == (224, 224)
    logits = keras.ops.convert_to_numpy(classifier(images, training=False))
    assert relative_error(logits, reference["square_logits"]) < 1e-4
    for backbone in (keras_hub.models.Backbone.from_preset(name), MobileNetBackbone.from_preset(name)):
        pyramid = keras.Model(backbone.input, backbone.pyramid_outputs)
        features = pyramid.predict(images, verbose=0)
        assert relative_error(features["P5"], reference["square_P5"]) < 1e-4
    # A new label set keeps the pretrained backbone and starts a new head.
    retargeted = MobileNetImageClassifier.from_preset(name, num_classes=7)
    assert retargeted.num_classes == 7
    for new, old in zip(retargeted.backbone.weights, classifier.backbone.weights):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(new), keras.ops.convert_to_numpy(old))
