"""Ground-truth boxes matched to anchors: the training targets of both SSDLite heads.

Both match as SSD does: an anchor takes the box it overlaps most when that
IoU is high enough, and then every box claims its best anchor, whatever the
IoU, so that small boxes always train something (`claim_best_anchors`, for
both). They differ where the heads do:

- `SSDLiteLabelEncoder` (`SSDLiteObjectDetector`): keras-hub's `BoxMatcher`
  thresholds, positives at IoU >= 0.5, ignored anchors between 0.4 and 0.5,
  box targets coded as deltas; where two boxes claim one anchor the first
  wins, as keras-hub's force-match decides.
- `match_anchors` (`SSDLite320ObjectDetector`): torchvision's `SSDMatcher`,
  positives at IoU >= 0.5 and no ignored band; the last box wins an anchor
  two boxes claim.
"""

import keras
from keras import ops
from keras_hub.layers import BoxMatcher

from heads.configs import config_entries
from heads.detection.anchors import anchor_boxes
from heads.detection.box_coding import SSD_BOX_VARIANCE, encode_boxes
from heads.detection.postprocess import box_iou
from heads.losses import sum_over_replicas

bounding_boxes = keras.utils.bounding_boxes


def claim_best_anchors(iou, valid=None, last_wins=True):
    """Per anchor, the box whose best anchor it is, or -1: "each box claims its best anchor".

    Args:
        iou: (B, M, N) IoU of M boxes with N anchors.
        valid: (B, M) bool, False for boxes that claim nothing (padding);
            None: every box claims.
        last_wins: where several boxes claim one anchor, the last of them
            takes it (torchvision's `SSDMatcher`); False: the first
            (keras-hub's `BoxMatcher` force-match).

    Returns (B, N) int32 box indices. keras.ops: runs inside the training
    step on every backend.

    Example:
    ```python
    claim_best_anchors(np.array([[[0.9, 0.1, 0.0], [0.0, 0.2, 0.1]]], "float32"))  # [[0, 1, -1]]
    ```
    """
    num_boxes, num_anchors = ops.shape(iou)[1], ops.shape(iou)[2]
    claims = ops.one_hot(ops.argmax(iou, axis=-1), num_anchors) > 0  # (B, M, N)
    if valid is not None:
        claims = ops.logical_and(claims, valid[..., None])
    box_index = ops.reshape(ops.arange(num_boxes, dtype="int32"), (1, -1, 1))
    if last_wins:
        return ops.max(ops.where(claims, box_index, -1), axis=1)
    first = ops.min(ops.where(claims, box_index, num_boxes), axis=1)
    return ops.where(first < num_boxes, first, -1)


def count_positives(positive):
    """The batch's positive anchors (a 0/1 float mask), summed over replicas and at least 1: the loss divisor.

    The whole batch's count, on every replica (`heads.losses.sum_over_replicas`).
    """
    return ops.maximum(sum_over_replicas(ops.sum(positive)), 1.0)


def match_anchors(boxes, valid, anchors, iou_threshold=0.5):
    """Each anchor's box index, or -1, as torchvision's `SSDMatcher` matches them.

    An anchor takes the box it overlaps most when that IoU is at least
    `iou_threshold`; then every valid box takes the anchor it overlaps most,
    whatever the IoU (a later box wins an anchor two boxes pick). keras.ops:
    runs inside the training step on every backend.

    Args:
        boxes: (B, M, 4) xyxy. valid: (B, M) bool, False for padding.
        anchors: (N, 4) xyxy.

    Returns (B, N) int32 box indices, -1 for the background.

    Example:
    ```python
    match_anchors(boxes, labels >= 0, detector.anchors())  # (B, N)
    ```
    """
    boxes = ops.cast(boxes, "float32")
    iou = box_iou(boxes, ops.cast(anchors, "float32"), ops_module=ops)
    iou = ops.where(valid[..., None], iou, -1.0)
    best_iou = ops.max(iou, axis=1)
    matched = ops.where(best_iou >= iou_threshold, ops.cast(ops.argmax(iou, axis=1), "int32"), -1)
    claimed_by = claim_best_anchors(iou, valid, last_wins=True)
    return ops.where(claimed_by >= 0, claimed_by, matched)


