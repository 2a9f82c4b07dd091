"""Labels beyond a model's classes are refused where the labels are, through any `tf.data` transformation."""

import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import heads
from heads.datasets import check_classes, coco_dataset, load_coco, load_segmentation, make_shapes, read_coco

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

# Downstream of a loader, the ways a training script reshapes a dataset: each
# returns a new Dataset object without the loader's attributes.
TRANSFORMS = {
    "take": lambda dataset: dataset.take(2),
    "map": lambda dataset: dataset.map(lambda images, targets: (images / 255.0, targets)),
    "shuffle": lambda dataset: dataset.shuffle(4, seed=0),
    "repeat": lambda dataset: dataset.repeat(),
    "all_and_zip": lambda dataset: tf.data.Dataset.zip(
        (dataset.take(2).map(lambda images, targets: (images, targets)).shuffle(2).repeat(), dataset)
    ),
}


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    # Three categories: circle (id 1, label 0), square (id 2, label 1), triangle (id 3, label 2);
    # masks hold 0 (background) to 3.
    return make_shapes(str(tmp_path_factory.mktemp("shapes")), num_images=4, image_size=32, seed=1)


def iterate(dataset, elements=8):
    for _ in dataset.take(elements):
        pass


# --- COCO ---------------------------------------------------------------------------


def test_coco_labels_beyond_num_classes_stop_the_pipeline_naming_file_image_and_category(shapes):
    records, categories = read_coco(shapes["annotations"], shapes["images"])
    with_triangle = next(record for record in records if 2 in record["labels"])
    # num_classes=3 holds every label: iterates.
    iterate(coco_dataset(records, (32, 32), 2, num_classes=3, categories=categories))
    for augment in (False, True):
        dataset = coco_dataset(records, (32, 32), 1, augment=augment, seed=0, num_classes=2, categories=categories)
        for name, transform in TRANSFORMS.items():
            with pytest.raises(tf.errors.InvalidArgumentError) as caught:
                iterate(transform(dataset))
            message = str(caught.value)
            for part in (
                shapes["annotations"],
                with_triangle["path"],
                "category 3 (triangle), label 2",
                "num_classes=2 allows labels 0..1",
            ):
                assert part in message, (name, augment, part, message)


def test_a_hand_made_label_beyond_the_files_categories_is_said_so(shapes):
    records, categories = read_coco(shapes["annotations"], shapes["images"])
    records[0]["labels"] = np.full_like(records[0]["labels"], 5)
    with pytest.raises(
        tf.errors.InvalidArgumentError, match=r"no category of the 3 in the file, label 5; num_classes=3"
    ):
        iterate(coco_dataset(records, (32, 32), 2, num_classes=3, categories=categories).repeat())


def test_load_coco_given_num_classes_checks_inside_its_pipeline_too(shapes):
    dataset = load_coco(shapes["annotations"], shapes["images"], 32, 2, num_classes=3)
    iterate(dataset.repeat())  # the file holds labels 0..2: nothing to refuse


@pytest.mark.parametrize("transform", TRANSFORMS, ids=str)
def test_check_classes_finds_the_coco_categories_through_transformations(shapes, transform):
    dataset = TRANSFORMS[transform](load_coco(shapes["annotations"], shapes["images"], 32, 2))
    assert not hasattr(dataset, "coco_categories")  # what the detectors' fit reads
    with pytest.raises(ValueError) as caught:
        check_classes(dataset, num_classes=2)
    for part in (shapes["annotations"], "3 categories", "'triangle'", "num_classes=2", "labels 2.."):
        assert part in str(caught.value), (part, str(caught.value))
    check_classes(dataset, num_classes=3)


# --- segmentation ---------------------------------------------------------------------


@pytest.fixture
def masks_with_a_seven(shapes, tmp_path):
    """`shapes`' pairs, one mask holding a 7 (beyond 4 classes) and 255 (ignore) besides its classes."""
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir(), masks.mkdir()
    for name in sorted(os.listdir(shapes["images"])):
        stem = os.path.splitext(name)[0]
        os.symlink(os.path.join(shapes["images"], name), images / name)
        mask = np.array(Image.open(os.path.join(shapes["masks"], stem + ".png")))
        Image.fromarray(mask).save(masks / (stem + ".png"))
    bad = masks / sorted(os.listdir(masks))[1]
    mask = np.array(Image.open(bad))
    mask[0, :4] = 255
    mask[1, :3] = 7
    Image.fromarray(mask).save(bad)
    return {"images": str(images), "masks": str(masks), "bad": str(bad)}


