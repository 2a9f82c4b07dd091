"""Datasets for the heads: COCO detection, VOC-style segmentation, synthetic shapes."""

from heads.datasets.shapes import make_shapes
