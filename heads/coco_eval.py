"""COCO detection metrics (pycocotools) for a detector over a COCO-format set."""

import contextlib
import io

import keras
import numpy as np

from heads.datasets.coco import load_coco, read_coco

COCO_METRIC_NAMES = (
    "AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl",
)  # fmt: skip


def detections_to_coco(detections, records, categories, image_size, bounding_box_format="xyxy"):
    """Batched detector outputs to COCO result dicts in original image pixels.

    `detections` holds `boxes` (N, D, 4) in `bounding_box_format` pixels of
    the resized `image_size` inputs, `confidence`, `labels` and
    `num_detections`, for the `records` (from `read_coco`) in order.

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
        for j in range(int(detections["num_detections"][i])):
            x0, y0, x1, y1 = (boxes[i, j] * scale).tolist()
            results.append(
                {
                    "image_id": record["image_id"],
                    "category_id": categories[int(detections["labels"][i, j])]["id"],
                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                    "score": float(detections["confidence"][i, j]),
                }
            )
    return results


def coco_metrics(annotation_file, results):
    """pycocotools' bbox metrics for COCO result dicts, as `{name: value}`.

    Names: AP (IoU .50:.95), AP50, AP75, APs/APm/APl, AR1/AR10/AR100,
    ARs/ARm/ARl. An empty `results` scores 0 everywhere.

    Example:
    ```python
    coco_metrics("annotations.json", [{"image_id": 1, "category_id": 1,
                                       "bbox": [10, 10, 20, 20], "score": 1.0}])["AP50"]
    ```
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    if not results:
        return {name: 0.0 for name in COCO_METRIC_NAMES}
    # pycocotools reports progress on stdout; the caller gets the figures instead.
    with contextlib.redirect_stdout(io.StringIO()):
        ground_truth = COCO(annotation_file)
        evaluation = COCOeval(ground_truth, ground_truth.loadRes(results), "bbox")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    # -1 marks "no ground truth in this bucket" (e.g. no small objects).
    return {name: float(value) for name, value in zip(COCO_METRIC_NAMES, evaluation.stats)}


def evaluate_coco(detector, annotation_file, image_dir, batch_size=8, return_results=False):
    """Runs `detector` over a COCO-format set and scores it with pycocotools.

    Images are resized to the detector's `image_size`; predicted boxes go
    back to original image pixels and labels back to the file's category
    ids before scoring.

    Returns a dict with `AP`, `AP50`, `AP75` and the other COCO figures
    (see `coco_metrics`); with `return_results`, `(metrics, results)`.

    Example:
    ```python
    metrics = heads.evaluate_coco(detector, "val/annotations.json", "val/images")
    metrics["AP50"]
    ```
    """
    records, categories = read_coco(annotation_file, image_dir)
    image_size = detector.image_size
    dataset = load_coco(annotation_file, image_dir, image_size, batch_size).map(lambda images, targets: images)
    detections = detector.predict(dataset, verbose=0)
    results = detections_to_coco(
        detections, records, categories, image_size, bounding_box_format=detector.bounding_box_format
    )
    metrics = coco_metrics(annotation_file, results)
    return (metrics, results) if return_results else metrics
