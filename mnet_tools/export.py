"""Export a model to LiteRT or ONNX, optionally int8, and measure what it costs.

`export_model` writes the file; `compare` runs it beside the Keras model and
says how closely it agrees. Both work for backbones, classifiers, SSDLite
detectors and DeepLabV3+ segmenters; `load_model` turns a preset name, a
saved preset folder or a `.keras` file into the model to export.

Example:
```python
from mnet_tools import export

model, normalize = export.load_model("mobilenetv4_conv_small", load_weights=False)
export.export_model(model, "small.tflite", image_size=(224, 224))
export.export_model(model, "small_int8.tflite", image_size=(224, 224), int8=True,
                    calibration_images=normalize(pixels))  # pixels: (N, 224, 224, 3), 0..255
print(export.compare(model, "small_int8.tflite", normalize(pixels)))
```

Export goes through Keras's own `model.export` on the TensorFlow backend
(LiteRT through TensorFlow's converter, ONNX through tf2onnx); int8 is the
converter's full-integer post-training quantisation: every operator runs in
int8 and only the model's float input and outputs are (de)quantised at its
edges, so the file takes and returns float32 like the float one. The int8
file is traced from a copy of the model whose backbones write hard-swish in
its int8 form (`hard_swish_form="int8"`), which XNNPACK runs in int8; the
model itself is left as it is. LiteRT files run through `mnet_tools.litert`.
"""

import os

import keras
import keras_hub
import numpy as np
from PIL import Image

import heads  # noqa: F401  (registers the heads' classes, for loading .keras files)
from heads.datasets.images import read_image
from mnet_backbones import files
from mnet_backbones.backbone import MobileNetBackbone
from mnet_backbones.classifier import MobileNetImageClassifier, MobileNetImageConverter
from mnet_backbones.constants import IMAGENET_CLASSES
from mnet_backbones.convert import timm
from mnet_backbones.presets import PRESETS
from mnet_backbones.validation import check_image_size, check_positive_int
from mnet_tools import detection_export, litert

FORMATS = ("litert", "onnx")
SUFFIXES = {"litert": ".tflite", "onnx": ".onnx"}
TASKS = ("classifier", "backbone")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
DEFAULT_CALIBRATION_IMAGES = 100
PRESET_CONFIG = "config.json"  # a preset's backbone, or a timm snapshot's model
TASK_CONFIG = "task.json"  # keras-hub's name for a task preset's own config
IMAGE_CONVERTER_CONFIG = "image_converter.json"


def _require_tensorflow(what):
    if keras.backend.backend() != "tensorflow":
        raise RuntimeError(
            f"{what} goes through TensorFlow's converters, but Keras runs on "
            f"{keras.backend.backend()!r}. Set KERAS_BACKEND=tensorflow before "
            "importing keras."
        )


def _kind(model):
    """ "detector", "segmenter", "classifier" or "backbone": what the outputs mean."""
    if isinstance(model, keras_hub.models.ObjectDetector):
        return "detector"
    if isinstance(model, keras_hub.models.ImageSegmenter):
        return "segmenter"
    if isinstance(model, keras_hub.models.ImageClassifier):
        return "classifier"
    return "backbone"


# --------------------------------------------------------------------------
# What to export.
class InputPreparation:
    """Pixels in 0..255 to model inputs, with a keras-hub ImageConverter's scale and offset (none: as they are).

    `image_size` is the (height, width) the converter records, or None: what
    a model of free input size was saved for, the size to export it at.
    """

    def __init__(self, converter=None):
        scale = getattr(converter, "scale", None)
        offset = getattr(converter, "offset", None)
        size = getattr(converter, "image_size", None)
        self.scale = None if scale is None else np.asarray(scale, "float32")
        self.offset = np.asarray(0.0 if offset is None else offset, "float32")
        self.image_size = None if size is None else (int(size[0]), int(size[1]))

    def __call__(self, pixels):
        pixels = np.asarray(pixels, "float32")
        return pixels if self.scale is None else pixels * self.scale + self.offset


