"""timm snapshots through from_preset, and checkpoints that do not fit fail
cleanly: naming the tensor and the shapes, leaving the model untouched."""

import json
import os
import shutil

import keras
import numpy as np
import pytest

from conftest import PARITY_DIR, relative_error, requires_parity_fixtures
from mnet_backbones import MobileNetBackbone, MobileNetImageClassifier
from mnet_backbones.convert import timm as timm_convert
from mnet_backbones.convert.mapping import WeightMismatchError

pytestmark = requires_parity_fixtures()

SMALL = "mobilenetv4_conv_small"


def _fixture(name=SMALL):
    return os.path.join(PARITY_DIR, name)


def _copy_snapshot(tmp_path, name=SMALL):
    folder = tmp_path / name
    shutil.copytree(_fixture(name), folder)
    return folder


def _write_state_dict(folder, state_dict):
    from safetensors.numpy import save_file

    save_file(state_dict, str(folder / timm_convert.TIMM_WEIGHTS))


def _snapshot_of(model):
    return [keras.ops.convert_to_numpy(w).copy() for w in model.weights]


def _assert_untouched(model, before):
    for weight, old in zip(model.weights, before):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(weight), old)


def test_from_preset_on_a_snapshot_folder_reproduces_timm():
    reference = np.load(os.path.join(_fixture("mobilenetv4_hybrid_medium"), "reference.npz"))
    classifier = MobileNetImageClassifier.from_preset(_fixture("mobilenetv4_hybrid_medium"))
    assert classifier.num_classes == 1000
    converter = classifier.preprocessor.image_converter
    assert converter.image_size == (256, 256) and converter.interpolation == "bicubic"
    logits = keras.ops.convert_to_numpy(classifier(reference["odd_input"], training=False))
    assert relative_error(logits, reference["odd_logits"]) < 1e-4
    backbone = MobileNetBackbone.from_preset(_fixture("mobilenetv3_large_100"))
    assert (backbone.padding, backbone.bn_epsilon) == ("symmetric", 1e-5)


def test_float16_checkpoints_load_as_float32():
    state_dict = timm_convert.read_state_dict(_fixture("mobilenetv3_large_100"))
    assert state_dict["conv_stem.weight"].dtype == np.float32
    backbone = MobileNetBackbone.from_preset(_fixture("mobilenetv3_large_100"))
    assert all(w.dtype == "float32" for w in backbone.weights)


def test_tf_ports_use_tensorflow_conventions():
    config = timm_convert.backbone_config_for("tf_mobilenetv3_large_minimal_100")
    assert config == dict(
        architecture="mobilenetv3_large_minimal", width_multiplier=1.0, padding="same", bn_epsilon=1e-3
    )
    with pytest.raises(ValueError, match="mobilenetv4_conv_small"):
        timm_convert.backbone_config_for("resnet50")


def test_checkpoint_of_another_architecture(tmp_path):
    folder = _copy_snapshot(tmp_path, "mobilenetv4_hybrid_medium")
    config = json.loads((folder / "config.json").read_text())
    config["architecture"] = "mobilenetv4_conv_medium"  # same stem, other blocks
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(WeightMismatchError, match="blocks") as info:
        MobileNetBackbone.from_preset(str(folder))
    assert "Nothing was loaded" in str(info.value)


def test_missing_tensor_is_named_and_nothing_loads(tmp_path):
    backbone = MobileNetBackbone(**timm_convert.backbone_config_for(SMALL))
    before = _snapshot_of(backbone)
    state_dict = timm_convert.read_state_dict(_fixture())
    del state_dict["blocks.3.2.pw_exp.conv.weight"]
    with pytest.raises(WeightMismatchError, match=r"'blocks.3.2.pw_exp.conv.weight'.*missing"):
        timm_convert.load_state_dict(backbone, state_dict)
    _assert_untouched(backbone, before)


def test_extra_tensor_is_named(tmp_path):
    classifier = MobileNetImageClassifier(
        MobileNetBackbone(**timm_convert.backbone_config_for(SMALL)), num_classes=1000
    )
    before = _snapshot_of(classifier)
    state_dict = timm_convert.read_state_dict(_fixture())
    state_dict["blocks.5.0.conv.weight"] = np.zeros((8, 8, 1, 1), "float32")
    with pytest.raises(WeightMismatchError, match=r"blocks.5.0.conv.weight.*\(8, 8, 1, 1\)"):
        timm_convert.load_state_dict(classifier, state_dict)
    _assert_untouched(classifier, before)


