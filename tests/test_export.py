"""LiteRT export: the .tflite file computes what the Keras model computes."""

import os

import keras
import numpy as np
import pytest

from conftest import (
    ONE_PER_GENERATION,
    PARITY_DIR,
    condition,
    relative_error,
    requires_parity_fixtures,
)
from mnet_backbones import MobileNetBackbone, MobileNetImageClassifier
from mnet_tools.litert import run, xnnpack_coverage

pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow",
    reason="LiteRT export is checked on the TensorFlow backend, where Keras converts "
    "through TensorFlow's TFLite converter; run with KERAS_BACKEND=tensorflow.",
)
pytest.importorskip(
    "ai_edge_litert.interpreter",
    reason="the LiteRT interpreter comes with `pip install ai-edge-litert`",
)

# Not square, so that a height/width mix-up in a reshape shows.
IMAGE_SHAPE = (64, 96, 3)
TOLERANCE = 1e-4  # of the largest absolute output


def images(height, width, batch=2, seed=0):
    return np.random.default_rng(seed).normal(size=(batch, height, width, 3)).astype("float32")


def run_litert(path, inputs):
    (output,) = run(path, inputs)
    return output


def export_litert(model, directory):
    path = directory / "model.tflite"
    model.export(str(path), format="litert", verbose=False)
    return path


def assert_litert_matches(path, model, inputs):
    expected = model.predict(inputs, verbose=0)
    actual = run_litert(path, inputs)
    assert actual.shape == expected.shape
    assert relative_error(actual, expected) < TOLERANCE


@pytest.mark.parametrize("name", ONE_PER_GENERATION)
def test_backbone_litert_matches_keras(name, tmp_path):
    backbone = MobileNetBackbone.from_preset(name, load_weights=False, image_shape=IMAGE_SHAPE)
    condition(backbone, images(*IMAGE_SHAPE[:2], seed=1))
    path = export_litert(backbone, tmp_path)
    assert_litert_matches(path, backbone, images(*IMAGE_SHAPE[:2]))
    # XNNPACK runs the whole graph: no operator left to the builtin kernels
    # (the attention's reshapes included, which are constants at a known size).
    assert xnnpack_coverage(path) == {"partitions": 1, "outside": {}}


def test_classifier_litert_matches_keras(tmp_path):
    classifier = MobileNetImageClassifier.from_preset(
        "mobilenetv3_small_100",
        num_classes=10,
        load_weights=False,
        preprocessor=None,
        image_shape=IMAGE_SHAPE,
    )
    condition(classifier, images(*IMAGE_SHAPE[:2], seed=1))
    path = export_litert(classifier, tmp_path)
    assert_litert_matches(path, classifier, images(*IMAGE_SHAPE[:2]))


@pytest.mark.slow
def test_attention_backbone_exports_for_any_image_size(tmp_path):
    """Mobile MQA reshapes by the runtime size: one file serves every size."""
    backbone = MobileNetBackbone.from_preset("mobilenetv4_hybrid_medium", load_weights=False)
    condition(backbone, images(96, 96, seed=1))
    path = export_litert(backbone, tmp_path)
    for height, width in [(64, 96), (160, 128)]:
        assert_litert_matches(path, backbone, images(height, width, batch=1))


@requires_parity_fixtures()
def test_converted_timm_weights_survive_export(tmp_path):
    """Ported weights through LiteRT still give timm's logits."""
    folder = os.path.join(PARITY_DIR, "mobilenetv4_conv_small")
    reference = np.load(os.path.join(folder, "reference.npz"))
    classifier = MobileNetImageClassifier.from_preset(folder, image_shape=(224, 224, 3))
    path = export_litert(classifier, tmp_path)
    logits = run_litert(path, reference["square_input"])
    assert relative_error(logits, reference["square_logits"]) < TOLERANCE


def test_mean_relative_error_never_exceeds_the_max():
    """Both are scaled by the largest reference value (the mean was once scaled by the mean, and exceeded it)."""
    from mnet_tools.export import relative_errors

    expected = np.array([100.0, 1.0, 1.0, 1.0])
    actual = expected + np.array([0.0, 1.0, 1.0, 1.0])
    errors = relative_errors([actual], [expected])
    assert errors["max_relative_error"] == pytest.approx(0.01)
    assert errors["mean_relative_error"] == pytest.approx(0.0075)


def test_calibration_images_are_read_as_displayed(tmp_path):
    """EXIF orientation applies to calibration images as to training data."""
    from PIL import Image, ImageOps

    from mnet_tools.export import read_images

    stored = np.zeros((20, 40, 3), "uint8")
    stored[:, :20] = (255, 0, 0)  # left half red, as stored
    exif = Image.Exif()
    exif[0x0112] = 6  # displayed rotated by 90 degrees
    Image.fromarray(stored).save(tmp_path / "rotated.jpg", exif=exif, quality=95)
    pixels = read_images(str(tmp_path), (40, 20))[0]
    with Image.open(tmp_path / "rotated.jpg") as image:
        displayed = np.asarray(ImageOps.exif_transpose(image).convert("RGB"), "float32")
    assert displayed.shape == (40, 20, 3)
    np.testing.assert_allclose(pixels, displayed, atol=1)
    assert abs(pixels[:20, :, 0].mean() - pixels[20:, :, 0].mean()) > 100  # red on one half: rotated
