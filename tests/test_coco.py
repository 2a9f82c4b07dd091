"""COCO data: `load_coco`, `read_coco` and `evaluate_coco` against known answers."""

import json

import keras
import numpy as np
import pytest

import heads
from conftest import GroundTruthDetector
from heads.datasets import load_coco, make_shapes, read_coco
from heads.detection.coco_eval import coco_metrics, detections_to_coco
from heads.detection.targets import BoxFormatWarning

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    return make_shapes(str(tmp_path_factory.mktemp("shapes")), num_images=6, image_size=(48, 40), seed=3)


def rewrite(annotation_file, out_file, change):
    with open(annotation_file, encoding="utf-8") as f:
        coco = json.load(f)
    change(coco)
    with open(out_file, "w", encoding="utf-8") as f:
        json.dump(coco, f)
    return out_file


def test_load_coco_resizes_pads_and_maps_categories(shapes, tmp_path):
    # Categories listed in reverse: category id 3 becomes label 0, id 1 label 2.
    reversed_file = rewrite(shapes["annotations"], tmp_path / "reversed.json",
                            lambda coco: coco["categories"].reverse())  # fmt: skip
    with open(shapes["annotations"], encoding="utf-8") as f:
        coco = json.load(f)
    first = [a for a in coco["annotations"] if a["image_id"] == coco["images"][0]["id"]]
    most = max(sum(a["image_id"] == image["id"] for a in coco["annotations"]) for image in coco["images"])

    dataset = load_coco(str(reversed_file), shapes["images"], image_size=(24, 80), batch_size=4)
    images, targets = next(iter(dataset))
    assert tuple(images.shape) == (4, 24, 80, 3)
    assert images.dtype.name == "float32" and float(np.max(images)) > 1.0  # 0..255 pixels
    assert tuple(targets["boxes"].shape) == (4, most, 4)
    boxes, labels = targets["boxes"].numpy()[0], targets["labels"].numpy()[0]
    for i, annotation in enumerate(first):
        x, y, w, h = annotation["bbox"]
        # Original image is 40 wide, 48 high: x scales by 2, y by 1/2.
        np.testing.assert_allclose(boxes[i], [2 * x, y / 2, 2 * (x + w), (y + h) / 2], rtol=1e-5)
        assert labels[i] == 3 - annotation["category_id"]
    assert np.all(labels[len(first) :] == -1) and np.all(boxes[len(first) :] == -1)


def test_load_coco_other_box_format_and_augmentation_keep_boxes_inside(shapes):
    dataset = load_coco(shapes["annotations"], shapes["images"], 32, 6, bounding_box_format="xywh",
                        shuffle=True, augment=True, seed=1)  # fmt: skip
    for _ in range(3):
        images, targets = next(iter(dataset))
        boxes, labels = targets["boxes"].numpy(), targets["labels"].numpy()
        real = labels >= 0
        assert real.any()
        x, y, w, h = np.moveaxis(boxes[real], -1, 0)
        assert np.all(x >= 0) and np.all(y >= 0) and np.all(w >= 2) and np.all(h >= 2)
        assert np.all(x + w <= 32 + 1e-4) and np.all(y + h <= 32 + 1e-4)
        assert np.all(boxes[~real] == -1)


