"""`mnet-backbones convert` and `bench --pretrained` on torchvision's checkpoints (the shared fixtures)."""

import os

import keras
import keras_hub
import numpy as np
import pytest

import heads
import mnet_backbones
from conftest import PARITY_DIR, relative_error, requires_parity_fixtures
from mnet_tools import cli

pytestmark = pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="the CLI runs on TensorFlow")
TORCHVISION = os.path.join(PARITY_DIR, "torchvision")
# torchvision's ImageNet normalisation (its classification presets' eval transform).
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@requires_parity_fixtures()
@pytest.mark.parametrize(
    "name, loaded_cls",
    [
        ("mobilenet_v3_small", mnet_backbones.MobileNetImageClassifier),
        ("ssdlite320_mobilenet_v3_large", heads.SSDLite320ObjectDetector),
        ("lraspp_mobilenet_v3_large", heads.LRASPPSegmenter),
    ],
)
def test_convert_writes_a_preset_that_loads_offline(name, loaded_cls, tmp_path, capsys):
    out = str(tmp_path / "converted")
    assert cli.main(["convert", os.path.join(TORCHVISION, name), out]) == 0
    assert "wrote" in capsys.readouterr().out
    task_cls = {
        mnet_backbones.MobileNetImageClassifier: keras_hub.models.ImageClassifier,
        heads.SSDLite320ObjectDetector: keras_hub.models.ObjectDetector,
        heads.LRASPPSegmenter: keras_hub.models.ImageSegmenter,
    }[loaded_cls]
    model = task_cls.from_preset(out)
    assert type(model) is loaded_cls
    if name == "mobilenet_v3_small":
        # The reference logits are torchvision's model on the whole image, normalised with ImageNet's
        # mean and std and not resized: the converted model is compared on that same input.
        reference = np.load(os.path.join(TORCHVISION, name, "reference.npz"))
        image = reference["image_0"][None].astype("float32")
        normalised = (image / 255.0 - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
        logits = keras.ops.convert_to_numpy(model(normalised.astype("float32"), training=False))
        assert relative_error(logits, reference["logits_0"]) < 1e-4
        # `predict` applies torchvision's eval transform (resize to 256, centre crop 224, bilinear with
        # antialiasing, the same normalisation), recorded in the preset's image converter.
        converter = model.preprocessor.image_converter
        assert tuple(converter.image_size) == (224, 224)
        assert converter.crop_fraction == pytest.approx(224 / 256)
        assert converter.antialias and converter.interpolation == "bilinear"
        np.testing.assert_allclose(converter.scale, 1 / (255 * np.array(IMAGENET_STD)), rtol=1e-6)
        np.testing.assert_allclose(converter.offset, -np.array(IMAGENET_MEAN) / np.array(IMAGENET_STD), rtol=1e-6)
        transformed = keras.ops.convert_to_numpy(converter(image))
        assert transformed.shape == (1, 224, 224, 3)
        expected = keras.ops.convert_to_numpy(model(transformed, training=False))
        np.testing.assert_allclose(model.predict(image, verbose=0), expected, rtol=1e-5, atol=1e-6)


def test_convert_names_the_torchvision_kinds_it_takes(tmp_path, capsys):
    assert cli.main(["convert", str(tmp_path / "nothing-here"), str(tmp_path / "out")]) != 0
    message = capsys.readouterr().err
    assert "torchvision SSDLite320" in message and "DeepLabV3 / LR-ASPP" in message and "timm snapshot" in message


def test_bench_pretrained_checks_its_options(capsys):
    assert cli.main(["bench", "--pretrained", "--checkpoint", "no-equals-sign"]) != 0
    assert "NAME=PATH" in capsys.readouterr().err
    assert cli.main(["bench", "--pretrained", "resnet50_voc"]) != 0
    assert "resnet50_voc" in capsys.readouterr().err


def test_the_pretrained_heads_example_draws_its_picture(tmp_path):
    """README's examples/pretrained_heads.py, offline (random weights), on an image the test writes."""
    import importlib.util

    from PIL import Image

    from conftest import REPO

    Image.fromarray(np.full((96, 128, 3), 120, "uint8")).save(tmp_path / "image.jpg")
    spec = importlib.util.spec_from_file_location(
        "pretrained_heads", os.path.join(REPO, "examples", "pretrained_heads.py")
    )
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    out = tmp_path / "picture.png"
    example.main([str(tmp_path / "image.jpg"), "--out", str(out), "--no-weights"])
    with Image.open(out) as picture:
        assert picture.size[0] > picture.size[1] > 100


@requires_parity_fixtures()
def test_export_takes_what_convert_takes(tmp_path, capsys):
    """A torchvision classifier checkpoint exports as the classifier convert would write (not its bare backbone)."""
    import tensorflow as tf

    out = str(tmp_path / "classifier.tflite")
    argv = ["export", os.path.join(TORCHVISION, "mobilenet_v3_small"), out, "--image-size", "96", "--batch-size", "1"]
    assert cli.main(argv) == 0, capsys.readouterr().err
    assert "wrote" in capsys.readouterr().out
    interpreter = tf.lite.Interpreter(model_path=out)
    assert tuple(interpreter.get_output_details()[0]["shape"]) == (1, 1000)