def load_model(source, task=None, load_weights=True, num_classes=None):
    """The model named by `source` and the function that prepares its inputs.

    Args:
        source: a built-in preset name; a folder written by `save_to_preset`
            (`mnet-backbones convert` writes one) or a timm snapshot folder;
            or a `.keras` file (classifiers, backbones, SSDLite detectors,
            DeepLabV3+ segmenters).
        task: None (default) for what `source` holds: a task folder's or
            `.keras` file's model, a timm snapshot's classifier, a bare
            backbone preset's backbone, a preset name's classifier.
            "classifier" insists on a classifier (one with `num_classes` on a
            bare backbone); "backbone" takes the backbone of what `source` holds.
        load_weights: for a preset name, whether to fetch its pretrained
            weights (False: random weights, no network).
        num_classes: the classifier's classes, for a preset name (default
            1000) or a bare backbone.

    Returns `(model, normalize)`, where `normalize` maps RGB pixels in
    0..255 to what the model takes: the preset's normalisation for backbones
    and classifiers; the identity for the heads, which normalise inside the
    model. `normalize.image_size` is the input size the source records (its
    image converter's), or None (see `InputPreparation`).

    A broken file (invalid JSON, a truncated weights file, a `.keras` archive
    cut short or failing its CRC) raises an `OSError` or `ValueError` naming
    the file and what is wrong (see `mnet_backbones.files`).

    Example:
    ```python
    model, normalize = load_model("mobilenetv3_small_050", load_weights=False)
    backbone, _ = load_model("converted_preset", task="backbone")
    ```
    """
    if task not in (None, *TASKS):
        raise ValueError(f"Unknown task {task!r}; expected one of {TASKS} (or None: what the source holds).")
    source = os.fspath(source)
    if source in PRESETS:
        converter = MobileNetImageConverter.from_preset(source)
        if task == "backbone":
            model = MobileNetBackbone.from_preset(source, load_weights=load_weights)
        else:
            model = MobileNetImageClassifier.from_preset(
                source, load_weights=load_weights, num_classes=num_classes or IMAGENET_CLASSES
            )
        return model, InputPreparation(converter)
    if source.endswith(".keras"):
        files.check_keras_file(source)
        try:
            model = keras.saving.load_model(source)
        except Exception as error:  # Keras's errors for a bad archive do not say which file
            raise ValueError(f"Cannot load {source}: {type(error).__name__}: {error}") from error
        converter = None
    elif os.path.isdir(source):
        files.check_preset_folder(source)
        try:
            model, converter = _load_folder(source, num_classes)
        except (ValueError, OSError):
            raise
        except Exception as error:  # keras-hub's errors for a bad preset do not say which folder
            raise ValueError(f"Cannot load the preset folder {source}: {type(error).__name__}: {error}") from error
    elif os.path.exists(source):
        raise ValueError(
            f"{source!r} is a file, but not a .keras file; export takes a built-in preset name, "
            "a preset folder or a .keras file."
        )
    else:
        raise ValueError(
            f"{source!r} is neither a built-in preset, a saved preset folder nor a "
            f".keras file. Built-in presets: {sorted(PRESETS)}."
        )
    preprocessor = getattr(model, "preprocessor", None)
    converter = getattr(preprocessor, "image_converter", None) or converter
    return _pick_task(model, task, source), InputPreparation(converter)


def _saved_task_class(folder):
    """The class a preset folder's task.json names, registered with Keras, or None without one."""
    path = os.path.join(folder, TASK_CONFIG)
    if not os.path.isfile(path):
        return None
    registered_name = files.read_json(path).get("registered_name")
    task_class = keras.saving.get_registered_object(registered_name)
    if task_class is None:
        raise ValueError(
            f"{path} names the task class {registered_name!r}, which is not registered: import the "
            "module that defines it before loading (heads, for SSDLite and DeepLabV3+)."
        )
    return task_class


