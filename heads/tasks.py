"""The two task bases every head in `heads` derives from, for keras-hub's generic loaders.

What every task shares is written once, in `PyramidTask`, mixed into both
bases: the subclass registration below, `from_preset` (a registered
checkpoint source, else a `save_to_preset` folder), `compile_from_config`
(`mnet_backbones.restore_compile`) and `fit`'s check of our datasets' labels.

keras-hub's `ObjectDetector.from_preset(folder)` and
`ImageSegmenter.from_preset(folder)` read the backbone class saved in the
folder and look for a task class registered with that `backbone_cls`. The
heads take any feature pyramid, so their own classes declare none; these
bases declare `MobileNetBackbone`, so a detector or segmenter saved on one of
our backbones is found, and keras-hub then loads the exact class its
`task.json` names (any subclass of the base). A preset folder without a saved
task (a bare backbone) has no head to load: the base says which function
builds one.
"""

import sys

import keras
import numpy as np
from keras_hub.models import ImageSegmenter, ObjectDetector

from mnet_backbones import MobileNetBackbone, find_source, restore_compile
from mnet_backbones.keras_hub_internals import load_task_preset
from mnet_backbones.validation import check_image_batch


def _refuse(task_name, builders):
    raise ValueError(
        f"This preset holds no {task_name} (no task.json saved by save_to_preset): only a backbone. "
        f"Build a head on it with {builders}, e.g. heads.create_ssdlite(preset, num_classes=...)."
    )


def _image_arrays(task, x):
    """`x` as one array if it is images in memory; None for datasets and generators.

    Raises a ValueError, before Keras sees the input, for what Keras would
    misread: one image without a batch axis (Keras would take its rows for a
    batch), an empty batch, a channel count or an image size the task does
    not take. The size is checked only where the images go into the model
    as they are: not when the task takes any size, nor when a preprocessor
    (which may resize them) runs first. A list of images of different sizes
    comes back as the list.
    """
    if isinstance(x, (list, tuple)):
        images = [np.asarray(image) for image in x]
        if not images:
            raise ValueError(f"{type(task).__name__}.predict got an empty list of images.")
        if len({image.shape for image in images}) > 1:
            for image in images:
                _check_image(task, image[None], check_size=False)
            return images
        x = np.stack(images)
    elif not hasattr(x, "shape") or not hasattr(x, "dtype"):
        return None  # a tf.data.Dataset, a generator, a PyDataset: Keras checks those
    check_image_batch(task, x)  # one image without a batch axis, an empty batch, no pixels
    _check_image(task, x)
    return x


def _check_image(task, batch, check_size=True):
    shape = tuple(batch.shape)
    if len(shape) != 4 or shape[-1] != 3:
        raise ValueError(
            f"{type(task).__name__} takes RGB images (batch, height, width, 3); got shape {shape}. "
            "Convert gray or RGBA images to RGB first (e.g. PIL's image.convert('RGB'))."
        )
    if shape[1] == 0 or shape[2] == 0:
        raise ValueError(f"{type(task).__name__} got an image with no pixels (shape {shape}).")
    if not check_size or task.image_size is None or task.preprocessor is not None:
        return
    height, width = task.image_size
    if (shape[1], shape[2]) != (height, width):
        raise ValueError(
            f"{type(task).__name__} was built for {height}x{width} images; got {shape[1]}x{shape[2]} "
            f"(shape {shape}). Resize them first (keras.layers.Resizing({height}, {width})), or build the "
            "task with that image_size."
        )


class PyramidTask:
    """What every task in `heads` shares, written once: subclass registration, `from_preset`, `compile_from_config`, `fit`.

    Mixed into the two bases (`PyramidObjectDetector`, `PyramidImageSegmenter`)
    before keras-hub's task class. A base sets `task_kind` and `builders`
    (what `_refuse` names when a bare backbone preset is loaded as the base).
    """

    task_kind = None
    builders = None

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        # Only the bases answer keras-hub's lookup by backbone class (several answers
        # would be picked among at random); the heads themselves take any pyramid.
        if "backbone_cls" not in cls.__dict__:
            cls.backbone_cls = None

    def __init__(self, *args, **kwargs):
        if "builders" in type(self).__dict__:
            _refuse(type(self).task_kind, type(self).builders)
        super().__init__(*args, **kwargs)

    @classmethod
    def from_preset(cls, preset, load_weights=True, **kwargs):
        """Loads a task from a checkpoint source (`mnet_backbones.sources`) or a `save_to_preset` folder.

        A preset a registered checkpoint source takes for this class's kind
        (a torchvision SSDLite320, DeepLabV3 or LR-ASPP checkpoint or built-in
        name, see `heads.sources`) is converted on load; anything else is a
        task saved with `save_to_preset` (a folder or keras-hub handle),
        loaded as the class its `task.json` names. `Task.from_preset` would
        look for a task subclass registered for the saved backbone's class;
        the heads take any backbone, so the saved task config is read directly.

        Args:
            preset: a checkpoint source's preset, or a `save_to_preset` folder or handle.
            load_weights: False builds the model without reading (or
                downloading) any weights.
            **kwargs: constructor arguments of the class (for torchvision
                checkpoints, e.g. `image_size`), or keras-hub's loader's.

        Example:
        ```python
        detector.save_to_preset("my_ssdlite")
        detector = heads.SSDLiteObjectDetector.from_preset("my_ssdlite")
        segmenter = heads.LRASPPSegmenter.from_preset("lraspp_mobilenetv3_large_voc")
        ```
        """
        source = find_source(preset, cls)
        if source is not None:
            return source.load(cls, preset, load_weights=load_weights, **kwargs)
        return load_task_preset(cls, preset, load_weights, **kwargs)

    def compile_from_config(self, config):
        """Replays a saved compile through this task's own `compile` (`mnet_backbones.restore_compile`)."""
        restore_compile(self, config)

    def fit(self, x=None, *args, **kwargs):
        """`keras.Model.fit`; a dataset from our loaders with labels beyond `num_classes` is refused.

        A `load_coco` dataset with more categories than `num_classes` (a
        label beyond them would otherwise train as "no object"), a
        `load_segmentation` dataset with a mask value beyond the classes
        (255 is "ignore"): checked however the dataset was transformed since
        (`take`, `map`, `shuffle`, `repeat`, ...), the error naming the file
        (`heads.datasets.check_classes`).
        """
        _check_dataset_classes(x, self.num_classes)
        return super().fit(x, *args, **kwargs)


