"""The demos' command-line options, without Keras: `mnet-backbones demo ... --help` and
option errors answer before TensorFlow loads (the demos themselves import it)."""

import argparse
import math


def positive_int(text):
    """An argparse type: a whole number of at least 1 (image counts, sizes, epochs)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def positive_float(text):
    """An argparse type: a finite number above 0 (minutes, learning rates)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def detection_parser():
    parser = argparse.ArgumentParser(
        prog="mnet-backbones demo detection",
        description="Train SSDLite (mobilenetv4_conv_small, from scratch) on synthetic shapes "
        "and report COCO AP on a held-out split.",
    )
    parser.add_argument("--out-dir", default="runs/detection", help="data, model and picture go here")
    parser.add_argument("--backbone", default="mobilenetv4_conv_small", help="backbone preset (random init)")
    parser.add_argument("--train-images", type=positive_int, default=800)
    parser.add_argument("--val-images", type=positive_int, default=100)
    parser.add_argument("--image-size", type=positive_int, default=192)
    parser.add_argument("--batch-size", type=positive_int, default=16)
    parser.add_argument(
        "--epochs", type=positive_int, default=35, help="schedule length; training stops earlier at --minutes"
    )
    parser.add_argument("--minutes", type=positive_float, default=15.0, help="wall-clock budget of training")
    parser.add_argument("--learning-rate", type=positive_float, default=3e-3, help="peak AdamW learning rate")
    parser.add_argument("--warmup-epochs", type=float, default=1.0)
    parser.add_argument("--anchor-size", type=positive_float, default=1.5, help="anchor side / level stride")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--picture", default=None, help="path of the picture (default: OUT_DIR/ssdlite_demo.png)")
    return parser


def segmentation_parser():
    parser = argparse.ArgumentParser(
        prog="mnet-backbones demo segmentation",
        description="Train DeepLabV3+ (MobileNetV4 conv small, from scratch) on synthetic shapes.",
    )
    parser.add_argument("--out-dir", default="runs/segmentation", help="data, model and picture go here")
    parser.add_argument("--backbone", default="mobilenetv4_conv_small", help="backbone preset (random init)")
    parser.add_argument("--train-images", type=positive_int, default=1000)
    parser.add_argument("--val-images", type=positive_int, default=100)
    parser.add_argument("--image-size", type=positive_int, default=128)
    parser.add_argument("--output-stride", type=int, default=16, choices=(8, 16, 32))
    parser.add_argument("--batch-size", type=positive_int, default=8)
    parser.add_argument(
        "--epochs", type=positive_int, default=40, help="most epochs; training stops at --epochs or --minutes"
    )
    parser.add_argument(
        "--minutes",
        type=positive_float,
        default=14.0,
        help="wall-clock budget of training; the learning rate anneals to 0 by then",
    )
    parser.add_argument("--learning-rate", type=positive_float, default=3e-3, help="peak AdamW learning rate")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--picture", default=None, help="path of the picture (default: OUT_DIR/deeplab_demo.png)")
    return parser
