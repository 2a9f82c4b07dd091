"""The predecessor project's workflow: build by variant name, train a step, predict, save, load.

Run: python examples/predecessor_api.py
"""

import os
import tempfile

import keras
import numpy as np

from mnet_backbones import create_mobilenetv4

keras.utils.set_random_seed(0)
model = create_mobilenetv4(variant="conv_small", num_classes=10, input_shape=(32, 32, 3))
model.compile(
    optimizer=keras.optimizers.AdamW(learning_rate=1e-3, weight_decay=0.05),
    loss="sparse_categorical_crossentropy",
    metrics=["accuracy"],
)
print(f"parameters: {model.count_params():,}")

rng = np.random.default_rng(0)
images = rng.uniform(0.0, 1.0, (8, 32, 32, 3)).astype("float32")
labels = rng.integers(0, 10, (8,))
loss, accuracy = model.train_on_batch(images, labels)
print(f"one training step: loss {loss:.4f}, accuracy {accuracy:.2f}")

probabilities = model.predict(images, verbose=0)
print(f"predictions {probabilities.shape}, rows sum to {probabilities.sum(axis=1).round(4)}")

with tempfile.TemporaryDirectory() as folder:
    path = os.path.join(folder, "mobilenetv4_conv_small.keras")
    model.save(path)
    restored = keras.models.load_model(path)  # compiled, optimizer state included
    same = np.array_equal(restored.predict(images, verbose=0), probabilities)
    print(f"saved, reloaded as {type(restored).__name__}; identical predictions: {same}")
