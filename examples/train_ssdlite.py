"""Train SSDLite (mobilenetv4_conv_small, from scratch) on synthetic shapes; report COCO AP.

Same as `mnet-backbones demo detection`. Usage:

    python examples/train_ssdlite.py --out-dir runs/detection --picture docs/ssdlite_demo.png
    python examples/train_ssdlite.py --help
"""

import sys

from mnet_tools.demos.detection import main

if __name__ == "__main__":
    sys.exit(main())
