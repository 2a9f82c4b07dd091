"""What DeepLabV3 and LR-ASPP share: named backbone taps, a size-following resize, the task plumbing.

torchvision's segmenters read two maps of a MobileNetV3 backbone by name
(the last conv's output, "high", and the first stride-8 block's, "low") and
take images of any size. Here a head names its maps the same way, through
`backbone.feature_taps` (falling back to `pyramid_outputs`, so `"P3"` /
`"P5"` serve on any keras-hub feature pyramid), and `ResizeToMatch` sizes a
map like another, so one model serves every input size; with a fixed
`image_size` the sizes are constants of the graph (as the LiteRT exporter
needs them).
"""

import keras
from keras import ops

from heads import torchvision_segmentation
from heads.deeplab import segmentation_metrics
from heads.losses import IGNORE_LABEL, MaskedSparseCrossentropy
from heads.pyramid import resolve_backbone, split_task_kwargs
from heads.tasks import PyramidImageSegmenter
from mnet_backbones.keras_hub_internals import load_task_preset
from mnet_backbones.layers import map_size
from mnet_backbones.validation import check_image_size


def available_taps(backbone):
    """`{name: symbolic map}`: the backbone's `feature_taps` where it has them, and its pyramid levels.

    Example:
    ```python
    sorted(available_taps(backbone))  # [..., "P5", "blocks.2.0", ..., "final", "stem"]
    ```
    """
    if not isinstance(backbone, keras.Model) or not hasattr(backbone, "pyramid_outputs"):
        raise TypeError(
            "`backbone` must be a keras_hub FeaturePyramidBackbone (a model with `pyramid_outputs`), "
            f"got {type(backbone).__name__}."
        )
    taps = dict(backbone.pyramid_outputs)
    taps.update(getattr(backbone, "feature_taps", None) or {})
    return taps


def tap_model(backbone, names, head):
    """A model from the backbone's inputs to `{name: map}` for the taps a head reads.

    Raises a ValueError naming the missing tap and those the backbone has.

    Example:
    ```python
    features = tap_model(backbone, ("blocks.2.0", "final"), "LR-ASPP")(images)
    ```
    """
    taps = available_taps(backbone)
    for name in names:
        if name not in taps:
            raise ValueError(
                f"{head} reads the backbone's map {name!r}, which this backbone does not have. "
                f"Available: {sorted(taps)}."
            )
    return keras.Model(backbone.inputs, {name: taps[name] for name in names}, name="taps")


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


def create_segmenter(cls, backbone, num_classes, image_size, kwargs):
    """`cls` on a backbone (an instance, or a preset loaded at output stride 16), or a pretrained one by name.

    A built-in torchvision name (`torchvision_segmentation.PRESETS`) loads
    that checkpoint (`num_classes` None or its own); otherwise `kwargs` are
    split between the backbone's `from_preset` and `cls`.

    Example:
    ```python
    create_segmenter(heads.LRASPPSegmenter, "lraspp_mobilenetv3_large_voc", None, 520, {})
    ```
    """
    if isinstance(backbone, str) and backbone in torchvision_segmentation.PRESETS:
        row = torchvision_segmentation.PRESETS[backbone]
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


def _source_rows(in_size, out_size, dtype):
    """Per output row: the two input rows it reads and the second one's weight (half-pixel centres)."""
    in_size = ops.cast(in_size, "int32")
    scale = ops.cast(in_size, "float32") / ops.cast(out_size, "float32")
    # (i + 0.5) * scale - 0.5, clamped at the first row, as PyTorch and TensorFlow do.
    centres = ops.maximum((ops.cast(ops.arange(out_size), "float32") + 0.5) * scale - 0.5, 0.0)
    low = ops.floor(centres)
    weight = ops.cast(centres - low, dtype)
    low = ops.minimum(ops.cast(low, "int32"), in_size - 1)
    high = ops.minimum(low + 1, in_size - 1)
    return low, high, weight


