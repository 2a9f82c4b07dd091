"""`train`'s run folder as others meet it: one run at a time, and every file it writes loads in a fresh process.

- one run per folder: the advisory lock (`mnet_tools.train.lock`) refuses a
  second run naming the holder, before any clean-up, and a lock whose holder
  was killed with SIGKILL is taken over;
- `best.keras` (compiled, with the training schedule), `last/`, `best_preset/`
  and `best.tflite` load, predict and export in an interpreter that imported
  only `mnet_backbones` for the Keras files; files naming the schedule by its
  former registered name still load;
- a classification folder with one class is refused, naming it.

Small on purpose, as `test_train.py`, whose helpers these reuse.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import zipfile

import keras
import numpy as np
import pytest
import test_train
from test_train import PRESET, classification_command, folder_digest, on_tensorflow, write_class_folder

from mnet_backbones.schedules import WarmupCosine
from mnet_tools import cli
from mnet_tools.train import train
from mnet_tools.train.data import scan_class_folder
from mnet_tools.train.lock import LOCK_FILE, RunFolderInUseError, run_folder_lock

# test_train.py's fixtures: class folders, and shapes sets for detection and segmentation.
folders = test_train.folders
shapes = test_train.shapes

HOLD_LOCK = (
    "import sys, time\n"
    "from mnet_tools.train.lock import run_folder_lock\n"
    "with run_folder_lock(sys.argv[1]):\n"
    "    print('held', flush=True)\n"
    "    time.sleep(600)\n"
)


def start_holder(folder):
    """A process holding `folder`'s lock (as a live `train` would), once it says so."""
    process = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(folder)], stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "held", "the holder did not take the lock"
    return process


def kill_9(process):
    process.send_signal(signal.SIGKILL)
    process.wait()


# --------------------------------------------------------------------------
# One run per folder.
def test_the_lock_names_its_holder_and_is_taken_over_after_kill_9(tmp_path):
    folder = tmp_path / "run"
    holder = start_holder(folder)
    try:
        with pytest.raises(RunFolderInUseError) as caught:
            with run_folder_lock(folder):
                pass
        message = str(caught.value)
        assert f"pid {holder.pid} on {socket.gethostname()}, started " in message
        assert str(folder / LOCK_FILE) in message and "another --out-dir" in message
    finally:
        kill_9(holder)
    # SIGKILL runs no clean-up: the file stays, naming the dead holder, but the kernel has dropped its lock.
    assert json.loads((folder / LOCK_FILE).read_text())["pid"] == holder.pid
    with run_folder_lock(folder) as path:
        assert json.loads(open(path).read())["pid"] == os.getpid()
        with pytest.raises(RunFolderInUseError, match=f"pid {os.getpid()} "):  # a second holder in this process too
            with run_folder_lock(folder):
                pass
    assert os.listdir(folder) == []  # the file is removed when the holder ends; the folder was there before
    with run_folder_lock(tmp_path / "new" / "run"):
        assert (tmp_path / "new" / "run" / LOCK_FILE).exists()
    assert os.listdir(tmp_path) == ["run"]  # made for the lock and left empty, parent included: removed


def test_a_second_run_is_refused_before_any_clean_up(folders, tmp_path, capsys):
    out_dir = tmp_path / "run"
    holder = start_holder(out_dir)
    try:
        # A temporary of the live run's (as atomic_folder writes it); a run that started would remove it.
        (out_dir / ".last.partial-live").mkdir()
        (out_dir / ".last.partial-live" / "state.npz").write_bytes(b"being written")
        before = folder_digest(out_dir)
        assert cli.main(classification_command(folders, out_dir)) == 2
        error = capsys.readouterr().err
        assert "is in use by another train run" in error and f"pid {holder.pid} on {socket.gethostname()}" in error
        assert folder_digest(out_dir) == before
        assert sorted(os.listdir(out_dir)) == [".last.partial-live", LOCK_FILE]
    finally:
        kill_9(holder)


