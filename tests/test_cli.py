"""The `mnet-backbones` command line: tables, summaries and one-line errors."""

import os
import runpy
import sys

import keras
import keras_hub
import numpy as np
import pytest

from conftest import ALL_PRESETS, PARITY_DIR, REFERENCE, relative_error, requires_parity_fixtures
from mnet_backbones import MobileNetBackbone, MobileNetImageClassifier, presets
from mnet_backbones.presets import PRESETS, preset_files
from mnet_tools import cli, export

# `list` and `summary` print what Keras computes from shapes alone (parameter counts, channels, map
# sizes), the same on every backend, and build whole models to get it: on JAX one XLA program per
# kernel shape (test_list_counts_params_and_channels alone took minutes). They run on TensorFlow.
structure_only = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow", reason="shapes and counts: the same on every backend"
)


def table_rows(text):
    """The cells of each markdown table row in `text`, header and rule included."""
    return [
        [cell.strip() for cell in line.strip().strip("|").split("|")]
        for line in text.splitlines()
        if line.startswith("|")
    ]


def test_list_without_params_shows_every_preset(capsys):
    assert cli.main(["list", "--no-params"]) == 0
    header, _, *rows = table_rows(capsys.readouterr().out)
    assert header == ["preset", "generation", "width", "resolution", "padding"]
    assert sorted(row[0] for row in rows) == ALL_PRESETS
    by_name = {row[0]: row for row in rows}
    assert by_name["mobilenetv3_small_050"][1:] == ["3", "0.5", "224", "symmetric"]
    assert by_name["mobilenetv2_035"][1:] == ["2", "0.35", "224", "same"]


@structure_only
def test_list_counts_params_and_channels(capsys, monkeypatch):
    # Two presets stand in for all 21, which take about 15 seconds to build.
    names = ["mobilenetv1_025", "mobilenetv4_hybrid_medium"]
    monkeypatch.setattr(presets, "PRESETS", {name: PRESETS[name] for name in names})
    assert cli.main(["list"]) == 0
    header, _, *rows = table_rows(capsys.readouterr().out)
    assert header[5:] == ["params (1000 classes)", "P2", "P3", "P4", "P5", "MACs (M)"]
    for row in rows:
        expected = REFERENCE[row[0]]
        assert int(row[5].replace(",", "")) == expected["classifier_params"]
        assert tuple(int(cell) for cell in row[6:10]) == expected["pyramid_channels"]
        assert float(row[10].replace(",", "")) == pytest.approx(expected["macs_millions"], rel=0.02)


@pytest.mark.skipif(keras.backend.backend() == "tensorflow", reason="MACs are counted on TensorFlow")
def test_macs_are_not_available_off_tensorflow(capsys, monkeypatch):
    monkeypatch.setattr(presets, "PRESETS", {"mobilenetv1_025": PRESETS["mobilenetv1_025"]})
    assert cli.main(["list"]) == 0
    (row,) = table_rows(capsys.readouterr().out)[2:]
    assert row[0] == "mobilenetv1_025" and row[10] == "n/a"


@structure_only
def test_summary_at_a_given_size(capsys):
    assert cli.main(["summary", "mobilenetv4_conv_small", "--size", "161", "193"]) == 0
    out = capsys.readouterr().out
    shapes = {row[0]: row[2] for row in table_rows(out)[2:]}
    assert shapes == {
        "P2": "(41, 49, 32)",
        "P3": "(21, 25, 64)",
        "P4": "(11, 13, 96)",
        "P5": "(6, 7, 960)",
        "output": "(6, 7, 960)",
    }
    assert "classifier parameters: 3,774,024 trainable (1000 classes)" in out
    assert "classifier MACs:" in out


@structure_only
def test_summary_defaults_to_the_reference_resolution(capsys):
    assert cli.main(["summary", "mobilenetv1_025", "--num-classes", "10"]) == 0
    out = capsys.readouterr().out
    assert "mobilenetv1_025 at 224 x 224" in out
    assert ["P5", "32", "(7, 7, 256)"] in table_rows(out)
    # The reference head minus 990 of its 1000 classes: 257 weights each.
    assert f"{REFERENCE['mobilenetv1_025']['classifier_params'] - 990 * 257:,} trainable" in out


