"""torchvision ImageNet classifiers through `from_preset`: parity, errors, built-in names.

The parity fixture (`shared/parity/torchvision/mobilenet_v3_small`) was made
by torchvision 0.28 itself: randomised weights and BatchNorm statistics,
`logits_i` for `image_i / 255` normalised with ImageNet's mean and std.
"""

import builtins
import json
import os
import shutil
import urllib.error

import keras
import keras_hub
import numpy as np
import pytest

from conftest import PARITY_DIR, relative_error
from mnet_backbones import MobileNetBackbone, MobileNetImageClassifier, PretrainedWeightsUnavailableError
from mnet_backbones.constants import IMAGENET_MEAN, IMAGENET_STD
from mnet_backbones.convert import torchvision as tv
from mnet_backbones.convert.mapping import WeightMismatchError
from mnet_backbones.presets import TORCHVISION_PRESETS

FIXTURE = os.path.join(PARITY_DIR, "torchvision", "mobilenet_v3_small")
pytestmark = pytest.mark.skipif(
    not os.path.isfile(os.path.join(FIXTURE, "model.pth")), reason=f"torchvision fixtures not found at {FIXTURE}"
)
torch = pytest.importorskip("torch")  # writing test checkpoints needs it


def _normalise(image):
    return ((image.astype("float32") / 255.0 - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)).astype("float32")


def _logits(model, image):
    return keras.ops.convert_to_numpy(model(_normalise(image)[None], training=False))


@pytest.fixture(scope="module")
def reference():
    return dict(np.load(os.path.join(FIXTURE, "reference.npz")))


@pytest.fixture(scope="module")
def classifier():
    return MobileNetImageClassifier.from_preset(FIXTURE)


def test_logits_match_torchvision(classifier, reference):
    for i in (0, 1):  # square, then not square
        logits = _logits(classifier, reference[f"image_{i}"])
        assert logits.shape == reference[f"logits_{i}"].shape
        assert relative_error(logits, reference[f"logits_{i}"]) < 1e-4, i


def test_converted_classifier_is_torchvisions_model(classifier):
    backbone = classifier.backbone
    assert backbone.architecture == "mobilenetv3_small"
    assert (backbone.padding, backbone.bn_epsilon, backbone.dilate_strided_block) == ("symmetric", 1e-3, True)
    assert classifier.num_classes == 1000 and classifier.head_dense.units == 1024
    assert classifier.dropout == 0.2


def test_preprocessing_is_torchvisions_eval_transform(classifier):
    # ImageClassification(crop_size=224), resize_size 256 by default: crop 224/256 of the short side.
    converter = classifier.preprocessor.image_converter
    config = converter.get_config()
    assert tuple(converter.image_size) == (224, 224)
    assert config["crop_fraction"] == pytest.approx(224 / 256)
    assert config["interpolation"] == "bilinear" and config["antialias"] is True
    pixels = np.array([0.0, 128.0, 255.0])
    for c in range(3):
        expected = (pixels / 255.0 - IMAGENET_MEAN[c]) / IMAGENET_STD[c]
        np.testing.assert_allclose(pixels * config["scale"][c] + config["offset"][c], expected, rtol=1e-6)
    # 300 x 400 -> central 262 x 262 (round(300 * 224 / 256)) -> 224 x 224.
    image = np.random.default_rng(0).integers(0, 256, (1, 300, 400, 3)).astype("float32")
    top, left = 19, 69
    manual = keras.ops.convert_to_numpy(
        keras_hub.layers.ImageConverter(image_size=(224, 224), antialias=True, interpolation="bilinear")(
            image[:, top : top + 262, left : left + 262]
        )
    )
    scaled = (manual * np.array(config["scale"]) + np.array(config["offset"])).astype("float32")
    np.testing.assert_allclose(keras.ops.convert_to_numpy(converter(image)), scaled, rtol=1e-5, atol=1e-4)


def test_backbone_from_the_same_checkpoint(classifier, reference):
    backbone = MobileNetBackbone.from_preset(FIXTURE)
    image = _normalise(reference["image_1"])[None]
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(backbone(image)),
        keras.ops.convert_to_numpy(classifier.backbone(image)),
        rtol=1e-6,
        atol=1e-6,
    )


def test_bare_pth_file_named_after_its_builder(tmp_path, classifier, reference):
    path = tmp_path / "mobilenet_v3_small-0123abcd.pth"
    shutil.copy(os.path.join(FIXTURE, "model.pth"), path)
    loaded = MobileNetImageClassifier.from_preset(str(path))
    np.testing.assert_allclose(
        _logits(loaded, reference["image_0"]), _logits(classifier, reference["image_0"]), rtol=1e-6, atol=1e-6
    )
    renamed = tmp_path / "my_model.pth"
    shutil.copy(path, renamed)
    with pytest.raises(ValueError, match="my_model.pth.*mobilenet_v3_large"):
        MobileNetImageClassifier.from_preset(str(renamed))


