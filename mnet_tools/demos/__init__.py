"""The demos of `mnet-backbones demo`: a head trained from scratch on synthetic shapes.

- `detection`: SSDLite, scored with COCO AP;
- `segmentation`: DeepLabV3+, scored with mIoU.

Both say what they are doing as they go (`Stages`, `TrainingProgress`, on
stderr): on a CPU the first training step alone, which builds the graph, can
take a minute, and a demo silent for that long looks hung.
"""

import argparse
import math
import os
import sys
import time

import keras

from heads.datasets import make_shapes


class Stages:
    """Prints each stage of a demo on stderr with the seconds since the demo started.

    Example:
    ```python
    stage = Stages()
    stage("making 800 training images")
    ```
    """

    def __init__(self, stream=None):
        self.start = time.perf_counter()
        self.stream = stream

    def elapsed(self):
        return time.perf_counter() - self.start

    def __call__(self, message):
        print(f"[{self.elapsed():6.1f}s] {message}", file=self.stream or sys.stderr, flush=True)


def make_splits(args):
    """Seed every generator from `args.seed`, then make the training and held-out shapes.

    Returns `(stage, train, val)`: a fresh `Stages`, and `make_shapes`' file
    dicts of `args.train_images` and `args.val_images` images under
    `args.out_dir`, drawn with different seeds.
    """
    stage = Stages()
    keras.utils.set_random_seed(args.seed)
    stage(f"making {args.train_images} training and {args.val_images} held-out images in {args.out_dir}")
    train = make_shapes(os.path.join(args.out_dir, "train"), args.train_images, args.image_size, seed=args.seed)
    val = make_shapes(os.path.join(args.out_dir, "val"), args.val_images, args.image_size, seed=args.seed + 1)
    return stage, train, val


class TrainingProgress(keras.callbacks.Callback):
    """Prints training progress through `stages`: the first step, then every `every` seconds and each epoch's end.

    The first step is announced before it runs, since it builds the graph
    and takes longest.
    """

    def __init__(self, stages, steps_per_epoch, epochs, every=10.0):
        super().__init__()
        self.stages = stages
        self.steps_per_epoch = steps_per_epoch
        self.epochs = epochs
        self.every = every
        self.epoch = 0
        self.step = 0
        self.last = None

    def on_train_begin(self, logs=None):
        self.stages("training: the first step builds the graph (on a CPU, up to a minute or two)")
        self.last = time.perf_counter()

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch
        self.step = 0

    def _line(self, step, logs):
        losses = "  ".join(f"{key} {float(value):.4f}" for key, value in (logs or {}).items() if "loss" in key)
        return f"epoch {self.epoch + 1}/{self.epochs}, step {step}/{self.steps_per_epoch}  {losses}".rstrip()

    def on_train_batch_end(self, batch, logs=None):
        self.step = batch + 1
        now = time.perf_counter()
        if (self.epoch == 0 and batch == 0) or now - self.last >= self.every:
            self.last = now
            self.stages(self._line(self.step, logs))

    def on_epoch_end(self, epoch, logs=None):
        self.last = time.perf_counter()
        self.stages(self._line(self.step, logs) + "  (epoch done)")