def mask_message_parts(path):
    return (path, "class values [7]", "num_classes=4 allows 0..3 and 255 (ignore)")


def test_a_mask_value_beyond_the_classes_is_named_where_the_mask_is_decoded(masks_with_a_seven):
    bad = masks_with_a_seven["bad"]
    mask = np.array(Image.open(bad))
    valid = np.where(mask == 7, 1, mask).astype("uint8")
    Image.fromarray(valid).save(bad)
    dataset = load_segmentation(masks_with_a_seven["images"], masks_with_a_seven["masks"], 32, 2, num_classes=4)
    iterate(dataset)
    Image.fromarray(mask).save(bad)  # the file changes after the up-front check
    with pytest.raises(tf.errors.InvalidArgumentError) as caught:
        iterate(TRANSFORMS["all_and_zip"](dataset))
    for part in mask_message_parts(bad):
        assert part in str(caught.value), (part, str(caught.value))


@pytest.mark.parametrize("transform", TRANSFORMS, ids=str)
def test_check_classes_names_the_mask_file_through_transformations(masks_with_a_seven, transform):
    # Built without num_classes, as for a fit whose loss would say only "label value of 7 ... [0, 4)".
    dataset = load_segmentation(masks_with_a_seven["images"], masks_with_a_seven["masks"], 32, 2)
    transformed = TRANSFORMS[transform](dataset)
    with pytest.raises(ValueError) as caught:
        check_classes(transformed, num_classes=4)
    for part in mask_message_parts(masks_with_a_seven["bad"]):
        assert part in str(caught.value), (part, str(caught.value))
    check_classes(transformed, num_classes=8)  # 255 is ignore, not a class: allowed


def test_check_classes_passes_other_datasets_and_checks_its_argument():
    dataset = tf.data.Dataset.from_tensor_slices((np.zeros((2, 4, 4, 3)), np.full((2, 4, 4, 1), 9)))
    check_classes(dataset.batch(2), num_classes=2)
    with pytest.raises(ValueError, match="num_classes"):
        check_classes(dataset, num_classes=0)


def test_check_classes_is_public():
    assert heads.datasets.check_classes is check_classes
    assert "check_classes" in heads.datasets.__all__


def test_check_classes_example_runs(tmp_path, monkeypatch):
    import re
    import textwrap

    monkeypatch.chdir(tmp_path)  # the example writes its files under ./shapes
    (block,) = re.findall(r"```python\n(.*?)```", check_classes.__doc__, flags=re.S)
    namespace = {}
    exec(compile(textwrap.dedent(block), "<check_classes docstring>", "exec"), namespace)
    assert namespace["dataset"].masks_checked_below == 4  # read once for 4 classes, not again


# --- the models' fit and evaluate ---------------------------------------------------


def _tiny_backbone():
    from mnet_backbones import MobileNetBackbone

    return MobileNetBackbone("mobilenetv3_small", width_multiplier=0.35)


def test_a_detectors_fit_refuses_extra_categories_after_transformations(shapes):
    detector = heads.create_ssdlite(_tiny_backbone(), num_classes=2, image_size=32)
    detector.compile()
    dataset = load_coco(shapes["annotations"], shapes["images"], 32, 2)
    for transform in ("take", "repeat"):
        with pytest.raises(ValueError, match=r"has 3 categories .*num_classes=2") as caught:
            detector.fit(TRANSFORMS[transform](dataset), epochs=1, steps_per_epoch=1, verbose=0)
        assert shapes["annotations"] in str(caught.value)


@pytest.mark.parametrize("method", ["fit", "evaluate"])
def test_a_segmenters_fit_and_evaluate_name_the_mask_beyond_its_classes(masks_with_a_seven, method):
    # Built without num_classes: the loss alone would say "label value of 7 ... [0, 4)", naming no file.
    segmenter = heads.create_lraspp(_tiny_backbone(), num_classes=4)
    segmenter.compile()
    dataset = load_segmentation(masks_with_a_seven["images"], masks_with_a_seven["masks"], 32, 2)
    data = dataset.shuffle(4, seed=0).repeat()
    with pytest.raises(ValueError) as caught:
        if method == "fit":
            segmenter.fit(data, epochs=1, steps_per_epoch=1, verbose=0)
        else:
            segmenter.evaluate(data, steps=1, verbose=0)
    for part in mask_message_parts(masks_with_a_seven["bad"]):
        assert part in str(caught.value), (part, str(caught.value))