def test_new_label_set_keeps_the_pretrained_hidden_layer(classifier):
    five = MobileNetImageClassifier.from_preset(FIXTURE, num_classes=5)
    assert five.num_classes == 5
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(five.head_dense.kernel), keras.ops.convert_to_numpy(classifier.head_dense.kernel)
    )


def test_save_to_preset_round_trip(classifier, reference, tmp_path):
    classifier.save_to_preset(str(tmp_path))
    restored = MobileNetImageClassifier.from_preset(str(tmp_path))
    for i in (0, 1):
        np.testing.assert_allclose(
            _logits(restored, reference[f"image_{i}"]),
            _logits(classifier, reference[f"image_{i}"]),
            rtol=1e-6,
            atol=1e-6,
        )
    assert restored.preprocessor.image_converter.crop_fraction == pytest.approx(224 / 256)
    assert restored.backbone.dilate_strided_block is True


# ---------------------------------------------------------------------------
# Mismatches: a clear error naming the file and tensor, nothing loaded.


def _checkpoint_folder(tmp_path, state_dict, config=None):
    folder = tmp_path / "checkpoint"
    folder.mkdir(parents=True)
    torch.save({k: torch.from_numpy(np.asarray(v)) for k, v in state_dict.items()}, folder / "model.pth")
    with open(folder / "config.json", "w", encoding="utf-8") as f:
        json.dump(config or {"builder": "mobilenet_v3_small", "task": "classification", "num_classes": 1000}, f)
    return str(folder)


@pytest.fixture(scope="module")
def state_dict():
    return tv.read_state_dict(os.path.join(FIXTURE, "model.pth"))


def test_a_tensor_with_a_wrong_shape_is_named_with_both_shapes(tmp_path, state_dict):
    assert state_dict["features.4.block.2.fc1.weight"].shape == (24, 96, 1, 1)
    bad = dict(state_dict, **{"features.4.block.2.fc1.weight": np.zeros((16, 96, 1, 1), "float32")})
    folder = _checkpoint_folder(tmp_path, bad)
    with pytest.raises(WeightMismatchError) as error:
        MobileNetImageClassifier.from_preset(folder)
    message = str(error.value)
    assert "features.4.block.2.fc1.weight" in message and "(16, 96, 1, 1)" in message
    assert "(1, 1, 96, 24)" in message and folder in message  # ours: 24 squeeze channels


def test_missing_and_extra_tensors_are_named(tmp_path, state_dict):
    missing = dict(state_dict)
    del missing["features.9.block.3.1.running_var"]
    with pytest.raises(WeightMismatchError, match=r"features\.9\.block\.3\.1\.running_var.*missing"):
        MobileNetImageClassifier.from_preset(_checkpoint_folder(tmp_path / "a", missing))
    extra = dict(state_dict, **{"features.13.0.weight": np.zeros((4, 4, 1, 1), "float32")})
    with pytest.raises(WeightMismatchError, match=r"features\.13\.0\.weight"):
        MobileNetImageClassifier.from_preset(_checkpoint_folder(tmp_path / "b", extra))


def test_a_checkpoint_under_another_builder_is_refused(tmp_path, state_dict):
    config = {"builder": "mobilenet_v2", "task": "classification", "num_classes": 1000, "kwargs": {"width_mult": 0.35}}
    with pytest.raises(WeightMismatchError, match="Nothing was loaded"):
        MobileNetBackbone.from_preset(_checkpoint_folder(tmp_path, state_dict, config))


def test_files_that_are_not_checkpoints(tmp_path):
    text = tmp_path / "mobilenet_v3_small.txt"
    text.write_text("hello")
    with pytest.raises(ValueError, match="not a PyTorch checkpoint"):
        MobileNetImageClassifier.from_preset(str(text))
    garbage = tmp_path / "mobilenet_v3_small-deadbeef.pth"
    garbage.write_bytes(b"\x00not a zip or pickle" * 10)
    with pytest.raises(ValueError, match="mobilenet_v3_small-deadbeef.pth"):
        MobileNetBackbone.from_preset(str(garbage))
    with pytest.raises(FileNotFoundError, match="nowhere.pth"):
        tv.read_state_dict(str(tmp_path / "nowhere.pth"))