def test_shape_mismatch_names_tensor_layer_and_shapes(tmp_path):
    folder = _copy_snapshot(tmp_path)
    state_dict = timm_convert.read_state_dict(folder)
    state_dict["blocks.2.0.dw_mid.bn.running_var"] = np.ones((7,), "float32")
    _write_state_dict(folder, state_dict)
    backbone = MobileNetBackbone(**timm_convert.backbone_config_for(SMALL))
    before = _snapshot_of(backbone)
    with pytest.raises(
        WeightMismatchError,
        match=r"'blocks.2.0.dw_mid.bn.running_var' has shape \(7,\).*blocks_2_0/dw_mid/bn/moving_variance.*\(192,\)",
    ):
        timm_convert.load_state_dict(backbone, timm_convert.read_state_dict(folder))
    _assert_untouched(backbone, before)


def test_truncated_file(tmp_path):
    folder = _copy_snapshot(tmp_path)
    weights_path = folder / timm_convert.TIMM_WEIGHTS
    data = weights_path.read_bytes()
    weights_path.write_bytes(data[: len(data) // 2])
    # Named before safetensors reads it: the file and the bytes it lacks.
    with pytest.raises(OSError, match=r"model.safetensors is truncated: [\d,]+ of its [\d,]+ bytes"):
        MobileNetBackbone.from_preset(str(folder))


def test_new_head_keeps_the_pretrained_backbone():
    classifier = MobileNetImageClassifier.from_preset(_fixture(), num_classes=5)
    assert classifier.num_classes == 5
    state_dict = timm_convert.read_state_dict(_fixture())
    stem = keras.ops.convert_to_numpy(classifier.backbone.get_layer("stem").conv.kernel)
    np.testing.assert_array_equal(stem, np.transpose(state_dict["conv_stem.weight"], (2, 3, 1, 0)))


def test_hf_handle_offline_says_what_to_do(monkeypatch):
    import huggingface_hub

    def no_network(*args, **kwargs):
        raise OSError("[Errno 101] Network is unreachable")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", no_network)
    handle = "hf://timm/mobilenetv4_conv_small.e2400_r224_in1k"
    with pytest.raises(timm_convert.DownloadError, match="mnet-backbones convert") as info:
        MobileNetBackbone.from_preset(handle)
    assert "load_weights=False" in str(info.value) and handle in str(info.value)


def test_hf_handle_downloads_then_converts(monkeypatch):
    import huggingface_hub

    requested = []

    def fake_download(repo_id, **kwargs):
        requested.append((repo_id, kwargs["allow_patterns"]))
        return _fixture()

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_download)
    backbone = MobileNetBackbone.from_preset("hf://timm/mobilenetv4_conv_small.e2400_r224_in1k")
    assert requested == [("timm/mobilenetv4_conv_small.e2400_r224_in1k", ["config.json", "model.safetensors"])]
    assert backbone.architecture == "mobilenetv4_conv_small"


def test_converted_model_round_trips_through_keras_files(tmp_path):
    reference = np.load(os.path.join(_fixture("mobilenetv3_large_100"), "reference.npz"))
    classifier = MobileNetImageClassifier.from_preset(_fixture("mobilenetv3_large_100"))
    path = str(tmp_path / "converted.keras")
    classifier.save(path)
    restored = keras.models.load_model(path)
    assert restored.preprocessor.image_converter.image_size == (224, 224)
    logits = keras.ops.convert_to_numpy(restored(reference["square_input"], training=False))
    assert relative_error(logits, reference["square_logits"]) < 1e-4


@pytest.mark.parametrize(
    "timm_name, architecture, width",
    [
        ("mobilenetv1_125", "mobilenetv1", 1.25),
        ("mobilenetv2_035", "mobilenetv2", 0.35),
        ("tf_mobilenetv3_small_075", "mobilenetv3_small", 0.75),
        ("mobilenetv3_large_minimal_100", "mobilenetv3_large_minimal", 1.0),
        ("mobilenetv4_hybrid_medium_075", "mobilenetv4_hybrid_medium", 0.75),
        ("mobilenetv4_conv_small_050", "mobilenetv4_conv_small", 0.5),
    ],
)
def test_timm_names_of_other_widths(timm_name, architecture, width):
    config = timm_convert.backbone_config_for(timm_name)
    assert (config["architecture"], config["width_multiplier"]) == (architecture, width)


@pytest.mark.parametrize("timm_name", ["mobilenetv2_110d", "mobilenetv1_100h", "mobilenetv5_300m"])
def test_other_timm_families_are_refused(timm_name):
    with pytest.raises(ValueError, match="not a MobileNet this package builds"):
        timm_convert.backbone_config_for(timm_name)
