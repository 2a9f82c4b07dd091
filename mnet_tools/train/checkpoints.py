"""The run folder's checkpoints, each written whole or not at all.

    OUT_DIR/
      config.json          the run configuration (`config.py`)
      last/                after every epoch: state.npz (every model and
                           optimizer variable: weights, BN statistics, RNG
                           states, the step count that drives the schedule)
                           and progress.json (epochs done, history, best score)
      best.keras           the best model by the validation score
      best_preset/         the same as a keras-hub preset folder (`save_to_preset`)
      best.tflite          with --export-litert: best.keras as LiteRT float32, after
                           the last epoch (`export_best_litert`); a detector's
                           post-processing settings beside it, best_postprocess.npz
      best_litert.json     which best.keras those were exported from (SHA-256s)
      metrics.csv          one row per epoch (rewritten whole from `last/`)
      tensorboard/         per-epoch scalars
      train.lock           while a run holds the folder: its pid, host and start
                           time (`mnet_tools.train.lock`)

`last/` is replaced by `mnet_backbones.files.atomic_folder`, which moves the
old folder aside before renaming the new one in; a `kill -9` between those
two renames leaves the old one in a hidden `.last.old-*` folder, which
`load_last` takes. Leftover hidden temporaries of killed writes are removed
when a run starts (`remove_leftovers`), once it holds the folder's lock: they
cannot be another live run's.
"""

import csv
import glob
import json
import os
import shutil
import warnings

import numpy as np

from mnet_backbones import files

LAST = "last"
STATE_FILE = "state.npz"
PROGRESS_FILE = "progress.json"
BEST_MODEL = "best.keras"
BEST_PRESET = "best_preset"
BEST_LITERT = "best.tflite"
LITERT_RECORD = "best_litert.json"
METRICS_CSV = "metrics.csv"


def _variables(model):
    return {"model": list(model.variables), "optimizer": list(model.optimizer.variables)}


def save_last(folder, model, progress):
    """Writes `folder/last/` (all variables and `progress`) atomically, replacing the previous one."""
    with files.atomic_folder(os.path.join(folder, LAST), replace=True) as staging:
        arrays = {}
        for group, variables in _variables(model).items():
            for index, variable in enumerate(variables):
                arrays[f"{group}/{index:05d}"] = np.asarray(variable.numpy())
        arrays["model_paths"] = np.array([variable.path for variable in model.variables])
        np.savez(os.path.join(staging, STATE_FILE), **arrays)
        with open(os.path.join(staging, PROGRESS_FILE), "w") as file:
            json.dump(progress, file, indent=2)


def _last_folder(folder):
    last = os.path.join(folder, LAST)
    if os.path.isfile(os.path.join(last, PROGRESS_FILE)):
        return last
    # Killed between atomic_folder's two renames: the previous checkpoint waits in its aside folder.
    for aside in sorted(glob.glob(os.path.join(folder, f".{LAST}.old-*", "content"))):
        if os.path.isfile(os.path.join(aside, PROGRESS_FILE)):
            return aside
    return None


def load_last(folder, model):
    """Restores every variable from the last checkpoint; returns its progress dict, or None if there is none.

    All arrays are checked against the variables before any is assigned, so a
    checkpoint of another model changes nothing.
    """
    last = _last_folder(folder)
    if last is None:
        return None
    progress = files.read_json(os.path.join(last, PROGRESS_FILE))
    state_path = os.path.join(last, STATE_FILE)
    # read_npz refuses an object array naming this file (np.load's own error names none).
    arrays = {key: value for key, value in files.read_npz(state_path).items() if key != "model_paths"}
    pairs = []
    for group, variables in _variables(model).items():
        saved = sorted(key for key in arrays if key.startswith(group + "/"))
        if len(saved) != len(variables):
            raise ValueError(
                f"{state_path} holds {len(saved)} {group} variables, the model has {len(variables)}: "
                "it is a checkpoint of another model."
            )
        for key, variable in zip(saved, variables):
            if tuple(arrays[key].shape) != tuple(variable.shape):
                raise ValueError(
                    f"{state_path}: {key} has shape {arrays[key].shape}, the model's {variable.path} "
                    f"{tuple(variable.shape)}: it is a checkpoint of another model."
                )
            pairs.append((variable, arrays[key]))
    for variable, value in pairs:
        variable.assign(value)
    if last != os.path.join(folder, LAST):
        save_last_files(folder, last)
    return progress