@keras.saving.register_keras_serializable(package="heads")
class SSDLiteLabelEncoder(keras.layers.Layer):
    """Turns padded ground truth into per-anchor SSD training targets.

    Anchors match the ground-truth box of highest IoU at or above
    `positive_threshold`; anchors between the two thresholds are ignored
    (class -2), the rest are background (class -1). As in SSD, every real box
    is also matched to its best anchor, so small boxes always train
    something (`claim_best_anchors`). Box targets are centre/size deltas
    divided by `box_variance` (`heads.detection.box_coding.encode_boxes`).
    Padded boxes (label -1) never match.

    `keras_hub`'s `RetinaNetLabelEncoder` cannot be reused: it does not keep
    `force_match_for_each_col` in its config and it lets padded boxes be
    force-matched.

    Example:
    ```python
    anchors = keras_hub.layers.AnchorGenerator("xyxy", 4, 5, 1, [1.0], 2.0)
    encoder = SSDLiteLabelEncoder(anchors)
    deltas, classes = encoder(
        np.zeros((1, 64, 64, 3)), np.array([[[8, 8, 40, 40]]], "float32"), np.array([[0]])
    )
    ```
    """

    def __init__(
        self,
        anchor_generator,
        bounding_box_format="xyxy",
        positive_threshold=0.5,
        negative_threshold=0.4,
        box_variance=SSD_BOX_VARIANCE,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if isinstance(anchor_generator, dict):
            anchor_generator = keras.layers.deserialize(anchor_generator)
        self.anchor_generator = anchor_generator
        self.bounding_box_format = bounding_box_format
        self.positive_threshold = float(positive_threshold)
        self.negative_threshold = float(negative_threshold)
        self.box_variance = tuple(float(v) for v in box_variance)
        # The thresholds only: every box's claim of its best anchor follows, in `call`.
        self.box_matcher = BoxMatcher(
            thresholds=[self.negative_threshold, self.positive_threshold],
            match_values=[-1, -2, 1],
            force_match_for_each_col=False,
        )

    def anchors(self, images):
        """All anchors for `images`' size, in xyxy pixels, level after level."""
        return anchor_boxes(self.anchor_generator, images)

    def call(self, images, gt_boxes, gt_classes):
        height, width = ops.shape(images)[1], ops.shape(images)[2]
        anchors = self.anchors(images)
        gt_classes = ops.cast(gt_classes, "float32")
        gt_boxes = bounding_boxes.convert_format(
            ops.cast(gt_boxes, "float32"), source=self.bounding_box_format, target="xyxy", height=height, width=width
        )
        valid = ops.greater_equal(gt_classes, 0.0)
        gt_boxes = ops.where(valid[..., None], gt_boxes, -1.0)
        iou = bounding_boxes.compute_iou(anchors, gt_boxes, bounding_box_format="xyxy")
        # IoU -1 against padded boxes, so they lose every argmax. (compute_iou's
        # own `use_masking` fails for unbatched anchors against batched boxes.)
        iou = ops.where(valid[:, None, :], iou, -1.0)
        matched_index, matched_value = self.box_matcher(iou)
        # Every box claims its best anchor, the first box winning a shared one, as keras-hub's force-match
        # does: padded boxes too, and BoxMatcher's own extra column (index N, IoU -1; its best anchor is
        # anchor 0), which the gathers below see as a padded box.
        batch, num_anchors = ops.shape(gt_classes)[0], ops.shape(iou)[1]
        columns = ops.concatenate([iou, -ops.ones((batch, num_anchors, 1), "float32")], axis=-1)
        claimed_by = claim_best_anchors(ops.transpose(columns, (0, 2, 1)), last_wins=False)
        matched_index = ops.where(claimed_by >= 0, claimed_by, ops.cast(matched_index, "int32"))
        matched_value = ops.where(claimed_by >= 0, 1, matched_value)
        gt_classes = ops.concatenate([gt_classes, -ops.ones((batch, 1), "float32")], axis=1)
        gt_boxes = ops.concatenate([gt_boxes, -ops.ones((batch, 1, 4), "float32")], axis=1)
        matched_classes = ops.take_along_axis(gt_classes, matched_index, axis=1)
        matched_boxes = ops.take_along_axis(gt_boxes, matched_index[..., None], axis=1)
        # A claim of a padded column (all IoU -1) lands on some anchor: not a positive.
        positive = ops.logical_and(ops.equal(matched_value, 1), ops.greater_equal(matched_classes, 0.0))
        ignored = ops.logical_and(ops.equal(matched_value, -2), ops.logical_not(positive))
        deltas = encode_boxes(anchors, matched_boxes, self.box_variance)
        deltas = ops.where(positive[..., None], deltas, 0.0)
        classes = ops.where(positive, matched_classes, ops.where(ignored, -2.0, -1.0))
        return deltas, classes

    def get_config(self):
        names = ("bounding_box_format", "positive_threshold", "negative_threshold", "box_variance")
        return {
            **super().get_config(),
            "anchor_generator": keras.layers.serialize(self.anchor_generator),
            **config_entries(self, *names),
        }
