"""Real data as labelling tools and cameras write it: every loader and evaluator reads it right or names the file.

The files are tiny and written here: a COCO export with non-contiguous
category ids, crowd and empty images, grey / RGBA / palette / 16-bit / CMYK
images, an EXIF-rotated phone JPEG in a subfolder; broken files; NaN boxes,
duplicate ids, wrong sizes, boxes in the wrong format; and the segmentation
counterparts. Expected pixels are the ones the test drew, never the loader's.
"""

import json
import os
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image, ImageOps

import heads
from conftest import GroundTruthDetector
from heads.coco_eval import coco_metrics, detections_to_coco, ground_truth
from heads.datasets import load_coco, read_coco
from heads.datasets.images import inspect_image, read_image
from heads.targets import BoxFormatWarning, clean_detection_targets

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

HEIGHT, WIDTH = 20, 28  # every COCO image as displayed
BOX = (4, 6, 14, 16)  # x0, y0, x1, y1 of the drawn rectangle, displayed pixels
CATEGORIES = [{"id": 7, "name": "cat"}, {"id": 3, "name": "dog"}, {"id": 42, "name": "bird"}]
ORIENTATION = 0x0112


def exif(orientation):
    tags = Image.Exif()
    tags[ORIENTATION] = orientation
    return tags


def drawn(background, foreground, height=HEIGHT, width=WIDTH, box=BOX):
    """An array of `background` with `foreground` inside `box` (any channel count)."""
    background, foreground = np.atleast_1d(background), np.atleast_1d(foreground)
    array = np.empty((height, width, background.size), dtype=np.result_type(background, foreground))
    array[:] = background
    x0, y0, x1, y1 = box
    array[y0:y1, x0:x1] = foreground
    return array


def save(path, image, **kwargs):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    image.save(path, **kwargs)


# file name -> (how to write it, expected background RGB, expected box RGB, JPEG tolerance)
def write_messy_images(root):
    red, dark = (200, 100, 50), (10, 20, 30)
    expected = {}

    Image.fromarray(drawn(dark, red).astype("uint8")).save(root / "rgb.png")
    expected["rgb.png"] = (dark, red, 0)

    Image.fromarray(drawn(20, 220)[..., 0].astype("uint8"), mode="L").save(root / "grey.png")
    expected["grey.png"] = ((20,) * 3, (220,) * 3, 0)

    # Alpha 0 inside the box: dropped, not composited, the colour stays.
    Image.fromarray(drawn(dark + (255,), red + (0,)).astype("uint8"), mode="RGBA").save(root / "rgba.png")
    expected["rgba.png"] = (dark, red, 0)

    palette = Image.fromarray(drawn(0, 1)[..., 0].astype("uint8"), mode="P")
    palette.putpalette([5, 5, 5, 250, 0, 125] + [0] * 762)
    palette.save(root / "palette.png")
    expected["palette.png"] = ((5, 5, 5), (250, 0, 125), 0)

    # 16-bit grey: 60000 is 234 in 8 bits (high byte), 1000 is 3; not all white.
    Image.fromarray(drawn(1000, 60000)[..., 0].astype("uint16")).save(root / "grey16.png")
    assert Image.open(root / "grey16.png").mode == "I;16"
    expected["grey16.png"] = ((3,) * 3, (234,) * 3, 0)

    cmyk = drawn([255 - v for v in dark] + [0], [255 - v for v in red] + [0]).astype("uint8")
    save(str(root / "scans" / "cmyk.jpg"), Image.fromarray(cmyk, mode="CMYK"), quality=98)
    expected["scans/cmyk.jpg"] = (dark, red, 12)

    # A phone photo: stored on its side with EXIF orientation 6 (turn a quarter
    # clockwise to display); the box is drawn on the displayed view, as
    # labelling tools show it.
    displayed = drawn(dark, red).astype("uint8")
    stored = np.rot90(displayed, k=1)  # a quarter anticlockwise, undone by orientation 6
    save(str(root / "phone" / "2024" / "rotated.jpg"), Image.fromarray(stored), quality=98, exif=exif(6))
    expected["phone/2024/rotated.jpg"] = (dark, red, 12)
    return expected