def save_last_files(folder, source):
    """Puts a recovered aside checkpoint back in place as `last/`."""
    with files.atomic_folder(os.path.join(folder, LAST), replace=True) as staging:
        for name in (STATE_FILE, PROGRESS_FILE):
            shutil.copy2(os.path.join(source, name), os.path.join(staging, name))


def remove_leftovers(folder):
    """Removes the hidden temporaries that a killed atomic write leaves (after `load_last` had its chance)."""
    for path in glob.glob(os.path.join(folder, ".*.partial-*")) + glob.glob(os.path.join(folder, ".*.old-*")):
        if os.path.isdir(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            os.remove(path)


def save_best(folder, model, sync_batch_norm=False):
    """Writes `best.keras` and `best_preset/`, each atomically (the preset folder replaced whole).

    With `sync_batch_norm`, BatchNorm's `synchronized` flag is cleared while
    saving: a file with it set loads on TensorFlow only.
    """
    if sync_batch_norm:
        from mnet_tools.distribute import synchronize_batch_norm

        synchronize_batch_norm(model, False)
    try:
        with files.atomic_file(os.path.join(folder, BEST_MODEL)) as partial:
            model.save(partial)
        with files.atomic_folder(os.path.join(folder, BEST_PRESET), replace=True) as staging:
            model.save_to_preset(staging)
    finally:
        if sync_batch_norm:
            synchronize_batch_norm(model, True)


def best_litert_is_current(folder):
    """Whether `best.tflite` (and a detector's settings) were exported from the `best.keras` now in `folder`.

    `best_litert.json`, written after the export, holds the SHA-256 of the
    `best.keras` exported and of every file written; any file missing or
    changed since (a new best, a kill between the export and the record, a
    file copied over) makes it out of date.
    """
    record_path = os.path.join(folder, LITERT_RECORD)
    best = os.path.join(folder, BEST_MODEL)
    if not (os.path.isfile(record_path) and os.path.isfile(best)):
        return False
    try:
        record = files.read_json(record_path)
    except (OSError, ValueError):
        return False
    written = record.get("files") if isinstance(record, dict) else None
    if (
        not isinstance(written, dict)
        or BEST_LITERT not in written
        or record.get("best_keras_sha256") != files.sha256_of(best)
    ):
        return False
    return all(os.path.isfile(os.path.join(folder, name)) and files.sha256_of(os.path.join(folder, name)) == digest
               for name, digest in written.items())  # fmt: skip


def export_best_litert(folder, image_size):
    """Exports `folder/best.keras` to `folder/best.tflite` (LiteRT float32, `image_size` square); returns its path.

    Skipped when `best_litert_is_current`. The export is `mnet_tools.export`'s
    (`mnet-backbones export`): the file is written under a temporary name and
    renamed when complete, and a detector's `.tflite` and post-processing
    settings (`best_postprocess.npz`, `mnet_tools.detection_export`) are
    written as one pair. `best_litert.json` is written last, so a kill at any
    point leaves either the old files or the new ones, and at worst a
    record that no longer matches, which exports again on the next call.
    """
    path = os.path.join(folder, BEST_LITERT)
    if best_litert_is_current(folder):
        return path
    import keras

    from mnet_tools import detection_export, export

    best = os.path.join(folder, BEST_MODEL)
    files.check_keras_file(best)
    with warnings.catch_warnings():
        # A keras-hub task compiles a default optimizer when it is built, and Keras then warns that the
        # saved training optimizer's state does not fit it: that state is not exported anyway.
        warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
        model = keras.models.load_model(best, compile=False)
    export.export_model(model, path, "litert", image_size=(image_size, image_size))
    written = [BEST_LITERT]
    settings = detection_export.settings_path(path)
    if os.path.isfile(settings):
        written.append(os.path.basename(settings))
    record = {
        "best_keras_sha256": files.sha256_of(best),
        "files": {name: files.sha256_of(os.path.join(folder, name)) for name in written},
    }
    with files.atomic_file(os.path.join(folder, LITERT_RECORD)) as partial:
        with open(partial, "w") as file:
            json.dump(record, file, indent=2)
    return path


def write_metrics_csv(folder, history):
    """Rewrites `metrics.csv` whole from the history (one dict per epoch)."""
    if not history:
        return
    columns = list(history[0])
    for row in history[1:]:
        columns += [key for key in row if key not in columns]
    with files.atomic_file(os.path.join(folder, METRICS_CSV)) as partial:
        with open(partial, "w", newline="") as file:
            writer = csv.DictWriter(file, fieldnames=columns)
            writer.writeheader()
            writer.writerows(history)
