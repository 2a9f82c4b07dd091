"""`mnet-backbones train`: classification, detection and segmentation on the user's data, resumable.

`train(task, train_data, val_data, ...)` checks the data, builds the model
(a backbone preset with a new head, or a model to continue from), trains
epoch by epoch with a cosine-with-warmup schedule, validates after every
epoch (top-1/top-5, COCO AP/AP50 or mIoU), and keeps a run folder
(`mnet_tools.train.checkpoints`): the configuration, the last and best
checkpoints, `metrics.csv` and TensorBoard scalars, and with `export_litert`
the best model as `best.tflite`. A run holds the folder's lock
(`mnet_tools.train.lock`) throughout, so a second run on it is refused.

Resuming: run the same call again on the same folder; it continues after
the last completed epoch with the same weights, optimizer state, schedule
step and data order, so its final weights are those of an uninterrupted run
(on TensorFlow with deterministic ops: `deterministic=True`). Each epoch's
data is drawn from the seed and the epoch number (`data.epoch_seed`), not
from a stream that would have to be replayed.
"""

import contextlib
import dataclasses
import math
import os
import sys
import time

from mnet_tools.train.config import (
    DEFAULT_WARMUP_EPOCHS,
    TrainConfig,
    check_resumable,
    default_warmup,
    write_config,
)
from mnet_tools.train.lock import run_folder_lock

SCORES = {"classification": "top1", "detection": "AP", "segmentation": "mIoU"}


def _log(message, verbose):
    if verbose:
        print(f"[train] {message}", file=sys.stderr, flush=True)


def _task_class(task):
    import keras_hub

    from mnet_backbones.classifier import MobileNetImageClassifier

    return {
        "classification": MobileNetImageClassifier,
        "detection": keras_hub.models.ObjectDetector,
        "segmentation": keras_hub.models.ImageSegmenter,
    }[task]


def _load_from(path, task):
    """A model to continue from: a `.keras` file or a keras-hub preset folder of `task`'s kind."""
    import keras

    import heads
    from mnet_backbones import files

    kind = _task_class(task)
    if os.path.isdir(path):
        files.check_preset_folder(path)
        # SSDLiteObjectDetector.from_preset also takes torchvision's SSDLite sources.
        loader = heads.SSDLiteObjectDetector if task == "detection" else kind
        model = loader.from_preset(path)
    elif path.endswith(".keras"):
        files.check_keras_file(path)
        model = keras.models.load_model(path, compile=False)
    else:
        raise ValueError(f"--from {path!r} is neither a .keras file nor a preset folder.")
    if not isinstance(model, kind):
        raise ValueError(f"--from {path!r} holds a {type(model).__name__}, not a {kind.__name__} for {task}.")
    return model


def _resize_converter(classifier, size):
    """The data arrive at `size` already; the converter then only normalises."""
    converter = classifier.preprocessor.image_converter
    classifier.preprocessor.image_converter = type(converter).from_config(
        {**converter.get_config(), "image_size": (size, size)}
    )


def build_model(config, data, num_classes):
    """The model of `config`: a new head on `--preset`'s backbone, or `--from`'s model, checked against the data."""
    import heads
    from heads.detection import ssdlite_class
    from mnet_backbones.classifier import MobileNetImageClassifier

    size = config.image_size
    head = config.head
    if config.from_model is not None:
        model = _load_from(config.from_model, config.task)
        if config.task == "classification" and model.preprocessor is not None:
            _resize_converter(model, size)
        have = getattr(model, "num_classes", None)
        names = "" if data.class_names is None else f" ({', '.join(data.class_names)})"
        background = getattr(model, "label_offset", 0)  # 1 where class 0 is the background
        if have is not None and num_classes is not None and have != num_classes + background:
            counted = f"{have - background} (and the background)" if background else f"{have}"
            raise ValueError(
                f"--from {config.from_model!r} has {counted} classes; the data has {num_classes}{names}. "
                "Continue from a model trained on these classes, or start from --preset for a new head."
            )
        return model
    weights = {"load_weights": config.load_weights}
    if config.task == "classification":
        model = MobileNetImageClassifier.from_preset(config.preset, num_classes=num_classes, **weights)
        _resize_converter(model, size)
        return model
    if config.task == "detection":
        head = head or "ssdlite"
        num_outputs = num_classes + ssdlite_class(head).label_offset  # the background counts where there is one
        return heads.create_ssdlite(config.preset, num_outputs, image_size=size, head=head, **weights)
    create = {"deeplabv3plus": heads.create_deeplabv3plus, "deeplabv3": heads.create_deeplabv3,
              "lraspp": heads.create_lraspp}[head or "deeplabv3plus"]  # fmt: skip
    return create(config.preset, num_classes=num_classes, image_size=size, **weights)


