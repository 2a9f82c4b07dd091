"""SSDLite's parts: box coding, injected anchors / label encoder / decoder, kwargs routing."""

import json

import keras
import keras_hub
import numpy as np
import pytest
from keras import ops

import heads
from heads.anchors import anchor_boxes, ssdlite_anchor_generator
from heads.box_coding import SSD_BOX_VARIANCE, decode_boxes, encode_boxes
from heads.label_encoder import SSDLiteLabelEncoder
from heads.preprocessing import pixel_normalizer
from heads.pyramid import split_task_kwargs
from mnet_backbones.constants import IMAGENET_PIXEL_MEAN

IMAGE_SIZE = 64


@pytest.fixture(scope="module")
def backbone():
    return keras_hub.models.Backbone.from_preset("mobilenetv1_025", load_weights=False)


def test_decode_inverts_encode_and_clips_to_the_image():
    anchors = np.array([[0, 0, 32, 32], [16, 8, 48, 24], [40, 40, 72, 72]], "float32")
    boxes = np.array([[[4, 2, 30, 40], [20, 10, 44, 30], [50, 45, 60, 62]]], "float32")
    deltas = encode_boxes(anchors, boxes)
    np.testing.assert_allclose(
        ops.convert_to_numpy(decode_boxes(anchors, deltas, SSD_BOX_VARIANCE, 64)), boxes, atol=1e-4
    )
    # Unbatched numpy in, the anchor itself out for zero deltas, clipped at the image's edge.
    decoded = ops.convert_to_numpy(decode_boxes(anchors, np.zeros((3, 4)), SSD_BOX_VARIANCE, (64, 60)))
    np.testing.assert_allclose(decoded, [[0, 0, 32, 32], [16, 8, 48, 24], [40, 40, 60, 64]])


def test_the_detector_decodes_with_decode_boxes(backbone):
    detector = heads.create_ssdlite(backbone, 3, image_size=IMAGE_SIZE)
    anchors = detector.anchors()
    deltas = np.random.default_rng(0).normal(0, 1, (2, anchors.shape[0], 4)).astype("float32")
    boxes, _ = detector.decode_raw_outputs(deltas, None)
    expected = decode_boxes(ops.convert_to_numpy(anchors), deltas, SSD_BOX_VARIANCE, IMAGE_SIZE)
    np.testing.assert_array_equal(ops.convert_to_numpy(boxes), ops.convert_to_numpy(expected))
    # The default anchors are the label encoder's.
    images = np.zeros((1, IMAGE_SIZE, IMAGE_SIZE, 3), "float32")
    np.testing.assert_array_equal(ops.convert_to_numpy(detector.label_encoder.anchors(images)), anchors)
    generator = ssdlite_anchor_generator(IMAGE_SIZE)
    np.testing.assert_array_equal(ops.convert_to_numpy(anchor_boxes(generator, images)), anchors)


@keras.saving.register_keras_serializable(package="test_heads_ssdlite_parts")
class TopKDecoder(keras.layers.Layer):
    """The `k` best-scoring anchors, no NMS: a stand-in prediction decoder."""

    def __init__(self, k, **kwargs):
        super().__init__(**kwargs)
        self.k = k

    def call(self, boxes, logits):
        confidence, index = ops.top_k(ops.max(ops.sigmoid(logits), axis=-1), self.k)
        return {
            "boxes": ops.take_along_axis(boxes, index[..., None], axis=1),
            "confidence": confidence,
            "labels": ops.take_along_axis(ops.argmax(logits, axis=-1), index, axis=1),
            "num_detections": ops.full((ops.shape(boxes)[0],), self.k, "int32"),
        }

    def get_config(self):
        return {**super().get_config(), "k": self.k}