def _load_folder(folder, num_classes):
    """What a folder holds: its task (task.json), a timm snapshot's classifier, or its backbone.

    Each is loaded through its own class's `from_preset`: keras-hub's
    `Task.from_preset` refuses to pick the class, and a timm snapshot must go
    through our converter, not keras-hub's own MobileNet. Returns the model
    and, for a bare backbone, the image converter saved beside it (or None).
    """
    if not os.path.isfile(os.path.join(folder, PRESET_CONFIG)):
        raise ValueError(
            f"{folder!r} has no {PRESET_CONFIG}, so it is neither a preset folder (save_to_preset and "
            "`mnet-backbones convert` write one) nor a timm snapshot."
        )
    kwargs = {} if num_classes is None else {"num_classes": num_classes}
    task_class = _saved_task_class(folder)
    if task_class is not None:
        if kwargs and not issubclass(task_class, keras_hub.models.ImageClassifier):
            raise ValueError(f"num_classes is for classifiers; {folder!r} holds a {task_class.__name__}.")
        return task_class.from_preset(folder, **kwargs), None
    if timm.is_timm_snapshot(folder):
        return MobileNetImageClassifier.from_preset(folder, **kwargs), None
    backbone = keras_hub.models.Backbone.from_preset(folder)
    converter = None
    if os.path.isfile(os.path.join(folder, IMAGE_CONVERTER_CONFIG)):
        converter = keras_hub.layers.ImageConverter.from_preset(folder)
    if num_classes is not None:
        return MobileNetImageClassifier(backbone, num_classes=num_classes), converter
    return backbone, converter


def _pick_task(model, task, source):
    """`model`, or its backbone, or a classifier on it, as `task` asks."""
    kind = _kind(model)
    if task == "backbone":
        if kind == "backbone":
            return model
        if getattr(model, "backbone", None) is None:
            raise ValueError(f"{source!r} holds a {type(model).__name__} without a backbone to export.")
        return model.backbone
    if task == "classifier" and kind != "classifier":
        if kind == "backbone":
            raise ValueError(
                f"{source!r} holds a backbone without a classifier head; export it with task=None or "
                "'backbone' (on the command line, leave out --task or pass --task backbone), or pass "
                "num_classes for a classifier with a new, random head."
            )
        raise ValueError(
            f"{source!r} holds a {type(model).__name__}, not a classifier; export it with task=None "
            "(on the command line, leave out --task)."
        )
    return model


def model_image_size(model, image_size=None):
    """(height, width) to export at: `image_size`, else the model's fixed input size."""
    if image_size is not None:
        return check_image_size(image_size)
    height, width = model.inputs[0].shape[1:3]
    if height is None or width is None:
        raise ValueError(
            f"{model.name} takes images of any size; pass image_size=(height, width) "
            "(on the command line, --image-size H W) to fix the exported input."
        )
    return int(height), int(width)


def read_images(directory, image_size, limit=DEFAULT_CALIBRATION_IMAGES):
    """Up to `limit` images from `directory` (sorted by name), resized, as 0..255 float32.

    Images are read as the data loaders read them (`heads.datasets.read_image`:
    EXIF orientation applied, grey/palette/RGBA/CMYK/16-bit made 8-bit RGB);
    one that cannot be read raises an `OSError` naming it.
    """
    directory = os.fspath(directory)
    if not os.path.isdir(directory):
        what = "is a file" if os.path.exists(directory) else "does not exist"
        raise NotADirectoryError(f"{directory!r} {what}; calibration images are read from a folder.")
    names = sorted(n for n in os.listdir(directory) if n.lower().endswith(IMAGE_SUFFIXES))
    if not names:
        raise ValueError(f"No images ({', '.join(IMAGE_SUFFIXES)}) in {directory!r}.")
    height, width = image_size
    pixels = []
    for name in names[:limit]:
        path = os.path.join(directory, name)
        # The heads' reader: EXIF orientation, 16-bit and palette images as the loaders read them.
        image = Image.fromarray(read_image(path)).resize((width, height), Image.BILINEAR)
        pixels.append(np.asarray(image, "float32"))
    return np.stack(pixels)