def validate(model, data, num_classes):
    """The task's validation scores after an epoch."""
    import numpy as np

    import heads

    config = data.config
    if config.task == "classification":
        logits = model.predict(data.val_images(), verbose=0)
        labels = np.asarray(data.val_labels)
        ranked = np.argsort(-logits, axis=-1)
        k = min(5, logits.shape[-1])
        return {
            "top1": float(np.mean(ranked[:, 0] == labels)),
            "top5": float(np.mean(np.any(ranked[:, :k] == labels[:, None], axis=-1))),
        }
    if config.task == "detection":
        annotations, image_dir = config.val_data
        with _with_background_category(annotations, data.label_offset) as annotations:
            metrics = heads.evaluate_coco(model, annotations, image_dir, batch_size=config.batch_size)
        return {"AP": float(metrics["AP"]), "AP50": float(metrics["AP50"])}
    metrics = heads.evaluate_segmentation(model, *config.val_data, num_classes, batch_size=config.batch_size)
    return {"mIoU": float(metrics["mIoU"]), "pixel_accuracy": float(metrics["pixel_accuracy"])}


@contextlib.contextmanager
def _with_background_category(annotations, label_offset):
    """The validation file as `evaluate_coco` reads it for a detector whose label 0 is the background.

    `evaluate_coco` maps label `j` to the file's `j`-th category; a copy with
    a placeholder category first (never predicted, no annotations, so
    pycocotools leaves it out of the mean) maps labels 1..K to the file's
    categories in order.
    """
    if not label_offset:
        yield annotations
        return
    import json
    import tempfile

    from mnet_backbones import files

    coco = files.read_json(annotations)
    ids = [category["id"] for category in coco.get("categories", [])]
    placeholder = {"id": max(ids, default=0) + 1, "name": "__background__"}
    coco["categories"] = [placeholder] + list(coco.get("categories", []))
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, os.path.basename(annotations))
        with open(path, "w") as file:
            json.dump(coco, file)
        yield path


