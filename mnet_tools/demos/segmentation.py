"""DeepLabV3+ demo: learn to segment synthetic shapes on a CPU, from scratch.

Writes a training and a held-out set with `heads.datasets.make_shapes`
(classes: 0 background, 1 circle, 2 square, 3 triangle), trains
`create_deeplabv3plus("mobilenetv4_conv_small", 4, output_stride=16)` from
random weights within a wall-clock budget, then prints the held-out mIoU,
pixel accuracy and per-class IoU (at original resolution) and saves a picture
of predicted masks over held-out images.

Run: `python examples/train_deeplab.py` or `mnet-backbones demo segmentation`.
"""

import math
import os
import sys
import time

import keras
import numpy as np

import heads
from heads.datasets import load_segmentation
from heads.datasets.segmentation import read_image, read_mask, segmentation_pairs
from heads.segmentation_eval import predict_masks
from mnet_tools.demo_options import segmentation_parser
from mnet_tools.demos import TrainingProgress, make_splits
from mnet_tools.plotting import pyplot

CLASS_NAMES = ("background", "circle", "square", "triangle")
# Colours of the classes in the picture (background stays transparent).
CLASS_COLOURS = ((0, 0, 0), (255, 40, 40), (40, 220, 60), (40, 90, 255))
COLOUR_NAMES = ("", "red", "green", "blue")


def parse_args(argv=None):
    return segmentation_parser().parse_args(argv)


def _budget_schedule(seconds, total_steps, peak_learning_rate, warmup=0.03):
    """A callback that anneals the learning rate over a time *or* step budget.

    Progress is the larger of elapsed time / `seconds` and step /
    `total_steps`; the rate warms up linearly over the first `warmup` of it,
    then follows a cosine to 0, and training stops at progress 1. So the
    schedule ends annealed on a fast machine and on a busy one alike.
    """

    class BudgetSchedule(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.start = time.perf_counter()
            self.step = 0

        def progress(self):
            return max((time.perf_counter() - self.start) / seconds, self.step / total_steps)

        def on_train_batch_begin(self, batch, logs=None):
            progress = min(1.0, self.progress())
            if progress < warmup:
                rate = peak_learning_rate * max(progress, 1.0 / total_steps) / warmup
            else:
                rate = 0.5 * peak_learning_rate * (1 + math.cos(math.pi * (progress - warmup) / (1 - warmup)))
            self.model.optimizer.learning_rate = rate  # as keras.callbacks.LearningRateScheduler sets it

        def on_train_batch_end(self, batch, logs=None):
            self.step += 1
            if self.progress() >= 1.0:
                self.model.stop_training = True

    return BudgetSchedule()


def overlay(image, mask, alpha=0.6):
    """`image` (H, W, 3) uint8 in grey, with class colours blended where `mask` > 0.

    Grey, because the shapes themselves have random colours."""

    colours = np.array(CLASS_COLOURS, dtype="float32")
    grey = image.astype("float32").mean(axis=-1, keepdims=True)
    out = np.repeat(grey, 3, axis=-1)
    shaded = mask > 0
    out[shaded] = (1 - alpha) * out[shaded] + alpha * colours[np.clip(mask[shaded], 0, len(colours) - 1)]
    return out.astype("uint8")


def save_picture(path, images, true_masks, predicted_masks, columns=6):
    """Rows: images, ground truth over the images, predictions over the images."""
    plt = pyplot("The segmentation demo's picture")

    count = min(columns, len(images))
    figure, axes = plt.subplots(3, count, figsize=(1.8 * count, 5.6), squeeze=False)
    rows = (
        ("image", [images[i] for i in range(count)]),
        ("ground truth", [overlay(images[i], true_masks[i]) for i in range(count)]),
        ("prediction", [overlay(images[i], predicted_masks[i]) for i in range(count)]),
    )
    for row, (title, pictures) in enumerate(rows):
        for column, picture in enumerate(pictures):
            axis = axes[row][column]
            axis.imshow(picture, interpolation="nearest")
            axis.set_xticks([])
            axis.set_yticks([])
            if column == 0:
                axis.set_ylabel(title)
    legend = ", ".join(f"{name} {colour}" for name, colour in zip(CLASS_NAMES[1:], COLOUR_NAMES[1:]))
    figure.suptitle(f"DeepLabV3+ on held-out shapes ({legend})", fontsize=7)
    figure.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    figure.savefig(path, dpi=80)
    plt.close(figure)


def main(argv=None):
    """Runs the demo; prints mIoU, pixel accuracy, per-class IoU and training time. Returns 0.

    Example:
    ```python
    from mnet_tools.demos import segmentation
    segmentation.main(["--minutes", "1", "--train-images", "64", "--val-images", "16"])
    ```
    """
    args = parse_args(argv)
    stage, train, val = make_splits(args)
    num_classes = len(CLASS_NAMES)
    dataset = load_segmentation(
        train["images"],
        train["masks"],
        args.image_size,
        args.batch_size,
        shuffle=True,
        augment=True,
        num_classes=num_classes,
        seed=args.seed,
    )
    steps_per_epoch = math.ceil(args.train_images / args.batch_size)

    stage(f"building DeepLabV3+ on {args.backbone} (random weights), {args.image_size} px")
    segmenter = heads.create_deeplabv3plus(
        args.backbone, num_classes, image_size=args.image_size, output_stride=args.output_stride, load_weights=False
    )
    segmenter.compile(optimizer=keras.optimizers.AdamW(args.learning_rate, weight_decay=1e-4))

    budget = _budget_schedule(args.minutes * 60, args.epochs * steps_per_epoch, args.learning_rate)
    start = time.perf_counter()
    progress = TrainingProgress(stage, steps_per_epoch, args.epochs)
    segmenter.fit(
        dataset, epochs=args.epochs, callbacks=[budget, progress], verbose=0, shuffle=False
    )  # the dataset shuffles itself; Keras warns about shuffle=True on one
    train_minutes = (time.perf_counter() - start) / 60

    stage(f"scoring the {args.val_images} held-out images (mIoU)")
    scores = heads.evaluate_segmentation(segmenter, val["images"], val["masks"], num_classes)
    stage("saving the segmenter and the picture")
    segmenter.save(os.path.join(args.out_dir, "deeplab.keras"))

    image_paths, mask_paths = segmentation_pairs(val["images"], val["masks"])
    images = [read_image(p) for p in image_paths[:6]]
    true_masks = [read_mask(p) for p in mask_paths[:6]]
    predicted = predict_masks(segmenter, images, [m.shape for m in true_masks])
    picture = args.picture or os.path.join(args.out_dir, "deeplab_demo.png")
    save_picture(picture, images, true_masks, predicted)

    command = "mnet-backbones demo segmentation " + " ".join(sys.argv[1:] if argv is None else argv)
    print(f"command: {command.strip()}")
    print(
        f"training: {train_minutes:.1f} min, {budget.step} steps ({budget.step / steps_per_epoch:.1f} epochs), "
        f"{args.train_images} images of {args.image_size} px, batch {args.batch_size}, "
        f"output stride {args.output_stride}, {keras.backend.backend()}"
    )
    print(
        f"held-out ({args.val_images} images): mIoU {scores['mIoU']:.3f}  pixel accuracy {scores['pixel_accuracy']:.3f}"
    )
    print("per-class IoU: " + ", ".join(f"{n} {v:.3f}" for n, v in zip(CLASS_NAMES, scores["per_class_IoU"])))
    print(f"picture: {picture}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
