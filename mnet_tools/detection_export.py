"""LiteRT export of an SSDLite detector and the numpy post-processing it needs.

The exported `.tflite` file computes the raw outputs (box deltas and class
logits for every anchor). Decoding and NMS stay outside it: keras-hub's
`NonMaxSuppression` is a data-dependent while loop over the whole batch,
which the TFLite converter does not turn into builtin ops. `postprocess`
does that small step in numpy, with the anchors and settings that
`export_litert` writes beside the model.

Both SSDLites export so, each with the post-processing it names in
`postprocessing`, from `heads.detection.postprocess` (the one IoU and NMS the
detectors use): `heads.SSDLiteObjectDetector` (sigmoid classes, class-agnostic
NMS: `postprocess`) and `heads.SSDLite320ObjectDetector` (torchvision's softmax
and per-class NMS, images of any size resized first and boxes back in each
image's own pixels: `postprocess_detections`). The settings file says which
(`kind`).

The `.tflite` file and its `_postprocess.npz` are one pair: both are written
under temporary names, then renamed one after the other with Ctrl-C held
back, so an error or an interrupt leaves both old or both new. The settings
also record the SHA-256 of the model file they belong to, and `run_litert`
refuses a pair that does not match (a file copied over one of them, or a
crash between the two renames).
"""

import contextlib
import json
import os
import secrets
import signal
import threading

import keras
import numpy as np

from heads.detection.postprocess import (
    SIGMOID_CLASS_AGNOSTIC_NMS,
    SOFTMAX_PER_CLASS_NMS,
    postprocess_detections,
    postprocess_sigmoid_detections,
)
from heads.detection.resizing import resize_image_batch
from mnet_backbones import files
from mnet_tools import litert

SIGMOID = SIGMOID_CLASS_AGNOSTIC_NMS  # heads.SSDLiteObjectDetector.postprocessing
TORCHVISION = SOFTMAX_PER_CLASS_NMS  # heads.SSDLite320ObjectDetector.postprocessing
# The numpy post-processing of the sigmoid detector, under the name this module has always given it.
postprocess = postprocess_sigmoid_detections


def settings_path(tflite_path):
    """The post-processing settings file that goes with `tflite_path`: `<stem>_postprocess.npz`."""
    return os.path.splitext(os.fspath(tflite_path))[0] + "_postprocess.npz"


_settings_path = settings_path


@contextlib.contextmanager
def _interrupts_held():
    """Ctrl-C (SIGINT) arrives only after the block, so the block's steps all happen or none do."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "pthread_sigmask"):
        yield
        return
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def _partial_name(path):
    folder, name = os.path.split(os.path.abspath(path))
    if not os.path.isdir(folder):
        what = "is a file" if os.path.exists(folder) else "does not exist"
        raise NotADirectoryError(f"Cannot write {path!r}: its folder {folder!r} {what}.")
    stem, suffix = os.path.splitext(name)
    return os.path.join(folder, f".{stem}.partial-{secrets.token_hex(4)}{suffix}")


def export_litert(detector, path, **converter_options):
    """Writes `path` (.tflite, raw outputs) and `<stem>_postprocess.npz`, as one pair.

    Returns the two paths. The `.npz` holds the anchors (xyxy pixels), the
    box variance, the image size, the decoder's thresholds, which
    post-processing applies (`kind`) and the `.tflite` file's SHA-256.
    `converter_options` go to `detector.export` (TFLite converter settings,
    such as int8 quantisation: see `mnet_tools.export`). Both files are
    written under temporary names and renamed together (see the module
    docstring): an error or Ctrl-C leaves the old pair, or none.

    Example:
    ```python
    from mnet_tools import detection_export
    tflite, settings = detection_export.export_litert(detector, "ssdlite.tflite")
    detections = detection_export.run_litert(tflite, images)  # same keys as predict
    ```
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        raise IsADirectoryError(f"Cannot write the file {path!r}: it is a folder.")
    pair_path = settings_path(path)
    settings = postprocess_settings(detector)
    settings["image_size"] = np.array(settings["image_size"], "int32")
    partial_model, partial_settings = _partial_name(path), _partial_name(pair_path)
    try:
        detector.export(partial_model, format="litert", verbose=False, **converter_options)
        if not os.path.isfile(partial_model):
            raise OSError(f"The LiteRT converter wrote nothing to {partial_model!r} for {path!r}.")
        with open(partial_settings, "wb") as file:
            np.savez(
                file,
                **settings,
                kind=np.array(_kind(detector)),
                bounding_box_format=np.array(json.dumps(detector.bounding_box_format)),
                tflite_sha256=np.array(files.sha256_of(partial_model)),
            )
        # The settings first: should the second rename ever fail, the hash check names the stale pair.
        with _interrupts_held():
            os.replace(partial_settings, pair_path)
            os.replace(partial_model, path)
    finally:
        for partial in (partial_model, partial_settings):
            if os.path.exists(partial):
                os.remove(partial)
    return path, pair_path