def test_augmentation_repeats_with_its_seed_and_draws_flip_and_zoom_independently(shapes):
    def first_image_boxes(seed, epochs):
        dataset = load_coco(shapes["annotations"], shapes["images"], 32, 6, augment=True, seed=seed)
        return [targets["boxes"].numpy()[0] for _, targets in dataset.repeat(epochs)]

    boxes, again = first_image_boxes(2, 24), first_image_boxes(2, 24)
    np.testing.assert_array_equal(np.stack(boxes), np.stack(again))
    assert not all(np.array_equal(boxes[0], later) for later in boxes[1:])
    plain = next(iter(load_coco(shapes["annotations"], shapes["images"], 32, 6)))[1]["boxes"].numpy()[0]
    real = plain[:, 0] >= 0
    # Flip decided by the box centre moving to the other side of the image;
    # zoom by the width of the first box. Both states of the flip at both
    # zoom-in and zoom-out show that the two draws are not one number.
    centre, width = (plain[real, 0] + plain[real, 2]) / 2, plain[real, 2] - plain[real, 0]
    states = set()
    for augmented in boxes:
        kept = augmented[real]
        if np.any(kept[:1] < 0):
            continue
        moved = (kept[0, 0] + kept[0, 2]) / 2
        flipped = abs(moved - (32 - centre[0])) < abs(moved - centre[0])
        states.add((bool(flipped), bool(kept[0, 2] - kept[0, 0] > width[0])))
    assert len(states) >= 3, states


def test_a_missing_image_is_named(shapes, tmp_path):
    broken = rewrite(shapes["annotations"], tmp_path / "broken.json",
                     lambda coco: coco["images"][2].update(file_name="nowhere.png"))  # fmt: skip
    with pytest.raises(FileNotFoundError, match="nowhere.png"):
        load_coco(str(broken), shapes["images"], 32, 2)


def test_out_of_image_boxes_are_clipped_and_degenerate_ones_dropped_with_a_warning(shapes, tmp_path):
    def change(coco):
        image_id = coco["images"][0]["id"]
        coco["annotations"] = [a for a in coco["annotations"] if a["image_id"] != image_id] + [
            {"id": 101, "image_id": image_id, "category_id": 2, "bbox": [-10, 5, 30, 100], "iscrowd": 0},
            {"id": 102, "image_id": image_id, "category_id": 1, "bbox": [50, 5, 10, 10], "iscrowd": 0},
            {"id": 103, "image_id": image_id, "category_id": 1, "bbox": [5, 5, 0, 10], "iscrowd": 0},
        ]

    edges = str(rewrite(shapes["annotations"], tmp_path / "edges.json", change))
    with pytest.warns(BoxFormatWarning) as caught:
        records, _ = read_coco(edges, shapes["images"])
    np.testing.assert_allclose(records[0]["boxes"], [[0, 5, 20, 48]])  # the image is 40 x 48
    np.testing.assert_array_equal(records[0]["labels"], [1])
    (warning,) = caught
    message = str(warning.message)
    assert "edges.json" in message
    assert "1 with no area" in message and "Annotation 103" in message
    assert "1 outside their image" in message and "Annotation 102" in message
    assert "1 reaching more than 1 pixel past their image, clipped" in message and "Annotation 101" in message


def ground_truth_results(annotation_file):
    with open(annotation_file, encoding="utf-8") as f:
        coco = json.load(f)
    return [
        {"image_id": a["image_id"], "category_id": a["category_id"], "bbox": list(a["bbox"]), "score": 0.9}
        for a in coco["annotations"]
    ]


def test_coco_metrics_known_answers(shapes):
    perfect = coco_metrics(shapes["annotations"], ground_truth_results(shapes["annotations"]))
    assert perfect["AP"] == pytest.approx(1.0) and perfect["AP50"] == pytest.approx(1.0)
    # Every box moved right by a fifth of its width: IoU = 0.8 / 1.2 = 2/3, a match
    # at the IoU thresholds .50, .55, .60, .65 of the ten COCO averages over.
    shifted = ground_truth_results(shapes["annotations"])
    for result in shifted:
        result["bbox"][0] += result["bbox"][2] / 5
    metrics = coco_metrics(shapes["annotations"], shifted)
    assert metrics["AP50"] == pytest.approx(1.0)
    assert metrics["AP75"] == pytest.approx(0.0)
    assert metrics["AP"] == pytest.approx(0.4, abs=0.01)
    wrong_class = ground_truth_results(shapes["annotations"])
    for result in wrong_class:
        result["category_id"] = result["category_id"] % 3 + 1
    assert coco_metrics(shapes["annotations"], wrong_class)["AP50"] == pytest.approx(0.0)
    assert coco_metrics(shapes["annotations"], [])["AP"] == 0.0