@pytest.fixture(scope="module")
def messy(tmp_path_factory):
    """A COCO export written as labelling tools write them, and what each image must read as."""
    root = tmp_path_factory.mktemp("messy")
    images_dir = root / "images"
    images_dir.mkdir()
    expected = write_messy_images(images_dir)
    Image.fromarray(np.full((HEIGHT, WIDTH, 3), 90, "uint8")).save(images_dir / "empty.png")
    images, annotations = [], []
    for image_id, (file_name, category) in enumerate(zip(sorted(expected), [7, 3, 42, 7, 3, 42, 7]), start=100):
        images.append({"id": image_id, "file_name": file_name, "height": HEIGHT, "width": WIDTH})
        x0, y0, x1, y1 = BOX
        annotation = {"id": len(annotations) + 1, "image_id": image_id, "category_id": category,
                      "bbox": [x0, y0, x1 - x0, y1 - y0]}  # fmt: skip
        if image_id % 2:  # half carry iscrowd and area, half (as some tools write) not
            annotation.update(iscrowd=0, area=float((x1 - x0) * (y1 - y0)))
        annotations.append(annotation)
    images.append({"id": 5, "file_name": "empty.png", "height": HEIGHT, "width": WIDTH})
    # A crowd region on the RGB image: not a training box.
    rgb_id = next(image["id"] for image in images if image["file_name"] == "rgb.png")
    annotations.append(
        {"id": 99, "image_id": rgb_id, "category_id": 3, "bbox": [15, 1, 10, 4], "iscrowd": 1, "area": 40.0}
    )
    coco = {"images": images, "annotations": annotations, "categories": CATEGORIES}
    annotation_file = root / "annotations.json"
    annotation_file.write_text(json.dumps(coco))
    return {"root": root, "annotations": str(annotation_file), "images": str(images_dir),
            "expected": expected, "coco": coco}  # fmt: skip


def rewrite(messy, tmp_path, change, name="changed.json"):
    coco = json.loads(json.dumps(messy["coco"]))
    change(coco)
    path = tmp_path / name
    path.write_text(json.dumps(coco))
    return str(path)


def test_the_messy_export_loads_as_displayed_with_its_boxes(messy):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing in a correct export warrants a warning
        dataset = load_coco(messy["annotations"], messy["images"], (HEIGHT, WIDTH), batch_size=16, num_classes=3)
    images, targets = next(iter(dataset))
    images, boxes, labels = images.numpy(), targets["boxes"].numpy(), targets["labels"].numpy()
    file_names = [image["file_name"] for image in messy["coco"]["images"]]
    assert images.shape == (len(file_names), HEIGHT, WIDTH, 3)
    label_of = {7: 0, 3: 1, 42: 2}  # by position in the file's categories, not by id
    for i, name in enumerate(file_names):
        if name == "empty.png":
            assert np.all(labels[i] == -1) and np.all(boxes[i] == -1)  # kept, with no boxes
            np.testing.assert_array_equal(images[i], 90)
            continue
        background, foreground, tolerance = messy["expected"][name]
        x0, y0, x1, y1 = BOX
        inside = images[i, y0 + 2 : y1 - 2, x0 + 2 : x1 - 2]
        outside = np.concatenate([images[i, :, x1 + 2 :].reshape(-1, 3), images[i, y1 + 2 :].reshape(-1, 3)])
        np.testing.assert_allclose(inside.reshape(-1, 3), np.broadcast_to(foreground, (inside[..., 0].size, 3)),
                                   atol=tolerance, err_msg=name)  # fmt: skip
        np.testing.assert_allclose(outside, np.broadcast_to(background, outside.shape), atol=tolerance, err_msg=name)
        np.testing.assert_array_equal(boxes[i, 0], BOX)  # the crowd box of rgb.png is not a target
        annotation = next(a for a in messy["coco"]["annotations"]
                          if a["image_id"] == messy["coco"]["images"][i]["id"] and not a.get("iscrowd"))  # fmt: skip
        assert labels[i, 0] == label_of[annotation["category_id"]], name
        assert np.all(labels[i, 1:] == -1)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation_reads_as_pillows_exif_transpose(tmp_path, orientation):
    stored = np.arange(5 * 7 * 3, dtype="uint8").reshape(5, 7, 3) * 2
    path = str(tmp_path / f"o{orientation}.png")
    Image.fromarray(stored).save(path, exif=exif(orientation))
    with Image.open(path) as image:
        reference = np.asarray(ImageOps.exif_transpose(image).convert("RGB"))
    np.testing.assert_array_equal(read_image(path), reference)
    info = inspect_image(path)
    assert (info.height, info.width) == reference.shape[:2] and info.orientation == orientation