def test_unknown_preset_is_a_one_line_error(capsys):
    assert cli.main(["summary", "mobilenetv9_tiny"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1
    assert "'mobilenetv9_tiny'" in captured.err
    assert all(name in captured.err for name in ALL_PRESETS)


@structure_only
def test_summary_of_a_preset_folder_needs_a_size(capsys, tmp_path):
    for file_name, text in preset_files(PRESETS["mobilenetv3_small_050"]).items():
        (tmp_path / file_name).write_text(text)
    assert cli.main(["summary", str(tmp_path)]) == 2
    assert "--size H W" in capsys.readouterr().err
    assert cli.main(["summary", str(tmp_path), "--size", "32", "32"]) == 0
    assert ["P5", "32", "(1, 1, 288)"] in table_rows(capsys.readouterr().out)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["summary", "mobilenetv1_025", "--size", "16", "64"], "at least 32"),
        (["summary", "mobilenetv1_025", "--num-classes", "0"], "positive integer"),
        (["summary", "mobilenetv1_025", "--size", "64"], "expected 2 arguments"),
        (["frobnicate"], "invalid choice"),
        (["convert"], "the following arguments are required"),
        ([], "required: COMMAND"),
    ],
)
def test_bad_arguments_exit_with_status_2(argv, message, capsys):
    try:
        status = cli.main(argv)
    except SystemExit as exit:  # argparse's own errors
        status = exit.code
    assert status == 2
    assert message in capsys.readouterr().err


def test_python_dash_m_runs_the_cli(capsys, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["mnet_tools", "list", "--no-params"])
    with pytest.raises(SystemExit) as exit:
        runpy.run_module("mnet_tools", run_name="__main__")
    assert exit.value.code == 0
    assert "mobilenetv4_hybrid_large" in capsys.readouterr().out


# --------------------------------------------------------------------------
# convert
@requires_parity_fixtures()
def test_convert_writes_a_preset_that_loads_offline(tmp_path, capsys):
    source = os.path.join(PARITY_DIR, "mobilenetv3_large_100")
    out_dir = tmp_path / "converted"
    assert cli.main(["convert", source, str(out_dir)]) == 0
    assert "[3/3" in capsys.readouterr().err  # the progress display
    for name in ("config.json", "model.weights.h5", "preprocessor.json", "metadata.json", "task.json"):
        assert (out_dir / name).is_file(), name
    reference = np.load(os.path.join(source, "reference.npz"))
    classifier = MobileNetImageClassifier.from_preset(str(out_dir))
    logits = keras.ops.convert_to_numpy(classifier(reference["odd_input"], training=False))
    assert relative_error(logits, reference["odd_logits"]) < 1e-4
    backbone = keras_hub.models.Backbone.from_preset(str(out_dir))
    assert isinstance(backbone, MobileNetBackbone) and backbone.padding == "symmetric"


@requires_parity_fixtures()
def test_convert_a_built_in_name_fills_the_cache(tmp_path, monkeypatch, capsys):
    from mnet_backbones import weights
    from mnet_backbones.convert import timm

    monkeypatch.setenv(weights.CACHE_ENV, str(tmp_path / "cache"))
    fixture = os.path.join(PARITY_DIR, "mobilenetv4_conv_small")
    monkeypatch.setattr(timm, "download_snapshot", lambda handle: fixture)  # no network
    assert cli.main(["convert", "mobilenetv4_conv_small", str(tmp_path / "out")]) == 0
    assert weights.is_cached("mobilenetv4_conv_small")
    assert (tmp_path / "out" / "model.weights.h5").is_file()
    assert "hf://timm/mobilenetv4_conv_small.e2400_r224_in1k" in capsys.readouterr().err


