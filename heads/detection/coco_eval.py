"""COCO detection metrics (pycocotools) for a detector over a COCO-format set."""

import contextlib
import io
import os

import keras
import numpy as np

from heads.datasets.coco import checked_bbox, coco_dataset, read_coco, read_coco_json
from mnet_backbones.validation import check_image_size, check_positive_int

COCO_METRIC_NAMES = (
    "AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl",
)  # fmt: skip


def detections_to_coco(detections, records, categories, image_size, bounding_box_format="xyxy", category_ids=None):
    """Batched detector outputs to COCO result dicts in original image pixels.

    `detections` holds `boxes` (N, D, 4) in `bounding_box_format` pixels of
    the resized `image_size` inputs, `confidence`, `labels` and
    `num_detections`, for the `records` (from `read_coco`) in order. Labels
    map to the file's categories by position, or through `category_ids`
    (label -> category id, None for a label the file has no category for,
    whose detections are left out). A label with no category by position
    (not in `0..len(categories) - 1`) is a ValueError.

    Example:
    ```python
    results = detections_to_coco(detector.predict(images), records, categories, 224)
    # [{"image_id": 1, "category_id": 2, "bbox": [x, y, w, h], "score": 0.9}, ...]
    ```
    """
    height, width = (image_size, image_size) if np.isscalar(image_size) else tuple(image_size)
    boxes = np.asarray(
        keras.utils.bounding_boxes.convert_format(
            np.asarray(detections["boxes"], "float32"),
            source=bounding_box_format,
            target="xyxy",
            height=height,
            width=width,
        )
    )
    results = []
    for i, record in enumerate(records):
        scale = np.array([record["width"] / width, record["height"] / height] * 2, "float32")
        count = int(detections["num_detections"][i])
        labels = np.asarray(detections["labels"][i][:count]).astype("int64")
        if category_ids is not None:
            for j in range(count):
                category_id = category_ids[int(labels[j])] if 0 <= labels[j] < len(category_ids) else None
                if category_id is not None:
                    x0, y0, x1, y1 = (boxes[i, j] * scale).tolist()
                    results.append(
                        {
                            "image_id": record["image_id"],
                            "category_id": category_id,
                            "bbox": [x0, y0, x1 - x0, y1 - y0],
                            "score": float(detections["confidence"][i, j]),
                        }
                    )
            continue
        unknown = labels[(labels < 0) | (labels >= len(categories))]
        if unknown.size:
            raise ValueError(
                f"Detections of image {record.get('file_name', record['image_id'])!r} have label {int(unknown[0])}, "
                f"but the file lists {len(categories)} categories (labels 0..{len(categories) - 1}, by position)."
            )
        for j in range(count):
            x0, y0, x1, y1 = (boxes[i, j] * scale).tolist()
            results.append(
                {
                    "image_id": record["image_id"],
                    "category_id": categories[int(labels[j])]["id"],
                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                    "score": float(detections["confidence"][i, j]),
                }
            )
    return results


def _area(annotation, image, describe, annotation_file):
    """COCO's `area` of an annotation that lacks one: its mask's pixels, else its box's."""
    from pycocotools import mask as mask_utils

    segmentation = annotation.get("segmentation")
    height, width = image.get("height"), image.get("width")
    if not (segmentation and height and width):
        return float(annotation["bbox"][2] * annotation["bbox"][3])
    try:
        if isinstance(segmentation, list):  # polygons
            rle = mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
        elif isinstance(segmentation, dict) and isinstance(segmentation.get("counts"), list):  # uncompressed RLE
            rle = mask_utils.frPyObjects(segmentation, height, width)
        else:
            rle = segmentation
        return float(mask_utils.area(rle))
    except Exception as error:
        raise ValueError(
            f"{describe} of {annotation_file!r} has no 'area' and a segmentation pycocotools cannot read "
            f"({type(error).__name__}: {error}); give it an 'area' or a COCO polygon / RLE segmentation."
        ) from error


def ground_truth(annotation_file, sizes=None):
    """The COCO file as pycocotools scores it: what `load_coco` accepts, made complete.

    Annotations without `iscrowd` get 0 and without `area` their mask's (or
    box's) area; annotation ids are renumbered 1..N, as pycocotools matches
    by id (a duplicate id, or id 0, would be scored wrongly). Image ids must
    be unique and boxes finite (ValueError naming the file). `sizes` maps
    image ids to `(height, width)` for images whose size the JSON lacks.
    """
    annotation_file = os.fspath(annotation_file)
    coco = read_coco_json(annotation_file)
    images = {}
    for index, image in enumerate(coco["images"]):
        if "id" not in image:
            raise ValueError(f"{annotation_file!r}: images[{index}] has no 'id'.")
        if image["id"] in images:
            raise ValueError(f"{annotation_file!r} lists image id {image['id']!r} twice.")
        image = dict(image)
        if sizes and image["id"] in sizes:
            image.setdefault("height", sizes[image["id"]][0])
            image.setdefault("width", sizes[image["id"]][1])
        images[image["id"]] = image
    annotations = []
    for index, annotation in enumerate(coco["annotations"]):
        describe = f"Annotation {annotation['id']!r}" if "id" in annotation else f"annotations[{index}]"
        checked_bbox(annotation, describe, annotation_file)
        annotation = dict(annotation, id=index + 1)
        annotation.setdefault("iscrowd", 0)
        if "area" not in annotation:
            annotation["area"] = _area(
                annotation, images.get(annotation.get("image_id"), {}), describe, annotation_file
            )
        annotations.append(annotation)
    return dict(coco, images=list(images.values()), annotations=annotations)