@keras.saving.register_keras_serializable(package="heads")
class PyramidObjectDetector(PyramidTask, ObjectDetector):
    """Base of the detectors in `heads` (see the module docstring); not built itself."""

    backbone_cls = MobileNetBackbone
    task_kind = "detector"
    builders = "heads.create_ssdlite()"

    def predict(self, x, *args, **kwargs):
        """`keras.Model.predict`, with images in memory checked first.

        A list of images of different sizes is resized to the detector's
        `image_size` and the boxes come back in each image's own pixels.
        """
        images = _image_arrays(self, x)
        if not isinstance(images, list):
            return super().predict(x if images is None else images, *args, **kwargs)
        height, width = self.image_size
        resized = np.stack(
            [keras.ops.convert_to_numpy(keras.ops.image.resize(image, (height, width))) for image in images]
        )
        detections = super().predict(resized, *args, **kwargs)
        return self._boxes_to_original_sizes(detections, [image.shape[:2] for image in images])

    def _boxes_to_original_sizes(self, detections, sizes):
        height, width = self.image_size
        convert = keras.utils.bounding_boxes.convert_format
        format = self.bounding_box_format
        boxes = keras.ops.convert_to_numpy(
            convert(detections["boxes"], source=format, target="xyxy", height=height, width=width)
        )
        out = boxes.copy()
        for i, (image_height, image_width) in enumerate(sizes):
            found = int(detections["num_detections"][i])
            scale = np.array([image_width / width, image_height / height] * 2, boxes.dtype)
            out[i, :found] = convert(
                boxes[i, :found] * scale, source="xyxy", target=format, height=image_height, width=image_width
            )
        return {**detections, "boxes": out}


@keras.saving.register_keras_serializable(package="heads")
class PyramidImageSegmenter(PyramidTask, ImageSegmenter):
    """Base of the segmenters in `heads` (see the module docstring); not built itself."""

    backbone_cls = MobileNetBackbone
    task_kind = "segmenter"
    builders = "heads.create_deeplabv3plus()"

    def evaluate(self, x=None, *args, **kwargs):
        """keras-hub's `evaluate`, with a `load_segmentation` dataset's masks checked as `fit` does."""
        _check_dataset_classes(x, self.num_classes)
        return super().evaluate(x, *args, **kwargs)

    def predict(self, x, *args, **kwargs):
        """keras-hub's `predict` (an attached preprocessor runs first), with images in memory checked first.

        A list of images of different sizes is predicted one image at a time,
        into a list of logits, where the model takes any size or a
        preprocessor runs first; a segmenter of a fixed `image_size` refuses it.
        """
        images = _image_arrays(self, x)
        if not isinstance(images, list):
            return super().predict(x if images is None else images, *args, **kwargs)
        if self.image_size is not None and self.preprocessor is None:
            raise ValueError(
                f"{type(self).__name__}.predict got images of different sizes "
                f"{sorted({image.shape[:2] for image in images})}; it was built for "
                f"{self.image_size[0]}x{self.image_size[1]}. Resize them (and the masks you compare with) first."
            )
        return [super(PyramidImageSegmenter, self).predict(image[None], *args, **kwargs)[0] for image in images]


def _check_dataset_classes(x, num_classes):
    """`heads.datasets.check_classes` on `x` when it can come from our loaders.

    A dataset from `load_coco` or `load_segmentation` exists only once
    `heads.datasets` (and with it TensorFlow) is imported: otherwise nothing
    is imported here, and nothing checked.
    """
    datasets = sys.modules.get("heads.datasets")
    if x is not None and datasets is not None:
        datasets.check_classes(x, num_classes)