def test_convert_refuses_a_bad_source_or_a_full_folder(tmp_path, capsys):
    assert cli.main(["convert", str(tmp_path), str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err
    assert "is none of: a built-in preset, " in error and "a timm snapshot folder" in error
    assert not (tmp_path / "out").exists()
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    assert cli.main(["convert", "mobilenetv2_100", str(tmp_path / "full")]) == 2
    assert "not empty" in capsys.readouterr().err


def test_demo_forwards_its_options_to_the_demo(monkeypatch):
    received = []
    fake = type(sys)("fake_demo")
    fake.main = lambda argv: received.append(argv) or 0
    monkeypatch.setitem(cli.DEMOS, "detection", fake)
    assert cli.main(["demo", "detection", "--minutes", "1", "--out-dir", "x"]) == 0
    assert received == [["--minutes", "1", "--out-dir", "x"]]


def test_demo_names_the_allowed_demos(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["demo", "classification"])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert "'classification'" in error and "detection" in error and "segmentation" in error


def test_demo_without_a_name_names_the_demos(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["demo"])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert "required: {detection,segmentation}" in error
    assert "demo_options" not in error and "demo_args" not in error


# --------------------------------------------------------------------------
# bench --train: mnet_tools.train_bench's command line, behind the CLI's.
def test_bench_help_lists_the_training_benchmark(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["bench", "--help"])
    assert exit_info.value.code == 0
    help_text = " ".join(capsys.readouterr().out.split())
    assert "--train ... instead: training throughput" in help_text and "`bench --train --help`" in help_text


def test_bench_train_forwards_its_options_to_the_training_benchmark(monkeypatch, capsys):
    from mnet_tools import train_bench

    received = []
    monkeypatch.setattr(train_bench, "main", lambda argv: received.append(argv) or 0)
    assert cli.main(["bench", "--train", "--tasks", "ssdlite", "--backends", "jax", "--image-size", "320"]) == 0
    assert cli.main(["bench", "--train"]) == 0
    assert received == [["--tasks", "ssdlite", "--backends", "jax", "--image-size", "320"], []]

    def failed_worker(argv):
        raise RuntimeError("the jax run failed (exit 1); its error is printed above.")

    monkeypatch.setattr(train_bench, "main", failed_worker)
    capsys.readouterr()
    assert cli.main(["bench", "--train", "--backends", "jax"]) == 1
    assert (
        capsys.readouterr().err
        == "mnet-backbones bench: error: --train: the jax run failed (exit 1); its error is printed above.\n"
    )


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--train", "--tasks", "yolo"], "--train: argument --tasks: invalid choice: 'yolo'"),
        (["--train", "--image-size", "0"], "--train: --image-size must be a positive int, got 0"),
        (["--train", "--repeats", "many"], "--train: argument --repeats: invalid int value: 'many'"),
        (["--train", "--bogus"], "--train: unrecognized arguments: --bogus"),
        (["--quick", "--train"], "without the inference bench's --quick"),
        (["mobilenetv1_025", "--no-int8", "--train", "--tasks", "ssdlite"], "bench's PRESET, --no-int8;"),
    ],
)
def test_bench_train_bad_options_are_one_line_errors(argv, message, capsys):
    assert cli.main(["bench", *argv]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1 and captured.err.startswith("mnet-backbones bench: error: ")
    assert message in captured.err


def test_bench_train_help_and_errors_load_no_keras():
    import subprocess

    script = (
        "import sys\n"
        "from mnet_tools import cli\n"
        "try:\n"
        "    cli.main(['bench', '--train', '--help'])\n"
        "except SystemExit as exit:\n"
        "    print('HELP EXIT', exit.code)\n"
        "print('ERROR STATUS', cli.main(['bench', '--train', '--backends', 'numpy']))\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('keras', 'tensorflow', 'keras_hub', 'jax',\n"
        "                                                             'torch', 'mnet_backbones'))\n"
        "print('HEAVY', heavy)\n"
    )
    env = {key: value for key, value in os.environ.items() if key != cli.TF_LOG_LEVEL}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert "HEAVY []" in result.stdout, result.stdout + result.stderr
    assert "HELP EXIT 0" in result.stdout and "ERROR STATUS 2" in result.stdout
    assert "--tasks" in result.stdout and "--backends" in result.stdout  # the training benchmark's own options
    assert result.stderr.count("\n") == 1 and "invalid choice: 'numpy'" in result.stderr, result.stderr


def test_the_export_arguments_are_what_export_takes():
    # The CLI declares them without importing mnet_tools.export (and Keras).
    assert cli.EXPORT_SUFFIXES == export.SUFFIXES
    assert cli.EXPORT_TASKS == export.TASKS
    assert cli.DEFAULT_CALIBRATION_IMAGES == export.DEFAULT_CALIBRATION_IMAGES


@pytest.mark.parametrize("demo", ["detection", "segmentation"])
@pytest.mark.parametrize("option, value", [("--train-images", "0"), ("--minutes", "-1"), ("--batch-size", "2.5")])
def test_demo_options_are_checked_before_any_work(demo, option, value, capsys, tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["demo", demo, "--out-dir", str(tmp_path / "out"), option, value])
    assert exit_info.value.code == 2
    assert f"argument {option}: must be a positive" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
