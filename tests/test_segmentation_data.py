"""VOC-style segmentation data and evaluation: pairing, resizing, checks, metrics."""

import keras
import numpy as np
import pytest
from PIL import Image

import heads
from heads.datasets import read_mask, segmentation_pairs
from heads.segmentation.evaluation import confusion_matrix, segmentation_scores


def write_pair(root, name, image, mask, palette=False):
    (root / "images").mkdir(exist_ok=True)
    (root / "masks").mkdir(exist_ok=True)
    Image.fromarray(np.asarray(image, "uint8")).save(root / "images" / f"{name}.png")
    mask_image = Image.fromarray(np.asarray(mask, "uint8"), mode="L")
    if palette:
        mask_image = mask_image.convert("P")
        mask_image.putpalette([v for i in range(256) for v in (i * 7 % 256, i * 13 % 256, i * 29 % 256)])
    mask_image.save(root / "masks" / f"{name}.png")


@pytest.fixture
def voc_set(tmp_path):
    """Two 40x60 pairs: left half class 1 (red), right half class 2, a 255 band."""
    image = np.zeros((40, 60, 3), "uint8")
    image[:, :30, 0] = 255
    mask = np.full((40, 60), 2, "uint8")
    mask[:, :30] = 1
    mask[:4] = 255
    write_pair(tmp_path, "a", image, mask)
    write_pair(tmp_path, "b", image[:, ::-1], mask[:, ::-1], palette=True)
    return tmp_path


def test_load_segmentation_resizes_images_bilinear_masks_nearest(voc_set):
    dataset = heads.datasets.load_segmentation(
        str(voc_set / "images"), str(voc_set / "masks"), (20, 30), batch_size=2, num_classes=3
    )
    images, masks = next(iter(dataset))
    images, masks = np.asarray(images), np.asarray(masks)
    assert images.shape == (2, 20, 30, 3) and images.dtype == np.float32
    assert masks.shape == (2, 20, 30, 1) and masks.dtype == np.int32
    assert set(np.unique(masks)) == {1, 2, 255}  # nearest: no blended labels
    assert np.all(masks[0, 2:, :15] == 1) and np.all(masks[0, 2:, 15:] == 2) and np.all(masks[0, :2] == 255)
    # The palette mask "b" reads as its indices, mirrored.
    np.testing.assert_array_equal(masks[1], masks[0][:, ::-1])
    assert images[0, 10, 5, 0] == pytest.approx(255) and images[0, 10, 25, 0] == pytest.approx(0)


def epochs(dataset, count):
    """`count` epochs of a dataset through one iterator, as (images, masks) numpy pairs."""
    return [(np.asarray(images), np.asarray(masks)) for images, masks in dataset.repeat(count)]


def test_augment_flips_and_jitters_but_keeps_labels(voc_set):
    # No shuffle: image "a" (class 1 on the left) is always first in its batch.
    dataset = heads.datasets.load_segmentation(
        str(voc_set / "images"), str(voc_set / "masks"), 32, batch_size=2, augment=True, seed=3
    )
    orientations, ignored_counts = set(), set()
    for images, masks in epochs(dataset, 12):
        assert images.shape == (2, 32, 32, 3) and masks.shape == (2, 32, 32, 1)
        assert set(np.unique(masks)) <= {1, 2, 255}
        # Labels follow the pixels: red pixels are class 1 wherever they moved.
        labelled = masks[..., 0] != 255
        red = images[..., 0] > 200
        assert np.mean((masks[..., 0] == 1)[labelled & red]) > 0.95
        dark = images[..., 0] < 55
        assert np.mean((masks[..., 0] == 2)[labelled & dark]) > 0.95
        # Row 16 of "a": which class is at the far left and far right.
        row = masks[0, 16, :, 0]
        labels = row[row != 255]
        orientations.add((int(labels[0]), int(labels[-1])))
        ignored_counts.add(int(np.sum(masks[0] == 255)))
    assert orientations == {(1, 2), (2, 1)}  # flipped and not
    assert len(ignored_counts) > 3  # the scale jitter changes how much band and padding there is


def test_augmentation_repeats_with_its_seed_and_changes_every_epoch(voc_set):
    def load(seed):
        return heads.datasets.load_segmentation(
            str(voc_set / "images"), str(voc_set / "masks"), 32, batch_size=2, augment=True, seed=seed
        )

    first, again, other = epochs(load(5), 4), epochs(load(5), 4), epochs(load(6), 4)
    for (images, masks), (images_again, masks_again) in zip(first, again):
        np.testing.assert_array_equal(images, images_again)
        np.testing.assert_array_equal(masks, masks_again)
    assert any(not np.array_equal(a[1], b[1]) for a, b in zip(first, other))
    assert not all(np.array_equal(first[0][1], later[1]) for later in first[1:])


