"""`MobileNetImageClassifier`: a backbone plus its generation's reference head."""

import inspect

import keras
import keras_hub
import numpy as np
from keras_hub.models import Task

from mnet_backbones.backbone import MobileNetBackbone, load_preset
from mnet_backbones.layers import get_activation
from mnet_backbones.validation import check_image_batch, check_positive_int


def restore_compile(task, config):
    """Replays on `task` the `compile()` saved in a `.keras` file (`compile_from_config`), optimizer state included.

    keras-hub's tasks have their own `compile()` signatures, so Keras does
    not replay a saved compile by itself. The saved arguments are those of
    `keras.Model.compile`; they go back through the task's own `compile`:
    - one naming an object detector's two losses (`box_loss`,
      `classification_loss`, as keras-hub's `ObjectDetector.compile` does)
      gets them back from the saved `{"bbox_regression", "cls_logits"}`
      loss, and its own default metrics;
    - one without a `loss` argument (the task's loss is its own
      `compute_loss`) gets no loss, loss weights or metrics;
    - any other gets them all.

    Example:
    ```python
    class MyTask(keras_hub.models.ImageClassifier):
        def compile_from_config(self, config):
            restore_compile(self, config)
    ```
    """
    arguments = dict(keras.saving.deserialize_keras_object(config))
    parameters = inspect.signature(task.compile).parameters
    if "box_loss" in parameters:
        losses = arguments.pop("loss", None) or {}
        arguments.pop("metrics", None)
        arguments.update(
            optimizer=arguments.pop("optimizer", "auto"),
            box_loss=losses.get("bbox_regression", "auto"),
            classification_loss=losses.get("cls_logits", "auto"),
        )
    elif "loss" not in parameters:
        for key in ("loss", "loss_weights", "metrics", "weighted_metrics"):
            arguments.pop(key, None)
    task.compile(**arguments)
    if task.built:
        task.optimizer.build(task.trainable_variables)


@keras.saving.register_keras_serializable(package="mnet_backbones")
class MobileNetImageConverter(keras_hub.layers.ImageConverter):
    """Resizes and normalises images as a preset's weights expect.

    A keras-hub `ImageConverter` with one more argument, `crop_fraction`:
    before resizing, keep the central square whose side is that fraction of
    the short side. With `crop_fraction = crop / resize` this is torchvision's
    evaluation transform (resize the short side to `resize`, centre-crop
    `crop`) done in the other order, crop first; 1.0 (default) keeps the
    largest central region, keras-hub's own behaviour.

    Example:
    ```python
    import numpy as np
    from mnet_backbones import MobileNetImageConverter

    converter = MobileNetImageConverter(image_size=(224, 224), crop_fraction=224 / 256)
    converter(np.zeros((1, 300, 400, 3))).shape  # (1, 224, 224, 3): from the central 262 x 262
    ```
    """

    backbone_cls = MobileNetBackbone

    def __init__(self, *args, crop_fraction=1.0, **kwargs):
        super().__init__(*args, **kwargs)
        if isinstance(crop_fraction, bool) or not isinstance(crop_fraction, (int, float)) or not 0 < crop_fraction <= 1:
            raise ValueError(f"crop_fraction must be a number in (0, 1]. Received: {crop_fraction!r}.")
        self.crop_fraction = float(crop_fraction)

    def _central_crop(self, images):
        height, width = images.shape[-3], images.shape[-2]
        if isinstance(height, int) and isinstance(width, int):
            side = int(round(min(height, width) * self.crop_fraction))
            # torchvision's CenterCrop rounds the offsets: int(round((size - crop) / 2)).
            top, left = int(round((height - side) / 2)), int(round((width - side) / 2))
            return images[..., top : top + side, left : left + side, :]
        # Sizes known only at run time: a tf.data pipeline. Compute with
        # TensorFlow whatever the Keras backend, as Keras' own preprocessing
        # layers (here the resizing layer's dynamic backend) do.
        backend = self.resizing.backend
        backend.set_backend("tensorflow")
        try:
            np_ops = backend.numpy
            shape = backend.core.shape(images)
            height, width = shape[-3], shape[-2]
            short = backend.cast(np_ops.minimum(height, width), "float32")
            side = backend.cast(np_ops.round(short * self.crop_fraction), "int32")
            top = backend.cast(np_ops.round(backend.cast(height - side, "float32") / 2), "int32")
            left = backend.cast(np_ops.round(backend.cast(width - side, "float32") / 2), "int32")
            return images[..., top : top + side, left : left + side, :]
        finally:
            backend.reset()

    # keras-hub's converter canonicalises the inputs (lists, numpy) and runs
    # under the backend tf.data needs in `_call_python`; the crop goes there,
    # before its resize.
    def _call_python(self, inputs):
        if self.crop_fraction < 1.0 and self.image_size is not None and not isinstance(inputs, dict):
            if isinstance(inputs, (list, tuple)):
                try:
                    inputs = np.asarray(inputs)
                except ValueError:  # images of different sizes: one at a time
                    return [self._call_python(x) for x in inputs]
            if isinstance(inputs, np.ndarray):
                inputs = keras.ops.convert_to_tensor(inputs)
            inputs = self._central_crop(inputs)
        return super()._call_python(inputs)

    def get_config(self):
        config = super().get_config()
        if self.crop_fraction != 1.0:  # configs of the other presets stay as they were
            config["crop_fraction"] = self.crop_fraction
        return config


@keras.saving.register_keras_serializable(package="mnet_backbones")
class MobileNetImageClassifierPreprocessor(keras_hub.models.ImageClassifierPreprocessor):
    """Applies a `MobileNetImageConverter` before classification."""

    backbone_cls = MobileNetBackbone
    image_converter_cls = MobileNetImageConverter


