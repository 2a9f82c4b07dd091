"""Datasets for the heads: COCO detection, VOC-style segmentation, synthetic shapes.

The loaders give batches that `fit` takes, every file checked first:
`load_coco` (a COCO JSON file and its images) and `load_segmentation`
(image and mask folders paired by name). `make_shapes` writes a small
synthetic set of both kinds.

Their parts are public too, for pipelines of one's own (`mnet-backbones
train` is built on them):

- COCO: `read_coco` checks a file and returns per-image records;
  `coco_dataset` turns records into `load_coco`'s batches.
- Segmentation: `segmentation_pairs` pairs image and mask files by name,
  `check_pairs` checks each pair's files and sizes, `read_mask` reads and
  checks one mask.
- Images: `inspect_image` checks a file without decoding it, `read_image`
  decodes it as displayed (EXIF orientation, 8-bit RGB), `image_tensor` is
  `read_image` inside a `tf.data` pipeline; `IMAGE_EXTENSIONS` are the file
  suffixes read as images.
- Labels against a model: `check_classes` refuses COCO categories or mask
  values beyond a model's classes, naming the file, through any `take`,
  `map`, `shuffle` or `repeat` of a loader's dataset.
- Augmentation seeds: `with_seeds` gives each element of a `tf.data`
  pipeline a stateless seed, `split_seed` splits one into several.

Every name here has its example in its docstring. Modules whose name starts
with an underscore are private.
"""

from heads.datasets._classes import check_classes
from heads.datasets._random import split_seed, with_seeds
from heads.datasets.coco import coco_dataset, load_coco, read_coco
from heads.datasets.images import image_tensor, inspect_image, read_image
from heads.datasets.segmentation import (
    IMAGE_EXTENSIONS,
    check_pairs,
    load_segmentation,
    read_mask,
    segmentation_pairs,
)
from heads.datasets.shapes import make_shapes

__all__ = [
    "IMAGE_EXTENSIONS",
    "check_classes",
    "check_pairs",
    "coco_dataset",
    "image_tensor",
    "inspect_image",
    "load_coco",
    "load_segmentation",
    "make_shapes",
    "read_coco",
    "read_image",
    "read_mask",
    "segmentation_pairs",
    "split_seed",
    "with_seeds",
]