def test_the_rotated_phone_jpeg_has_its_box_where_the_labeller_drew_it(messy):
    # Boxes are drawn on the displayed view: the red rectangle under the box
    # only if the pixels are turned as EXIF orientation 6 says.
    records, _ = read_coco(messy["annotations"], messy["images"])
    record = next(r for r in records if r["file_name"] == "phone/2024/rotated.jpg")
    assert (record["height"], record["width"]) == (HEIGHT, WIDTH)  # the stored file is 28 high, 20 wide
    pixels = read_image(record["path"]).astype("float32")
    x0, y0, x1, y1 = record["boxes"][0].astype(int)
    assert pixels[y0 + 1 : y1 - 1, x0 + 1 : x1 - 1, 0].min() > 180  # red inside the box
    outside = np.ones((HEIGHT, WIDTH), bool)
    outside[y0 - 1 : y1 + 1, x0 - 1 : x1 + 1] = False
    assert pixels[outside, 0].max() < 40


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity"])
def test_a_non_finite_box_coordinate_fails_at_load_naming_file_annotation_image_and_value(messy, tmp_path, value):
    path = rewrite(messy, tmp_path, lambda coco: None)
    text = open(path).read().replace('"bbox": [4, 6, 10, 10]', f'"bbox": [4, {value}, 10, 10]', 1)
    open(path, "w").write(text)  # Python's json writes and reads NaN and Infinity as bare words
    first = json.loads(text)["annotations"][0]
    image = next(i for i in messy["coco"]["images"] if i["id"] == first["image_id"])
    with pytest.raises(ValueError) as raised:
        load_coco(path, messy["images"], 32, 2)
    message = str(raised.value)
    for part in ("changed.json", f"Annotation {first['id']}", image["file_name"], value, "finite"):
        assert part in message, (part, message)


@pytest.mark.parametrize("bbox", [None, [1, 2, 3], ["4", "6", "10", "10"], "4 6 10 10", [1, 2, True, 4]])
def test_a_malformed_bbox_is_named(messy, tmp_path, bbox):
    path = rewrite(messy, tmp_path, lambda coco: coco["annotations"][2].update(bbox=bbox))
    with pytest.raises(ValueError, match=r"Annotation 3 .*changed\.json.*\[x, y, width, height\]"):
        read_coco(path, messy["images"])


def test_a_nan_box_given_to_fit_as_arrays_is_rejected_before_the_loss():
    boxes = np.array([[[1, 2, 10, 12], [np.nan, 2, 5, 5], [np.nan] * 4]], "float32")
    labels = np.array([[0, 1, -1]])  # the padding row's NaN does not matter
    with pytest.raises(ValueError, match=r"boxes\[0, 1\] = \[nan, 2\.0, 5\.0, 5\.0\].*finite"):
        clean_detection_targets({"boxes": boxes, "labels": labels}, 2, 32)


def test_a_category_beyond_num_classes_is_named(messy):
    # "bird" (id 42) is listed third: label 2, beyond num_classes=2.
    with pytest.raises(ValueError) as raised:
        load_coco(messy["annotations"], messy["images"], 32, 2, num_classes=2)
    message = str(raised.value)
    for part in ("42", "'bird'", "annotations.json", "num_classes=2", "label is 2"):
        assert part in message, (part, message)


def test_duplicate_image_ids_are_named(messy, tmp_path):
    def change(coco):
        coco["images"][3]["id"] = coco["images"][1]["id"]

    duplicated = messy["coco"]["images"][1]
    with pytest.raises(
        ValueError, match=rf"changed\.json.*image id {duplicated['id']} twice.*{duplicated['file_name']}"
    ):
        read_coco(rewrite(messy, tmp_path, change), messy["images"])


