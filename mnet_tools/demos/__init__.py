"""The demos of `mnet-backbones demo`: a head trained from scratch on synthetic shapes.

- `detection`: SSDLite, scored with COCO AP;
- `segmentation`: DeepLabV3+, scored with mIoU.
"""
