"""`MobileNetBackbone`: any MobileNet V1-V4 as a keras-hub feature pyramid."""

import os

import keras
import keras_hub

from mnet_backbones import architectures, files, sources, weights
from mnet_backbones.builder import build_features, check_output_stride
from mnet_backbones.layers import check_padding
from mnet_backbones.presets import check_local_preset, check_preset_name, is_builtin_placeholder, is_builtin_preset
from mnet_backbones.validation import check_image_batch, check_image_shape, check_pixels


def resolve_architecture(architecture):
    """The `Architecture` named `architecture`, with a pointer to `from_preset` for a preset name."""
    if isinstance(architecture, str) and architecture not in architectures.ARCHITECTURES:
        if is_builtin_preset(architecture):
            raise ValueError(
                f"{architecture!r} is a preset name, not an architecture: use "
                f"MobileNetBackbone.from_preset({architecture!r}) (add load_weights=False for "
                "random weights). MobileNetBackbone(architecture=...) takes one of "
                f"{sorted(architectures.ARCHITECTURES)}."
            )
    return architectures.get_architecture(architecture)


def validate_width_multiplier(width_multiplier):
    if isinstance(width_multiplier, bool) or not isinstance(width_multiplier, (int, float)):
        raise TypeError(f"width_multiplier must be a number. Received: {width_multiplier!r}.")
    if not width_multiplier > 0:
        raise ValueError(f"width_multiplier must be positive. Received: {width_multiplier!r}.")
    return float(width_multiplier)


def load_preset(cls, preset, load_weights=True, **kwargs):
    """`cls.from_preset(preset)` for our backbone and classifier: the preset checked, then its source's load.

    A preset argument no checkpoint source takes (`mnet_backbones.sources`)
    goes to keras-hub's own loader.
    """
    check_preset_name(preset)
    check_local_preset(preset, load_weights)
    source = sources.find_source(preset, cls)
    if source is not None:
        return source.load(cls, preset, load_weights=load_weights, **kwargs)
    return sources.load_with_keras_hub(cls, preset, load_weights=load_weights, **kwargs)


