"""Smoke tests of the training throughput benchmark (no timing is asserted)."""

import pytest

from mnet_tools import train_bench


def test_table_lays_out_rows_and_marks_missing_figures():
    rows = [
        {
            "task": "ssdlite",
            "backend": "jax",
            "image_size": 320,
            "batch_size": 16,
            "pipeline": 250.0,
            "step": 12.25,
            "both": 11.5,
            "step_2": 10.0,
            "ratio_2_1": 0.8163,
        },
        {
            "task": "classifier",
            "backend": "torch",
            "image_size": 96,
            "batch_size": 8,
            "pipeline": 300.0,
            "step": 40.0,
            "both": 38.0,
            "step_2": None,
            "ratio_2_1": None,
        },
    ]
    lines = train_bench.table(rows).splitlines()
    assert len(lines) == 4
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    assert header == train_bench.HEADER
    jax_row = [cell.strip() for cell in lines[2].strip("|").split("|")]
    assert jax_row == ["ssdlite", "jax", "320", "16", "250.0", "12.2", "11.5", "10.0", "0.82"]
    torch_row = [cell.strip() for cell in lines[3].strip("|").split("|")]
    assert torch_row[-2:] == ["n/a", "n/a"]
    assert lines[1].endswith(": |")  # figures align right


def test_measure_times_train_epochs_and_gives_positive_rates_for_a_tiny_classifier(monkeypatch):
    from mnet_tools.train.data import EpochData

    epochs = []
    train_dataset = EpochData.train_dataset

    def recorded(self, epoch):
        epochs.append(epoch)
        return train_dataset(self, epoch)

    monkeypatch.setattr(EpochData, "train_dataset", recorded)
    row = train_bench.measure("classifier", image_size=32, batch_size=2, steps=1, repeats=1, two_devices=False)
    for name in ("pipeline", "step", "both"):
        assert row[name] > 0, name
    assert row["step_2"] is None and row["ratio_2_1"] is None
    assert row["task"] in train_bench.table([row])
    # Pipeline and pipeline + step: a warm-up and a timed run each, every one a new epoch of train's data.
    assert epochs == [0, 1, 2, 3]


@pytest.mark.parametrize(
    "task, train_task, head",
    [
        ("ssdlite", "detection", "ssdlite"),
        ("deeplabv3plus", "segmentation", "deeplabv3plus"),
        ("classifier", "classification", "classifier"),
    ],
)
def test_train_data_is_the_train_commands_augmented_data(tmp_path, task, train_task, head):
    data = train_bench.train_data(task, str(tmp_path), "mobilenetv3_small_050", 32, 2, 4)
    assert (data.task, data.config.head, data.config.augment) == (train_task, head, True)
    assert (data.num_examples, data.steps_per_epoch) == (4, 2)
    images, _ = next(iter(data.train_dataset(0)))
    assert tuple(images.shape) == (2, 32, 32, 3)


def test_train_data_holds_an_image_per_class(tmp_path):
    data = train_bench.train_data("classifier", str(tmp_path), "mobilenetv3_small_050", 32, 1, 1)
    assert data.num_classes == train_bench.NUM_CLASSES == data.num_examples


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"tasks": ("yolo",)}, "task must be one of"),
        ({"backends": ("numpy",)}, "backend must be one of"),
    ],
)
def test_run_refuses_unknown_tasks_and_backends(kwargs, message):
    with pytest.raises(ValueError, match=message):
        train_bench.run(**kwargs)


def test_measure_refuses_an_unknown_task():
    with pytest.raises(ValueError, match="task must be one of"):
        train_bench.measure("yolo")


def test_command_line_refuses_a_zero_size():
    with pytest.raises(SystemExit):
        train_bench.main(["--image-size", "0"])