@keras.saving.register_keras_serializable(package="mnet_backbones")
class MobileNetImageClassifier(keras_hub.models.ImageClassifier):
    """A MobileNet classifier with the reference head of its generation.

    Global average pooling, then:
    - V1 and V2: dropout and a dense layer to the classes;
    - V3: a dense layer (1280 or 1024 units, with bias), the model's
      activation, dropout, the dense classes layer;
    - V4: a dense layer (1280 units, no bias), BatchNorm, the activation,
      dropout, the dense classes layer.

    The output is logits. With 1000 classes the trainable parameter count
    equals the reference ImageNet model's.

    Args:
        backbone: a `MobileNetBackbone`.
        num_classes: number of classes.
        preprocessor: optional `MobileNetImageClassifierPreprocessor`; presets
            attach one that resizes and normalises raw images.
        dropout: dropout rate before the classes layer.
        activation: activation of the outputs (None: logits).
        head_dtype: dtype policy of the head (default: the backbone's).

    Example:
    ```python
    import numpy as np
    import mnet_backbones

    classifier = mnet_backbones.MobileNetImageClassifier.from_preset(
        "mobilenetv3_small_100", num_classes=10, load_weights=False
    )
    logits = classifier.predict(np.random.randint(0, 256, (2, 224, 224, 3)))
    logits.shape  # (2, 10)
    ```
    """

    backbone_cls = MobileNetBackbone
    preprocessor_cls = MobileNetImageClassifierPreprocessor

    def __init__(
        self,
        backbone,
        num_classes,
        preprocessor=None,
        dropout=0.0,
        activation=None,
        head_dtype=None,
        **kwargs,
    ):
        if not isinstance(backbone, MobileNetBackbone):
            raise TypeError(
                f"backbone must be a mnet_backbones.MobileNetBackbone. Received: {type(backbone).__name__}."
            )
        num_classes = check_positive_int("num_classes", num_classes)
        head_dtype = head_dtype or backbone.dtype_policy
        arch = backbone.architecture_spec

        # === Layers ===
        self.backbone = backbone
        self.preprocessor = preprocessor
        self.pooler = keras.layers.GlobalAveragePooling2D(dtype=head_dtype, name="pooler")
        self.head_dense = None
        self.head_norm = None
        if arch.head_filters:
            self.head_dense = keras.layers.Dense(
                arch.head_filters, use_bias=arch.head_bias, dtype=head_dtype, name="head_dense"
            )
            if arch.head_norm:
                self.head_norm = keras.layers.BatchNormalization(
                    epsilon=backbone.bn_epsilon,
                    momentum=backbone.bn_momentum,
                    dtype=head_dtype,
                    name="head_norm",
                )
        self.output_dropout = keras.layers.Dropout(dropout, dtype=head_dtype, name="output_dropout")
        self.output_dense = keras.layers.Dense(num_classes, activation=activation, dtype=head_dtype, name="predictions")

        # === Functional model ===
        inputs = self.backbone.input
        x = self.pooler(self.backbone(inputs))
        if self.head_dense is not None:
            x = self.head_dense(x)
            if self.head_norm is not None:
                x = self.head_norm(x)
            # Keras' own relu, relu6 and gelu are the same functions as ours;
            # hard-swish is ours, in the backbone's form (see `layers.HARD_SWISH_FORMS`).
            head_activation = arch.activation
            if head_activation == "hard_swish":
                head_activation = get_activation(head_activation, backbone.hard_swish_form)
            x = keras.layers.Activation(head_activation, dtype=head_dtype, name="head_activation")(x)
        outputs = self.output_dense(self.output_dropout(x))
        Task.__init__(self, inputs=inputs, outputs=outputs, **kwargs)

        # === Config ===
        self.num_classes = num_classes
        self.dropout = dropout
        self.activation = activation
        self.head_dtype = head_dtype
        self.pooling = "avg"

    def get_config(self):
        config = Task.get_config(self)
        config.update(
            num_classes=self.num_classes,
            dropout=self.dropout,
            activation=self.activation,
            head_dtype=(
                None
                if self.head_dtype is None
                else keras.dtype_policies.serialize(keras.dtype_policies.get(self.head_dtype))
            ),
        )
        return config

    def predict(self, x, *args, **kwargs):
        """keras-hub's `predict`; an empty batch or images with no pixels raise a ValueError first."""
        check_image_batch(self, x)
        return super().predict(x, *args, **kwargs)

    def compile_from_config(self, config):
        restore_compile(self, config)

    @classmethod
    def from_preset(cls, preset, load_weights=True, **kwargs):
        """Build a classifier from a built-in preset name or a preset folder.

        Args:
            preset: a built-in name, a keras-hub preset folder, a timm
                snapshot folder or `hf://timm/<name>.<tag>` handle (converted on
                load, with timm's head and normalisation), a torchvision
                ImageNet classifier checkpoint (a folder with `config.json` +
                `model.pth`, or a `.pth` file named after its builder such as
                `mobilenet_v3_small-047dcff4.pth`; converted on load with
                torchvision's head and eval transform; needs torch), or
                another handle.
            load_weights: load pretrained weights: the ImageNet head too,
                unless `num_classes` is given (then a new, random head). For a
                built-in name they come from the cache, or are downloaded and
                converted once; `False` gives random weights offline.
            **kwargs: e.g. `num_classes`, `dropout`.

        The preset goes to the checkpoint source that takes it
        (`mnet_backbones.sources`), else to keras-hub's own loader.
        """
        return load_preset(cls, preset, load_weights, **kwargs)
