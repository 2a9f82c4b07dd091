"""Detection demo: SSDLite on mobilenetv4_conv_small, from scratch, on synthetic shapes.

Generates a shapes dataset (train and held-out splits) with
`heads.datasets.make_shapes`, trains SSDLite within a time budget on the
CPU, scores the held-out split with pycocotools and saves a picture of the
predicted boxes.

Run: `mnet-backbones demo detection --out-dir runs/detection` or
`python examples/train_ssdlite.py --out-dir runs/detection`.
"""

import io
import math
import os
import sys
import time

import keras
import numpy as np
from PIL import Image

import heads
from heads.datasets import load_coco
from mnet_tools.demo_options import detection_parser
from mnet_tools.demos import TrainingProgress, make_splits
from mnet_tools.plotting import pyplot


def parse_args(argv=None):
    return detection_parser().parse_args(argv)


class TimeBudget(keras.callbacks.Callback):
    """Stops training once `seconds` of training wall time have passed."""

    def __init__(self, seconds):
        super().__init__()
        self.seconds = seconds
        self.start = None

    def on_train_begin(self, logs=None):
        self.start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        if time.perf_counter() - self.start > self.seconds:
            self.model.stop_training = True


def save_picture(path, images, detections, class_names, min_confidence=0.3, columns=4):
    """Images with predicted boxes, labels and scores, saved as a PNG.

    `keras.visualization.plot_bounding_box_gallery` draws with OpenCV, which
    this project does not depend on; matplotlib draws the same picture.
    """
    plt = pyplot("The detection demo's picture")

    count = len(images)
    rows = math.ceil(count / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(2.4 * columns, 2.4 * rows), squeeze=False)
    colours = ("#ff3b30", "#34c759", "#007aff", "#ffcc00")
    for index, axis in enumerate(axes.flat):
        axis.axis("off")
        if index >= count:
            continue
        axis.imshow(np.clip(images[index], 0, 255).astype("uint8"))
        for j in range(int(detections["num_detections"][index])):
            score = float(detections["confidence"][index, j])
            if score < min_confidence:
                continue
            x0, y0, x1, y1 = detections["boxes"][index, j]
            label = int(detections["labels"][index, j])
            colour = colours[label % len(colours)]
            axis.add_patch(plt.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor=colour, linewidth=1.5))
            axis.text(x0, y0, f"{class_names[label]} {score:.2f}", color="white", fontsize=6,
                      bbox={"facecolor": colour, "pad": 1, "linewidth": 0})  # fmt: skip
    figure.tight_layout(pad=0.3)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    # Noisy backgrounds compress badly as true colour: a 256-colour palette
    # keeps the picture small enough to live in the repository.
    buffer = io.BytesIO()
    figure.savefig(buffer, dpi=72, format="png")
    plt.close(figure)
    buffer.seek(0)
    Image.open(buffer).convert("RGB").quantize(256).save(path, optimize=True)


def main(argv=None):
    """Runs the demo; prints AP, AP50, AP75 and the training time. Returns 0.

    Example:
    ```python
    from mnet_tools.demos import detection
    detection.main(["--out-dir", "/tmp/det", "--minutes", "1", "--train-images", "64"])
    ```
    """
    args = parse_args(argv)
    stage, train_files, val_files = make_splits(args)
    train = load_coco(
        train_files["annotations"], train_files["images"], args.image_size, args.batch_size,
        shuffle=True, augment=True, seed=args.seed,
    )  # fmt: skip

    stage(f"building SSDLite on {args.backbone} (random weights), {args.image_size} px")
    detector = heads.create_ssdlite(
        args.backbone, num_classes=3, image_size=args.image_size, load_weights=False,
        anchor_size=args.anchor_size, score_threshold=0.05,
    )  # fmt: skip
    steps_per_epoch = math.ceil(args.train_images / args.batch_size)
    total_steps = steps_per_epoch * args.epochs
    warmup_steps = int(args.warmup_epochs * steps_per_epoch)
    schedule = keras.optimizers.schedules.CosineDecay(
        args.learning_rate * 0.1,
        decay_steps=max(total_steps - warmup_steps, 1),
        alpha=0.01,
        warmup_target=args.learning_rate,
        warmup_steps=warmup_steps,
    )
    detector.compile(optimizer=keras.optimizers.AdamW(schedule, weight_decay=1e-4, global_clipnorm=10.0))

    start = time.perf_counter()
    progress = TrainingProgress(stage, steps_per_epoch, args.epochs)
    history = detector.fit(
        train, epochs=args.epochs, callbacks=[TimeBudget(args.minutes * 60), progress], verbose=0, shuffle=False
    )  # the dataset shuffles itself; Keras warns about shuffle=True on one
    train_minutes = (time.perf_counter() - start) / 60
    epochs_run = len(history.history["loss"])

    stage(f"scoring the {args.val_images} held-out images (COCO AP)")
    metrics = heads.evaluate_coco(detector, val_files["annotations"], val_files["images"], batch_size=args.batch_size)
    stage("saving the detector and the picture")
    detector.save(os.path.join(args.out_dir, "ssdlite.keras"))

    val = load_coco(val_files["annotations"], val_files["images"], args.image_size, 8)
    images, _ = next(iter(val))
    detections = detector.predict(images, verbose=0)
    picture = args.picture or os.path.join(args.out_dir, "ssdlite_demo.png")
    save_picture(picture, keras.ops.convert_to_numpy(images), detections, ["circle", "square", "triangle"])

    command = "mnet-backbones demo detection " + " ".join(argv if argv is not None else sys.argv[1:])
    print(f"command: {command.strip()}")
    print(f"training: {train_minutes:.1f} min, {epochs_run} epochs of {steps_per_epoch} steps, "
          f"{args.train_images} images of {args.image_size} px")  # fmt: skip
    print(f"held-out ({args.val_images} images): AP {metrics['AP']:.3f}  AP50 {metrics['AP50']:.3f}  "
          f"AP75 {metrics['AP75']:.3f}")  # fmt: skip
    print(f"picture: {picture}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