def random_images(image_size, count=8, seed=0):
    """Smooth random 0..255 images: enough to calibrate for speed, not for accuracy."""
    rng = np.random.default_rng(seed)
    height, width = image_size
    coarse = rng.uniform(0, 255, size=(count, 8, 8, 3)).astype("float32")
    return keras.ops.convert_to_numpy(keras.ops.image.resize(coarse, (height, width)))


# --------------------------------------------------------------------------
# Writing the file.
def _litert_int8_options(calibration_images):
    import tensorflow as tf

    def representative_dataset():
        for image in calibration_images:
            yield [np.asarray(image[None], "float32")]

    return {
        "optimizations": [tf.lite.Optimize.DEFAULT],
        "representative_dataset": representative_dataset,
        "target_spec": {"supported_ops": [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]},
    }


def export_model(model, path, format="litert", image_size=None, int8=False, calibration_images=None,
                 batch_size=None):  # fmt: skip
    """Write `model` to `path` as LiteRT or ONNX at a fixed image size; returns `path`.

    Args:
        model: a backbone, classifier, SSDLite detector or DeepLabV3+ segmenter.
        path: the file to write (`.tflite` for LiteRT, `.onnx` for ONNX).
        format: "litert" or "onnx".
        image_size: (height, width) of the exported input; defaults to the
            model's own fixed size (the heads have one).
        int8: full-integer post-training quantisation (LiteRT only).
        calibration_images: the representative dataset for `int8`, model inputs
            (already normalised) of shape (N, height, width, 3). Without it,
            `random_images` serve: fine for timing, poor for accuracy.
        batch_size: None (default) leaves the batch axis free; a number fixes
            it. On a phone the batch is 1, and a fixed batch lets the LiteRT
            converter fold dilated depthwise convolutions (DeepLab, backbones
            at `output_stride` 8 or 16) into single operators, which XNNPACK
            runs: with a free batch each becomes SPACE_TO_BATCH / convolution
            / BATCH_TO_SPACE, and those split the graph.

    The batch axis stays free unless `batch_size` is given. An SSDLite
    detector is written with raw outputs and its post-processing settings
    beside it (`mnet_tools.detection_export`). The file is written under a
    temporary name beside `path` and renamed when complete: an error or
    Ctrl-C leaves `path` as it was.
    """
    _require_tensorflow("Export")
    if format not in FORMATS:
        raise ValueError(f"Unknown format {format!r}; expected one of {FORMATS}.")
    path = os.fspath(path)
    if not path.endswith(SUFFIXES[format]):
        raise ValueError(f"A {format} file must end with {SUFFIXES[format]!r}, got {path!r}.")
    if int8 and format != "litert":
        raise ValueError("int8 quantisation is available for format='litert' only.")
    if batch_size is not None:
        batch_size = check_positive_int("batch_size", batch_size)
    height, width = model_image_size(model, image_size)
    signature = [keras.InputSpec(shape=(batch_size, height, width, 3), dtype="float32")]
    options = {}
    if int8:
        if calibration_images is None:
            calibration_images = random_images((height, width))
        calibration_images = np.asarray(calibration_images, "float32")
        if calibration_images.ndim != 4 or calibration_images.shape[1:] != (height, width, 3):
            raise ValueError(
                f"calibration_images must have shape (N, {height}, {width}, 3), got {calibration_images.shape}."
            )
        options = _litert_int8_options(calibration_images)
    if _kind(model) == "detector" and (height, width) != tuple(model.image_size):
        raise ValueError(
            f"An SSDLite detector exports at its own image_size {tuple(model.image_size)}, "
            f"got image_size={(height, width)}."
        )
    if int8:
        model = with_hard_swish_form(model, "int8")
    if _kind(model) == "detector" and format == "litert":
        # Writes the file and its post-processing settings as one pair, itself.
        detection_export.export_litert(model, path, input_signature=signature, **options)
    else:
        with files.atomic_file(path) as partial:
            model.export(partial, format=format, input_signature=signature, verbose=False, **options)
    return path