def coco_metrics(annotation_file, results, sizes=None):
    """pycocotools' bbox metrics for COCO result dicts, as `{name: value}`.

    Names: AP (IoU .50:.95), AP50, AP75, APs/APm/APl, AR1/AR10/AR100,
    ARs/ARm/ARl. An empty `results` scores 0 everywhere. The file is made
    complete first (`ground_truth`: missing `iscrowd` and `area` filled in);
    a result for an image the file does not list is a ValueError.

    Example:
    ```python
    coco_metrics("annotations.json", [{"image_id": 1, "category_id": 1,
                                       "bbox": [10, 10, 20, 20], "score": 1.0}])["AP50"]
    ```
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    dataset = ground_truth(annotation_file, sizes)
    if not results:
        return {name: 0.0 for name in COCO_METRIC_NAMES}
    image_ids = {image["id"] for image in dataset["images"]}
    unknown = sorted({result["image_id"] for result in results} - image_ids, key=str)
    if unknown:
        raise ValueError(f"Results for image ids {unknown[:10]} that {os.fspath(annotation_file)!r} does not list.")
    # pycocotools reports progress on stdout; the caller gets the figures instead.
    with contextlib.redirect_stdout(io.StringIO()):
        truth = COCO()
        truth.dataset = dataset
        truth.createIndex()
        evaluation = COCOeval(truth, truth.loadRes(results), "bbox")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    # -1 marks "no ground truth in this bucket" (e.g. no small objects).
    return {name: float(value) for name, value in zip(COCO_METRIC_NAMES, evaluation.stats)}


def _category_ids_by_name(detector, categories, annotation_file):
    """label -> category id by class name, for a detector with `class_names`; None without."""
    names = getattr(detector, "class_names", None)
    if not names:
        return None
    by_name = {category["name"]: category["id"] for category in categories}
    category_ids = [by_name.get(name) for name in names]
    if not any(category_id is not None for category_id in category_ids):
        raise ValueError(
            f"None of the detector's class names {list(names)[:5]}... is a category of "
            f"{os.fspath(annotation_file)!r} ({sorted(by_name)[:5]}...): its labels cannot be scored there."
        )
    return category_ids


# How COCO scores a detector (pycocotools' maxDets, torchvision's reference evaluation): every
# detection above a near-zero score, up to 100 per image, whatever the display threshold is.
COCO_SCORE_THRESHOLD = 0.001
COCO_MAX_DETECTIONS = 100


def coco_decoding(detector, score_threshold=COCO_SCORE_THRESHOLD, max_detections=COCO_MAX_DETECTIONS):
    """A `with` block in which `detector` predicts as COCO scores it (see `evaluate_coco`).

    A detector of this package sets its `score_threshold` and
    `max_detections` for the block (its `decoding`); any other object with a
    `predict` predicts as it is.
    """
    decoding = getattr(detector, "decoding", None)
    if decoding is None:
        return contextlib.nullcontext(detector)
    return decoding(score_threshold=score_threshold, max_detections=max_detections)


def evaluate_coco(detector, annotation_file, image_dir, batch_size=8, return_results=False,
                  score_threshold=COCO_SCORE_THRESHOLD, max_detections=COCO_MAX_DETECTIONS):  # fmt: skip
    """Runs `detector` over a COCO-format set and scores it with pycocotools.

    Scored the COCO way: every detection scoring above `score_threshold`
    (near zero), up to `max_detections` (100) per image, whatever the
    detector's own `score_threshold` is. That one is a display choice for
    `predict` and export; applied here, it would cut the precision-recall
    curve before AP integrates it. The detector's settings are restored
    afterwards.

    The set is read and checked as `load_coco` reads it (images as displayed,
    EXIF orientation applied; see `read_coco`), images are resized to the
    detector's `image_size`; predicted boxes go back to original image
    pixels and labels back to the file's category ids before scoring: by
    name when the detector has `class_names` (torchvision's COCO detector
    labels with its own 91 indices; its background and "N/A" slots have no
    category), else by position in the file's `categories`. Annotations may lack `iscrowd` (0) and
    `area` (their mask's or box's). A detector with more classes than the
    file has categories is a ValueError: its extra labels have no category.

    Returns a dict with `AP`, `AP50`, `AP75` and the other COCO figures
    (see `coco_metrics`); with `return_results`, `(metrics, results)`.

    Example:
    ```python
    metrics = heads.evaluate_coco(detector, "val/annotations.json", "val/images")
    metrics["AP50"]
    ```
    """
    batch_size = check_positive_int("batch_size", batch_size)
    records, categories = read_coco(annotation_file, image_dir)
    num_classes = getattr(detector, "num_classes", None)
    category_ids = _category_ids_by_name(detector, categories, annotation_file)
    if category_ids is None and num_classes is not None and num_classes > len(categories):
        raise ValueError(
            f"The detector has {num_classes} classes but {os.fspath(annotation_file)!r} lists "
            f"{len(categories)} categories: labels map to the file's categories by position, so labels "
            f"{len(categories)}..{num_classes - 1} would have none. Evaluate on a file that lists the "
            f"detector's {num_classes} categories, in its training order."
        )
    if not records:
        raise ValueError(f"{annotation_file} lists no images.")
    image_size = detector.image_size
    size = check_image_size(image_size, minimum=1)
    dataset = coco_dataset(records, size, batch_size).map(lambda images, targets: images)
    with coco_decoding(detector, score_threshold, max_detections):
        detections = detector.predict(dataset, verbose=0)
    results = detections_to_coco(
        detections,
        records,
        categories,
        image_size,
        bounding_box_format=detector.bounding_box_format,
        category_ids=category_ids,
    )
    sizes = {record["image_id"]: (record["height"], record["width"]) for record in records}
    metrics = coco_metrics(annotation_file, results, sizes)
    return (metrics, results) if return_results else metrics
