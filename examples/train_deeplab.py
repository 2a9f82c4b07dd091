"""Train DeepLabV3+ (MobileNetV4 conv small, from scratch) on synthetic shapes, on a CPU.

Prints the held-out mIoU, pixel accuracy, per-class IoU and the training time,
and saves a picture of predicted masks over held-out images. The same demo
runs as `mnet-backbones demo segmentation`; options: `--help`.

Run: python examples/train_deeplab.py [--minutes 15] [--out-dir runs/segmentation]
"""

import sys

from mnet_tools.demos import segmentation

if __name__ == "__main__":
    sys.exit(segmentation.main())
