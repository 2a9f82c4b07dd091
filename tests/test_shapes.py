"""The synthetic shapes dataset: files, COCO fields, masks that agree with the boxes."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from heads.datasets import make_shapes


def read_png(path):
    return tf.io.decode_png(tf.io.read_file(path)).numpy()


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("shapes")
    paths = make_shapes(str(out_dir), num_images=6, image_size=(48, 64), seed=3)
    with open(paths["annotations"]) as f:
        return paths, json.load(f)


def test_files_and_coco_fields(shapes):
    paths, coco = shapes
    assert [c["name"] for c in coco["categories"]] == ["circle", "square", "triangle"]
    assert [image["id"] for image in coco["images"]] == [1, 2, 3, 4, 5, 6]
    for image in coco["images"]:
        assert (image["height"], image["width"]) == (48, 64)
        pixels = read_png(os.path.join(paths["images"], image["file_name"]))
        mask = read_png(os.path.join(paths["masks"], image["file_name"]))
        assert pixels.shape == (48, 64, 3) and pixels.dtype == np.uint8
        assert mask.shape == (48, 64, 1)
        assert set(np.unique(mask)) <= {0, 1, 2, 3}
    assert len({a["id"] for a in coco["annotations"]}) == len(coco["annotations"])
    assert len(coco["annotations"]) >= 6


def test_boxes_are_tight_around_visible_mask_pixels(shapes):
    paths, coco = shapes
    names = {image["id"]: image["file_name"] for image in coco["images"]}
    for annotation in coco["annotations"]:
        mask = read_png(os.path.join(paths["masks"], names[annotation["image_id"]]))[..., 0]
        x, y, w, h = (int(v) for v in annotation["bbox"])
        assert w >= 4 and h >= 4
        assert 0 <= x and x + w <= 64 and 0 <= y and y + h <= 48
        inside = mask[y : y + h, x : x + w] == annotation["category_id"]
        # The visible shape reaches all four sides of its box.
        assert inside[0].any() and inside[-1].any() and inside[:, 0].any() and inside[:, -1].any()
        assert 0 < annotation["area"] <= w * h


def test_same_seed_same_files(tmp_path):
    first = make_shapes(str(tmp_path / "a"), 2, 32, seed=7)
    second = make_shapes(str(tmp_path / "b"), 2, 32, seed=7)
    other = make_shapes(str(tmp_path / "c"), 2, 32, seed=8)
    image = "000001.png"
    same = read_png(os.path.join(first["images"], image))
    np.testing.assert_array_equal(same, read_png(os.path.join(second["images"], image)))
    assert not np.array_equal(same, read_png(os.path.join(other["images"], image)))


@pytest.mark.parametrize(
    "num_images, image_size, message",
    [(0, 32, "num_images"), (2, 8, "image_size"), (2, (32, 32, 3), "image_size")],
)
def test_bad_arguments_are_named(tmp_path, num_images, image_size, message):
    with pytest.raises(ValueError, match=message):
        make_shapes(str(tmp_path), num_images, image_size)
