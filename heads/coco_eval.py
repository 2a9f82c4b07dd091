"""Moved to `heads.detection.coco_eval`; this old path re-exports what callers import from it.

COCO detection metrics. Old code and saved files name this module; new code
imports the new one.
"""

from heads.detection.coco_eval import COCO_METRIC_NAMES, coco_metrics, detections_to_coco, evaluate_coco, ground_truth

__all__ = [
    "COCO_METRIC_NAMES",
    "coco_metrics",
    "detections_to_coco",
    "evaluate_coco",
    "ground_truth",
]
