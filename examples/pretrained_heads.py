"""Run torchvision's pretrained SSDLite320 and LR-ASPP, converted, on one image and draw them.

Usage:
    python examples/pretrained_heads.py IMAGE --out picture.png [--min-score 0.5]
    python examples/pretrained_heads.py IMAGE --out picture.png --no-weights   # offline: random weights

With weights, the built-in names download torchvision's checkpoints once (or pass
`--detector-checkpoint` / `--segmenter-checkpoint` with `.pth` files you have).
The picture: the image with the detections (score >= --min-score) and their class
names, beside the LR-ASPP mask over the image.
"""

import argparse

import keras
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

import heads  # noqa: E402
from heads.datasets import read_image  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("image")
    parser.add_argument("--out", required=True, help="PNG file to write")
    parser.add_argument("--min-score", type=float, default=0.5)
    parser.add_argument("--no-weights", dest="load_weights", action="store_false")
    parser.add_argument("--detector-checkpoint", default="ssdlite320_mobilenetv3_large_coco")
    parser.add_argument("--segmenter-checkpoint", default="lraspp_mobilenetv3_large_voc")
    args = parser.parse_args(argv)

    image = read_image(args.image)  # EXIF orientation applied, RGB uint8
    detector = heads.SSDLite320ObjectDetector.from_preset(args.detector_checkpoint, load_weights=args.load_weights)
    segmenter = heads.load_torchvision_segmenter(args.segmenter_checkpoint, load_weights=args.load_weights)

    found = detector.predict(image[None].astype("float32"), verbose=0)
    count = int(found["num_detections"][0])
    keep = found["confidence"][0][:count] >= args.min_score
    boxes, labels = found["boxes"][0][:count][keep], found["labels"][0][:count][keep]
    mask = segmenter.predict(image[None].astype("float32"), verbose=0).argmax(-1)
    overlay = keras.visualization.draw_segmentation_masks(
        image[None].copy(), mask[..., None], num_classes=len(segmenter.class_names), alpha=0.5
    )

    # Boxes drawn with matplotlib: keras.visualization.draw_bounding_boxes needs OpenCV.
    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 5))
    left.imshow(image)
    for (x0, y0, x1, y1), label in zip(boxes, labels):
        left.add_patch(plt.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, color="lime", linewidth=2))
        left.text(x0, y0, detector.class_names[int(label)], color="black", backgroundcolor="lime", fontsize=8)
    left.set_title(f"SSDLite320: {len(labels)} detections, score >= {args.min_score}")
    right.imshow(np.asarray(overlay[0]).astype("uint8"))
    right.set_title("LR-ASPP: " + ", ".join(sorted({segmenter.class_names[c] for c in np.unique(mask)})))
    for axis in (left, right):
        axis.axis("off")
    figure.tight_layout()
    figure.savefig(args.out)
    print(f"wrote {args.out}: {[detector.class_names[int(label)] for label in labels]}")


if __name__ == "__main__":
    main()
