"""Datasets for the heads: COCO detection, VOC-style segmentation, synthetic shapes."""

from heads.datasets.coco import load_coco, read_coco
from heads.datasets.images import inspect_image, read_image
from heads.datasets.segmentation import load_segmentation
from heads.datasets.shapes import make_shapes