def _stop_after_one_epoch():
    import keras

    class StopAfterOneEpoch(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            self.model.stop_training = True

    return StopAfterOneEpoch()


def _set_backbone_trainable(model, trainable):
    if model.backbone.trainable != trainable:
        model.backbone.trainable = trainable
        model.train_function = None  # traced with the old trainable set


def _write_tensorboard(folder, row):
    """Appends `row`'s numbers as TensorBoard scalars at step `epoch`.

    `tf.summary.scalar` needs the tensorboard package; the scalar plugin's
    metadata on a plain `tf.summary.write` is the same record without it.
    """
    import tensorflow as tf
    from tensorflow.core.framework import summary_pb2

    metadata = summary_pb2.SummaryMetadata(plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars"))
    writer = tf.summary.create_file_writer(os.path.join(folder, "tensorboard"))
    with writer.as_default():
        for key, value in row.items():
            if key != "epoch" and isinstance(value, float) and math.isfinite(value):
                tf.summary.write(key, tf.constant(value, "float32"), step=row["epoch"],
                                 metadata=metadata.SerializeToString())  # fmt: skip
    writer.close()


def train(
    task,
    train_data,
    val_data,
    out_dir,
    preset=None,
    from_model=None,
    load_weights=True,
    head=None,
    num_classes=None,
    image_size=224,
    epochs=10,
    batch_size=32,
    optimizer="adamw",
    learning_rate=1e-3,
    weight_decay=1e-4,
    momentum=0.9,
    warmup_epochs=None,
    frozen_epochs=0,
    mixed_precision="off",
    augment=True,
    seed=0,
    devices=None,
    deterministic=False,
    stop_after_epochs=None,
    export_litert=False,
    verbose=1,
    *,
    score_threshold=None,
    max_detections=None,
):
    """Trains a task on the user's data in `out_dir`, or resumes the run there.

    Args:
        task: "classification", "detection" or "segmentation".
        train_data, val_data: classification: `[folder]` with one subfolder
            of images per class; detection: `[annotations.json, image_dir]`
            (COCO); segmentation: `[image_dir, mask_dir]` (masks: class
            indices, 255 ignored).
        out_dir: the run folder (created; a folder of the same configuration
            is resumed, one of another configuration refused). One run at a
            time: a folder another `train` is using is refused
            (`lock.RunFolderInUseError`, a ValueError naming the holder), before
            anything in it is read or changed.
        preset: a backbone preset (a new head on it), or `from_model`: a
            `.keras` file or preset folder of the task to continue from (its
            classes must be the data's).
        load_weights: False for a random backbone with `preset`.
        head: detection "ssdlite" (default) or "ssdlite320" (the paper's
            and torchvision's head, `heads.create_ssdlite(head="ssdlite320")`,
            with a background class); segmentation "deeplabv3plus" (default),
            "deeplabv3" or "lraspp".
        num_classes: segmentation: classes including background (from
            `from_model` if not given).
        image_size: side of the square training images.
        epochs, batch_size: length and global batch size.
        optimizer: "adamw" or "sgd" (Nesterov momentum `momentum`).
        learning_rate, weight_decay, warmup_epochs: the peak rate of the
            cosine schedule, its linear warmup, decoupled weight decay (not
            applied to BatchNorm parameters and biases). `warmup_epochs`
            None: one epoch, at most half the run (`--epochs 1` warms up for
            half an epoch, and says so); a given one must be shorter than the run.
        frozen_epochs: first epochs with the backbone frozen (BatchNorm in
            inference mode), then the whole model trains.
        mixed_precision: "off", "float16" or "bfloat16".
        augment: classification random resized crop and flip; detection
            torchvision's SSDLite recipe (photometric distortion, zoom
            out, random IoU crop, flip; `data.ssdlite_augment`);
            segmentation scale 0.5-2.0, crop, flip.
        seed: weights' initialisation, data order and augmentation.
        devices: None: the default device, no strategy; N: data-parallel on
            the first N devices (`mnet_tools.distribute.data_parallel_scope`:
            JAX DataParallel, TensorFlow MirroredStrategy with synchronised
            BatchNorm); `batch_size` is global and must split evenly. Not part
            of the configuration: a run may resume on another device count.
        deterministic: TensorFlow's deterministic ops (slower; for
            bit-reproducible resumes).
        stop_after_epochs: stop after this many epochs in this call (a
            time-boxed job); calling again resumes. Not part of the configuration.
        export_litert: once the run has done all its epochs, also export
            `best.keras` to `out_dir/best.tflite` (LiteRT float32 at
            `image_size`, through `mnet_tools.export`; a detector's
            post-processing settings beside it as `best_postprocess.npz`),
            written atomically. Calling again on a finished run exports only
            if those files are missing or were not made from the present
            `best.keras` (`checkpoints.export_best_litert`). Needs the
            TensorFlow backend (checked before training). Not part of the
            configuration.
        verbose: 0 silent, 1 progress bar and stage lines, 2 one line per epoch.
        score_threshold, max_detections (keyword only): detection only: what the saved
            detector's `predict` and export keep (a display choice; None:
            the head's own). Validation scores the COCO way whatever they
            are (`heads.evaluate_coco`). Not part of the configuration.

    Returns:
        `{"out_dir", "epochs_done", "best", "history", "model", "litert"}`:
        `model` the model as after the last epoch done, `litert` the path of
        `best.tflite` (None without `export_litert`, before the last epoch,
        or with no best model: no finite validation score).

    Example:
    ```python
    from mnet_tools.train import train
    train("classification", ["data/train"], ["data/val"], "runs/flowers",
          preset="mobilenetv3_large_100", image_size=224, epochs=30, batch_size=64)
    ```
    """
    if warmup_epochs is None:
        warmup_epochs = default_warmup(epochs)
        if warmup_epochs != DEFAULT_WARMUP_EPOCHS:
            _log(f"warm-up: {warmup_epochs:g} epoch, half of the {epochs}-epoch run (--warmup-epochs sets it)", verbose)
    config = TrainConfig(
        task=task, train_data=tuple(os.path.abspath(p) for p in train_data),
        val_data=tuple(os.path.abspath(p) for p in val_data), preset=preset,
        from_model=None if from_model is None else os.path.abspath(from_model), load_weights=bool(load_weights),
        head=head, num_classes=num_classes, image_size=image_size, epochs=epochs, batch_size=batch_size,
        optimizer=optimizer, learning_rate=float(learning_rate), weight_decay=float(weight_decay),
        momentum=float(momentum), warmup_epochs=float(warmup_epochs), frozen_epochs=frozen_epochs,
        mixed_precision=mixed_precision, augment=bool(augment), seed=seed,
    )  # fmt: skip
    decoding = {"score_threshold": score_threshold, "max_detections": max_detections}
    decoding = {name: value for name, value in decoding.items() if value is not None}
    if decoding and task != "detection":
        flags = " and ".join("--" + name.replace("_", "-") for name in decoding)
        raise ValueError(f"{flags} set what a detector keeps; they do not apply to {task}.")
    import keras

    from mnet_tools.train.data import EpochData

    if export_litert and keras.backend.backend() != "tensorflow":
        raise ValueError(
            f"--export-litert converts through TensorFlow, but Keras runs on {keras.backend.backend()!r}: run "
            "with KERAS_BACKEND=tensorflow, or train without it and export best.keras later with "
            "`mnet-backbones export`."
        )
    _log(f"checking the {task} data", verbose)
    data = EpochData(config)
    if config.task == "segmentation" and config.num_classes is None and config.from_model is None:
        raise ValueError("--num-classes is required for segmentation from --preset (classes including background).")
    if data.class_names is not None:
        if config.num_classes is not None and config.num_classes != len(data.class_names):
            raise ValueError(
                f"--num-classes {config.num_classes} disagrees with the {len(data.class_names)} classes of --train "
                f"({', '.join(data.class_names)})."
            )
        config = dataclasses.replace(config, class_names=tuple(data.class_names))
    out_dir = os.path.abspath(out_dir)
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise NotADirectoryError(f"--out-dir {out_dir!r} is a file.")
    check_resumable(out_dir, config)  # first without the lock, which would write in a folder that is not a run's
    with run_folder_lock(out_dir):
        check_resumable(out_dir, config)  # again: another run may have begun the folder meanwhile
        if deterministic:
            import tensorflow as tf

            tf.config.experimental.enable_op_determinism()
        keras.utils.set_random_seed(config.seed)
        previous_policy = keras.config.dtype_policy()
        if config.mixed_precision != "off":
            keras.config.set_dtype_policy(f"mixed_{config.mixed_precision}")
        try:
            with _device_scope(devices, config.batch_size) as sync_batch_norm:
                result = _run(config, data, out_dir, sync_batch_norm, stop_after_epochs, decoding, verbose)
        finally:
            keras.config.set_dtype_policy(previous_policy)
        # Outside the device scope: the export loads best.keras afresh, as any user of the file would.
        result["litert"] = _export_best_litert(config, result, verbose) if export_litert else None
    return result


def _export_best_litert(config, result, verbose):
    """`best.tflite` of a finished run, exported unless it is already that of `best.keras`; its path or None."""
    from mnet_tools.train import checkpoints

    if result["epochs_done"] < config.epochs:
        _log(f"best.tflite is exported after the last epoch ({result['epochs_done']}/{config.epochs} done)", verbose)
        return None
    if result["best"] is None:
        _log("no finite validation score, so no best model: best.tflite not written", verbose)
        return None
    out_dir = result["out_dir"]
    if checkpoints.best_litert_is_current(out_dir):
        _log("best.tflite is up to date with best.keras", verbose)
    else:
        _log("exporting best.keras to best.tflite", verbose)
    return checkpoints.export_best_litert(out_dir, config.image_size)


@contextlib.contextmanager
def _device_scope(devices, batch_size):
    """`mnet_tools.distribute.data_parallel_scope` for `devices`; yields whether BatchNorm is synchronised.

    `devices=None` trains on the default device without any strategy.
    """
    if devices is None:
        yield False
        return
    from mnet_tools.distribute import data_parallel_scope

    with data_parallel_scope(num_devices=devices) as setup:
        setup.check_global_batch_size(batch_size)
        yield setup.num_replicas > 1


def _run(config, data, out_dir, sync_batch_norm, stop_after_epochs, decoding, verbose):
    """Builds, compiles and trains inside the device scope; returns `train`'s dict."""
    from mnet_tools.train import checkpoints
    from mnet_tools.train.optim import make_optimizer

    _log("building the model", verbose)
    num_classes = config.num_classes or data.num_classes
    model = build_model(config, data, num_classes)
    for name, value in decoding.items():  # validated by the detector, before any training
        setattr(model, name, value)
    num_classes = num_classes or model.num_classes
    if config.task == "detection":
        data.label_offset = getattr(model, "label_offset", 0)  # 1 where class 0 is the background
    if config.task == "segmentation":
        data.check_masks(num_classes)
    if sync_batch_norm:
        from mnet_tools.distribute import synchronize_batch_norm

        synchronize_batch_norm(model)
    model.backbone.trainable = True
    model.compile(optimizer=make_optimizer(config, model, data.steps_per_epoch))
    # Built on every variable, so that frozen epochs update a subset and the state has one layout.
    model.optimizer.build(model.trainable_variables)

    os.makedirs(out_dir, exist_ok=True)
    progress = checkpoints.load_last(out_dir, model)
    checkpoints.remove_leftovers(out_dir)
    write_config(out_dir, config)
    progress = progress or {"epochs_done": 0, "history": [], "best": None}
    checkpoints.write_metrics_csv(out_dir, progress["history"])
    start = progress["epochs_done"]
    if start >= config.epochs:
        _log(f"{out_dir} has done all {config.epochs} epochs: nothing to train (best: {progress['best']})", verbose)
    elif start:
        _log(f"resuming {out_dir} after epoch {start}", verbose)
    score_key = SCORES[config.task]
    end = config.epochs if stop_after_epochs is None else min(config.epochs, start + stop_after_epochs)
    for epoch in range(start, end):
        _set_backbone_trainable(model, epoch >= config.frozen_epochs)
        began = time.perf_counter()
        # One epoch per fit() (each epoch's data come from its own seed), told the run's length so that the
        # progress bar reads "Epoch 3/10".
        history = model.fit(
            data.train_dataset(epoch),
            initial_epoch=epoch,
            epochs=config.epochs,
            verbose=verbose,
            shuffle=False,
            callbacks=[_stop_after_one_epoch()],
        )
        row = {"epoch": epoch + 1}
        row.update({key: float(values[-1]) for key, values in history.history.items()})
        row["learning_rate"] = float(model.optimizer.learning_rate)
        row.update(validate(model, data, num_classes))
        row["seconds"] = round(time.perf_counter() - began, 2)
        score = row[score_key]
        best = progress["best"]
        if math.isfinite(score) and (best is None or score > best["score"]):
            progress["best"] = {"epoch": epoch + 1, "score": score, "metric": score_key}
            checkpoints.save_best(out_dir, model, sync_batch_norm)
        progress["epochs_done"] = epoch + 1
        progress["history"].append(row)
        checkpoints.save_last(out_dir, model, progress)
        checkpoints.write_metrics_csv(out_dir, progress["history"])
        _write_tensorboard(out_dir, row)
        _log(
            f"epoch {epoch + 1}/{config.epochs}: loss {row.get('loss', float('nan')):.4f}, "
            + ", ".join(f"{key} {row[key]:.4f}" for key in row if key in ("top1", "top5", "AP", "AP50", "mIoU")),
            verbose,
        )
    return {"out_dir": out_dir, "epochs_done": progress["epochs_done"], "best": progress["best"],
        "history": progress["history"], "model": model}  # fmt: skip
