"""The expected figures the tests read are REFERENCE.md's, transcribed exactly."""

import os

import pytest

from conftest import REFERENCE, SHARED
from mnet_backbones.presets import PRESETS

REFERENCE_MD = os.path.join(SHARED, "REFERENCE.md")


def test_every_reference_preset_is_built_in():
    assert sorted(PRESETS) == sorted(REFERENCE)
    assert len(PRESETS) == 21


@pytest.mark.skipif(not os.path.isfile(REFERENCE_MD), reason="shared/REFERENCE.md not found")
def test_transcription_matches_reference_md():
    table = {}
    with open(REFERENCE_MD, encoding="utf-8") as f:
        for line in f:
            if line.startswith("| `"):
                cells = [c.strip() for c in line.strip().strip("|").split("|")]
                table[cells[0].strip("`")] = cells
    assert sorted(table) == sorted(REFERENCE)
    for name, cells in table.items():
        row = REFERENCE[name]
        assert int(cells[1]) == row["resolution"], name
        assert int(cells[2].replace(",", "")) == row["classifier_params"], name
        assert tuple(int(c) for c in cells[3].split(",")) == row["pyramid_channels"], name


def test_preset_resolutions_match_reference():
    for name, row in REFERENCE.items():
        assert PRESETS[name].resolution == row["resolution"], name