@pytest.mark.parametrize(
    "size, expected",
    [
        ((HEIGHT + 3, WIDTH), r"width 28 and height 23 in the JSON.*is 28x20"),
        ((WIDTH, HEIGHT), r"width 20 and height 28 in the JSON.*is 28x20.*swapped"),
    ],
)
def test_json_width_and_height_are_checked_against_the_file(messy, tmp_path, size, expected):
    path = rewrite(messy, tmp_path, lambda coco: coco["images"][0].update(height=size[0], width=size[1]))
    name = messy["coco"]["images"][0]["file_name"]
    with pytest.raises(ValueError, match=rf"Image '{name}' .*changed\.json.*{expected}"):
        read_coco(path, messy["images"])


def test_the_size_as_stored_before_exif_is_explained(messy, tmp_path):
    def change(coco):
        image = next(i for i in coco["images"] if i["file_name"] == "phone/2024/rotated.jpg")
        image.update(height=WIDTH, width=HEIGHT)  # the stored size

    with pytest.raises(ValueError, match=r"rotated\.jpg.*EXIF orientation 6.*swapped.*before the EXIF orientation"):
        read_coco(rewrite(messy, tmp_path, change), messy["images"])


def test_an_image_without_width_and_height_takes_them_from_its_file(messy, tmp_path):
    def change(coco):
        for image in coco["images"]:
            del image["height"], image["width"]

    records, _ = read_coco(rewrite(messy, tmp_path, change), messy["images"])
    assert {(r["height"], r["width"]) for r in records} == {(HEIGHT, WIDTH)}


def test_boxes_in_the_wrong_format_are_counted_and_refused(messy, tmp_path):
    # [x0, y0, x1, y1] written where COCO has [x, y, width, height]: every box
    # but one reaches past the image.
    def change(coco):
        for annotation in coco["annotations"]:
            x, y, w, h = annotation["bbox"]
            annotation["bbox"] = [x + 2 * (annotation["id"] % 2), y, x + w + 6, y + h]

    with pytest.raises(ValueError, match=r"Of the 7 boxes .*changed\.json.*past their image.*not COCO boxes"):
        read_coco(rewrite(messy, tmp_path, change), messy["images"])


def test_arrays_in_the_wrong_box_format_warn_with_the_count():
    # xywh boxes given to a detector that reads xyxy: the narrow ones lose all area.
    xywh = np.array([[[2, 3, 10, 10], [12, 4, 6, 8], [20, 1, 4, 4]]], "float32")
    with pytest.warns(
        BoxFormatWarning, match=r"Of the 3 boxes .*2 with no area.*boxes\[0, 1\] = \[12\.0, 4\.0, 6\.0, 8\.0\]"
    ):
        cleaned = clean_detection_targets({"boxes": xywh, "labels": np.array([[0, 1, 0]])}, 2, 32)
    np.testing.assert_array_equal(cleaned["labels"], [[0, -1, -1]])


def test_max_boxes_that_leaves_boxes_out_says_so(messy, tmp_path):
    def change(coco):
        extra = dict(coco["annotations"][0], id=500)
        coco["annotations"].append(extra)

    with pytest.warns(UserWarning, match=r"max_boxes=1 leaves out 1 boxes of 1 images"):
        load_coco(rewrite(messy, tmp_path, change), messy["images"], 32, 2, max_boxes=1)


