"""`mnet-backbones train`: end to end per task, resume, refusals, the optimizer and its schedule.

Small on purpose: a handful of 32-64 px images, one or two epochs, MobileNetV1 0.25 with random weights.
"""

import dataclasses
import hashlib
import json
import math
import os
import re
import subprocess
import sys

import keras
import numpy as np
import pytest
from PIL import Image

from mnet_tools import cli
from mnet_tools.train import config as train_config
from mnet_tools.train import train
from mnet_tools.train.optim import WarmupCosine, make_optimizer

PRESET = "mobilenetv1_025"
CLASSES = ("cat", "dog", "fox")
on_tensorflow = pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="TensorFlow's deterministic ops")


def write_class_folder(root, classes=CLASSES, per_class=4, seed=0):
    rng = np.random.default_rng(seed)
    for index, name in enumerate(classes):
        os.makedirs(os.path.join(root, name), exist_ok=True)
        for i in range(per_class):
            pixels = rng.integers(0, 256, (36, 40, 3), dtype=np.uint8)
            pixels[..., index % 3] = 255  # a class's colour, so there is something to learn
            Image.fromarray(pixels).save(os.path.join(root, name, f"{i}.png"))
    return str(root)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("train_data")
    return {
        "train": write_class_folder(root / "train", per_class=4, seed=0),
        "val": write_class_folder(root / "val", per_class=2, seed=1),
        "root": root,
    }


def classification_command(folders, out_dir, *extra):
    return [
        "train", "classification", "--train", folders["train"], "--val", folders["val"], "--out-dir", str(out_dir),
        "--preset", PRESET, "--no-weights", "--image-size", "32", "--epochs", "2", "--batch-size", "4",
        "--warmup-epochs", "0.5", "--frozen-epochs", "1", "--learning-rate", "0.01", "--quiet", *extra,
    ]  # fmt: skip


def folder_digest(folder):
    """Every file's path and content hash, to show a refused run changed nothing."""
    digest = {}
    for parent, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(parent, name)
            with open(path, "rb") as file:
                digest[os.path.relpath(path, folder)] = hashlib.sha256(file.read()).hexdigest()
    return digest


def model_arrays(run_folder):
    with np.load(os.path.join(run_folder, "last", "state.npz")) as state:
        return {key: state[key] for key in state if key.startswith("model/")}


def tensorboard_tags(run_folder):
    import tensorflow as tf
    from tensorflow.core.util import event_pb2

    tags = set()
    folder = os.path.join(run_folder, "tensorboard")
    for name in os.listdir(folder):
        for record in tf.data.TFRecordDataset(os.path.join(folder, name)):
            event = event_pb2.Event.FromString(record.numpy())
            tags.update((value.tag, event.step) for value in event.summary.value)
    return tags


@pytest.fixture(scope="module")
def deterministic_ops():
    import tensorflow as tf

    tf.config.experimental.enable_op_determinism()
    from tensorflow.python.framework import config as tf_config

    yield
    tf_config.disable_op_determinism()  # not in the public API; the rest of a test session runs as usual


@pytest.fixture(scope="module")
def straight_run(folders, deterministic_ops, tmp_path_factory):
    """Two epochs in one go (the first with the backbone frozen), through the CLI."""
    out_dir = tmp_path_factory.mktemp("runs") / "straight"
    assert cli.main(classification_command(folders, out_dir)) == 0
    return out_dir


