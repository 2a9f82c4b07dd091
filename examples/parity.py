"""Print how closely converted timm weights reproduce timm's own outputs.

For every timm snapshot in a parity folder (default: ../shared/parity), load it
with `MobileNetImageClassifier.from_preset(folder)` and compare logits and the
P2-P5 pyramid with the `reference.npz` timm computed, on the square (reference
resolution) and odd (161 x 193) inputs. The figure is the largest absolute
difference over the largest absolute reference value.

Run: python examples/parity.py [PARITY_DIR]
"""

import os
import sys

import keras
import numpy as np

from mnet_backbones import MobileNetImageClassifier

HERE = os.path.dirname(os.path.abspath(__file__))
parity_dir = sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "..", "..", "shared", "parity")
outputs = ("logits", "P2", "P3", "P4", "P5")
print(f"backend: {keras.backend.backend()}\n")
print("| checkpoint | input | " + " | ".join(outputs) + " |")
print("|---|---|" + "---|" * len(outputs))
for name in sorted(os.listdir(parity_dir)):
    folder = os.path.join(parity_dir, name)
    reference = np.load(os.path.join(folder, "reference.npz"))
    classifier = MobileNetImageClassifier.from_preset(folder)
    backbone = classifier.backbone
    pyramid = keras.Model(backbone.input, backbone.pyramid_outputs)
    for tag in ("square", "odd"):
        images = reference[f"{tag}_input"]  # already normalised: skip the preprocessor
        ours = {"logits": keras.ops.convert_to_numpy(classifier(images, training=False))}
        ours.update(pyramid.predict(images, verbose=0))
        errors = [
            np.abs(ours[k] - reference[f"{tag}_{k}"]).max() / np.abs(reference[f"{tag}_{k}"]).max() for k in outputs
        ]
        size = "x".join(map(str, images.shape[1:3]))
        print(f"| {name} | {tag} {size} | " + " | ".join(f"{e:.1e}" for e in errors) + " |")
