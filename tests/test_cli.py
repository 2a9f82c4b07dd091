"""The `mnet-backbones` command line: tables, summaries and one-line errors."""

import runpy
import sys

import pytest

from conftest import ALL_PRESETS, REFERENCE
from mnet_backbones import cli
from mnet_backbones.presets import PRESETS, preset_files


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


def test_list_counts_params_and_channels(capsys, monkeypatch):
    # Two presets stand in for all 21, which take about 15 seconds to build.
    names = ["mobilenetv1_025", "mobilenetv4_hybrid_medium"]
    monkeypatch.setattr(cli, "PRESETS", {name: PRESETS[name] for name in names})
    assert cli.main(["list"]) == 0
    header, _, *rows = table_rows(capsys.readouterr().out)
    assert header[5:] == ["params (1000 classes)", "P2", "P3", "P4", "P5"]
    for row in rows:
        expected = REFERENCE[row[0]]
        assert int(row[5].replace(",", "")) == expected["classifier_params"]
        assert tuple(int(cell) for cell in row[6:]) == expected["pyramid_channels"]


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
        (["convert"], "invalid choice"),
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
    monkeypatch.setattr(sys, "argv", ["mnet_backbones", "list", "--no-params"])
    with pytest.raises(SystemExit) as exit:
        runpy.run_module("mnet_backbones", run_name="__main__")
    assert exit.value.code == 0
    assert "mobilenetv4_hybrid_large" in capsys.readouterr().out