def test_unsupported_builders_and_tasks(tmp_path, state_dict):
    with pytest.raises(ValueError, match="resnet18"):
        tv.backbone_config_for({"builder": "resnet18"})
    with pytest.raises(ValueError, match="reduced_tail"):
        tv.backbone_config_for({"builder": "mobilenet_v3_small", "kwargs": {"reduced_tail": True}})
    with pytest.raises(ValueError, match="norm_layer"):
        tv.backbone_config_for({"builder": "mobilenet_v3_small", "kwargs": {"norm_layer": "x"}})
    dilated = tv.backbone_config_for(
        {"builder": "mobilenet_v3_large", "kwargs": {"dilated": True, "reduced_tail": True}}
    )
    assert dilated["architecture"] == "mobilenetv3_large_reduced_tail" and dilated["output_stride"] == 16
    assert tv.backbone_config_for({"builder": "mobilenet_v2"})["bn_epsilon"] == 1e-5
    config = {"builder": "mobilenet_v3_small", "task": "detection", "num_classes": 91}
    with pytest.raises(ValueError, match="detection"):
        MobileNetImageClassifier.from_preset(_checkpoint_folder(tmp_path, state_dict, config))


def test_missing_torch_names_the_extra(monkeypatch):
    real_import = builtins.__import__

    def no_torch(name, *args, **kwargs):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("No module named 'torch'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_torch)
    with pytest.raises(ImportError, match=r'pip install "mnet-backbones\[torch\]"'):
        tv.read_state_dict(os.path.join(FIXTURE, "model.pth"))


# ---------------------------------------------------------------------------
# V2 and V3-Large: our own weights written out under torchvision's names
# (torchvision's layouts: OIHW convs, (C, 1, k, k) depthwise, (out, in) linear)
# come back the same through a bare .pth file.


def _to_torch_layout(array, key):
    if array.ndim == 4:
        return array.transpose(2, 3, 0, 1) if array.shape[3] == 1 and "fc" not in key else array.transpose(3, 2, 0, 1)
    if array.ndim == 2:
        return array.T
    return array


@pytest.mark.parametrize(
    "builder,architecture,num_classes",
    [("mobilenet_v2", "mobilenetv2", 7), ("mobilenet_v3_large", "mobilenetv3_large", 1000)],
)
def test_v2_and_v3_large_checkpoints_round_trip(tmp_path, builder, architecture, num_classes):
    width = 0.5 if builder == "mobilenet_v2" else 1.0  # torchvision's width_mult, through config.json
    original = MobileNetImageClassifier(
        MobileNetBackbone(architecture, width_multiplier=width, **tv.convention_for(architecture)),
        num_classes=num_classes,
    )
    rng = np.random.default_rng(5)
    for variable in original.weights:
        variable.assign(
            rng.uniform(0.5, 1.0, variable.shape).astype("float32") * (0.1 if "kernel" in variable.path else 1)
        )
    state = {
        key: _to_torch_layout(keras.ops.convert_to_numpy(variable), key)
        for variable, key, _ in tv.classifier_slots(original)
    }
    if builder == "mobilenet_v2":
        assert "classifier.1.weight" in state and state["features.18.0.weight"].shape == (1280, 160, 1, 1)
        config = {"builder": builder, "task": "classification", "num_classes": 7, "kwargs": {"width_mult": 0.5}}
        path = _checkpoint_folder(tmp_path, state, config)
    else:
        assert state["classifier.0.weight"].shape == (1280, 960) and state["classifier.3.weight"].shape == (1000, 1280)
        path = str(tmp_path / "mobilenet_v3_large-5c1a4163.pth")
        torch.save({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()}, path)
    loaded = MobileNetImageClassifier.from_preset(path)
    images = rng.normal(size=(1, 64, 64, 3)).astype("float32")
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(loaded(images)), keras.ops.convert_to_numpy(original(images)), rtol=1e-5, atol=1e-5
    )
    # The large file's name is IMAGENET1K_V2's (resize 232); the folder gets torchvision's default 256.
    expected_fraction = 224 / 232 if builder == "mobilenet_v3_large" else 224 / 256
    assert loaded.preprocessor.image_converter.crop_fraction == pytest.approx(expected_fraction)


# ---------------------------------------------------------------------------
# Built-in names: downloaded once, converted, cached; offline, a clear error.