def truncated(data):
    return data[: len(data) // 2]


BROKEN = {
    "truncated.jpg": lambda jpeg, png: truncated(jpeg),
    "truncated.png": lambda jpeg, png: truncated(png),
    "text.jpg": lambda jpeg, png: b"not an image, a note someone saved as .jpg\n",
    "empty.png": lambda jpeg, png: b"",
}


def image_bytes(tmp_path):
    pixels = np.random.default_rng(0).integers(0, 255, (40, 40, 3)).astype("uint8")
    Image.fromarray(pixels).save(tmp_path / "good.jpg", quality=90)
    Image.fromarray(pixels).save(tmp_path / "good.png")
    return (tmp_path / "good.jpg").read_bytes(), (tmp_path / "good.png").read_bytes()


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_a_broken_image_fails_at_load_naming_it(tmp_path, name):
    jpeg, png = image_bytes(tmp_path)
    images_dir = tmp_path / "images"
    images_dir.mkdir()
    (images_dir / "fine.png").write_bytes(png)
    (images_dir / name).write_bytes(BROKEN[name](jpeg, png))
    coco = {
        "images": [{"id": 1, "file_name": "fine.png"}, {"id": 2, "file_name": name}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 5, 5]}],
        "categories": [{"id": 1, "name": "thing"}],
    }
    (tmp_path / "a.json").write_text(json.dumps(coco))
    with pytest.raises(OSError, match=rf"{name}.*(empty|not an image|truncated)"):
        load_coco(str(tmp_path / "a.json"), str(images_dir), 32, 2)
    with pytest.raises(OSError, match=name):
        read_image(str(images_dir / name))
    # The same file in a segmentation folder.
    masks_dir = tmp_path / "masks"
    masks_dir.mkdir()
    for stem in ("fine", os.path.splitext(name)[0]):
        Image.fromarray(np.zeros((40, 40), "uint8")).save(masks_dir / f"{stem}.png")
    with pytest.raises(OSError, match=name):
        heads.datasets.load_segmentation(str(images_dir), str(masks_dir), 32, 2)


def test_a_file_broken_after_loading_fails_naming_it(tmp_path):
    jpeg, png = image_bytes(tmp_path)
    images_dir = tmp_path / "images"
    images_dir.mkdir()
    (images_dir / "later.jpg").write_bytes(jpeg)
    coco = {"images": [{"id": 1, "file_name": "later.jpg"}], "annotations": [], "categories": [{"id": 1}]}
    (tmp_path / "a.json").write_text(json.dumps(coco))
    dataset = load_coco(str(tmp_path / "a.json"), str(images_dir), 32, 1)
    (images_dir / "later.jpg").write_bytes(truncated(jpeg))
    with pytest.raises(tf.errors.OpError, match=r"later\.jpg.*truncated"):
        next(iter(dataset))


def test_a_jpeg_with_data_after_its_end_marker_is_not_called_truncated(tmp_path):
    jpeg, _ = image_bytes(tmp_path)
    path = tmp_path / "trailer.jpg"
    path.write_bytes(jpeg + b"camera maker trailer \xff\xda no end marker after this")
    assert inspect_image(str(path))[:2] == (40, 40)


def test_evaluate_coco_scores_annotations_without_iscrowd_or_area(messy, tmp_path):
    def change(coco):
        for annotation in coco["annotations"]:
            if not annotation.get("iscrowd"):
                annotation.pop("iscrowd", None)
                annotation.pop("area", None)

    path = rewrite(messy, tmp_path, change)
    detector = GroundTruthDetector(path, messy["images"], (HEIGHT, WIDTH), num_classes=3)
    metrics = heads.evaluate_coco(detector, path, messy["images"])
    assert metrics["AP"] == pytest.approx(1.0) and metrics["AP50"] == pytest.approx(1.0)


def test_a_missing_area_comes_from_the_segmentation_else_the_box(messy, tmp_path):
    def change(coco):
        for annotation in coco["annotations"]:
            annotation.pop("area", None)
        # A right triangle over the box's lower-left half: about half its 100 pixels.
        coco["annotations"][0]["segmentation"] = [[4, 6, 14, 16, 4, 16]]

    truth = ground_truth(rewrite(messy, tmp_path, change))
    areas = [annotation["area"] for annotation in truth["annotations"]]
    assert 45 <= areas[0] <= 60
    assert areas[1:-1] == [100.0] * (len(areas) - 2) and areas[-1] == 40.0  # boxes 10x10, the crowd 10x4
    assert all(annotation["iscrowd"] == 0 for annotation in truth["annotations"][:-1])


