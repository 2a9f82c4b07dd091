"""keras-hub's generic entry points give our models for the checkpoints we convert.

Without the routing, `keras_hub.models.Backbone.from_preset(<timm V4 snapshot>)`
fails (keras-hub has no MobileNetV4) and a timm V3 snapshot silently becomes
keras-hub's own MobileNet, 4.6e-4 away from timm's numbers.
"""

import os

import keras
import keras_hub
import numpy as np
import pytest

import mnet_backbones
from conftest import PARITY_DIR, relative_error, requires_parity_fixtures

TOLERANCE = 1e-4


def _fixture(name):
    return os.path.join(PARITY_DIR, name)


@requires_parity_fixtures()
@pytest.mark.parametrize("name", ["mobilenetv3_large_100", "mobilenetv4_conv_small"])
def test_generic_backbone_from_preset_gives_ours_with_timm_numbers(name):
    backbone = keras_hub.models.Backbone.from_preset(_fixture(name))
    assert isinstance(backbone, mnet_backbones.MobileNetBackbone)
    reference = np.load(os.path.join(_fixture(name), "reference.npz"))
    pyramid = keras.Model(backbone.input, backbone.pyramid_outputs)
    features = pyramid.predict(reference["odd_input"], verbose=0)
    assert relative_error(features["P5"], reference["odd_P5"]) < TOLERANCE


@requires_parity_fixtures()
@pytest.mark.parametrize("task_cls", [keras_hub.models.ImageClassifier, keras_hub.models.Task])
def test_generic_image_classifier_from_preset_gives_ours_with_timm_logits(task_cls):
    name = "mobilenetv4_conv_small"
    if task_cls is keras_hub.models.Task:
        with pytest.raises(ValueError, match="Task.from_preset"):
            task_cls.from_preset(_fixture(name))
        return
    classifier = task_cls.from_preset(_fixture(name))
    assert isinstance(classifier, mnet_backbones.MobileNetImageClassifier)
    reference = np.load(os.path.join(_fixture(name), "reference.npz"))
    logits = keras.ops.convert_to_numpy(classifier(reference["square_input"]))
    assert relative_error(logits, reference["square_logits"]) < TOLERANCE
    # timm's normalisation travels with the weights.
    assert classifier.preprocessor.image_converter.image_size == (224, 224)


@requires_parity_fixtures()
def test_generic_image_converter_from_preset_gives_timm_normalisation():
    converter = keras_hub.layers.ImageConverter.from_preset(_fixture("mobilenetv4_conv_small"))
    assert isinstance(converter, mnet_backbones.MobileNetImageConverter)
    mean = np.array([0.485, 0.456, 0.406]) * 255
    out = keras.ops.convert_to_numpy(converter(np.tile(mean, (1, 224, 224, 1)).astype("float32")))
    np.testing.assert_allclose(out, 0.0, atol=1e-4)


@requires_parity_fixtures()
def test_another_task_class_is_told_which_class_to_use():
    with pytest.raises(ValueError, match="MobileNet(ImageClassifier|Backbone)"):
        keras_hub.models.ImageSegmenter.from_preset(_fixture("mobilenetv4_conv_small"))


def test_unclaimed_presets_still_reach_keras_hub(tmp_path):
    """A folder that is no timm MobileNet goes to keras-hub's own loader and its own error."""
    (tmp_path / "config.json").write_text('{"architecture": "resnet18", "num_classes": 10}')
    with pytest.raises(Exception) as error:
        keras_hub.models.Backbone.from_preset(str(tmp_path))
    assert "MobileNet" not in type(error.value).__name__
    from mnet_backbones.convert import timm

    assert not timm.is_mobilenet_snapshot(str(tmp_path))
    assert timm.is_mobilenet_snapshot("hf://timm/mobilenetv4_conv_small.e2400_r224_in1k")
    assert not timm.is_mobilenet_snapshot("hf://timm/resnet50.a1_in1k")