def test_two_train_processes_on_one_folder_then_kill_9_and_resume(folders, tmp_path, capsys):
    """The issue's case: a real `train` holds the folder, a second is refused; the first killed, the next finishes."""
    out_dir = tmp_path / "run"
    command = classification_command(folders, out_dir)
    first = subprocess.Popen(
        [sys.executable, "-m", "mnet_tools", *command], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 240
        while True:  # the lock is taken once the data are checked, before the model is built
            assert first.poll() is None, "the first run ended before it was seen holding the lock"
            assert time.monotonic() < deadline, "the first run took no lock within 4 minutes"
            try:
                if json.loads((out_dir / LOCK_FILE).read_text())["pid"] == first.pid:
                    break
            except (OSError, ValueError):
                pass
            time.sleep(0.05)
        assert cli.main(command) == 2
        assert f"pid {first.pid} on {socket.gethostname()}" in capsys.readouterr().err
        assert first.poll() is None  # still running: the refusal held
    finally:
        kill_9(first)
    assert cli.main(command) == 0
    assert len(open(out_dir / "metrics.csv").read().splitlines()) == 3  # header and the 2 epochs
    assert {"best.keras", "last", "config.json"} <= set(os.listdir(out_dir))
    assert LOCK_FILE not in os.listdir(out_dir) and not [n for n in os.listdir(out_dir) if n.startswith(".")]


# --------------------------------------------------------------------------
# One class.
def test_a_one_class_training_folder_is_refused_naming_it(tmp_path):
    data = write_class_folder(tmp_path / "one", classes=("cat",), per_class=2)
    with pytest.raises(ValueError, match="has one class subfolder, 'cat': a classifier needs at least two") as caught:
        train("classification", [data], [data], tmp_path / "run", preset=PRESET, load_weights=False, epochs=2)
    assert f"--train folder {data!r}" in str(caught.value)
    assert not (tmp_path / "run").exists()
    # Validation may hold a subset of the training classes, one included.
    classes, paths, labels = scan_class_folder(data, "--val", ["ant", "cat"])
    assert classes == ["ant", "cat"] and labels == [1, 1] and len(paths) == 2


# last/state.npz, every model variable by path, into `last` (a model of the same architecture), as a user would:
# both scripts below hold it as the line LOAD_LAST (`with_load_last` puts it in).
LOAD_LAST = r"""
# Dropout's RNG states are named by a per-process counter (seed_generator_2...), and play no part in inference.
with np.load(f"{run}/last/state.npz", allow_pickle=False) as state:
    saved = {str(path): state[f"model/{i:05d}"] for i, path in enumerate(state["model_paths"])}
saved = {path: value for path, value in saved.items() if not path.endswith("seed_generator_state")}
variables = {v.path: v for v in last.variables if not v.path.endswith("seed_generator_state")}
assert saved.keys() == variables.keys(), sorted(set(saved) ^ set(variables))
for path, value in saved.items():
    variables[path].assign(value)
"""


def with_load_last(script):
    assert "\nLOAD_LAST\n" in script
    return script.replace("\nLOAD_LAST\n", "\n" + LOAD_LAST)


# --------------------------------------------------------------------------
# Every file a run writes, in a fresh interpreter.
FRESH_INTERPRETER = r"""
import sys

import keras
import keras_hub
import numpy as np

import mnet_backbones  # the only project package imported until the Keras files are loaded

run, work = sys.argv[1], sys.argv[2]
images = np.load(f"{work}/images.npy")
out = {}
best = keras.saving.load_model(f"{run}/best.keras")  # compiled, as a user loads it by default
schedule = best.optimizer.get_config()["learning_rate"]
assert schedule["registered_name"] == "mnet_backbones>WarmupCosine", schedule
out["best"] = best.predict(images, verbose=0)
former = keras.saving.load_model(f"{work}/former_name.keras")
assert former.optimizer.get_config()["learning_rate"] == schedule  # the former name resolves to the same class
out["former"] = former.predict(images, verbose=0)
out["preset"] = keras_hub.models.ImageClassifier.from_preset(f"{run}/best_preset").predict(images, verbose=0)
# last/: every model variable by path, into a model of the same architecture.
last = keras_hub.models.ImageClassifier.from_preset(f"{run}/best_preset")
LOAD_LAST
out["last"] = last.predict(images, verbose=0)
project = sorted(name for name in sys.modules if name.split(".")[0] in ("mnet_tools", "heads"))
assert not project, project

# Exported as `mnet-backbones export` does, and run in LiteRT: none of it needs the training code.
from mnet_tools import cli, export, litert

# (A preset folder's export is the same CLI path after loading, which `preset` above checked.)
assert cli.main(["export", f"{run}/best.keras", f"{work}/best.tflite", "--image-size", "32", "32"]) == 0
export.export_model(last, f"{work}/last.tflite", "litert", image_size=(32, 32))
_, normalize = export.load_model(f"{run}/best.keras")
pixels = normalize(images)
for name in ("best", "last"):
    (out[f"{name}_litert"],) = litert.run(f"{work}/{name}.tflite", pixels)
(out["run_litert"],) = litert.run(f"{run}/best.tflite", pixels)
training = sorted(name for name in sys.modules if name.startswith("mnet_tools.train"))
assert not training, training
np.savez(f"{work}/outputs.npz", **out)
"""


def with_former_schedule_name(source, target):
    """A copy of `source` naming the schedule as files written before it moved to `mnet_backbones` do."""
    with zipfile.ZipFile(source) as archive:
        members = {info.filename: archive.read(info) for info in archive.infolist()}
    config = members["config.json"].decode("utf-8")
    assert '"registered_name": "mnet_backbones>WarmupCosine"' in config
    config = config.replace('"mnet_backbones>WarmupCosine"', '"mnet_tools>WarmupCosine"')
    config = config.replace('"module": "mnet_backbones.schedules"', '"module": "mnet_tools.train.optim"')
    members["config.json"] = config.encode("utf-8")
    with zipfile.ZipFile(target, "w") as archive:
        for name, content in members.items():
            archive.writestr(name, content)


@pytest.fixture(scope="module")
def exported_run(folders, tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("runs") / "exported"
    result = train(
        "classification", [folders["train"]], [folders["val"]], out_dir, preset=PRESET, load_weights=False,
        image_size=32, epochs=2, batch_size=4, warmup_epochs=0.5, frozen_epochs=1, learning_rate=0.01,
        export_litert=True, verbose=0,
    )  # fmt: skip
    return out_dir, result["model"]


@on_tensorflow
def test_every_file_a_run_writes_loads_predicts_and_exports_in_a_fresh_interpreter(exported_run, tmp_path):
    out_dir, final_model = exported_run
    assert {"best.keras", "best_preset", "last", "best.tflite"} <= set(os.listdir(out_dir))
    images = np.random.default_rng(0).uniform(0, 255, (3, 32, 32, 3)).astype("float32")
    np.save(tmp_path / "images.npy", images)
    with_former_schedule_name(out_dir / "best.keras", tmp_path / "former_name.keras")
    script = tmp_path / "fresh.py"
    script.write_text(with_load_last(FRESH_INTERPRETER))
    done = subprocess.run([sys.executable, str(script), str(out_dir), str(tmp_path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-4000:]
    with np.load(tmp_path / "outputs.npz") as outputs:
        out = dict(outputs)
    best = keras.models.load_model(out_dir / "best.keras", compile=False).predict(images, verbose=0)
    last = final_model.predict(images, verbose=0)
    assert best.shape == last.shape == (3, 3)
    scale = max(1.0, float(np.abs(best).max()), float(np.abs(last).max()))
    for name, expected in {"best": best, "former": best, "preset": best, "last": last}.items():
        np.testing.assert_allclose(out[name], expected, atol=1e-5 * scale, rtol=0, err_msg=name)
    for name, expected in {"best_litert": best, "run_litert": best, "last_litert": last}.items():
        np.testing.assert_allclose(out[name], expected, atol=1e-4 * scale, rtol=0, err_msg=name)


# A detector's or segmenter's files need their own package, `heads` (which imports `mnet_backbones`), and no more.
FRESH_INTERPRETER_HEADS = r"""
import json
import sys

import keras
import keras_hub
import numpy as np

import heads  # and through it mnet_backbones; nothing of mnet_tools until the Keras files are loaded

run, work, task = sys.argv[1:4]
kind = {"detection": keras_hub.models.ObjectDetector, "segmentation": keras_hub.models.ImageSegmenter}[task]
images = np.load(f"{work}/images.npy")
best = keras.saving.load_model(f"{run}/best.keras")  # compiled, as a user loads it by default
schedule = best.optimizer.get_config()["learning_rate"]
assert schedule["registered_name"] == "mnet_backbones>WarmupCosine", schedule
preset = kind.from_preset(f"{run}/best_preset")
last = kind.from_preset(f"{run}/best_preset")
LOAD_LAST
out = {}
for name, model in (("best", best), ("preset", preset), ("last", last)):
    for index, array in enumerate(keras.tree.flatten(model.predict(images, verbose=0))):
        out[f"{name}/{index}"] = np.asarray(array)
project = sorted(name for name in sys.modules if name.split(".")[0] == "mnet_tools")
assert not project, project

from mnet_tools import cli, export

errors = {}
# (A preset folder's export is the same CLI path after loading, which `preset` above checked.)
assert cli.main(["export", f"{run}/best.keras", f"{work}/best.tflite", "--image-size", "64", "64"]) == 0
errors["best"] = export.compare(best, f"{work}/best.tflite", images)["max_relative_error"]
export.export_model(last, f"{work}/last.tflite", "litert", image_size=(64, 64))
errors["last"] = export.compare(last, f"{work}/last.tflite", images)["max_relative_error"]
if task == "detection":  # the run's own export (--export-litert), with best_postprocess.npz beside it
    errors["run"] = export.compare(best, f"{run}/best.tflite", images)["max_relative_error"]
assert not [name for name in sys.modules if name.startswith("mnet_tools.train")]
np.savez(f"{work}/outputs.npz", **out)
with open(f"{work}/errors.json", "w") as file:
    json.dump(errors, file)
"""


@pytest.fixture(scope="module", params=["detection", "segmentation"])
def heads_run(request, shapes, tmp_path_factory):
    task = request.param
    train_files, val_files = shapes
    parts = ("annotations", "images") if task == "detection" else ("images", "masks")
    out_dir = tmp_path_factory.mktemp("runs") / task
    result = train(
        task, [train_files[part] for part in parts], [val_files[part] for part in parts], out_dir, preset=PRESET,
        load_weights=False, num_classes=4 if task == "segmentation" else None, image_size=64, epochs=1,
        batch_size=4, warmup_epochs=0.5, export_litert=task == "detection", verbose=0,
    )  # fmt: skip
    return task, out_dir, result["model"]


@on_tensorflow
def test_a_detector_or_segmenter_run_loads_and_exports_in_a_fresh_interpreter_with_only_heads(heads_run, tmp_path):
    task, out_dir, final_model = heads_run
    images = np.random.default_rng(0).uniform(0, 255, (2, 64, 64, 3)).astype("float32")
    np.save(tmp_path / "images.npy", images)
    script = tmp_path / "fresh.py"
    script.write_text(with_load_last(FRESH_INTERPRETER_HEADS))
    command = [sys.executable, str(script), str(out_dir), str(tmp_path), task]
    done = subprocess.run(command, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-4000:]
    with np.load(tmp_path / "outputs.npz") as outputs:
        out = dict(outputs)
    best = keras.models.load_model(out_dir / "best.keras", compile=False)
    for name, model in (("best", best), ("preset", best), ("last", final_model)):
        expected = keras.tree.flatten(model.predict(images, verbose=0))
        assert len([key for key in out if key.startswith(name + "/")]) == len(expected)
        for index, array in enumerate(expected):
            array = np.asarray(array)
            scale = max(1.0, float(np.abs(array).max()))
            np.testing.assert_allclose(out[f"{name}/{index}"], array, atol=1e-5 * scale, rtol=0, err_msg=name)
    errors = json.loads((tmp_path / "errors.json").read_text())
    assert set(errors) == ({"best", "last", "run"} if task == "detection" else {"best", "last"})
    assert max(errors.values()) < 1e-3, errors


@pytest.mark.parametrize("obj", [WarmupCosine, run_folder_lock], ids=lambda obj: obj.__name__)
def test_docstring_examples_run(obj, tmp_path, monkeypatch):
    from test_docstrings import examples

    monkeypatch.chdir(tmp_path)  # run_folder_lock's example takes runs/flowers
    blocks = examples(obj)
    assert blocks, f"{obj.__name__} has no example"
    for block in blocks:
        exec(compile(block, f"<{obj.__name__} docstring>", "exec"), {})
    assert not (tmp_path / "runs").exists()
