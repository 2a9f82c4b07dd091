"""The pixel normalisation both heads put in front of their backbone."""

import math

import keras

from mnet_backbones.constants import IMAGENET_PIXEL_MEAN, IMAGENET_PIXEL_VARIANCE


def pixel_normalizer(mean=IMAGENET_PIXEL_MEAN, variance=IMAGENET_PIXEL_VARIANCE, dtype=None):
    """(pixels - mean) / sqrt(variance) per channel, as one scale and offset.

    The defaults are ImageNet's statistics on 0..255 pixels, the
    normalisation the MobileNet presets were trained with, so raw images go
    straight into the heads. A `Rescaling` rather than a `Normalization`
    layer: its constants are created inside the traced graph, which tf2onnx
    folds into the ONNX file (a `Normalization`'s captured tensors become
    extra graph inputs).

    Example:
    ```python
    normalizer = pixel_normalizer()
    normalizer(keras.ops.full((1, 2, 2, 3), 255.0))  # about (2.25, 2.43, 2.64) per pixel
    ```
    """
    std = [math.sqrt(v) for v in variance]
    return keras.layers.Rescaling(
        scale=[1.0 / s for s in std], offset=[-m / s for m, s in zip(mean, std)], dtype=dtype, name="normalizer"
    )
