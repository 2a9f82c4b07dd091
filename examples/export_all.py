"""Export every preset's backbone to LiteRT and print its agreement with Keras.

Random weights with BatchNorm statistics calibrated on the test images (as a
trained network has them), input 64 x 96, TensorFlow backend.

Run: python examples/export_all.py [PRESET ...]
"""

import os
import sys
import tempfile
import time

import keras
import numpy as np

from mnet_backbones import MobileNetBackbone
from mnet_backbones.presets import PRESETS
from mnet_tools.export import run_exported

SHAPE = (64, 96, 3)


def calibrate(model, images):
    """BatchNorm moving statistics := those of `images` (plus a 10% floor)."""
    norms = [layer for layer in model._flatten_layers() if isinstance(layer, keras.layers.BatchNormalization)]
    for layer in norms:
        layer.momentum = 0.0
    model(images, training=True)
    for layer in norms:
        layer.momentum = 0.9
        variance = keras.ops.convert_to_numpy(layer.moving_variance)
        layer.moving_variance.assign(variance + 0.1 * variance.mean())


rng = np.random.default_rng(0)
images = rng.normal(size=(2, *SHAPE)).astype("float32")
print("| preset | max abs error / max abs output | export s |\n|---|---|---|")
for name in sys.argv[1:] or list(PRESETS):
    backbone = MobileNetBackbone.from_preset(name, load_weights=False, image_shape=SHAPE)
    calibrate(backbone, rng.normal(size=(2, *SHAPE)).astype("float32"))
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "model.tflite")
        start = time.perf_counter()
        backbone.export(path, format="litert", verbose=False)
        seconds = time.perf_counter() - start
        expected = backbone.predict(images, verbose=0)
        (actual,) = run_exported(path, images)
        error = np.abs(actual - expected).max() / np.abs(expected).max()
    print(f"| {name} | {error:.1e} | {seconds:.0f} |", flush=True)
