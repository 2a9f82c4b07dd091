"""Moved: whole-set segmentation metrics are `heads.segmentation.evaluation`."""

from heads.segmentation.evaluation import (
    _input_size,
    confusion_matrix,
    evaluate_segmentation,
    predict_masks,
    segmentation_scores,
)

__all__ = ["_input_size", "confusion_matrix", "evaluate_segmentation", "predict_masks", "segmentation_scores"]
