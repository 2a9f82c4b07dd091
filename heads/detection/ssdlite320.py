"""SSDLite exactly as the MobileNetV3 paper and torchvision's `ssdlite320_mobilenet_v3_large` define it: the task.

The MobileNetV3 paper (Howard et al., 2019, section 6.3) attaches SSDLite's
first map to the expansion layer of the first stride-32 block (672 channels
on V3-Large, 20x20 at 320 px), the second to the backbone's last 1x1 conv,
and adds four depthwise-separable extra blocks (512, 256, 256, 128
channels). torchvision builds it so and publishes COCO weights; this module
computes the same numbers from the same weights (`heads.detection.torchvision`
loads them):

- input: any image, resized to 320x320 (bilinear, half-pixel centres, no
  antialiasing: `heads.detection.resizing`) and normalised to [-1, 1]
  (`x / 127.5 - 1`);
- SSD default boxes (`heads.detection.anchors.default_boxes`): scales
  0.2..0.95 and 1, aspect ratios 2 and 3, sizes clipped; 3234 boxes at 320 px;
- per map a depthwise 3x3 + BatchNorm + ReLU6 and a 1x1 conv for 6 x
  `num_classes` logits and 6 x 4 box deltas, in torchvision's order
  (map, row, column, box), with torchvision's conventions
  (`heads.detection.layers.SSDLitePaperExtraBlock`, `SSDLitePaperPredictor`);
- class 0 is the background: softmax over all classes, box deltas coded
  with weights (10, 10, 5, 5) (`heads.detection.box_coding.SSD_BOX_VARIANCE`);
- training: an anchor is positive at IoU >= 0.5 with a box, and each box
  claims its best anchor (`heads.detection.matching.match_anchors`); softmax
  cross-entropy with 3:1 hard-negative mining, smooth-L1 on the positives'
  deltas, both over the positive count;
- post-processing (`heads.detection.postprocess.postprocess_detections`,
  numpy): score > 0.001, the top 300 per class, boxes clipped to the input,
  per-class NMS at IoU 0.55, the best 300 kept, boxes scaled back to each
  image's own size.

`SSDLiteObjectDetector` (`heads.detection.ssdlite`) is the project's other
SSDLite: the stride-16 and stride-32 pyramid levels, sigmoid classes, focal
loss.
"""

import keras
import numpy as np
from keras import ops

# Registers the MobileNet backbones, so that saved detectors on them load.
import mnet_backbones  # noqa: F401
from heads.configs import config_entries
from heads.detection import postprocess
from heads.detection.anchors import boxes_per_position, default_boxes
from heads.detection.base import SSDLiteBase, default_optimizer
from heads.detection.box_coding import SSD_BOX_VARIANCE, encode_boxes
from heads.detection.layers import (
    SSDLitePaperExtraBlock,
    SSDLitePaperPredictor,
    backbone_taps,
    default_feature_taps,
    ssdlite_head,
)
from heads.detection.matching import count_positives, match_anchors
from heads.detection.resizing import resize_image_batch, resize_with_boxes
from heads.detection.targets import check_background_targets
from heads.preprocessing import pixel_normalizer
from mnet_backbones.validation import check_image_size, check_positive_int

bounding_boxes = keras.utils.bounding_boxes

PAPER_EXTRA_FILTERS = (512, 256, 256, 128)
PAPER_ASPECT_RATIOS = ((2.0, 3.0),) * 6
# (x / 255 - 0.5) / 0.5 on 0..255 pixels.
PAPER_PIXEL_MEAN = (127.5, 127.5, 127.5)
PAPER_PIXEL_VARIANCE = (127.5**2,) * 3