def test_injected_parts_are_used_and_survive_saving(backbone, tmp_path):
    keras.utils.set_random_seed(0)
    # One anchor per position on the 4x4, 2x2 and 1x1 maps of a 64-pixel input.
    generator = keras_hub.layers.AnchorGenerator(
        "xyxy", min_level=4, max_level=6, num_scales=1, aspect_ratios=[1.0], anchor_size=4.0, name="anchor_generator"
    )
    encoder = SSDLiteLabelEncoder(generator, positive_threshold=0.6, negative_threshold=0.3, name="label_encoder")
    decoder = TopKDecoder(5, name="prediction_decoder")
    detector = heads.create_ssdlite(
        backbone,
        3,
        image_size=IMAGE_SIZE,
        anchor_generator=generator,
        label_encoder=encoder,
        prediction_decoder=decoder,
    )
    assert detector.anchor_generator is generator
    assert detector.label_encoder is encoder
    assert detector.prediction_decoder is decoder
    assert detector.output["bbox_regression"].shape[1] == 16 + 4 + 1
    detector.compile()
    images = np.random.default_rng(0).uniform(0, 255, (2, IMAGE_SIZE, IMAGE_SIZE, 3)).astype("float32")
    targets = {"boxes": np.array([[[4, 6, 40, 44]], [[-1] * 4]], "float32"), "labels": np.array([[1], [-1]])}
    history = detector.fit(images, targets, batch_size=2, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    detections = detector.predict(images, verbose=0)
    assert detections["boxes"].shape == (2, 5, 4)
    np.testing.assert_array_equal(detections["num_detections"], 5)

    path = str(tmp_path / "detector.keras")
    detector.save(path)
    restored = keras.models.load_model(path)
    assert isinstance(restored.prediction_decoder, TopKDecoder) and restored.prediction_decoder.k == 5
    assert isinstance(restored.label_encoder, SSDLiteLabelEncoder)
    assert restored.label_encoder.positive_threshold == 0.6
    assert restored.anchor_generator.num_base_anchors == 1
    # Compared as saved (JSON): a called layer's build_config holds its input shape as a tuple, a loaded one a list.
    assert json.loads(json.dumps(restored.get_config())) == json.loads(json.dumps(detector.get_config()))
    for key, value in restored.predict(images, verbose=0).items():
        np.testing.assert_allclose(value, detections[key], rtol=1e-5, atol=1e-4)


def test_an_anchor_generator_off_the_detector_levels_is_refused(backbone):
    generator = keras_hub.layers.AnchorGenerator(
        "xyxy", min_level=3, max_level=6, num_scales=1, aspect_ratios=[1.0], anchor_size=4.0
    )
    with pytest.raises(ValueError, match="must span exactly those levels"):
        heads.create_ssdlite(backbone, 3, image_size=IMAGE_SIZE, anchor_generator=generator)


def test_create_functions_pass_only_constructor_arguments_to_the_head(backbone):
    # `inputs`, `levels`, `outputs` are local variables of the constructors, not arguments:
    # with a backbone instance they are stray preset arguments, named in a TypeError.
    with pytest.raises(TypeError, match=r"Unexpected arguments \['inputs'\]: preset arguments"):
        heads.create_ssdlite(backbone, 3, image_size=IMAGE_SIZE, inputs=None)
    with pytest.raises(TypeError, match=r"Unexpected arguments \['outputs'\]: preset arguments"):
        heads.create_deeplabv3plus(backbone, 3, image_size=IMAGE_SIZE, outputs=None)
    head, rest = split_task_kwargs(
        heads.SSDLiteObjectDetector, {"levels": [4], "score_threshold": 0.2, "name": "d", "load_weights": False}
    )
    assert head == {"score_threshold": 0.2, "name": "d"}
    assert rest == {"levels": [4], "load_weights": False}


def test_pixel_normalizer_centres_imagenet_statistics():
    mean_image = np.broadcast_to(np.array(IMAGENET_PIXEL_MEAN, "float32"), (1, 2, 2, 3))
    np.testing.assert_allclose(ops.convert_to_numpy(pixel_normalizer()(mean_image)), 0.0, atol=1e-5)