def test_unpaired_names_are_reported(voc_set):
    (voc_set / "images" / "c.png").write_bytes((voc_set / "images" / "a.png").read_bytes())
    (voc_set / "masks" / "d.png").write_bytes((voc_set / "masks" / "a.png").read_bytes())
    with pytest.raises(ValueError, match=r"without a mask: c.*without an image: d"):
        segmentation_pairs(str(voc_set / "images"), str(voc_set / "masks"))
    with pytest.raises(ValueError, match="without a mask: c"):
        heads.datasets.load_segmentation(str(voc_set / "images"), str(voc_set / "masks"), 32, 2)


def test_out_of_range_mask_values_name_the_file(voc_set):
    bad = np.ones((40, 60), "uint8")
    bad[5, 5] = 7
    write_pair(voc_set, "z_bad", np.zeros((40, 60, 3)), bad)
    with pytest.raises(ValueError, match=r"z_bad\.png.*\[7\].*num_classes=3"):
        heads.datasets.load_segmentation(str(voc_set / "images"), str(voc_set / "masks"), 32, 2, num_classes=3)
    with pytest.raises(ValueError, match=r"z_bad\.png"):
        read_mask(str(voc_set / "masks" / "z_bad.png"), num_classes=3)
    assert read_mask(str(voc_set / "masks" / "z_bad.png"), num_classes=8)[5, 5] == 7
    Image.fromarray(np.zeros((8, 8, 3), "uint8")).save(voc_set / "masks" / "z_bad.png")
    with pytest.raises(ValueError, match=r"z_bad\.png.*single-channel"):
        read_mask(str(voc_set / "masks" / "z_bad.png"))


def test_scores_from_a_confusion_matrix():
    confusion = confusion_matrix(np.array([0, 0, 1, 1, 1, 255]), np.array([0, 1, 1, 1, 0, 1]), 3)
    np.testing.assert_array_equal(confusion, [[1, 1, 0], [1, 2, 0], [0, 0, 0]])
    scores = segmentation_scores(confusion)
    assert scores["per_class_IoU"][:2] == pytest.approx([1 / 3, 2 / 4])
    assert np.isnan(scores["per_class_IoU"][2])  # absent class: out of the mean
    assert scores["mIoU"] == pytest.approx((1 / 3 + 1 / 2) / 2)
    assert scores["pixel_accuracy"] == pytest.approx(3 / 5)


def red_is_class_one(size):
    """A fixed 'segmenter': class 1 where the red channel is above 127.5."""
    inputs = keras.Input(size + (3,))
    red = keras.layers.Lambda(lambda x: x[..., :1] - 127.5)(inputs)
    logits = keras.layers.Concatenate()([-red, red, -red - 1000.0])
    return keras.Model(inputs, logits)


def test_evaluate_segmentation_over_the_set_at_original_resolution(tmp_path):
    # Image 1 (32x32): left half red; mask: top half 1, bottom half 0, row 0 ignored.
    image = np.zeros((32, 32, 3), "uint8")
    image[:, :16, 0] = 255
    mask = np.zeros((32, 32), "uint8")
    mask[:16] = 1
    mask[0] = 255
    write_pair(tmp_path, "one", image, mask)
    # Image 2 (40x48, not the input size): all red, all background.
    write_pair(tmp_path, "two", np.full((40, 48, 3), 255), np.zeros((40, 48)))
    scores = heads.evaluate_segmentation(
        red_is_class_one((32, 32)), str(tmp_path / "images"), str(tmp_path / "masks"), num_classes=3
    )
    # By hand: true 1 / predicted 1: 15 rows x 16 = 240; true 1 / predicted 0: 240;
    # true 0 / predicted 1: 16 x 16 + 40 x 48 = 2176; true 0 / predicted 0: 256.
    iou_background = 256 / (256 + 2176 + 240)
    iou_one = 240 / (240 + 240 + 2176)
    assert scores["per_class_IoU"][0] == pytest.approx(iou_background)
    assert scores["per_class_IoU"][1] == pytest.approx(iou_one)
    assert np.isnan(scores["per_class_IoU"][2])
    assert scores["mIoU"] == pytest.approx((iou_background + iou_one) / 2)
    assert scores["pixel_accuracy"] == pytest.approx((256 + 240) / (256 + 240 + 240 + 2176))


def test_make_shapes_masks_load_with_four_classes(tmp_path):
    paths = heads.datasets.make_shapes(str(tmp_path), 4, 48, seed=0)
    dataset = heads.datasets.load_segmentation(paths["images"], paths["masks"], 32, 4, num_classes=4)
    images, masks = next(iter(dataset))
    assert tuple(images.shape) == (4, 32, 32, 3)
    assert set(np.unique(np.asarray(masks))) <= {0, 1, 2, 3} and np.asarray(masks).max() > 0


@pytest.mark.parametrize("batch_size", [2.0, 0])
def test_load_segmentation_takes_only_a_positive_int_batch_size(voc_set, batch_size):
    with pytest.raises(ValueError, match="`batch_size` must be a positive int"):
        heads.datasets.load_segmentation(str(voc_set / "images"), str(voc_set / "masks"), 32, batch_size=batch_size)
    with pytest.raises(ValueError, match="`image_size`"):
        heads.datasets.load_segmentation(str(voc_set / "images"), str(voc_set / "masks"), 0, batch_size=2)