def test_evaluate_coco_counts_annotations_with_duplicate_or_zero_ids(messy, tmp_path):
    # pycocotools matches ground truth by annotation id: with two annotations
    # sharing an id, one would be scored twice and the other never.
    def change(coco):
        for annotation in coco["annotations"]:
            annotation["id"] = 0 if annotation["id"] == 1 else 2
        coco["annotations"][1]["bbox"] = [1, 1, 5, 5]  # two different boxes now share id 2

    path = rewrite(messy, tmp_path, change)
    detector = GroundTruthDetector(path, messy["images"], (HEIGHT, WIDTH))
    assert heads.evaluate_coco(detector, path, messy["images"])["AP"] == pytest.approx(1.0)


def test_evaluate_coco_refuses_a_detector_with_more_classes_than_categories(messy):
    detector = GroundTruthDetector(messy["annotations"], messy["images"], (HEIGHT, WIDTH), num_classes=5)
    with pytest.raises(ValueError, match=r"5 classes but .*annotations\.json.* lists 3 categories"):
        heads.evaluate_coco(detector, messy["annotations"], messy["images"])


def test_a_label_without_category_is_named():
    records = [{"image_id": 7, "file_name": "a.jpg", "height": 10, "width": 10}]
    detections = {
        "boxes": np.array([[[1, 2, 3, 4]]], "float32"),
        "labels": np.array([[2]]),
        "confidence": np.array([[0.5]]),
        "num_detections": np.array([1]),
    }
    with pytest.raises(ValueError, match=r"'a\.jpg' have label 2.*2 categories"):
        detections_to_coco(detections, records, [{"id": 5}, {"id": 9}], 10)


def test_coco_metrics_refuses_results_for_unknown_images(messy):
    result = {"image_id": 12345, "category_id": 7, "bbox": [1, 1, 4, 4], "score": 0.5}
    with pytest.raises(ValueError, match=r"\[12345\].*annotations\.json"):
        coco_metrics(messy["annotations"], [result])


# --- segmentation ---------------------------------------------------------


def red_is_class_one(size):
    """A fixed 'segmenter': class 1 where the red channel is above 127.5."""
    inputs = keras.Input(size + (3,))
    red = keras.layers.Lambda(lambda x: x[..., :1] - 127.5)(inputs)
    return keras.Model(inputs, keras.layers.Concatenate()([-red, red]))


@pytest.fixture
def voc_messy(tmp_path):
    """Two pairs a naive reader gets wrong: a 16-bit grey PNG, an EXIF-rotated JPEG (and mask)."""
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir(), masks.mkdir()
    # 32 high, 48 wide as displayed; the top-left quadrant is bright / class 1.
    quadrant = np.zeros((32, 48), "uint8")
    quadrant[:16, :24] = 1
    # 16-bit grey 40000 and 20000: 156 and 78 in 8 bits (high byte); clipped, both 255.
    Image.fromarray(quadrant.astype("uint16") * 20000 + 20000).save(images / "grey16.png")
    Image.fromarray(quadrant, mode="L").save(masks / "grey16.png")
    red = np.stack([quadrant * 255, np.zeros_like(quadrant), np.zeros_like(quadrant)], axis=-1)
    Image.fromarray(np.rot90(red, k=1)).save(images / "phone.jpg", quality=98, exif=exif(6))
    Image.fromarray(quadrant, mode="L").save(masks / "phone.png")  # drawn on the displayed view
    # A mask that was itself stored turned, with the same tag: turned back too.
    Image.fromarray(np.rot90(red, k=1)).save(images / "tagged.jpg", quality=98, exif=exif(6))
    Image.fromarray(np.rot90(quadrant, k=1), mode="L").save(masks / "tagged.png", exif=exif(6))
    return {"images": str(images), "masks": str(masks), "quadrant": quadrant}


def test_evaluate_segmentation_reads_16_bit_and_rotated_images_right(voc_messy):
    scores = heads.evaluate_segmentation(red_is_class_one((16, 16)), voc_messy["images"], voc_messy["masks"], 2)
    # Read right, the fixed segmenter is right but for the quadrant's corner
    # pixel, where the upsampled logits tie (one in 384). 16-bit read as white
    # would put class 1 everywhere (background IoU 0), a rotation ignored or
    # wrong would put the quadrant elsewhere (class 1 IoU at most 1/3).
    assert min(scores["per_class_IoU"]) > 0.99


