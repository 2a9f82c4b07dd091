"""Pretrained weights for the built-in presets: converted once, cached, offline after.

A built-in preset's weights come from its best public checkpoint: a timm
model on the Hugging Face hub (`hf://timm/<preset>.<tag>`), for the widths
only keras.applications publishes a keras.applications ImageNet model, and
for the `*_torchvision` presets torchvision's published `.pth` file. The
first use downloads and converts it and stores a keras-hub preset folder in
the cache; later uses read the cache and need no network.

The cache lives in `$KERAS_HOME/mnet_backbones/presets/<preset>/` (`KERAS_HOME`
defaults to `~/.keras`); `MNET_BACKBONES_CACHE` overrides the whole path.
Downloaded torchvision files stay beside it, in `.../mnet_backbones/torchvision/`
(`convert.torchvision.checkpoint_cache_dir`).
"""

import os
import shutil
import tempfile

import keras

from mnet_backbones.convert import keras_applications, timm, torchvision
from mnet_backbones.presets import get_preset

CACHE_ENV = "MNET_BACKBONES_CACHE"
WEIGHTS_FILE = "model.weights.h5"


class PretrainedWeightsUnavailableError(ValueError):
    """Pretrained weights were asked for but cannot be had here."""


def cache_root():
    if os.environ.get(CACHE_ENV):
        return os.environ[CACHE_ENV]
    keras_home = os.environ.get("KERAS_HOME", os.path.join(os.path.expanduser("~"), ".keras"))
    return os.path.join(keras_home, "mnet_backbones", "presets")


def cached_folder(name):
    return os.path.join(cache_root(), name)


def is_cached(name):
    folder = cached_folder(name)
    return all(os.path.isfile(os.path.join(folder, f)) for f in ("config.json", WEIGHTS_FILE))


def checkpoint_source(name):
    """Where a built-in preset's weights come from, as a string for people."""
    preset = get_preset(name)
    if preset.torchvision:
        return preset.torchvision[0]
    if preset.weights:
        return f"hf://timm/{name}.{preset.weights[0]}"
    if preset.keras_application:
        cls, kwargs = preset.keras_application
        args = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
        return f"keras.applications.{cls}({args}, weights='imagenet')"
    return None


def _unavailable(name, reason):
    if get_preset(name).torchvision:
        url = checkpoint_source(name)
        return PretrainedWeightsUnavailableError(
            f"Pretrained weights for {name!r} are not cached here ({cached_folder(name)}) and "
            f"could not be fetched: {reason}\nThree ways out:\n"
            f"  1. run again with network access: {url} is downloaded, converted and cached once;\n"
            f"  2. download {url} on a machine with network, copy the file here and load it with "
            "from_preset(<path to the .pth file>) (or copy it to "
            f"{torchvision.checkpoint_cache_dir()}/ to have it found under this name);\n"
            "  3. pass load_weights=False to build the model with random weights."
        )
    return PretrainedWeightsUnavailableError(
        f"Pretrained weights for {name!r} are not cached here ({cached_folder(name)}) and "
        f"could not be fetched: {reason}\nThree ways out:\n"
        f"  1. run again with network access: the checkpoint ({checkpoint_source(name)}) is "
        "downloaded, converted and cached once;\n"
        f"  2. on a machine with network, run `mnet-backbones convert {name} OUT_DIR`, copy "
        f"OUT_DIR here, and load it with from_preset(OUT_DIR) (or copy it to "
        f"{cached_folder(name)});\n"
        "  3. pass load_weights=False to build the model with random weights."
    )


def convert_classifier(name, classifier_cls=None, progress=print):
    """Download and convert a built-in preset's checkpoint; return the classifier.

    `classifier_cls` defaults to `MobileNetImageClassifier` (found by its
    registered name: this module sits below the model classes, whose
    `from_preset` calls it).
    """
    classifier_cls = classifier_cls or keras_applications.classifier_class()
    preset = get_preset(name)
    if preset.torchvision:
        try:
            path = torchvision.download_checkpoint(checkpoint_source(name), progress=progress)
        except torchvision.DownloadError as error:
            raise _unavailable(name, str(error)) from error
        progress(f"converting {path}")
        return torchvision.classifier_from_checkpoint(classifier_cls, path)
    if preset.weights:
        handle = checkpoint_source(name)
        progress(f"downloading {handle}")
        try:
            snapshot = timm.download_snapshot(handle)
        except timm.DownloadError as error:
            raise _unavailable(name, str(error)) from error
        progress(f"converting {handle}")
        return timm.classifier_from_snapshot(classifier_cls, snapshot)
    if preset.keras_application:
        return _convert_keras_application(name, classifier_cls, progress)
    raise PretrainedWeightsUnavailableError(
        f"No public checkpoint exists for {name!r}; build it with load_weights=False."
    )


def _convert_keras_application(name, classifier_cls, progress):
    preset = get_preset(name)
    cls_name, kwargs = preset.keras_application
    progress(f"downloading {checkpoint_source(name)}")
    try:
        model = getattr(keras.applications, cls_name)(
            weights="imagenet",
            input_shape=(preset.resolution, preset.resolution, 3),
            classifier_activation=None,
            **kwargs,
        )
    except Exception as error:  # urllib/OSError/HTTP errors when offline
        raise _unavailable(name, f"{type(error).__name__}: {error}") from error
    progress("converting")
    return keras_applications.from_keras_application(model, classifier_cls)


def save_converted(classifier, folder):
    """Write a classifier preset folder atomically: complete or absent."""
    parent = os.path.dirname(os.path.abspath(folder)) or "."
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".converting-", dir=parent)
    try:
        classifier.save_to_preset(staging)
        if os.path.exists(folder):
            shutil.rmtree(folder)
        os.replace(staging, folder)
    finally:
        if os.path.exists(staging):
            shutil.rmtree(staging)
    return folder


def ensure_cached(name, classifier_cls=None, progress=lambda message: None):
    """The cached preset folder of a built-in preset, converting it if needed.

    The cache holds the whole classifier (its ImageNet head too), whichever
    class asked for it.
    """
    get_preset(name)  # raises the ValueError listing valid names
    if not is_cached(name):
        save_converted(convert_classifier(name, classifier_cls, progress), cached_folder(name))
    return cached_folder(name)