def test_builtin_torchvision_presets_are_registered():
    assert set(TORCHVISION_PRESETS) == {
        "mobilenetv3_large_100_torchvision",
        "mobilenetv3_small_100_torchvision",
        "mobilenetv2_100_torchvision",
    }
    for name in TORCHVISION_PRESETS:
        assert name in MobileNetBackbone.presets and name in keras_hub.models.Backbone.presets
    assert TORCHVISION_PRESETS["mobilenetv3_large_100_torchvision"].torchvision == (
        "https://download.pytorch.org/models/mobilenet_v3_large-5c1a4163.pth",
        "IMAGENET1K_V2",
        75.274,
    )
    backbone = keras_hub.models.Backbone.from_preset("mobilenetv2_100_torchvision", load_weights=False)
    assert isinstance(backbone, MobileNetBackbone) and backbone.bn_epsilon == 1e-5


def _offline(url, destination):
    raise urllib.error.URLError("no network in tests")


def test_offline_builtin_name_gives_the_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("MNET_BACKBONES_CACHE", str(tmp_path))
    monkeypatch.setattr(tv, "_fetch", _offline)
    for load in (
        MobileNetImageClassifier.from_preset,
        MobileNetBackbone.from_preset,
        keras_hub.models.Backbone.from_preset,
    ):
        with pytest.raises(PretrainedWeightsUnavailableError) as error:
            load("mobilenetv3_small_100_torchvision")
        message = str(error.value)
        assert "https://download.pytorch.org/models/mobilenet_v3_small-047dcff4.pth" in message
        assert "load_weights=False" in message and "no network in tests" in message
    assert not [f for f in os.listdir(tmp_path / "torchvision") if not f.startswith(".")]  # nothing half-written
    random = MobileNetImageClassifier.from_preset(
        "mobilenetv3_small_100_torchvision", num_classes=3, load_weights=False
    )
    assert random.backbone.bn_epsilon == 1e-3 and random.preprocessor.image_converter.crop_fraction == 224 / 256


def test_builtin_name_converts_a_seeded_download_once(tmp_path, monkeypatch, classifier, reference):
    # The file as if downloaded earlier (the error message's way out 2). A cached file is checked
    # against the SHA-256 prefix of its published name: the preset points at the fixture's own hash.
    import dataclasses
    import hashlib

    from mnet_backbones import presets

    name = "mobilenetv3_small_100_torchvision"
    with open(os.path.join(FIXTURE, "model.pth"), "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()[:8]
    url, weights_name, top1 = presets.BUILTIN_PRESETS[name].torchvision
    url = url.replace("047dcff4", digest)
    seeded = dataclasses.replace(presets.BUILTIN_PRESETS[name], torchvision=(url, weights_name, top1))
    for table in (presets.BUILTIN_PRESETS, presets.TORCHVISION_PRESETS):
        monkeypatch.setitem(table, name, seeded)
    monkeypatch.setenv("MNET_BACKBONES_CACHE", str(tmp_path))
    monkeypatch.setattr(tv, "_fetch", _offline)
    (tmp_path / "torchvision").mkdir()
    cached = tmp_path / "torchvision" / f"mobilenet_v3_small-{digest}.pth"
    shutil.copy(os.path.join(FIXTURE, "model.pth"), cached)
    first = MobileNetImageClassifier.from_preset(name)
    assert os.path.isfile(tmp_path / name / "model.weights.h5")
    os.remove(cached)  # the cache alone serves now
    again = keras_hub.models.Backbone.from_preset(name)
    image = _normalise(reference["image_0"])[None]
    for model in (first, classifier):
        assert relative_error(_logits(model, reference["image_0"]), reference["logits_0"]) < 1e-4
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(again(image)), keras.ops.convert_to_numpy(classifier.backbone(image)), atol=1e-6
    )


def test_download_checks_the_hash_and_renames(tmp_path, monkeypatch):
    import hashlib

    monkeypatch.setenv("MNET_BACKBONES_CACHE", str(tmp_path))
    payload = b"checkpoint bytes"
    digest = hashlib.sha256(payload).hexdigest()[:8]

    def serve(url, destination):
        with open(destination, "wb") as f:
            f.write(payload)

    monkeypatch.setattr(tv, "_fetch", serve)
    path = tv.download_checkpoint(f"https://example.invalid/models/mobilenet_v2-{digest}.pth")
    assert path == os.path.join(str(tmp_path), "torchvision", f"mobilenet_v2-{digest}.pth")
    with open(path, "rb") as f:
        assert f.read() == payload
    monkeypatch.setattr(tv, "_fetch", _offline)  # found again without the network
    assert tv.download_checkpoint(f"https://example.invalid/models/mobilenet_v2-{digest}.pth") == path
    monkeypatch.setattr(tv, "_fetch", serve)
    with pytest.raises(ValueError, match="corrupt"):
        tv.download_checkpoint("https://example.invalid/models/mobilenet_v2-00000000.pth")
    assert sorted(os.listdir(tmp_path / "torchvision")) == [f"mobilenet_v2-{digest}.pth"]
