"""The detection demo runs end to end (tiny settings): figures printed, picture written."""

import os
import re

import keras
import pytest

from mnet_tools.demos import detection

pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow", reason="the demo is checked once, on TensorFlow"
)


def test_demo_prints_its_figures_and_saves_a_picture(tmp_path, capsys):
    picture = tmp_path / "boxes.png"
    status = detection.main([
        "--out-dir", str(tmp_path), "--backbone", "mobilenetv1_025", "--train-images", "8",
        "--val-images", "4", "--image-size", "64", "--batch-size", "4", "--epochs", "1",
        "--picture", str(picture),
    ])  # fmt: skip
    assert status == 0
    captured = capsys.readouterr()
    out = captured.out
    # What it is doing, as it goes: each stage, then the first training step.
    stages = re.findall(r"^\[ *\d+\.\d+s\] (\w+)", captured.err, re.MULTILINE)
    assert stages[:5] == ["making", "building", "training", "epoch", "epoch"], captured.err
    assert "step 1/2" in captured.err and "(epoch done)" in captured.err
    assert stages[-2:] == ["scoring", "saving"], captured.err
    assert re.search(r"AP \d\.\d{3}  AP50 \d\.\d{3}  AP75 \d\.\d{3}", out), out
    assert re.search(r"training: \d+\.\d min, 1 epochs of 2 steps", out), out
    assert picture.stat().st_size > 1000
    assert os.path.isfile(tmp_path / "ssdlite.keras")