def _kind(detector):
    """The post-processing `detector` names (`heads.detection.base.SSDLiteBase.postprocessing`)."""
    return getattr(detector, "postprocessing", SIGMOID)


def postprocess_settings(detector):
    """`postprocess`'s keyword arguments for `detector`: its anchors, box variance, size and thresholds.

    Example:
    ```python
    raw = detector(images)
    detections = postprocess(raw["bbox_regression"], raw["cls_logits"], **postprocess_settings(detector))
    ```
    """
    settings = {
        "anchors": keras.ops.convert_to_numpy(detector.anchors()).astype("float32"),
        "box_variance": np.array(detector.box_variance, "float32"),
        "image_size": tuple(detector.image_size),
        "score_threshold": float(detector.score_threshold),
        "iou_threshold": float(detector.iou_threshold),
        "max_detections": int(detector.max_detections),
    }
    if _kind(detector) == TORCHVISION:
        settings["topk_candidates"] = int(detector.topk_candidates)
    return settings


def read_settings(tflite_path):
    """The post-processing settings of an exported detector, checked to belong to `tflite_path`.

    Raises `FileNotFoundError` when the `_postprocess.npz` is missing and
    `ValueError` when it was written for another model file.
    """
    tflite_path = os.fspath(tflite_path)
    pair_path = settings_path(tflite_path)
    if not os.path.exists(pair_path):
        raise FileNotFoundError(
            f"{tflite_path} has no post-processing settings beside it ({pair_path}): export the detector "
            "with mnet_tools.detection_export.export_litert (or `mnet-backbones export`), which writes both."
        )
    settings = files.read_npz(pair_path)  # an object array or a FIFO refused, naming the file
    expected = str(settings["tflite_sha256"]) if "tflite_sha256" in settings else None
    if expected is not None and expected != files.sha256_of(tflite_path):
        raise ValueError(
            f"{pair_path} was written for another version of {tflite_path} (its SHA-256 differs): the pair "
            "is stale. Export the detector again to write both files."
        )
    return settings


def run_litert(tflite_path, images):
    """Runs an exported detector on `images` and post-processes, as the detector's `predict` does.

    For an `SSDLiteObjectDetector`, `images` are (B, H, W, 3) 0..255 at the
    export's size and boxes come back in those pixels. For an
    `SSDLite320ObjectDetector`, images of any size (an array, or a list of
    differently sized (H, W, 3) images) are resized to its size first and
    the boxes come back in each image's own pixels.

    Example:
    ```python
    detections = run_litert("ssdlite.tflite", images)
    ```
    """
    settings = read_settings(tflite_path)
    kind = str(settings["kind"]) if "kind" in settings else SIGMOID
    image_size = tuple(int(v) for v in settings["image_size"])
    if kind == TORCHVISION:
        batch, sizes = resize_image_batch(images, image_size, "run_litert")
        deltas, logits = _raw(tflite_path, batch)
        return postprocess_detections(
            deltas, logits, settings["anchors"], image_size, sizes, float(settings["score_threshold"]),
            float(settings["iou_threshold"]), int(settings["topk_candidates"]), int(settings["max_detections"]),
        )  # fmt: skip
    deltas, logits = _raw(tflite_path, images)
    return postprocess(
        deltas, logits, settings["anchors"], settings["box_variance"], image_size,
        float(settings["score_threshold"]), float(settings["iou_threshold"]), int(settings["max_detections"]),
    )  # fmt: skip


def _raw(tflite_path, images):
    """(box deltas, class logits) of the file on `images`."""
    outputs = litert.run(tflite_path, images)  # a file with a fixed batch runs in chunks
    # The two outputs differ in their last axis: 4 for deltas, num_classes for logits
    # (with 4 classes as well, the deltas come first, as the model lists them).
    deltas, logits = sorted(outputs, key=lambda output: output.shape[-1] != 4) if len(outputs) == 2 else outputs
    return deltas, logits