def resize_bilinear(images, height, width):
    """Images (B, H, W, C) resized bilinearly to `height` x `width`, which may be tensors read at run time.

    Half-pixel centres, no antialiasing: the same values as
    `keras.ops.image.resize(images, (height, width), interpolation="bilinear")`,
    built from gathers so that a TensorFlow graph with unknown sizes can run it.

    Example:
    ```python
    resize_bilinear(keras.ops.ones((1, 11, 13, 5)), 21, 25).shape  # (1, 21, 25, 5)
    ```
    """
    dtype = images.dtype
    shape = ops.shape(images)
    in_height, in_width = shape[1], shape[2]
    top, bottom, row_weight = _source_rows(in_height, height, dtype)
    rows = ops.take(images, top, axis=1)
    rows = rows + (ops.take(images, bottom, axis=1) - rows) * ops.reshape(row_weight, (1, -1, 1, 1))
    left, right, column_weight = _source_rows(in_width, width, dtype)
    columns = ops.take(rows, left, axis=2)
    return columns + (ops.take(rows, right, axis=2) - columns) * ops.reshape(column_weight, (1, 1, -1, 1))


@keras.saving.register_keras_serializable(package="heads")
class ResizeToMatch(keras.layers.Layer):
    """Resizes a map bilinearly to the height and width of a reference map.

    Half-pixel centres, no antialiasing: PyTorch's
    `F.interpolate(mode="bilinear", align_corners=False)`, which
    torchvision's segmenters use for every resize. The reference's size is a
    constant where the graph knows it (one resize op, as exported files
    have it), else read at run time (`resize_bilinear`).

    Example:
    ```python
    ResizeToMatch()(keras.ops.ones((1, 11, 13, 5)), keras.ops.ones((1, 21, 25, 3))).shape  # (1, 21, 25, 5)
    ```
    """

    def call(self, inputs, reference):
        _, height, width = map_size(reference)
        if isinstance(height, int) and isinstance(width, int):
            # Sizes known when traced (a fixed image_size, an export): one resize op.
            return ops.image.resize(inputs, (height, width), interpolation="bilinear")
        # `ops.image.resize` tests its size with Python comparisons, which a
        # size read at run time in a TensorFlow graph cannot answer.
        return resize_bilinear(inputs, height, width)

    def compute_output_shape(self, inputs_shape, reference_shape):
        return (inputs_shape[0], reference_shape[1], reference_shape[2], inputs_shape[-1])


class TapSegmenter(PyramidImageSegmenter):
    """The plumbing of the torchvision-style segmenters: compile defaults, presets, class names.

    Not a model by itself: `DeepLabV3Segmenter` and `LRASPPSegmenter`
    build the graph. `from_preset` takes a keras-hub preset saved with
    `save_to_preset`, a built-in torchvision name (e.g.
    `"lraspp_mobilenetv3_large_voc"`), a torchvision `.pth` state_dict or a
    folder holding one (`model.pth`, with torchvision's `config.json`).
    """

    preprocessor_cls = None
    # The torchvision builder whose checkpoints this class loads (set by each subclass).
    torchvision_builder = None

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.torchvision_builder is not None:
            torchvision_segmentation.SEGMENTER_CLASSES[cls.torchvision_builder] = cls

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

    def compile_from_config(self, config):
        # compile() has its own signature, so Keras does not restore a saved
        # compile by itself; do it here, optimizer state included.
        self.compile(**keras.saving.deserialize_keras_object(config))
        if self.built:
            self.optimizer.build(self.trainable_variables)

    @classmethod
    def from_preset(cls, preset, load_weights=True, **kwargs):
        """Loads a saved segmenter, a built-in torchvision checkpoint, or a torchvision `.pth`.

        Args:
            preset: a `save_to_preset` folder or keras-hub handle; a built-in
                name (`heads.torchvision_segmentation.PRESETS`), downloaded
                once and cached; a torchvision state_dict `.pth` file, or a
                folder with `model.pth` (and optionally torchvision's
                `config.json`, whose `builder` must be this class's).
            load_weights: False builds the model without reading (or
                downloading) any weights.
            **kwargs: for torchvision checkpoints, `image_size` (None: any
                size) and other constructor arguments of the class.

        Example:
        ```python
        segmenter = heads.LRASPPSegmenter.from_preset("lraspp_mobilenetv3_large_voc")
        segmenter.class_names[15]  # "person"
        ```
        """
        if torchvision_segmentation.is_torchvision_source(preset):
            # On the base class the checkpoint decides: DeepLabV3 or LR-ASPP.
            task_cls = None if cls is TapSegmenter else cls
            return torchvision_segmentation.load_segmenter(task_cls, preset, load_weights=load_weights, **kwargs)
        return load_task_preset(cls, preset, load_weights, **kwargs)