@keras.saving.register_keras_serializable(package="heads")
class SSDLite320ObjectDetector(SSDLiteBase):
    """SSDLite as the MobileNetV3 paper and torchvision's `ssdlite320_mobilenet_v3_large` build it.

    The network reads two backbone taps (by default the last strided
    block's expansion layer and the last conv,
    `heads.detection.layers.default_feature_taps`), adds
    `SSDLitePaperExtraBlock`s (512, 256, 256, 128) and puts a pair of
    `SSDLitePaperPredictor`s (box deltas, class logits) on each of the six
    maps. See the module docstring for the exact recipe.

    Calling the model on images of `image_size` (0..255 RGB; normalised
    inside) gives the raw outputs `{"bbox_regression": (B, N, 4),
    "cls_logits": (B, N, num_classes)}` in torchvision's anchor order
    (`anchors()`). `predict` takes images of any size (an array, or a list
    of differently sized images), resizes them to `image_size`, and returns
    `{"boxes", "confidence", "labels", "num_detections"}` with boxes in
    `bounding_box_format` in each image's own pixels and labels as class
    indices (0, the background, never appears).

    `fit` takes images of `image_size` (arrays of another size are resized,
    with their boxes) and `{"boxes": (B, M, 4) pixels in
    `bounding_box_format`, "labels": (B, M)}` padded with label -1; labels
    are 1..num_classes-1 (`label_offset` is 1: the background is class 0).

    Args:
        backbone: a `mnet_backbones.MobileNetBackbone` (it has `feature_taps`).
        num_classes: classes including the background 0 (91 for
            torchvision's COCO indices).
        image_size: int or (height, width) the images are resized to.
        bounding_box_format: format of targets and predicted boxes.
        feature_taps: the two backbone taps the head reads; None: the paper's.
        extra_filters: channels of the extra blocks (one map each).
        aspect_ratios: per map, the default boxes' aspect ratios besides 1.
        min_ratio, max_ratio: the default boxes' smallest and largest scale.
        match_iou_threshold: IoU from which an anchor is a positive.
        negative_ratio: hard negatives kept per positive.
        score_threshold, iou_threshold, topk_candidates, max_detections: the
            post-processing's settings (see
            `heads.detection.postprocess.postprocess_detections`);
            `score_threshold` and `max_detections` are settable after
            construction (a display choice; `heads.evaluate_coco` scores at
            its own).
        bn_momentum, bn_epsilon: the head's BatchNorm (torchvision's momentum
            0.03 is Keras' 0.97).
        class_names: optional list of `num_classes` names (index 0 the
            background), kept with the model.
        preprocessor: optional keras-hub preprocessor.

    Example:
    ```python
    import heads, numpy as np
    from mnet_backbones import MobileNetBackbone
    backbone = MobileNetBackbone("mobilenetv3_large_reduced_tail", image_shape=(320, 320, 3))
    detector = heads.SSDLite320ObjectDetector(backbone, num_classes=4)  # the background 0, classes 1..3
    detector.compile()
    # Images of another size than 320x320 are resized for training, their boxes with them.
    images = np.random.uniform(0, 255, (2, 240, 400, 3)).astype("float32")
    targets = {"boxes": np.array([[[10, 10, 160, 200], [-1, -1, -1, -1]]] * 2, "float32"),
               "labels": np.array([[1, -1]] * 2)}
    detector.fit(images, targets, epochs=1)
    # Images of different sizes in one call: the boxes come back in each image's own pixels.
    detections = detector.predict([images[0], images[1, :200, :300]])
    ```
    """

    label_offset = 1
    postprocessing = postprocess.SOFTMAX_PER_CLASS_NMS

    def __init__(
        self,
        backbone,
        num_classes=91,
        image_size=320,
        bounding_box_format="xyxy",
        feature_taps=None,
        extra_filters=PAPER_EXTRA_FILTERS,
        aspect_ratios=PAPER_ASPECT_RATIOS,
        min_ratio=0.2,
        max_ratio=0.95,
        match_iou_threshold=0.5,
        negative_ratio=3.0,
        score_threshold=0.001,
        iou_threshold=0.55,
        topk_candidates=300,
        max_detections=300,
        bn_momentum=0.97,
        bn_epsilon=1e-3,
        class_names=None,
        preprocessor=None,
        dtype=None,
        **kwargs,
    ):
        taps = backbone_taps(backbone)
        num_classes = check_positive_int("num_classes", num_classes)
        if num_classes < 2:
            raise ValueError(f"`num_classes` counts the background 0 too: it must be at least 2, got {num_classes}.")
        image_size = check_image_size(image_size)
        feature_taps = tuple(feature_taps) if feature_taps is not None else default_feature_taps(backbone)
        if len(feature_taps) != 2 or any(name not in taps for name in feature_taps):
            raise ValueError(
                f"`feature_taps` must name two of the backbone's taps {sorted(taps)}, got {feature_taps!r}."
            )
        extra_filters = tuple(check_positive_int("extra_filters", f) for f in extra_filters)
        aspect_ratios = tuple(tuple(float(r) for r in ratios) for ratios in aspect_ratios)
        if len(aspect_ratios) != 2 + len(extra_filters):
            raise ValueError(
                f"`aspect_ratios` needs one list per map: 2 taps + {len(extra_filters)} extra blocks = "
                f"{2 + len(extra_filters)}, got {len(aspect_ratios)}."
            )
        if class_names is not None:
            class_names = [str(name) for name in class_names]
            if len(class_names) != num_classes:
                raise ValueError(f"`class_names` has {len(class_names)} names for num_classes={num_classes}.")
        head_dtype = dtype or backbone.dtype_policy
        anchors_per_position = boxes_per_position(aspect_ratios)

        # === Layers ===
        self.backbone = backbone
        self.preprocessor = preprocessor
        self.normalizer = pixel_normalizer(PAPER_PIXEL_MEAN, PAPER_PIXEL_VARIANCE, head_dtype)
        self.feature_extractor = keras.Model(
            backbone.inputs, [taps[name] for name in feature_taps], name="feature_taps"
        )
        common = dict(bn_momentum=bn_momentum, bn_epsilon=bn_epsilon, dtype=head_dtype)
        self.extra_blocks = [
            SSDLitePaperExtraBlock(filters, name=f"extra_{i}", **common) for i, filters in enumerate(extra_filters)
        ]
        self.box_predictors = [
            SSDLitePaperPredictor(count, 4, name=f"box_{i}", **common) for i, count in enumerate(anchors_per_position)
        ]
        self.class_predictors = [
            SSDLitePaperPredictor(count, num_classes, name=f"class_{i}", **common)
            for i, count in enumerate(anchors_per_position)
        ]

        # === Functional model ===
        inputs = keras.Input(shape=image_size + (3,), name="images")
        taps_out = self.feature_extractor(self.normalizer(inputs))
        # Four maps at most per concatenation, so that XNNPACK runs the whole exported graph.
        maps, outputs = ssdlite_head(
            taps_out, self.extra_blocks, self.box_predictors, self.class_predictors, head_dtype, max_inputs=4
        )
        map_sizes = [tuple(x.shape[1:3]) for x in maps]
        if any(size is None for shape in map_sizes for size in shape):
            raise ValueError(f"The feature maps of {image_size} images have unknown sizes {map_sizes}.")
        super().__init__(inputs=inputs, outputs=outputs, dtype=dtype, **kwargs)

        # === Config ===
        self._keep_settings(num_classes, image_size, bounding_box_format, extra_filters, score_threshold,
                            iou_threshold, max_detections, bn_momentum)  # fmt: skip
        self.feature_taps = feature_taps
        self.aspect_ratios = aspect_ratios
        self.min_ratio = float(min_ratio)
        self.max_ratio = float(max_ratio)
        self.match_iou_threshold = float(match_iou_threshold)
        self.negative_ratio = float(negative_ratio)
        self.topk_candidates = int(topk_candidates)
        self.bn_epsilon = float(bn_epsilon)
        self.class_names = class_names
        self.map_sizes = map_sizes
        self._anchors = default_boxes(map_sizes, image_size, aspect_ratios, self.min_ratio, self.max_ratio)
        # Read by the LiteRT export and the post-processing of the other SSDLite; kept under the same names.
        self.box_variance = SSD_BOX_VARIANCE

    def anchors(self):
        """The default boxes: (N, 4) xyxy pixels of the `image_size` input, in the order of the outputs.

        Example:
        ```python
        detector.anchors().shape  # (3234, 4) at 320 px
        ```
        """
        return self._anchors

    # --- training -----------------------------------------------------------
    def compile(self, optimizer="auto", **kwargs):
        """Configures training with the paper's loss (see the module docstring), computed by `compute_loss`.

        `optimizer="auto"`: AdamW (learning rate 1e-3, weight decay 1e-4,
        gradient norm clipped at 10), for fine-tuning. torchvision trained
        the COCO weights with SGD (momentum 0.9, learning rate 0.15, weight
        decay 4e-5, cosine schedule, 600 epochs).

        Example:
        ```python
        detector.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9))
        ```
        """
        if optimizer == "auto":
            optimizer = default_optimizer()
        kwargs.pop("loss", None)  # the loss is the paper's, in compute_loss
        keras.Model.compile(self, optimizer=optimizer, **kwargs)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        boxes = bounding_boxes.convert_format(
            ops.cast(y["boxes"], "float32"), source=self.bounding_box_format, target="xyxy",
            height=self.image_size[0], width=self.image_size[1],
        )  # fmt: skip
        labels = ops.cast(y["labels"], "int32")
        valid = labels >= 0
        anchors = ops.convert_to_tensor(self._anchors)
        matched = match_anchors(boxes, valid, anchors, self.match_iou_threshold)
        positive = matched >= 0
        index = ops.maximum(matched, 0)
        class_targets = ops.where(positive, ops.take_along_axis(labels, index, axis=1), 0)
        matched_boxes = ops.take_along_axis(boxes, ops.repeat(index[..., None], 4, axis=-1), axis=1)
        # Background anchors are coded against themselves (zero deltas): finite, and masked out below.
        matched_boxes = ops.where(positive[..., None], matched_boxes, anchors[None])
        box_targets = encode_boxes(anchors, matched_boxes, SSD_BOX_VARIANCE)
        positive_f = ops.cast(positive, "float32")
        num_positive = count_positives(positive_f)
        difference = ops.abs(ops.cast(y_pred["bbox_regression"], "float32") - box_targets)
        smooth_l1 = ops.where(difference < 1.0, 0.5 * difference**2, difference - 0.5)
        box_loss = ops.sum(ops.sum(smooth_l1, axis=-1) * positive_f)

        logits = ops.cast(y_pred["cls_logits"], "float32")
        log_probs = ops.log_softmax(logits, axis=-1)
        class_loss = -ops.sum(ops.one_hot(class_targets, self.num_classes) * log_probs, axis=-1)  # (B, N)
        # Hard negatives: per image, the 3 x positives background anchors of highest loss.
        negative_loss = ops.where(positive, -1.0, ops.stop_gradient(class_loss))
        rank = ops.argsort(ops.argsort(-negative_loss, axis=-1), axis=-1)
        num_negative = self.negative_ratio * ops.sum(positive_f, axis=-1, keepdims=True)
        hard_negative = ops.logical_and(ops.cast(rank, "float32") < num_negative, ops.logical_not(positive))
        selected = ops.stop_gradient(positive_f + ops.cast(hard_negative, "float32"))
        class_loss = ops.sum(class_loss * selected)
        return (box_loss + class_loss) / num_positive

    def _resize_training_arrays(self, x, y):
        """Array targets checked; array images of another size resized to `image_size`, their boxes with them."""
        if isinstance(y, dict) and "boxes" in y and "labels" in y:
            y = check_background_targets(y, self.num_classes, self.image_size, self.bounding_box_format)
            if isinstance(x, np.ndarray) and x.ndim == 4:
                x, y = resize_with_boxes(x, y, self.image_size, self.bounding_box_format)
        return x, y

    def fit(self, x=None, y=None, *args, **kwargs):
        """keras-hub's `fit`; array images of another size are resized, their boxes with them.

        Array targets are checked first: a label outside 1..num_classes-1
        (and not -1), a non-finite or an empty box raise a ValueError. An
        attached preprocessor then sees images of `image_size`, as in `predict`.
        """
        x, y = self._resize_training_arrays(x, y)
        return super().fit(x, y, *args, **kwargs)

    def evaluate(self, x=None, y=None, *args, **kwargs):
        """keras-hub's `evaluate`, with array images and targets resized and checked as `fit` does."""
        x, y = self._resize_training_arrays(x, y)
        return super().evaluate(x, y, *args, **kwargs)

    # --- prediction ---------------------------------------------------------
    def raw_outputs(self, images, batch_size=None):
        """The raw outputs on any images (resized to `image_size` first), as numpy, and their sizes.

        Example:
        ```python
        raw, sizes = detector.raw_outputs(images)  # raw["cls_logits"]: (B, 3234, num_classes)
        ```
        """
        resized, sizes = resize_image_batch(images, self.image_size, f"{type(self).__name__}.predict")
        raw = super().predict(resized, batch_size=batch_size, verbose=0)
        return raw, sizes

    def predict(self, x, batch_size=None, verbose="auto", steps=None, callbacks=None):
        """Detections on images of any size, boxes in each image's own pixels.

        `x` is an array (B, H, W, 3) or (H, W, 3), or a list of (H, W, 3)
        images of different sizes, RGB 0..255. Any other input (a dataset)
        goes to `keras.Model.predict` as it is: its images must be of
        `image_size`, and boxes come back in those pixels.
        """
        if isinstance(x, (np.ndarray, list, tuple)) or keras.ops.is_tensor(x):
            resized, sizes = resize_image_batch(x, self.image_size, f"{type(self).__name__}.predict")
            raw = super().predict(resized, batch_size=batch_size, verbose=verbose, callbacks=callbacks)
        else:
            raw = super().predict(x, batch_size=batch_size, verbose=verbose, steps=steps, callbacks=callbacks)
            sizes = None
        detections = postprocess.postprocess_detections(
            raw["bbox_regression"], raw["cls_logits"], self._anchors, self.image_size, sizes,
            self.score_threshold, self.iou_threshold, self.topk_candidates, self.max_detections,
        )  # fmt: skip
        if self.bounding_box_format != "xyxy":
            counts = detections["num_detections"]
            boxes = detections["boxes"]
            converted = []
            for i in range(len(boxes)):
                height, width = self.image_size if sizes is None else sizes[i]
                one = keras.ops.convert_to_numpy(
                    bounding_boxes.convert_format(
                        boxes[i], source="xyxy", target=self.bounding_box_format, height=height, width=width
                    )
                )
                one[counts[i] :] = -1.0
                converted.append(one)
            detections["boxes"] = np.stack(converted).astype("float32")
        return detections

    # --- serialisation ------------------------------------------------------
    def get_config(self):
        names = ("feature_taps", "aspect_ratios", "min_ratio", "max_ratio", "match_iou_threshold", "negative_ratio")
        names += ("topk_candidates", "bn_epsilon", "class_names")
        return {**super().get_config(), **config_entries(self, *names)}