# --------------------------------------------------------------------------
# The CLI without Keras.
def test_help_does_not_import_keras():
    code = (
        "import sys, contextlib, io\n"
        "from mnet_tools import cli\n"
        "with contextlib.redirect_stdout(io.StringIO()) as out:\n"
        "    try: cli.main(['train', '--help'])\n"
        "    except SystemExit: pass\n"
        "assert 'keras' not in sys.modules and 'tensorflow' not in sys.modules, sorted(sys.modules)\n"
        "assert '--frozen-epochs' in out.getvalue()\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_cli_constants_agree_with_the_configuration():
    assert cli.TRAIN_DATA == train_config.DATA_PARTS
    heads = {head for task, names in train_config.HEADS.items() if task != "classification" for head in names}
    assert set(cli.TRAIN_HEADS) == heads


# --------------------------------------------------------------------------
# The schedule and the optimizer.
def test_warmup_cosine_values_by_hand():
    schedule = WarmupCosine(peak=0.1, warmup_steps=10, total_steps=110)
    expected = {
        0: 0.1 * 1 / 10,
        4: 0.1 * 5 / 10,
        9: 0.1,
        10: 0.1,  # the cosine starts at its peak
        35: 0.05 * (1 + math.cos(math.pi * 25 / 100)),
        60: 0.05,
        110: 0.0,
        500: 0.0,
    }
    for step, value in expected.items():
        assert float(schedule(step)) == pytest.approx(value, abs=1e-7), step
    no_warmup = WarmupCosine(peak=0.2, warmup_steps=0, total_steps=4)
    assert [float(no_warmup(s)) for s in range(5)] == pytest.approx([0.2, 0.170710678, 0.1, 0.029289322, 0.0])


@pytest.mark.parametrize("optimizer", ["adamw", "sgd"])
def test_weight_decay_skips_batchnorm_and_biases(folders, optimizer):
    from mnet_backbones.classifier import MobileNetImageClassifier

    model = MobileNetImageClassifier.from_preset(PRESET, num_classes=3, load_weights=False)
    config = train_config.TrainConfig(
        task="classification", train_data=(folders["train"],), val_data=(folders["val"],), preset=PRESET,
        epochs=2, optimizer=optimizer, learning_rate=0.5, weight_decay=0.1, warmup_epochs=0.0,
    )  # fmt: skip
    opt = make_optimizer(config, model, steps_per_epoch=10)
    variables = model.trainable_variables
    kinds = {"kernel": [], "bn": [], "bias": []}
    for variable in variables:
        if len(variable.shape) >= 2:
            kinds["kernel"].append(variable)
        elif variable.name in ("gamma", "beta"):
            kinds["bn"].append(variable)
        elif variable.name == "bias":
            kinds["bias"].append(variable)
    assert all(kinds.values()), {key: len(value) for key, value in kinds.items()}
    before = [keras.ops.convert_to_numpy(v) for v in variables]
    # Zero gradients: the only change is the decoupled decay, lr * wd = 0.05 of each decayed weight.
    opt.apply_gradients([(keras.ops.zeros(v.shape), v) for v in variables])
    for variable, old in zip(variables, before):
        new = keras.ops.convert_to_numpy(variable)
        if len(variable.shape) >= 2:
            np.testing.assert_allclose(new, old * (1 - 0.5 * 0.1), rtol=1e-5, err_msg=variable.path)
        else:
            np.testing.assert_array_equal(new, old, err_msg=variable.path)


# --------------------------------------------------------------------------
# End to end, resume.
@on_tensorflow
def test_classification_writes_its_run_folder(straight_run):
    from mnet_backbones.classifier import MobileNetImageClassifier

    names = set(os.listdir(straight_run))
    assert {"config.json", "last", "best.keras", "best_preset", "metrics.csv", "tensorboard"} <= names
    assert not [name for name in names if name.startswith(".")]  # no temporaries left
    lines = open(os.path.join(straight_run, "metrics.csv")).read().splitlines()
    header = lines[0].split(",")
    assert {"epoch", "loss", "learning_rate", "top1", "top5"} <= set(header) and len(lines) == 3
    assert [row.split(",")[0] for row in lines[1:]] == ["1", "2"]
    assert {("top1", 1), ("top5", 1), ("top1", 2), ("loss", 2)} <= tensorboard_tags(straight_run)
    saved = keras.models.load_model(os.path.join(straight_run, "best.keras"), compile=False)
    preset = MobileNetImageClassifier.from_preset(os.path.join(straight_run, "best_preset"))
    images = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    assert preset.num_classes == 3
    np.testing.assert_allclose(preset.predict(images, verbose=0), saved.predict(images, verbose=0), atol=1e-5)


@on_tensorflow
def test_resume_gives_the_uninterrupted_weights(folders, straight_run, tmp_path):
    out_dir = tmp_path / "resumed"
    # Stopped after epoch 1 (the frozen one): as a kill after that epoch's checkpoint.
    assert cli.main(classification_command(folders, out_dir, "--stop-after", "1")) == 0
    assert len(open(out_dir / "metrics.csv").read().splitlines()) == 2
    # A frozen backbone's BatchNorm runs in inference mode: its statistics stay at their initial 0.
    means = batchnorm_means(out_dir)
    assert means and not any(np.any(mean) for mean in means)
    assert all(np.any(mean) for mean in batchnorm_means(straight_run))  # and move once it trains
    # A kill in the middle of writing the next checkpoint leaves a partial temporary behind.
    os.makedirs(out_dir / ".last.partial-dead")
    assert cli.main(classification_command(folders, out_dir)) == 0
    assert not (out_dir / ".last.partial-dead").exists()
    straight, resumed = model_arrays(straight_run), model_arrays(out_dir)
    assert straight.keys() == resumed.keys()
    for key in straight:
        np.testing.assert_allclose(resumed[key], straight[key], atol=1e-6, rtol=0, err_msg=key)
    assert rows_without_times(out_dir) == rows_without_times(straight_run)


def rows_without_times(run_folder):
    lines = open(os.path.join(run_folder, "metrics.csv")).read().splitlines()
    column = lines[0].split(",").index("seconds")
    return [[cell for i, cell in enumerate(line.split(",")) if i != column] for line in lines]


@on_tensorflow
def test_sigkill_mid_epoch_then_the_same_command_finishes_the_run(folders, straight_run, tmp_path):
    """A real `kill -9` during epoch 2 (after epoch 1's checkpoint); the same command resumes to the same weights."""
    import shutil
    import signal
    import time

    out_dir = tmp_path / "killed"
    command = classification_command(folders, out_dir, "--deterministic")
    process = subprocess.Popen(
        [sys.executable, "-m", "mnet_tools", *command], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 240
        while not (out_dir / "last" / "progress.json").exists():
            assert process.poll() is None, "the run ended before its first checkpoint"
            assert time.monotonic() < deadline, "no checkpoint within 4 minutes"
            time.sleep(0.05)
        time.sleep(0.5)  # into epoch 2: tracing the unfrozen step, or its first batches
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert len(open(out_dir / "metrics.csv").read().splitlines()) == 2  # header and epoch 1: killed in epoch 2
    assert cli.main(command) == 0
    straight, resumed = model_arrays(straight_run), model_arrays(out_dir)
    for key in straight:
        np.testing.assert_allclose(resumed[key], straight[key], atol=1e-6, rtol=0, err_msg=key)
    assert not [name for name in os.listdir(out_dir) if name.startswith(".")]
    # Killed between the two renames of replacing last/: the previous checkpoint waits aside and is taken back.
    aside = out_dir / ".last.old-dead"
    aside.mkdir()
    shutil.move(out_dir / "last", aside / "content")
    assert cli.main(command) == 0
    assert (out_dir / "last" / "state.npz").exists() and not aside.exists()
    np.testing.assert_array_equal(model_arrays(out_dir)["model/00000"], straight["model/00000"])


def batchnorm_means(run_folder):
    with np.load(os.path.join(run_folder, "last", "state.npz")) as state:
        return [state[f"model/{i:05d}"] for i, path in enumerate(state["model_paths"]) if "moving_mean" in path]


@on_tensorflow
def test_other_configuration_is_refused_and_nothing_changes(folders, straight_run, capsys):
    before = folder_digest(straight_run)
    command = classification_command(folders, straight_run)
    command[command.index("--learning-rate") + 1] = "0.02"
    assert cli.main(command + ["--seed", "3"]) == 2
    error = capsys.readouterr().err
    assert "--learning-rate: 0.01 in the folder, 0.02 now" in error and "--seed: 0 in the folder, 3 now" in error
    assert folder_digest(straight_run) == before


def test_folder_that_is_not_a_run_is_refused(folders, tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    assert cli.main(classification_command(folders, tmp_path)) == 2
    assert "not a run folder" in capsys.readouterr().err
    assert os.listdir(tmp_path) == ["notes.txt"]


# --------------------------------------------------------------------------
# Bad data: named, and nothing written.
def test_empty_dataset_is_named(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="no class subfolders") as caught:
        train("classification", [empty], [empty], tmp_path / "run", preset=PRESET, epochs=2)
    assert str(empty) in str(caught.value)
    (empty / "cat").mkdir()
    with pytest.raises(ValueError, match="has no images") as caught:
        train("classification", [empty], [empty], tmp_path / "run", preset=PRESET, epochs=2)
    assert str(empty / "cat") in str(caught.value)
    assert not (tmp_path / "run").exists()


def test_unreadable_image_is_named(tmp_path, capsys):
    data = write_class_folder(tmp_path / "data", per_class=1)
    bad = tmp_path / "data" / "dog" / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    command = ["train", "classification", "--train", data, "--val", data, "--out-dir", str(tmp_path / "run"),
               "--preset", PRESET, "--no-weights", "--epochs", "2"]  # fmt: skip
    assert cli.main(command) != 0
    assert str(bad) in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


@on_tensorflow
def test_from_model_with_other_classes_is_refused(straight_run, tmp_path):
    data = write_class_folder(tmp_path / "two", classes=("ant", "bee"), per_class=1)
    with pytest.raises(ValueError, match=r"has 3 classes; the data has 2 \(ant, bee\)"):
        train("classification", [data], [data], tmp_path / "run", from_model=straight_run / "best.keras",
              image_size=32, epochs=2, verbose=0)  # fmt: skip
    assert not (tmp_path / "run").exists()


# --------------------------------------------------------------------------
# Detection and segmentation, one epoch each through the CLI.
@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    from heads.datasets import make_shapes

    root = tmp_path_factory.mktemp("shapes")
    return make_shapes(str(root / "train"), 8, 64, seed=0), make_shapes(str(root / "val"), 4, 64, seed=1)


COMMON = ["--preset", PRESET, "--no-weights", "--image-size", "64", "--epochs", "1", "--batch-size", "4",
          "--warmup-epochs", "0.5", "--quiet"]  # fmt: skip


def test_detection_end_to_end(shapes, tmp_path):
    import heads

    train_files, val_files = shapes
    out_dir = tmp_path / "detection"
    command = ["train", "detection", "--train", train_files["annotations"], train_files["images"], "--val",
               val_files["annotations"], val_files["images"], "--out-dir", str(out_dir), "--head", "ssdlite"]  # fmt: skip
    on_tf = keras.backend.backend() == "tensorflow"
    decoding = ["--score-threshold", "0.2", "--max-detections", "30"]  # what the saved detector keeps
    assert cli.main(command + COMMON + decoding + (["--export-litert"] if on_tf else [])) == 0
    header = open(out_dir / "metrics.csv").read().splitlines()[0].split(",")
    assert {"AP", "AP50", "loss"} <= set(header)
    detector = heads.SSDLiteObjectDetector.from_preset(str(out_dir / "best_preset"))
    assert detector.num_classes == 3
    assert (detector.score_threshold, detector.max_detections) == (0.2, 30)
    if on_tf:
        # A detector exports as raw outputs plus its post-processing settings, one pair (mnet_tools.detection_export).
        from mnet_tools import detection_export, export

        assert {"best.tflite", "best_postprocess.npz"} <= set(os.listdir(out_dir))
        best = keras.models.load_model(out_dir / "best.keras", compile=False)
        images = np.random.default_rng(0).uniform(0, 255, (2, 64, 64, 3)).astype("float32")
        report = export.compare(best, out_dir / "best.tflite", images)
        assert report["max_relative_error"] < 1e-3, report
        detections = detection_export.run_litert(out_dir / "best.tflite", images)
        assert detections["boxes"].shape[:2] == detections["labels"].shape == (2, 30)
        assert float(detection_export.read_settings(str(out_dir / "best.tflite"))["score_threshold"]) == 0.2


def test_segmentation_end_to_end(shapes, tmp_path):
    import keras_hub

    train_files, val_files = shapes
    out_dir = tmp_path / "segmentation"
    command = ["train", "segmentation", "--train", train_files["images"], train_files["masks"], "--val",
               val_files["images"], val_files["masks"], "--num-classes", "4", "--out-dir", str(out_dir)]  # fmt: skip
    assert cli.main(command + COMMON) == 0
    header = open(out_dir / "metrics.csv").read().splitlines()[0].split(",")
    assert {"mIoU", "pixel_accuracy", "loss"} <= set(header)
    segmenter = keras_hub.models.ImageSegmenter.from_preset(str(out_dir / "best_preset"))
    assert segmenter.num_classes == 4


# --------------------------------------------------------------------------
# --export-litert: best.keras as best.tflite once the run is done, written once.
@on_tensorflow
def test_export_litert_writes_the_best_model_once_and_again_if_missing(folders, tmp_path, monkeypatch, capsys):
    from mnet_tools import export, litert
    from mnet_tools.train import checkpoints

    out_dir = tmp_path / "exported"
    command = classification_command(folders, out_dir, "--export-litert", "--stop-after", "1")
    command[command.index("--frozen-epochs") + 1] = "0"
    assert cli.main(command) == 0
    assert not (out_dir / "best.tflite").exists()  # not before the last epoch
    assert cli.main(command) == 0  # epoch 2 of 2, then the export
    assert f"LiteRT: {out_dir / 'best.tflite'}" in capsys.readouterr().out
    assert {"best.tflite", "best_litert.json"} <= set(os.listdir(out_dir))
    assert not [name for name in os.listdir(out_dir) if name.startswith(".")]  # no temporaries left

    # The file runs in LiteRT and gives the Keras best model's logits (the file takes normalised pixels).
    model, normalize = export.load_model(str(out_dir / "best.keras"))
    pixels = np.random.default_rng(0).uniform(0, 255, (3, 32, 32, 3)).astype("float32")
    (logits,) = litert.run(out_dir / "best.tflite", normalize(pixels))
    expected = model.predict(pixels, verbose=0)  # the classifier's preprocessor normalises
    assert logits.shape == expected.shape == (3, 3)
    np.testing.assert_allclose(logits, expected, atol=1e-4 * max(1.0, float(np.abs(expected).max())), rtol=0)

    # A finished run called again exports nothing: its file is already that of best.keras.
    before = folder_digest(out_dir)

    def no_export(*args, **kwargs):
        raise AssertionError("exported again")

    with monkeypatch.context() as patch:
        patch.setattr(export, "export_model", no_export)
        result = train(
            "classification", [folders["train"]], [folders["val"]], out_dir, preset=PRESET, load_weights=False,
            image_size=32, epochs=2, batch_size=4, warmup_epochs=0.5, frozen_epochs=0, learning_rate=0.01,
            export_litert=True, verbose=0,
        )  # fmt: skip
    assert result["epochs_done"] == 2 and result["litert"] == str(out_dir / "best.tflite")
    unchanged = {name: digest for name, digest in folder_digest(out_dir).items() if name.startswith("best")}
    assert unchanged == {name: digest for name, digest in before.items() if name.startswith("best")}

    # Missing, or not from this best.keras (the record names another): out of date, exported again.
    assert checkpoints.best_litert_is_current(out_dir)
    (out_dir / "best.tflite").unlink()
    assert not checkpoints.best_litert_is_current(out_dir)
    capsys.readouterr()
    assert cli.main(command) == 0
    logged = capsys.readouterr().err  # train's lines go to stderr
    assert "has done all 2 epochs: nothing to train" in logged and "resuming" not in logged
    assert folder_digest(out_dir)["best.tflite"] == before["best.tflite"]
    record = json.loads((out_dir / "best_litert.json").read_text())
    record["best_keras_sha256"] = "0" * 64
    (out_dir / "best_litert.json").write_text(json.dumps(record))
    assert not checkpoints.best_litert_is_current(out_dir)


def test_export_litert_off_tensorflow_is_refused_before_any_work(folders, tmp_path, monkeypatch):
    monkeypatch.setattr(keras.backend, "backend", lambda: "jax")
    with pytest.raises(ValueError, match="--export-litert converts through TensorFlow.*KERAS_BACKEND=tensorflow"):
        train("classification", [folders["train"]], [folders["val"]], tmp_path / "run", preset=PRESET,
              load_weights=False, epochs=1, warmup_epochs=0, export_litert=True)  # fmt: skip
    assert not (tmp_path / "run").exists()


def test_paper_head_data_count_the_background_as_zero(shapes, tmp_path):
    """ssdlite320 (a softmax with background 0): training labels are the file's 1..K, and validation maps them back."""
    import json

    from mnet_tools.train import _with_background_category
    from mnet_tools.train.data import EpochData

    train_files, val_files = shapes
    config = train_config.TrainConfig(
        task="detection", train_data=(train_files["annotations"], train_files["images"]),
        val_data=(val_files["annotations"], val_files["images"]), preset=PRESET, head="ssdlite320",
        image_size=64, epochs=2, batch_size=8, augment=False,
    )  # fmt: skip
    data = EpochData(config)
    plain = next(iter(data.train_dataset(0)))[1]["labels"].numpy()
    data.label_offset = 1
    shifted = next(iter(data.train_dataset(0)))[1]["labels"].numpy()
    assert (plain >= 0).any() and (plain == -1).any()
    np.testing.assert_array_equal(shifted, np.where(plain >= 0, plain + 1, -1))
    original = json.load(open(val_files["annotations"]))
    with _with_background_category(val_files["annotations"], 1) as path:
        categories = json.load(open(path))["categories"]
    assert categories[1:] == original["categories"] and categories[0]["name"] == "__background__"
    assert categories[0]["id"] not in [category["id"] for category in original["categories"]]
    assert not os.path.exists(path)
    with _with_background_category(val_files["annotations"], 0) as path:
        assert path == val_files["annotations"]


def test_train_help_shows_every_default(capsys):
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    defaults = {field.name: field.default for field in dataclasses.fields(train_config.TrainConfig)}
    for name in ("image_size", "epochs", "batch_size", "optimizer", "learning_rate", "weight_decay", "momentum",
                 "frozen_epochs", "mixed_precision", "seed"):  # fmt: skip
        flag = "--" + name.replace("_", "-")
        assert re.search(rf"{flag} [^-]*\(default: {re.escape(str(defaults[name]))}\)", text), (flag, text)
    assert "--warmup-epochs WARMUP_EPOCHS linear warmup (default 1, at most half the run)" in text


def test_the_decoding_options_are_for_detection_only(tmp_path):
    with pytest.raises(
        ValueError, match="--score-threshold and --max-detections set what a detector keeps; .* to segm"
    ):
        train("segmentation", ["a", "b"], ["c", "d"], tmp_path / "run", preset=PRESET, score_threshold=0.5,
              max_detections=5)  # fmt: skip
    assert not (tmp_path / "run").exists()


def test_the_default_warmup_fits_short_runs_and_a_given_one_must():
    assert [train_config.default_warmup(epochs) for epochs in (1, 2, 3, 30)] == [0.5, 1.0, 1.0, 1.0]
    with pytest.raises(ValueError, match=r"--warmup-epochs \(1.0\) must be less than --epochs \(1\)"):
        train_config.TrainConfig("classification", ("a",), ("b",), preset="mobilenetv1_025", epochs=1)
    parser = cli.build_parser()
    args = parser.parse_args(["train", "classification", "--train", "a", "--val", "b", "--out-dir", "o",
                              "--preset", "mobilenetv1_025", "--epochs", "1"])  # fmt: skip
    assert args.warmup_epochs is None  # train() picks it: half of this 1-epoch run


def test_warmup_cosine_docstring_example_runs():
    import textwrap

    block = textwrap.dedent(WarmupCosine.__doc__.split("```python\n")[1].split("```")[0])
    namespace = {}
    exec(block, namespace)
    schedule = namespace["schedule"]
    assert [float(schedule(step)) for step in (0, 9, 60)] == pytest.approx([0.01, 0.1, 0.05])


@on_tensorflow
def test_from_a_preset_folder_continues_its_weights(folders, straight_run, tmp_path):
    from mnet_backbones.classifier import MobileNetImageClassifier

    start = os.path.join(straight_run, "best_preset")
    result = train(
        "classification", [folders["train"]], [folders["val"]], tmp_path / "continued", from_model=start,
        image_size=32, epochs=1, batch_size=4, learning_rate=1e-9, augment=False, verbose=0,
    )  # fmt: skip
    assert result["epochs_done"] == 1
    # One epoch at the default warm-up: it runs, warming up for half of it.
    assert train_config.read_config(tmp_path / "continued").warmup_epochs == 0.5
    before = MobileNetImageClassifier.from_preset(start)
    # A learning rate of 1e-9 for one epoch: the kernels are the preset's (BatchNorm statistics move).
    for old, new in zip(before.trainable_variables, result["model"].trainable_variables):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(new), keras.ops.convert_to_numpy(old), atol=1e-6)


def test_ssdlite_augmentation_keeps_each_box_on_its_object():
    """Zoom out, IoU crop and flip move boxes with the pixels: each kept box still frames its white square."""
    import tensorflow as tf

    from mnet_tools.train.data import random_flip, random_iou_crop, random_zoom_out, ssdlite_augment

    side = 64
    image = np.zeros((side, side, 3), "float32")
    image[8:40, 16:32] = 255.0  # a white box, x 16..32, y 8..40
    image[44:60, 40:60] = 255.0  # and another, x 40..60, y 44..60
    boxes = tf.constant([[16, 8, 32, 40], [40, 44, 60, 60], [-1, -1, -1, -1]], "float32")
    labels = tf.constant([0, 1, -1], "int32")
    changed = {"zoom": 0, "crop": 0, "flip": 0}
    for index in range(40):
        seed = tf.constant([7, index], "int64")
        for name, step in (("zoom", random_zoom_out), ("crop", random_iou_crop), ("flip", random_flip)):
            pixels, moved, kept = (t.numpy() for t in step(tf.constant(image), boxes, labels, seed))
            assert pixels.shape == image.shape and kept[2] == -1 and (moved[2] == -1).all()
            changed[name] += int(not np.array_equal(pixels, image))
            for box, label in zip(moved, kept):
                if label < 0:
                    continue
                x0, y0, x1, y1 = box
                assert 0 <= x0 < x1 <= side and 0 <= y0 < y1 <= side, (name, box)
                inside = pixels[int(np.ceil(y0)) + 1 : int(y1) - 1, int(np.ceil(x0)) + 1 : int(x1) - 1]
                if inside.size:
                    assert inside.mean() > 200, (name, index, box)
        again = [t.numpy() for t in ssdlite_augment(tf.constant(image), boxes, labels, seed)]
        same = [t.numpy() for t in ssdlite_augment(tf.constant(image), boxes, labels, seed)]
        for a, b in zip(again, same):
            np.testing.assert_array_equal(a, b)  # stateless: one seed, one result
    assert all(count >= 5 for count in changed.values()), changed


@on_tensorflow
def test_two_devices_train_and_save_a_model_for_any_backend(folders, tmp_path):
    """--devices 2 on two logical CPUs (MirroredStrategy, synchronised BatchNorm) trains and writes its run folder."""
    out_dir = tmp_path / "two_devices"
    command = classification_command(folders, out_dir, "--devices", "2")
    command[command.index("--epochs") + 1] = "1"
    command[command.index("--frozen-epochs") + 1] = "0"
    code = (
        "import sys, tensorflow as tf\n"
        "cpu = tf.config.list_physical_devices('CPU')[0]\n"
        "tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)\n"
        "from mnet_tools import cli\n"
        f"sys.exit(cli.main({command!r}))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert len(open(out_dir / "metrics.csv").read().splitlines()) == 2
    from mnet_backbones.classifier import MobileNetImageClassifier

    loaded = MobileNetImageClassifier.from_preset(str(out_dir / "best_preset"))
    norms = [layer for layer in loaded._flatten_layers() if isinstance(layer, keras.layers.BatchNormalization)]
    assert norms and not any(layer.synchronized for layer in norms)
    keras.models.load_model(out_dir / "best.keras", compile=False)
