"""Ported timm weights reproduce timm's logits and pyramid (shared/parity)."""

import os

import keras
import numpy as np
import pytest

from conftest import PARITY_DIR, relative_error, requires_parity_fixtures
from mnet_backbones import MobileNetBackbone, MobileNetImageClassifier
from mnet_backbones.convert import timm as timm_convert

FIXTURES = ["mobilenetv3_large_100", "mobilenetv4_conv_small", "mobilenetv4_hybrid_medium"]
TOLERANCE = 1e-4  # relative to the largest absolute reference value


def _load_fixture_model(name):
    folder = os.path.join(PARITY_DIR, name)
    config = timm_convert.read_config(folder)
    backbone = MobileNetBackbone(**timm_convert.backbone_config_for(config["architecture"]))
    classifier = MobileNetImageClassifier(backbone=backbone, num_classes=config["num_classes"])
    timm_convert.load_state_dict(classifier, timm_convert.read_state_dict(folder))
    return folder, classifier


@requires_parity_fixtures()
@pytest.mark.parametrize("name", FIXTURES)
def test_logits_and_pyramid_match_timm(name):
    folder, classifier = _load_fixture_model(name)
    reference = np.load(os.path.join(folder, "reference.npz"))
    pyramid = keras.Model(classifier.backbone.input, classifier.backbone.pyramid_outputs)
    for tag in ("square", "odd"):
        images = reference[f"{tag}_input"]
        logits = classifier.predict(images, verbose=0)
        assert relative_error(logits, reference[f"{tag}_logits"]) < TOLERANCE, tag
        features = pyramid.predict(images, verbose=0)
        for level in ("P2", "P3", "P4", "P5"):
            expected = reference[f"{tag}_{level}"]
            assert features[level].shape == expected.shape, (tag, level)
            assert relative_error(features[level], expected) < TOLERANCE, (tag, level)


@requires_parity_fixtures()
def test_padding_convention_matters():
    """The same weights under TensorFlow padding miss timm's numbers: the
    padding test above could fail."""
    folder = os.path.join(PARITY_DIR, "mobilenetv4_conv_small")
    config = timm_convert.backbone_config_for("mobilenetv4_conv_small")
    backbone = MobileNetBackbone(**{**config, "padding": "same"})
    timm_convert.load_state_dict(backbone, timm_convert.read_state_dict(folder))
    reference = np.load(os.path.join(folder, "reference.npz"))
    pyramid = keras.Model(backbone.input, backbone.pyramid_outputs)
    features = pyramid.predict(reference["square_input"], verbose=0)
    assert relative_error(features["P5"], reference["square_P5"]) > 1e-2
