"""Broken files in preset and snapshot folders are named, through every Python entry point.

(The CLI's own checks are in test_cli_robustness.py; the readers in test_files.py.)
"""

import os
import shutil

import keras_hub
import pytest

import heads
import mnet_backbones
from conftest import PARITY_DIR, requires_parity_fixtures


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    root = tmp_path_factory.mktemp("presets")
    classifier = mnet_backbones.MobileNetImageClassifier.from_preset(
        "mobilenetv3_small_050", num_classes=4, load_weights=False
    )
    classifier.save_to_preset(str(root / "classifier"))
    detector = heads.create_ssdlite("mobilenetv3_small_050", num_classes=3, image_size=96, load_weights=False)
    detector.save_to_preset(str(root / "detector"))
    return root


def _copy(saved, name, tmp_path):
    folder = str(tmp_path / name)
    shutil.copytree(saved / name, folder)
    return folder


def _break_json(folder, name):
    with open(os.path.join(folder, name), "w", encoding="utf-8") as f:
        f.write('{"registered_name": "x",\n  "config": {oops}')


def _truncate(path, keep=0.5):
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.truncate(int(size * keep))


LOADERS = {
    "backbone": mnet_backbones.MobileNetBackbone.from_preset,
    "classifier": mnet_backbones.MobileNetImageClassifier.from_preset,
    "keras_hub.Backbone": keras_hub.models.Backbone.from_preset,
}


@pytest.mark.parametrize("loader", sorted(LOADERS))
def test_invalid_config_json_is_named_with_its_position(saved, tmp_path, loader):
    folder = _copy(saved, "classifier", tmp_path)
    _break_json(folder, "config.json")
    with pytest.raises(ValueError, match=r"config.json is not valid JSON: .* line 2, column"):
        LOADERS[loader](folder)


@pytest.mark.parametrize("loader", sorted(LOADERS))
def test_truncated_weights_are_named(saved, tmp_path, loader):
    folder = _copy(saved, "classifier", tmp_path)
    _truncate(os.path.join(folder, "model.weights.h5"))
    with pytest.raises(OSError, match=r"model.weights.h5 is truncated: [\d,]+ of its [\d,]+ bytes"):
        LOADERS[loader](folder)
    LOADERS[loader](folder, load_weights=False)  # the weights are not read: nothing to refuse


def test_a_task_folder_with_a_broken_task_json_is_named(saved, tmp_path):
    folder = _copy(saved, "detector", tmp_path)
    _break_json(folder, "task.json")
    with pytest.raises(ValueError, match="task.json is not valid JSON"):
        heads.SSDLiteObjectDetector.from_preset(folder)


def test_load_weights_names_a_truncated_file(saved, tmp_path):
    path = str(tmp_path / "model.weights.h5")
    shutil.copy(saved / "classifier" / "model.weights.h5", path)
    _truncate(path)
    backbone = mnet_backbones.MobileNetBackbone("mobilenetv3_small", width_multiplier=0.5)
    with pytest.raises(OSError, match="truncated"):
        backbone.load_weights(path)


@requires_parity_fixtures()
def test_a_truncated_timm_snapshot_is_named(tmp_path):
    folder = str(tmp_path / "snapshot")
    shutil.copytree(os.path.join(PARITY_DIR, "mobilenetv4_conv_small"), folder)
    os.remove(os.path.join(folder, "reference.npz"))
    os.chmod(folder, 0o755)
    for name in os.listdir(folder):
        os.chmod(os.path.join(folder, name), 0o644)
    _truncate(os.path.join(folder, "model.safetensors"))
    with pytest.raises(OSError, match="model.safetensors is truncated"):
        mnet_backbones.MobileNetBackbone.from_preset(folder)
