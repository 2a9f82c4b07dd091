"""keras.applications models convert exactly: ours on raw pixels equals theirs
on `preprocess_input(raw)`. Random weights and calibrated BatchNorm statistics,
no download."""

import keras
import numpy as np
import pytest

from conftest import condition, relative_error
from mnet_backbones import MobileNetBackbone, MobileNetImageClassifier
from mnet_backbones.convert import WeightMismatchError, from_keras_application
from mnet_backbones.convert.keras_applications import describe

apps = keras.applications
CASES = [
    # (constructor, preprocessing module, kwargs, size)
    (apps.MobileNet, apps.mobilenet, dict(alpha=0.25), 224),
    (apps.MobileNet, apps.mobilenet, dict(alpha=1.0), 96),
    (apps.MobileNet, apps.mobilenet, dict(alpha=0.5), 128),
    (apps.MobileNetV2, apps.mobilenet_v2, dict(alpha=0.35), 96),
    (apps.MobileNetV2, apps.mobilenet_v2, dict(alpha=1.0), 128),
    (apps.MobileNetV2, apps.mobilenet_v2, dict(alpha=1.4), 96),
    (apps.MobileNetV3Small, apps.mobilenet_v3, dict(alpha=0.75), 96),
    (apps.MobileNetV3Small, apps.mobilenet_v3, dict(minimalistic=True), 128),
    (apps.MobileNetV3Large, apps.mobilenet_v3, dict(alpha=1.0), 96),
    (apps.MobileNetV3Large, apps.mobilenet_v3, dict(alpha=0.75, minimalistic=True), 96),
]
TOLERANCE = 1e-5


def case_id(case):
    constructor, _, kwargs, size = case
    options = "-".join(f"{k}{v}" for k, v in kwargs.items())
    return f"{constructor.__name__}-{options}-{size}"


def _raw_images(size, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (2, size, size, 3)).astype("float32")


def _keras_model(constructor, module, kwargs, size, include_top):
    model = constructor(
        weights=None,
        input_shape=(size, size, 3),
        include_top=include_top,
        classifier_activation=None,
        **kwargs,
    )
    condition(model, module.preprocess_input(_raw_images(size, seed=1)))
    return model


@pytest.mark.parametrize("constructor, module, kwargs, size", CASES, ids=[case_id(c) for c in CASES])
def test_classifier_matches_keras_applications(constructor, module, kwargs, size):
    theirs = _keras_model(constructor, module, kwargs, size, include_top=True)
    ours = from_keras_application(theirs)
    assert isinstance(ours, MobileNetImageClassifier) and ours.num_classes == 1000
    assert ours.backbone.image_shape == (None, None, 3)  # any size, unlike the source
    raw = _raw_images(size)
    expected = theirs.predict(module.preprocess_input(raw.copy()), verbose=0)
    assert np.std(expected, axis=0).mean() > 1e-3  # outputs depend on the input
    actual = ours.predict(raw, verbose=0)  # raw pixels: the preprocessor scales
    assert relative_error(actual, expected) < TOLERANCE


@pytest.mark.parametrize(
    "constructor, module, kwargs, size",
    [CASES[0], CASES[3], CASES[7], CASES[9]],
    ids=[case_id(CASES[i]) for i in (0, 3, 7, 9)],
)
def test_backbone_matches_keras_applications_without_top(constructor, module, kwargs, size):
    theirs = _keras_model(constructor, module, kwargs, size, include_top=False)
    ours = from_keras_application(theirs)
    assert isinstance(ours, MobileNetBackbone)
    assert (ours.padding, ours.bn_epsilon) == ("same", 1e-3)
    raw = _raw_images(size)
    expected = theirs.predict(module.preprocess_input(raw.copy()), verbose=0)
    actual = ours.predict(raw / 127.5 - 1.0, verbose=0)  # backbones take [-1, 1]
    assert relative_error(actual, expected) < TOLERANCE


def test_family_width_and_variant_are_recognised():
    assert describe(apps.MobileNet(weights=None, alpha=0.75, input_shape=(96, 96, 3))) == (
        "mobilenetv1",
        0.75,
    )
    small = apps.MobileNetV3Small(weights=None, minimalistic=True, input_shape=(96, 96, 3))
    assert describe(small) == ("mobilenetv3_small_minimal", 1.0)


def test_softmax_top_converts_to_softmax_outputs():
    theirs = apps.MobileNetV2(weights=None, alpha=0.35, input_shape=(96, 96, 3), classes=7)
    ours = from_keras_application(theirs)
    assert ours.activation == "softmax" and ours.num_classes == 7
    np.testing.assert_allclose(ours.predict(_raw_images(96), verbose=0).sum(-1), 1.0, atol=1e-5)


def test_unsupported_model_names_what_is_supported():
    other = keras.Sequential([keras.Input((32, 32, 3)), keras.layers.Conv2D(4, 3)])
    with pytest.raises(ValueError, match="MobileNetV3Small"):
        from_keras_application(other)
    with pytest.raises(TypeError, match="keras.Model"):
        from_keras_application("mobilenet")


def test_mismatch_names_layers_and_nothing_loads(monkeypatch):
    theirs = apps.MobileNet(weights=None, alpha=0.25, input_shape=(96, 96, 3))
    # A width the model does not have: every shape differs from the first layer on.
    from mnet_backbones.convert import keras_applications

    monkeypatch.setattr(keras_applications, "describe", lambda model: ("mobilenetv1", 0.5))
    with pytest.raises(WeightMismatchError, match=r"shape \(3, 3, 3, 8\).*stem/conv/kernel.*\(3, 3, 3, 16\)"):
        from_keras_application(theirs)