# --------------------------------------------------------------------------
# heads.datasets' public API: what `mnet-backbones train` builds on, documented and runnable.
def docstring_examples(obj):
    import re
    import textwrap

    return [textwrap.dedent(block) for block in re.findall(r"```python\n(.*?)```", obj.__doc__ or "", flags=re.S)]


def test_every_public_dataset_function_is_exported_and_has_an_example():
    for name in heads.datasets.__all__:
        obj = getattr(heads.datasets, name)
        if callable(obj):
            assert obj.__name__ == name, f"heads.datasets.{name} is {obj.__module__}.{obj.__name__}"
            assert docstring_examples(obj), f"heads.datasets.{name} has no example"
    public = {name for name in vars(heads.datasets) if not name.startswith("_")}
    modules = {"coco", "images", "segmentation", "shapes"}  # the submodules, bound as attributes on import
    assert public - modules == set(heads.datasets.__all__)


def run_example(obj, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the examples write their files under ./shapes
    (block,) = docstring_examples(obj)
    namespace = {}
    exec(compile(block, f"<{obj.__name__} docstring>", "exec"), namespace)
    return namespace


def test_coco_dataset_example_runs_and_gives_load_coco_batches(tmp_path, monkeypatch):
    found = run_example(heads.datasets.coco_dataset, tmp_path, monkeypatch)
    assert tuple(found["images"].shape) == (2, 64, 64, 3)
    assert found["targets"]["boxes"].shape[:2] == found["targets"]["labels"].shape[:2]
    assert found["dataset"].cardinality() == 2
    same = heads.datasets.load_coco("shapes/annotations.json", "shapes/images", 64, 2)
    records = found["records"]
    # Without shuffling: the batches of load_coco, from the same records.
    mine = heads.datasets.coco_dataset(records, (64, 64), batch_size=2)
    for (a_images, a_targets), (b_images, b_targets) in zip(mine, same):
        np.testing.assert_array_equal(a_images, b_images)
        np.testing.assert_array_equal(a_targets["boxes"], b_targets["boxes"])


def test_check_pairs_example_runs_and_names_a_mismatched_mask(tmp_path, monkeypatch):
    found = run_example(heads.datasets.check_pairs, tmp_path, monkeypatch)
    images, masks = found["images"], found["masks"]
    Image.new("L", (31, 32)).save(masks[1])
    with pytest.raises(ValueError, match="must have the size of its image") as caught:
        heads.datasets.check_pairs(images, masks)
    assert images[1] in str(caught.value) and masks[1] in str(caught.value)


def test_image_tensor_example_runs_and_reads_what_read_image_reads(tmp_path, monkeypatch):
    found = run_example(heads.datasets.image_tensor, tmp_path, monkeypatch)
    paths = [path.decode() for path in found["paths"].as_numpy_iterator()]
    images = list(found["images"].as_numpy_iterator())
    assert len(images) == 2 and images[0].shape == (32, 32, 3) and images[0].dtype == np.uint8
    for path, image in zip(paths, images):
        np.testing.assert_array_equal(image, heads.datasets.read_image(path))


def test_with_seeds_example_runs_and_repeats_with_the_seed(tmp_path, monkeypatch):
    found = run_example(heads.datasets.with_seeds, tmp_path, monkeypatch)
    first = np.stack(list(found["augmented"].as_numpy_iterator()))
    again = heads.datasets.with_seeds(found["images"], seed=0).map(found["augment"])
    np.testing.assert_array_equal(np.stack(list(again.as_numpy_iterator())), first)  # a fresh pipeline, same seed
    second_epoch = np.stack(list(found["augmented"].as_numpy_iterator()))
    assert not np.array_equal(second_epoch, first)  # a new iterator draws anew
    seeds = run_example(heads.datasets.split_seed, tmp_path, monkeypatch)
    flip, crop = np.asarray(seeds["flip_seed"]), np.asarray(seeds["crop_seed"])
    assert flip.shape == crop.shape == (2,) and not np.array_equal(flip, crop)


def test_outside_heads_nothing_imports_a_private_dataset_module():
    import ast
    import pathlib

    root = pathlib.Path(__file__).resolve().parents[1]
    offenders = []
    for package in ("mnet_tools", "tests", "examples"):
        for path in sorted((root / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                names = [node.module or ""] if isinstance(node, ast.ImportFrom) else []
                names += [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
                offenders += [f"{path.relative_to(root)}: {name}" for name in names if "heads.datasets._" in name]
    train_imports = [
        node.module
        for path in sorted((root / "mnet_tools" / "train").glob("*.py"))
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("heads.datasets")
    ]
    assert not offenders, offenders
    assert train_imports and set(train_imports) == {"heads.datasets"}, train_imports