@pytest.fixture(scope="module")
def saved_heads(tmp_path_factory):
    """A tiny SSDLite and DeepLabV3+ on our backbones, saved with save_to_preset."""
    import heads

    folder = tmp_path_factory.mktemp("heads")
    detector = heads.create_ssdlite("mobilenetv3_small_050", num_classes=3, image_size=96, load_weights=False)
    segmenter = heads.create_deeplabv3plus("mobilenetv3_small_050", num_classes=4, image_size=64, load_weights=False)
    detector.save_to_preset(str(folder / "detector"))
    segmenter.save_to_preset(str(folder / "segmenter"))
    return {"detector": (detector, str(folder / "detector")), "segmenter": (segmenter, str(folder / "segmenter"))}


@pytest.mark.parametrize(
    "kind, entry_point, size",
    [("detector", keras_hub.models.ObjectDetector, 96), ("segmenter", keras_hub.models.ImageSegmenter, 64)],
)
def test_generic_task_from_preset_gives_the_saved_task(saved_heads, kind, entry_point, size):
    task, folder = saved_heads[kind]
    loaded = entry_point.from_preset(folder)
    assert type(loaded) is type(task)
    images = np.random.default_rng(0).uniform(0, 255, (1, size, size, 3)).astype("float32")
    # Every raw output: the detector's box deltas and class logits, the segmenter's logits.
    for got, expected in zip(keras.tree.flatten(loaded(images)), keras.tree.flatten(task(images))):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(got), keras.ops.convert_to_numpy(expected), atol=1e-5)


def test_generic_task_loader_on_a_bare_backbone_names_the_builder(tmp_path):
    import heads  # noqa: F401  (registers the task bases)

    backbone = mnet_backbones.MobileNetBackbone("mobilenetv3_small", width_multiplier=0.5)
    backbone.save_to_preset(str(tmp_path))
    with pytest.raises(ValueError, match="create_ssdlite"):
        keras_hub.models.ObjectDetector.from_preset(str(tmp_path))
    with pytest.raises(ValueError, match="create_deeplabv3plus"):
        keras_hub.models.ImageSegmenter.from_preset(str(tmp_path))


def test_only_the_bases_answer_keras_hubs_lookup_by_backbone_class():
    """keras-hub picks at random among several task classes registered for one backbone class."""
    import heads
    from heads.tasks import PyramidImageSegmenter, PyramidObjectDetector

    assert heads.SSDLiteObjectDetector.backbone_cls is None
    for base, task in (
        (PyramidObjectDetector, keras_hub.models.ObjectDetector),
        (PyramidImageSegmenter, keras_hub.models.ImageSegmenter),
    ):
        answering = {
            c
            for c in keras.saving.get_custom_objects().values()
            if isinstance(c, type) and issubclass(c, task) and c.backbone_cls is mnet_backbones.MobileNetBackbone
        }
        assert answering == {base}


@requires_parity_fixtures()
def test_generic_entry_points_take_a_torchvision_classifier_checkpoint():
    folder = os.path.join(PARITY_DIR, "torchvision", "mobilenet_v3_small")
    classifier = keras_hub.models.ImageClassifier.from_preset(folder)
    assert isinstance(classifier, mnet_backbones.MobileNetImageClassifier)
    # The reference is torchvision's model on the whole image with ImageNet's normalisation (no resize,
    # no crop); `predict` would apply the eval transform first, so the model is called on that input.
    reference = np.load(os.path.join(folder, "reference.npz"))
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    normalised = ((reference["image_0"][None] / 255.0 - mean) / std).astype("float32")
    logits = keras.ops.convert_to_numpy(classifier(normalised, training=False))
    assert relative_error(logits, reference["logits_0"]) < TOLERANCE
    assert isinstance(keras_hub.models.Backbone.from_preset(folder), mnet_backbones.MobileNetBackbone)


@requires_parity_fixtures()
@pytest.mark.parametrize(
    "name, task",
    [
        ("ssdlite320_mobilenet_v3_large", "ObjectDetector"),
        ("lraspp_mobilenet_v3_large", "ImageSegmenter"),
    ],
)
def test_generic_task_entry_points_take_torchvision_head_checkpoints(name, task):
    import heads

    folder = os.path.join(PARITY_DIR, "torchvision", name)
    model = getattr(keras_hub.models, task).from_preset(folder, load_weights=False)
    expected = heads.SSDLite320ObjectDetector if task == "ObjectDetector" else heads.LRASPPSegmenter
    assert type(model) is expected
