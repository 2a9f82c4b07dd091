"""SSD training targets: ground-truth boxes matched to anchors and coded as deltas."""

import keras
from keras import ops
from keras_hub.layers import BoxMatcher

from heads.anchors import anchor_boxes
from heads.box_coding import SSD_BOX_VARIANCE, encode_boxes

bounding_boxes = keras.utils.bounding_boxes


@keras.saving.register_keras_serializable(package="heads")
class SSDLiteLabelEncoder(keras.layers.Layer):
    """Turns padded ground truth into per-anchor SSD training targets.

    Anchors match the ground-truth box of highest IoU at or above
    `positive_threshold`; anchors between the two thresholds are ignored
    (class -2), the rest are background (class -1). As in SSD, every real box
    is also matched to its best anchor, so small boxes always train
    something. Box targets are centre/size deltas divided by `box_variance`
    (`heads.box_coding.encode_boxes`). Padded boxes (label -1) never match.

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
        self.box_matcher = BoxMatcher(
            thresholds=[self.negative_threshold, self.positive_threshold],
            match_values=[-1, -2, 1],
            force_match_for_each_col=True,
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
        matched_index = ops.cast(matched_index, "int32")
        # BoxMatcher adds a column of its own (index N, IoU -1) and may force-match
        # it too: give the gathers a padded box at that index.
        batch = ops.shape(gt_classes)[0]
        gt_classes = ops.concatenate([gt_classes, -ops.ones((batch, 1), "float32")], axis=1)
        gt_boxes = ops.concatenate([gt_boxes, -ops.ones((batch, 1, 4), "float32")], axis=1)
        matched_classes = ops.take_along_axis(gt_classes, matched_index, axis=1)
        matched_boxes = ops.take_along_axis(gt_boxes, matched_index[..., None], axis=1)
        # A force-match of a padded column (all IoU -1) lands on some anchor: not a positive.
        positive = ops.logical_and(ops.equal(matched_value, 1), ops.greater_equal(matched_classes, 0.0))
        ignored = ops.logical_and(ops.equal(matched_value, -2), ops.logical_not(positive))
        deltas = encode_boxes(anchors, matched_boxes, self.box_variance)
        deltas = ops.where(positive[..., None], deltas, 0.0)
        classes = ops.where(positive, matched_classes, ops.where(ignored, -2.0, -1.0))
        return deltas, classes

    def get_config(self):
        config = super().get_config()
        config.update(
            anchor_generator=keras.layers.serialize(self.anchor_generator),
            bounding_box_format=self.bounding_box_format,
            positive_threshold=self.positive_threshold,
            negative_threshold=self.negative_threshold,
            box_variance=list(self.box_variance),
        )
        return config