def test_evaluate_coco_maps_back_to_original_pixels_and_category_ids(shapes, tmp_path):
    reversed_file = str(rewrite(shapes["annotations"], tmp_path / "reversed.json",
                                lambda coco: coco["categories"].reverse()))  # fmt: skip
    detector = GroundTruthDetector(reversed_file, shapes["images"], (24, 80), bounding_box_format="yxyx")
    metrics, results = heads.evaluate_coco(detector, reversed_file, shapes["images"], return_results=True)
    assert metrics["AP"] == pytest.approx(1.0)
    expected = {}
    for r in ground_truth_results(shapes["annotations"]):
        expected.setdefault((r["image_id"], r["category_id"]), []).append(r["bbox"])
    assert len(results) == sum(len(boxes) for boxes in expected.values())
    for result in results:
        candidates = np.array(expected[(result["image_id"], result["category_id"])])
        assert np.abs(candidates - result["bbox"]).max(axis=1).min() < 1e-3, result


@pytest.mark.parametrize("head", ["ssdlite", "ssdlite320"])
def test_evaluate_coco_scores_what_the_display_threshold_would_hide(shapes, head):
    keras.utils.set_random_seed(0)
    detector = heads.create_ssdlite("mobilenetv3_small_050", 3, head=head, image_size=64, load_weights=False)
    # Random weights score every anchor near the prior: a display threshold of 0.9 keeps nothing.
    detector.score_threshold, detector.max_detections = 0.9, 20
    assert int(detector.predict(np.zeros((1, 64, 64, 3), "float32"), verbose=0)["num_detections"][0]) == 0
    metrics, results = heads.evaluate_coco(detector, shapes["annotations"], shapes["images"], return_results=True)
    assert (detector.score_threshold, detector.max_detections) == (0.9, 20)  # restored
    per_image = np.bincount([result["image_id"] for result in results])
    assert 0 < per_image.max() <= 100 and min(result["score"] for result in results) < 0.9
    detector.score_threshold = 0.2
    again, same_results = heads.evaluate_coco(detector, shapes["annotations"], shapes["images"], return_results=True)
    assert again == metrics and same_results == results
    _, few = heads.evaluate_coco(detector, shapes["annotations"], shapes["images"], return_results=True,
                                 max_detections=5)  # fmt: skip
    assert np.bincount([result["image_id"] for result in few]).max() <= 5


def test_detections_to_coco_skips_padding():
    records = [{"image_id": 7, "height": 20, "width": 10}]
    categories = [{"id": 5, "name": "a"}, {"id": 9, "name": "b"}]
    detections = {
        "boxes": np.array([[[1, 2, 3, 4], [-1, -1, -1, -1]]], "float32"),
        "labels": np.array([[1, -1]]),
        "confidence": np.array([[0.5, -1.0]]),
        "num_detections": np.array([1]),
    }
    (result,) = detections_to_coco(detections, records, categories, (10, 10))
    assert result["image_id"] == 7 and result["category_id"] == 9
    np.testing.assert_allclose(result["bbox"], [1, 4, 2, 4])  # y doubled: 20 high from 10


@pytest.mark.parametrize("batch_size", [2.7, 16.0, 0, True, "4"])
def test_load_coco_takes_only_a_positive_int_batch_size(shapes, batch_size):
    with pytest.raises(ValueError, match="`batch_size` must be a positive int"):
        load_coco(shapes["annotations"], shapes["images"], image_size=32, batch_size=batch_size)


@pytest.mark.parametrize("num_images", [2.0, 1.5, 0])
def test_make_shapes_takes_only_a_positive_int_num_images(tmp_path, num_images):
    with pytest.raises(ValueError, match="`num_images` must be a positive int"):
        make_shapes(str(tmp_path), num_images=num_images, image_size=32)