@keras.saving.register_keras_serializable(package="mnet_backbones")
class MobileNetBackbone(keras_hub.models.FeaturePyramidBackbone):
    """MobileNet V1, V2, V3 or V4 as a keras-hub feature-pyramid backbone.

    The model maps images `(batch, height, width, channels)` to the final
    stride-32 feature map that feeds the classifier head.
    `backbone.pyramid_outputs` holds the feature maps `"P2"`, `"P3"`, `"P4"`,
    `"P5"` at strides 4, 8, 16 and 32 (the last block at each stride, where
    timm's `features_only` takes them). Every level has spatial size
    `ceil(size / stride)`, for any input of at least 32 pixels.

    With `output_stride=16` (or 8) the blocks that would go beyond that
    stride keep stride 1 and dilate the depthwise kernels after them instead
    (DeepLab's atrous convolution), so the deepest maps are denser and the
    weights unchanged. The pyramid keeps its four keys, named by nominal
    stride: with 16, `"P5"` has stride 16 like `"P4"`; with 8, `"P4"` and
    `"P5"` have stride 8 like `"P3"`. Attention blocks (V4 hybrid) keep their
    key/value downsampling. The block that gives up its stride keeps the
    dilation before it (timm), or with `dilate_strided_block=True` is
    dilated too (torchvision's MobileNetV3 `dilated=True`).

    `backbone.feature_taps` names more points of the same graph, for heads
    that read other maps than the pyramid's (see `feature_taps`).

    The backbone expects inputs normalised as its weights were trained; a
    `MobileNetImageClassifier` from a preset carries that preprocessing.

    Args:
        architecture: name of an architecture table in
            `mnet_backbones.architectures.ARCHITECTURES`, e.g.
            `"mobilenetv4_conv_small"`.
        width_multiplier: scales every channel count, rounded as the
            reference implementation rounds it.
        padding: `"symmetric"` (timm-trained weights) or `"same"`
            (TensorFlow / keras.applications weights).
        bn_epsilon: BatchNorm epsilon, 1e-5 for timm, 1e-3 for TensorFlow.
        bn_momentum: Keras BatchNorm momentum (PyTorch's 0.1 is Keras' 0.9).
        image_shape: `(height, width, channels)`; `None` sizes accept any size.
        output_stride: 32 (the classifier's), 16 or 8: the stride of the
            deepest map.
        hard_swish_form: how hard-swish is traced, `"fused"` (one LiteRT
            HARD_SWISH operator, fastest in float32) or `"int8"` (a form
            XNNPACK's int8 path runs); the same function either way. The
            exporter builds full-integer files with `"int8"`.
        dilate_strided_block: with `output_stride` 16 or 8, also dilate the
            depthwise kernel of each block whose stride is removed
            (torchvision's convention) instead of only the blocks after it
            (timm's, the default).
        dtype: dtype policy of the layers.

    Example:
    ```python
    import keras, numpy as np
    import mnet_backbones

    backbone = mnet_backbones.Backbone.from_preset(
        "mobilenetv4_conv_small", load_weights=False
    )
    pyramid = keras.Model(backbone.input, backbone.pyramid_outputs)
    features = pyramid(np.zeros((1, 224, 224, 3)))
    {k: tuple(v.shape) for k, v in features.items()}
    # {'P2': (1, 56, 56, 32), 'P3': (1, 28, 28, 64),
    #  'P4': (1, 14, 14, 96), 'P5': (1, 7, 7, 960)}

    # For segmentation: the deepest map at stride 16.
    backbone = mnet_backbones.Backbone.from_preset(
        "mobilenetv4_conv_small", load_weights=False, output_stride=16
    )
    backbone.pyramid_outputs["P5"].shape  # (None, None, None, 960): 14 x 14 at 224
    ```
    """

    def __init__(
        self,
        architecture,
        width_multiplier=1.0,
        padding="symmetric",
        bn_epsilon=1e-5,
        bn_momentum=0.9,
        image_shape=(None, None, 3),
        output_stride=32,
        hard_swish_form="fused",
        dilate_strided_block=False,
        dtype=None,
        **kwargs,
    ):
        arch = resolve_architecture(architecture)
        if not isinstance(dilate_strided_block, bool):
            raise TypeError(f"dilate_strided_block must be True or False. Received: {dilate_strided_block!r}.")
        output_stride = check_output_stride(output_stride)
        width_multiplier = validate_width_multiplier(width_multiplier)
        check_padding(padding)
        image_shape = check_image_shape(image_shape)

        # === Functional model ===
        inputs = keras.layers.Input(shape=image_shape)
        outputs, pyramid, feature_taps = build_features(
            inputs,
            arch,
            width_multiplier=width_multiplier,
            padding=padding,
            bn_epsilon=bn_epsilon,
            bn_momentum=bn_momentum,
            output_stride=output_stride,
            hard_swish_form=hard_swish_form,
            dilate_strided_block=dilate_strided_block,
            dtype=dtype,
        )
        super().__init__(inputs=inputs, outputs=outputs, dtype=dtype, **kwargs)

        # === Config ===
        self.architecture = arch.name
        self.width_multiplier = width_multiplier
        self.padding = padding
        self.bn_epsilon = bn_epsilon
        self.bn_momentum = bn_momentum
        self.image_shape = image_shape
        self.output_stride = output_stride
        self.hard_swish_form = hard_swish_form
        self.dilate_strided_block = dilate_strided_block
        self.pyramid_outputs = pyramid
        self._feature_taps = feature_taps

    @keras_hub.models.FeaturePyramidBackbone.pyramid_outputs.getter
    def pyramid_outputs(self):
        # A plain dict: Keras tracks the stored one, and on JAX a model whose
        # outputs are a tracked dict cannot be jit-compiled.
        return dict(getattr(self, "_pyramid_outputs", {}))

    @property
    def feature_taps(self):
        """Named symbolic maps of this backbone's own graph, for heads.

        A plain dict from name to `KerasTensor`:
        - `"stem"`: the stem convolution's output (stride 2);
        - `"blocks.{s}.{i}"`: the output of block `i` of stage `s`
          (`architecture_spec.stages[s][i]`, timm's `blocks.s.i`);
        - `"blocks.{s}.{i}.expansion"`: for every block with stride 2 in the
          table and an expansion convolution, that convolution's output
          after BatchNorm and activation (before the depthwise; in a fused
          block, after its strided k x k expansion), which the MobileNetV3
          paper's SSDLite and timm's `feature_location="expansion"` read;
        - `"final"`: the backbone's output.

        `keras.Model(backbone.input, {...})` on any of them shares this
        backbone's layers and weights and computes each map once.

        Example:
        ```python
        import keras, numpy as np
        from mnet_backbones import MobileNetBackbone

        backbone = MobileNetBackbone("mobilenetv3_large")
        taps = backbone.feature_taps
        c4 = keras.Model(backbone.input, [taps["blocks.5.0.expansion"], taps["final"]])
        [tuple(t.shape) for t in c4(np.zeros((1, 320, 320, 3)))]
        # [(1, 20, 20, 672), (1, 10, 10, 960)]
        ```
        """
        return dict(getattr(self, "_feature_taps", {}))

    def call(self, inputs, *args, **kwargs):
        # Keras' own shape error prints the whole input array; say it briefly.
        shape = tuple(getattr(inputs, "shape", ()))
        if len(shape) != 4 or shape[-1] not in (None, self.image_shape[-1]):
            raise ValueError(
                f"{type(self).__name__} expects images of shape (batch, height, width, "
                f"{self.image_shape[-1]}), channels last. Received an input of shape {shape}."
            )
        check_pixels(self, shape)
        return super().call(inputs, *args, **kwargs)

    def predict(self, x, *args, **kwargs):
        """`keras.Model.predict`; an empty batch or images with no pixels raise a ValueError first."""
        check_image_batch(self, x)
        return super().predict(x, *args, **kwargs)

    @property
    def architecture_spec(self):
        """The `Architecture` table this backbone was built from."""
        return architectures.get_architecture(self.architecture)

    def get_config(self):
        config = super().get_config()
        config.update(
            architecture=self.architecture,
            width_multiplier=self.width_multiplier,
            padding=self.padding,
            bn_epsilon=self.bn_epsilon,
            bn_momentum=self.bn_momentum,
            image_shape=self.image_shape,
            output_stride=self.output_stride,
            hard_swish_form=self.hard_swish_form,
            dilate_strided_block=self.dilate_strided_block,
        )
        return config

    @classmethod
    def from_preset(cls, preset, load_weights=True, **kwargs):
        """Build a backbone from a built-in preset name or a preset folder.

        Args:
            preset: a built-in name (see `MobileNetBackbone.presets`), a
                keras-hub preset folder, a timm snapshot folder
                (`config.json` + `model.safetensors`, converted on load), an
                `hf://timm/<name>.<tag>` handle, a torchvision classifier
                checkpoint (a folder with `config.json` + `model.pth`, or a
                `.pth` file named after its builder, e.g.
                `mobilenet_v3_large-5c1a4163.pth`; reading it needs torch),
                or another keras-hub handle.
            load_weights: load pretrained weights. For a built-in name they
                come from the local cache, or are downloaded and converted
                once (see `mnet_backbones.weights`); `False` gives random
                weights and needs no network.

        The preset goes to the checkpoint source that takes it
        (`mnet_backbones.sources`), else to keras-hub's own loader.
        """
        return load_preset(cls, preset, load_weights, **kwargs)

    def load_weights(self, filepath, *args, **kwargs):
        if is_builtin_placeholder(filepath):
            # keras_hub.models.Backbone.from_preset(<built-in name>) lands here.
            preset = os.path.basename(os.path.dirname(os.path.abspath(filepath)))
            filepath = os.path.join(weights.ensure_cached(preset), weights.WEIGHTS_FILE)
        if str(filepath).endswith(".h5"):
            files.check_hdf5_file(filepath)  # a truncated file named as such, not h5py's "eof = ..."
            if os.path.basename(str(filepath)) == files.PRESET_WEIGHTS:
                # keras-hub's generic loaders reach a preset folder's weights only here: another
                # width's file is named with its first differing layer, not "objects could not be loaded".
                files.check_weights_fit(os.path.dirname(os.path.abspath(filepath)))
        return super().load_weights(filepath, *args, **kwargs)
