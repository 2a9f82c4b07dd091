"""What LiteRT export, float32 and int8, costs the demos' trained heads.

Runs after the two demos (`mnet-backbones demo detection --out-dir runs/detection`,
`mnet-backbones demo segmentation --out-dir runs/segmentation`), which leave
their trained models and shapes data in their folders. For each head it
exports the model to LiteRT float32 and full-integer int8 (calibrated on
training images), then scores Keras and both files on the held-out split
with the same evaluation: COCO AP/AP50/AP75 for SSDLite, mIoU and pixel
accuracy for DeepLabV3+. TensorFlow backend.

Run: python examples/int8_heads.py [--detection runs/detection] [--segmentation runs/segmentation]
"""

import argparse
import os
import sys

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import heads  # noqa: E402
from mnet_tools import detection_export, export  # noqa: E402
from mnet_tools.tables import markdown_table  # noqa: E402

CALIBRATION_IMAGES = 64


class LiteRTDetector:
    """Enough of a detector for `heads.evaluate_coco`: predict through the .tflite file."""

    def __init__(self, path, detector):
        self.path = path
        self.image_size = detector.image_size
        self.bounding_box_format = detector.bounding_box_format

    def predict(self, dataset, verbose=0):
        batches = [detection_export.run_litert(self.path, keras.ops.convert_to_numpy(images)) for images in dataset]
        return {key: np.concatenate([batch[key] for batch in batches]) for key in batches[0]}


class LiteRTSegmenter:
    """Enough of a segmenter for `heads.evaluate_segmentation`."""

    def __init__(self, path, segmenter):
        self.path = path
        self.image_size = segmenter.image_size

    def predict(self, images, verbose=0):
        (logits,) = export.run_exported(self.path, images)
        return logits


def calibration_images(folder, image_size):
    return export.read_images(os.path.join(folder, "train", "images"), image_size, CALIBRATION_IMAGES)


def runtimes(model, folder, stem, litert_class):
    """(runtime, model, file) of Keras and of `model` exported to LiteRT float32 and int8 in `folder`."""
    float_path = export.export_model(model, os.path.join(folder, f"{stem}.tflite"))
    int8_path = export.export_model(
        model, os.path.join(folder, f"{stem}_int8.tflite"), int8=True,
        calibration_images=calibration_images(folder, model.image_size),
    )  # fmt: skip
    return (
        ("Keras", model, None),
        ("LiteRT float32", litert_class(float_path, model), float_path),
        ("LiteRT int8", litert_class(int8_path, model), int8_path),
    )


def file_mib(path):
    return "-" if path is None else f"{os.path.getsize(path) / 2**20:.1f}"


def detection_rows(folder):
    detector = keras.models.load_model(os.path.join(folder, "ssdlite.keras"))
    val = os.path.join(folder, "val")
    rows = []
    for name, model, path in runtimes(detector, folder, "ssdlite", LiteRTDetector):
        metrics = heads.evaluate_coco(model, os.path.join(val, "annotations.json"), os.path.join(val, "images"))
        scores = f"AP {metrics['AP']:.3f} / AP50 {metrics['AP50']:.3f} / AP75 {metrics['AP75']:.3f}"
        rows.append(["SSDLite", name, scores, file_mib(path)])
    return rows


def segmentation_rows(folder):
    segmenter = keras.models.load_model(os.path.join(folder, "deeplab.keras"))
    val = os.path.join(folder, "val")
    rows = []
    for name, model, path in runtimes(segmenter, folder, "deeplab", LiteRTSegmenter):
        metrics = heads.evaluate_segmentation(
            model, os.path.join(val, "images"), os.path.join(val, "masks"), segmenter.num_classes
        )
        scores = f"mIoU {metrics['mIoU']:.3f} / pixel accuracy {metrics['pixel_accuracy']:.3f}"
        rows.append(["DeepLabV3+", name, scores, file_mib(path)])
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--detection", default="runs/detection", help="the detection demo's --out-dir")
    parser.add_argument("--segmentation", default="runs/segmentation", help="the segmentation demo's --out-dir")
    args = parser.parse_args(argv)
    rows = []
    if os.path.exists(os.path.join(args.detection, "ssdlite.keras")):
        rows += detection_rows(args.detection)
    else:
        print(f"no ssdlite.keras in {args.detection}: run the detection demo first", file=sys.stderr)
    if os.path.exists(os.path.join(args.segmentation, "deeplab.keras")):
        rows += segmentation_rows(args.segmentation)
    else:
        print(f"no deeplab.keras in {args.segmentation}: run the segmentation demo first", file=sys.stderr)
    if not rows:
        return 1
    print(markdown_table(["head", "runtime", "held-out scores", "file MiB"], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