def with_hard_swish_form(model, form):
    """`model`, or a copy of it whose every `MobileNetBackbone` traces hard-swish in `form`.

    The form ("fused" or "int8", see `mnet_backbones.layers.HARD_SWISH_FORMS`)
    is a backbone constructor argument: the model is serialised, the argument
    set in each backbone's config, the copy rebuilt and given the model's
    weights. A model without a backbone to change comes back as it is.
    """
    config = keras.saving.serialize_keras_object(model)
    config.pop("compile_config", None)  # the copy is traced, never trained
    if not _set_hard_swish_form(config, form):
        return model
    copy = keras.saving.deserialize_keras_object(config)
    copy.set_weights(model.get_weights())
    return copy


def _set_hard_swish_form(config, form):
    """Set `hard_swish_form` in every nested MobileNetBackbone config; True if one changed."""
    changed = False
    if isinstance(config, dict):
        if config.get("class_name") == "MobileNetBackbone" and config["config"].get("hard_swish_form") != form:
            config["config"]["hard_swish_form"] = form
            changed = True
        for value in config.values():
            changed = _set_hard_swish_form(value, form) or changed
    elif isinstance(config, (list, tuple)):
        for value in config:
            changed = _set_hard_swish_form(value, form) or changed
    return changed


# --------------------------------------------------------------------------
# Running the file and comparing.
def run_exported(path, inputs):
    """Run a `.tflite` or `.onnx` file on `inputs`; returns its outputs as a list of arrays.

    Outputs come in the order of the file's output names. LiteRT files run
    through `mnet_tools.litert.run` (a fixed-batch file in chunks).
    """
    inputs = np.asarray(inputs, "float32")
    path = os.fspath(path)
    if not path.endswith(".onnx"):
        return litert.run(path, inputs)
    import onnxruntime

    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    (feed,) = session.get_inputs()
    names = sorted(output.name for output in session.get_outputs())
    return session.run(names, {feed.name: inputs})


def _keras_outputs(model, inputs):
    outputs = model(keras.ops.convert_to_tensor(inputs), training=False)
    if isinstance(outputs, dict):
        outputs = [outputs[key] for key in sorted(outputs)]
    elif not isinstance(outputs, (list, tuple)):
        outputs = [outputs]
    return [keras.ops.convert_to_numpy(output) for output in outputs]


def relative_errors(actual, expected):
    """`max_relative_error` and `mean_relative_error` of paired outputs (see `compare`)."""
    pairs = list(zip(actual, expected))
    scales = [max(float(np.max(np.abs(e))), 1e-12) for e in expected]
    return {
        "max_relative_error": max(float(np.max(np.abs(a - e))) / s for (a, e), s in zip(pairs, scales)),
        "mean_relative_error": max(float(np.mean(np.abs(a - e))) / s for (a, e), s in zip(pairs, scales)),
    }


def compare(model, path, inputs):
    """How closely the exported file agrees with `model` on `inputs` (model inputs).

    Returns a dict with `max_relative_error` (the largest absolute difference
    of an output over its largest absolute Keras value), `mean_relative_error`
    (the mean absolute difference over the same largest absolute value, so
    never above the max; the larger of the outputs') and, by kind of
    model, `top1_agreement` (classifiers: the fraction of images whose top
    class is the same) or `pixel_agreement` (segmenters: the fraction of
    pixels with the same class).
    """
    expected = _keras_outputs(model, inputs)
    actual = run_exported(path, inputs)
    if len(actual) != len(expected):
        raise ValueError(f"{path} has {len(actual)} outputs, the model {len(expected)}.")
    shapes = [e.shape for e in expected]
    if len(set(shapes)) == len(shapes):  # distinct shapes: pair by shape, whatever the names
        actual = sorted(actual, key=lambda a: shapes.index(a.shape))
    report = relative_errors(actual, expected)
    kind = _kind(model)
    if kind == "classifier":
        report["top1_agreement"] = float(np.mean(actual[0].argmax(-1) == expected[0].argmax(-1)))
    elif kind == "segmenter":
        report["pixel_agreement"] = float(np.mean(actual[0].argmax(-1) == expected[0].argmax(-1)))
    return report
