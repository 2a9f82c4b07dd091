"""What every segmenter shares: the compile defaults, the parts set before the graph, their config.

`Segmenter` is the base of `DeepLabV3PlusSegmenter`, `DeepLabV3Segmenter`
and `LRASPPSegmenter`: images in 0..255 normalised inside, logits at the
image size, compiled by default with `heads.losses.MaskedSparseCrossentropy`
and mean IoU (both ignoring label 255).

`TapSegmenter` adds what torchvision's segmenters (DeepLabV3, LR-ASPP) share:
two backbone maps read by name (`heads.pyramid.tap_model`), images of any
size, class names, and loading torchvision's checkpoints.
"""

import keras

from heads.configs import config_entries
from heads.losses import IGNORE_LABEL, MaskedSparseCrossentropy
from heads.preprocessing import pixel_normalizer
from heads.pyramid import resolve_backbone, split_task_kwargs, tap_model
from heads.segmentation import torchvision
from heads.tasks import PyramidImageSegmenter
from mnet_backbones.validation import check_image_size


def segmentation_metrics(num_classes):
    """The default metrics: mean IoU of the logits' argmax, ignoring label 255.

    Example:
    ```python
    (mean_iou,) = segmentation_metrics(4)
    ```
    """
    return [keras.metrics.MeanIoU(num_classes, sparse_y_pred=False, ignore_class=IGNORE_LABEL, name="mean_iou")]


def check_image_size_or_none(image_size):
    """None (any size), or `check_image_size`'s `(height, width)`."""
    return None if image_size is None else check_image_size(image_size)


def check_class_names(class_names, num_classes):
    """None, or a tuple of `num_classes` strings."""
    if class_names is None:
        return None
    if isinstance(class_names, str) or not all(isinstance(name, str) for name in class_names):
        raise TypeError(f"`class_names` must be a list of strings, got {class_names!r}.")
    class_names = tuple(class_names)
    if len(class_names) != num_classes:
        raise ValueError(f"`class_names` has {len(class_names)} names for {num_classes} classes.")
    return class_names


class Segmenter(PyramidImageSegmenter):
    """The base of the segmenters: compile defaults, and the parts and config they all hold.

    Not a model by itself: each subclass builds its graph in `__init__`,
    after `_set_up` (the backbone, the preprocessor, the classes, the image
    size and the input normalisation).
    """

    preprocessor_cls = None

    def _set_up(self, backbone, num_classes, image_size, pixel_mean, pixel_variance, preprocessor, dtype):
        """Sets the parts and settings every segmenter holds; returns the dtype of the head's layers."""
        head_dtype = dtype or backbone.dtype_policy
        self.backbone = backbone
        self.preprocessor = preprocessor
        self.num_classes = num_classes  # before the functional init, whose compile() reads it
        self.image_size = image_size
        self.normalizer = pixel_normalizer(pixel_mean, pixel_variance, head_dtype)
        self.pixel_mean = tuple(float(v) for v in pixel_mean)
        self.pixel_variance = tuple(float(v) for v in pixel_variance)
        return head_dtype

    def compile(self, optimizer="auto", loss="auto", *, metrics="auto", **kwargs):
        """Configures training; "auto" picks the segmentation defaults.

        Defaults: `Adam(1e-3)`; `heads.losses.MaskedSparseCrossentropy()`
        (softmax cross-entropy averaged over the pixels not labelled 255,
        counted over the global batch on several devices);
        `MeanIoU(num_classes, ignore_class=255)` on the argmax of the logits.
        """
        if optimizer == "auto":
            optimizer = keras.optimizers.Adam(1e-3)
        if loss == "auto":
            loss = MaskedSparseCrossentropy(ignore_class=IGNORE_LABEL)
        if metrics == "auto":
            metrics = segmentation_metrics(self.num_classes)
        # Skip ImageSegmenter.compile: its defaults are one-hot (categorical) ones.
        keras.Model.compile(self, optimizer=optimizer, loss=loss, metrics=metrics, **kwargs)

    def get_config(self):
        names = ("num_classes", "image_size", "pixel_mean", "pixel_variance")
        return {**super().get_config(), **config_entries(self, *names)}


class TapSegmenter(Segmenter):
    """The plumbing of the torchvision-style segmenters: named taps, any size, presets, class names.

    Not a model by itself: `DeepLabV3Segmenter` and `LRASPPSegmenter`
    build the graph. `from_preset` takes a keras-hub preset saved with
    `save_to_preset`, a built-in torchvision name (e.g.
    `"lraspp_mobilenetv3_large_voc"`), a torchvision `.pth` state_dict or a
    folder holding one (`model.pth`, with torchvision's `config.json`).
    """

    # The torchvision builder whose checkpoints this class loads (set by each subclass).
    torchvision_builder = None

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.torchvision_builder is not None:
            torchvision.SEGMENTER_CLASSES[cls.torchvision_builder] = cls

    def _read_taps(self, head, taps, high_feature, low_feature, bn_epsilon, class_names):
        """After `_set_up`: the taps `head` reads, and the settings both heads hold.

        Returns the images input (of `image_size`, or of any size) and
        `{tap: map}` of the normalised images.
        """
        self.class_names = check_class_names(class_names, self.num_classes)
        self.feature_extractor = tap_model(self.backbone, taps, head)
        self.high_feature = high_feature
        self.low_feature = low_feature
        self.bn_epsilon = float(bn_epsilon)
        inputs = keras.Input(shape=(self.image_size or (None, None)) + (3,), name="images")
        return inputs, self.feature_extractor(self.normalizer(inputs))

    def get_config(self):
        names = ("high_feature", "low_feature", "bn_epsilon", "class_names")
        return {**super().get_config(), **config_entries(self, *names)}


def create_segmenter(cls, backbone, num_classes, image_size, kwargs):
    """`cls` on a backbone (an instance, or a preset loaded at output stride 16), or a pretrained one by name.

    A built-in torchvision name (`heads.segmentation.torchvision.PRESETS`)
    loads that checkpoint (`num_classes` None or its own); otherwise `kwargs`
    are split between the backbone's `from_preset` and `cls`.

    Example:
    ```python
    create_segmenter(heads.LRASPPSegmenter, "lraspp_mobilenetv3_large_voc", None, 520, {})
    ```
    """
    if isinstance(backbone, str) and backbone in torchvision.PRESETS:
        row = torchvision.PRESETS[backbone]
        if num_classes is not None and num_classes != len(row["class_names"]):
            raise ValueError(
                f"{backbone!r} predicts {len(row['class_names'])} classes; got num_classes={num_classes}. "
                "Build a new head on a backbone preset to train other classes."
            )
        return cls.from_preset(backbone, image_size=image_size, **kwargs)
    if num_classes is None:
        raise ValueError("`num_classes` is required unless `backbone` is a pretrained segmenter's name.")
    task_kwargs, backbone_kwargs = split_task_kwargs(cls, kwargs)
    backbone = resolve_backbone(backbone, backbone_kwargs, output_stride=16)
    return cls(backbone, num_classes=num_classes, image_size=image_size, **task_kwargs)