def test_load_segmentation_reads_16_bit_and_rotated_images_right(voc_messy):
    dataset = heads.datasets.load_segmentation(voc_messy["images"], voc_messy["masks"], (32, 48), 3, num_classes=2)
    images, masks = (np.asarray(t) for t in next(iter(dataset)))
    for image, mask in zip(images, masks):  # grey16, phone, tagged
        np.testing.assert_array_equal(mask[..., 0], voc_messy["quadrant"])
        bright = image[..., 0] > 127.5
        np.testing.assert_array_equal(bright, voc_messy["quadrant"].astype(bool))
    assert set(np.unique(images[0])) == {78.0, 156.0}  # 16-bit: the high byte, not clipped


def test_a_mask_of_another_size_is_named_with_both_sizes(tmp_path):
    (tmp_path / "images").mkdir(), (tmp_path / "masks").mkdir()
    Image.fromarray(np.zeros((30, 40, 3), "uint8")).save(tmp_path / "images" / "a.png")
    Image.fromarray(np.zeros((15, 20), "uint8")).save(tmp_path / "masks" / "a.png")
    pattern = r"images/a\.png' is 40x30 .*masks/a\.png' is 20x15"
    with pytest.raises(ValueError, match=pattern):
        heads.datasets.load_segmentation(str(tmp_path / "images"), str(tmp_path / "masks"), 32, 1)
    with pytest.raises(ValueError, match=pattern):
        heads.evaluate_segmentation(red_is_class_one((32, 32)), str(tmp_path / "images"), str(tmp_path / "masks"), 2)


def test_a_rotated_image_with_a_mask_of_its_stored_size_says_so(tmp_path):
    (tmp_path / "images").mkdir(), (tmp_path / "masks").mkdir()
    Image.fromarray(np.zeros((30, 40, 3), "uint8")).save(tmp_path / "images" / "a.jpg", exif=exif(8))
    Image.fromarray(np.zeros((30, 40), "uint8")).save(tmp_path / "masks" / "a.png")
    with pytest.raises(ValueError, match=r"a\.jpg' is 30x40 .*EXIF orientation 8.*a\.png' is 40x30"):
        heads.datasets.load_segmentation(str(tmp_path / "images"), str(tmp_path / "masks"), 32, 1)


def test_image_modes_without_an_rgb_meaning_are_refused(tmp_path):
    path = str(tmp_path / "float.tif")
    Image.fromarray(np.zeros((4, 4), "float32"), mode="F").save(path)
    with pytest.raises(ValueError, match=r"float\.tif.*mode 'F'"):
        read_image(path)


class _NamedDetector:
    """A detector stand-in labelling with its own indices and names, as torchvision's COCO detector does."""

    image_size = (64, 64)
    bounding_box_format = "xyxy"
    class_names = ["__background__", "square", "N/A", "circle"]
    num_classes = 4

    def predict(self, dataset, verbose=0):
        count = sum(int(images.shape[0]) for images in dataset)
        boxes = np.tile(np.array([[[0, 0, 32, 32], [8, 8, 40, 40], [0, 0, 16, 16]]], "float32"), (count, 1, 1))
        return {
            "boxes": boxes,
            "confidence": np.tile(np.array([[0.9, 0.8, 0.7]], "float32"), (count, 1)),
            "labels": np.tile(np.array([[1, 3, 2]]), (count, 1)),
            "num_detections": np.full((count,), 3),
        }


def test_evaluate_coco_maps_a_named_detectors_labels_by_name(tmp_path):
    """More classes than the file's categories is fine when the names say which is which."""
    from heads.coco_eval import evaluate_coco
    from heads.datasets import make_shapes

    files = make_shapes(str(tmp_path / "shapes"), num_images=2, image_size=64)
    with open(files["annotations"], encoding="utf-8") as f:
        ids = {c["name"]: c["id"] for c in json.load(f)["categories"]}
    _, results = evaluate_coco(_NamedDetector(), files["annotations"], files["images"], return_results=True)
    assert [r["category_id"] for r in results] == [ids["square"], ids["circle"]] * 2  # "N/A" left out
    assert [r["score"] for r in results[:2]] == pytest.approx([0.9, 0.8])
