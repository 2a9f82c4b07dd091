"""DeepLabV3+: shapes, atrous rates, losses that ignore 255, learning, saving,
keras-hub's own DeepLabV3 on our backbone, and LiteRT export."""

import keras
import keras_hub
import numpy as np
import pytest

import heads
import mnet_backbones
from heads.segmentation.layers import (
    AtrousSpatialPyramidPooling,
    BilinearResize,
    DeepLabV3ASPP,
    atrous_rates_for,
    conv_bn_relu,
)
from heads.segmentation.segmenter import segmentation_metrics

RNG = np.random.default_rng(0)
SMALL = dict(aspp_filters=16, low_level_filters=8, decoder_filters=16)


def small_backbone(output_stride=16, architecture="mobilenetv4_conv_small", width=0.5):
    return mnet_backbones.MobileNetBackbone(architecture, width_multiplier=width, output_stride=output_stride)


def images(batch, height, width):
    return RNG.uniform(0, 255, (batch, height, width, 3)).astype("float32")


def test_logits_at_input_size_and_rates_follow_the_stride():
    assert atrous_rates_for(16) == (6, 12, 18)
    assert atrous_rates_for(8) == (12, 24, 36)
    assert atrous_rates_for(32) == (3, 6, 9)
    segmenter = heads.create_deeplabv3plus(
        "mobilenetv1_025", num_classes=5, image_size=(64, 96), load_weights=False, **SMALL
    )
    assert isinstance(segmenter, keras_hub.models.ImageSegmenter)
    assert segmenter.backbone.output_stride == 16
    assert segmenter.atrous_rates == (6, 12, 18)
    logits = segmenter.predict(images(2, 64, 96), verbose=0)
    assert logits.shape == (2, 64, 96, 5) and logits.dtype == np.float32
    # A backbone instance at another stride is rebuilt with its weights.
    backbone = small_backbone(output_stride=32)
    at_8 = heads.create_deeplabv3plus(backbone, 3, image_size=64, output_stride=8, **SMALL)
    assert at_8.backbone.output_stride == 8 and at_8.atrous_rates == (12, 24, 36)
    for expected, actual in zip(backbone.get_weights(), at_8.backbone.get_weights()):
        np.testing.assert_array_equal(actual, expected)


def test_compile_defaults_ignore_255():
    segmenter = heads.DeepLabV3PlusSegmenter(small_backbone(), num_classes=3, image_size=32, **SMALL)
    segmenter.compile()
    labels = RNG.integers(0, 3, (2, 32, 32, 1))
    labels[0, :10] = 255
    logits = RNG.normal(size=(2, 32, 32, 3)).astype("float32")
    # Cross-entropy by hand over the labelled pixels only.
    log_softmax = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    valid = labels[..., 0] != 255
    picked = np.take_along_axis(log_softmax, np.where(valid, labels[..., 0], 0)[..., None], -1)[..., 0]
    expected = -picked[valid].mean()
    loss = float(segmenter.loss(labels, logits))
    assert loss == pytest.approx(expected, rel=1e-4)


def test_mean_iou_metric_ignores_255():
    (metric,) = segmentation_metrics(2)
    labels = np.array([0, 0, 1, 1, 255, 255]).reshape(1, 1, 6, 1)
    predicted = np.array([0, 1, 1, 1, 0, 1]).reshape(1, 1, 6)
    metric.update_state(labels, np.eye(2, dtype="float32")[predicted])
    # Labelled pixels only: class 0 -> IoU 1/2, class 1 -> 2/3.
    assert float(metric.result()) == pytest.approx((1 / 2 + 2 / 3) / 2, rel=1e-5)


def test_a_small_segmenter_overfits_two_masks():
    keras.utils.set_random_seed(1)
    x = np.full((2, 64, 64, 3), 60.0, "float32")
    masks = np.zeros((2, 64, 64, 1), "int32")
    x[0, 8:40, 12:44] = 200.0  # a bright square: class 1
    masks[0, 8:40, 12:44] = 1
    x[1, 30:60, 4:28, 0] = 220.0  # a red rectangle: class 2
    masks[1, 30:60, 4:28] = 2
    segmenter = heads.DeepLabV3PlusSegmenter(small_backbone(), num_classes=3, image_size=64, **SMALL)
    segmenter.compile(optimizer=keras.optimizers.Adam(1e-2))
    # Two epochs of 20 steps, each batch the same two images.
    history = segmenter.fit(
        np.tile(x, (20, 1, 1, 1)), np.tile(masks, (20, 1, 1, 1)), batch_size=2, epochs=2, shuffle=False, verbose=0
    )
    assert history.history["loss"][1] < 0.5 * history.history["loss"][0], history.history
    predicted = np.argmax(segmenter.predict(x, verbose=0), axis=-1)  # inference mode: moving statistics
    truth = masks[..., 0]
    ious = [(np.sum((predicted == c) & (truth == c)) / np.sum((predicted == c) | (truth == c))) for c in range(3)]
    assert min(ious) > 0.6, ious


def test_round_trips_keras_file_and_preset(tmp_path):
    segmenter = heads.create_deeplabv3plus(small_backbone(), 3, image_size=48, **SMALL)
    x = images(1, 48, 48)
    expected = segmenter.predict(x, verbose=0)
    path = str(tmp_path / "segmenter.keras")
    segmenter.save(path)
    restored = keras.models.load_model(path)
    assert isinstance(restored, heads.DeepLabV3PlusSegmenter)
    np.testing.assert_allclose(restored.predict(x, verbose=0), expected, rtol=1e-5, atol=1e-5)
    segmenter.save_to_preset(str(tmp_path / "preset"))
    loaded = heads.DeepLabV3PlusSegmenter.from_preset(str(tmp_path / "preset"))
    assert loaded.backbone.output_stride == 16 and loaded.num_classes == 3
    np.testing.assert_allclose(loaded.predict(x, verbose=0), expected, rtol=1e-5, atol=1e-5)
    for layer in (
        *conv_bn_relu(8, 3, separable=True, dilation_rate=2),
        AtrousSpatialPyramidPooling(8, (1, 2)),
        BilinearResize((5, 7)),
    ):
        assert type(layer).from_config(layer.get_config()).get_config() == layer.get_config()


def test_bad_arguments():
    with pytest.raises(TypeError, match="FeaturePyramidBackbone"):
        heads.DeepLabV3PlusSegmenter(keras.Sequential([keras.layers.Dense(2)]), num_classes=2)
    with pytest.raises(ValueError, match="num_classes"):
        heads.DeepLabV3PlusSegmenter(small_backbone(), num_classes=0, image_size=32)
    with pytest.raises(ValueError, match="image_size"):
        heads.DeepLabV3PlusSegmenter(small_backbone(), num_classes=2, image_size=16)
    with pytest.raises(TypeError, match="preset arguments"):
        heads.create_deeplabv3plus(small_backbone(), 2, image_size=32, load_weights=False)


def reference_conv_bn_relu(layer, x, epsilon):
    """A ConvBNAct in inference, by hand: convolution (full or depthwise, dilated, "same"), BatchNorm, ReLU."""
    conv, bn = layer.conv, layer.bn
    convolve = keras.ops.depthwise_conv if layer.depthwise else keras.ops.conv
    y = keras.ops.convert_to_numpy(convolve(x, conv.kernel, 1, "same", dilation_rate=conv.dilation_rate))
    mean, variance, gamma, beta = (
        keras.ops.convert_to_numpy(v) for v in (bn.moving_mean, bn.moving_variance, bn.gamma, bn.beta)
    )
    return np.maximum((y - mean) / np.sqrt(variance + epsilon) * gamma + beta, 0.0)


def reference_aspp(aspp, x, separable, epsilon):
    """ASPP by hand from its weights: DeepLabV3+'s (separable atrous branches) or torchvision's (full ones)."""
    outputs = []
    for i, branch in enumerate(aspp.branches):
        layers = list(branch) if separable else [branch]
        # The 1x1 branch is one full convolution; an atrous one is depthwise 3x3 + pointwise, or one full 3x3.
        assert [layer.depthwise for layer in layers] == ([False] if i == 0 or not separable else [True, False])
        y = x
        for layer in layers:
            y = reference_conv_bn_relu(layer, y, epsilon)
        outputs.append(y)
    pooled = reference_conv_bn_relu(aspp.pooling_conv, x.mean(axis=(1, 2), keepdims=True), epsilon)
    outputs.append(np.broadcast_to(pooled, x.shape[:3] + pooled.shape[-1:]))
    return reference_conv_bn_relu(aspp.projection, np.concatenate(outputs, axis=-1), epsilon)


def randomise_batch_norms(layer, rng):
    """Moving statistics far from the defaults, variances small enough that the epsilon shows."""
    for variable in layer.weights:
        if "moving_variance" in variable.path:
            variable.assign(rng.uniform(1e-5, 1e-3, variable.shape).astype("float32"))
        elif "moving_mean" in variable.path or "beta" in variable.path:
            variable.assign(rng.normal(0, 0.1, variable.shape).astype("float32"))


@pytest.mark.parametrize(
    "make, separable, epsilon",
    [
        (lambda: AtrousSpatialPyramidPooling(6, atrous_rates=(1, 2)), True, 1e-3),
        (lambda: DeepLabV3ASPP(6, atrous_rates=(1, 2)), False, 1e-5),
        (lambda: AtrousSpatialPyramidPooling(6, (1, 2), separable=False, bn_epsilon=1e-5), False, 1e-5),
    ],
    ids=["deeplabv3plus", "torchvision-deeplabv3", "options-as-torchvision"],
)
def test_the_one_aspp_computes_each_convention(make, separable, epsilon):
    """The merged ASPP: DeepLabV3+'s separable branches with epsilon 1e-3, torchvision's full ones with 1e-5."""
    rng = np.random.default_rng(3)
    aspp = make()
    x = rng.normal(size=(2, 7, 9, 5)).astype("float32")
    aspp(x)
    randomise_batch_norms(aspp, rng)
    got = keras.ops.convert_to_numpy(aspp(x, training=False))
    np.testing.assert_allclose(got, reference_aspp(aspp, x, separable, epsilon), rtol=1e-4, atol=1e-4)
    # The other epsilon gives other values: the check above can tell them apart.
    other = reference_aspp(aspp, x, separable, 1e-3 if epsilon == 1e-5 else 1e-5)
    assert np.max(np.abs(got - other)) > 1e-2


def test_aspp_defaults_and_saved_configs_without_the_new_options():
    plus, torchvision = AtrousSpatialPyramidPooling(), DeepLabV3ASPP()
    assert (plus.filters, plus.atrous_rates, plus.dropout, plus.separable, plus.bn_epsilon) == (
        128,
        (6, 12, 18),
        0.1,
        True,
        1e-3,
    )
    assert (torchvision.filters, torchvision.atrous_rates, torchvision.dropout) == (256, (12, 24, 36), 0.5)
    assert (torchvision.separable, torchvision.bn_epsilon) == (False, 1e-5)
    # Configs saved before the merge had no `separable` (and DeepLabV3+'s no `bn_epsilon`): each keeps its own.
    old_plus = AtrousSpatialPyramidPooling.from_config({"filters": 8, "atrous_rates": [1, 2], "dropout": 0.1})
    old_torchvision = DeepLabV3ASPP.from_config(
        {"filters": 8, "atrous_rates": [1, 2], "dropout": 0.5, "bn_epsilon": 1e-5}
    )
    assert (old_plus.separable, old_plus.bn_epsilon) == (True, 1e-3)
    assert (old_torchvision.separable, old_torchvision.bn_epsilon) == (False, 1e-5)
    for aspp in (plus, torchvision, old_plus, old_torchvision):
        assert type(aspp).from_config(aspp.get_config()).get_config() == aspp.get_config()
    with pytest.raises(ValueError, match="dropout"):
        AtrousSpatialPyramidPooling(8, dropout=1.0)


def test_keras_hub_deeplab_v3_takes_our_backbone_as_image_encoder():
    encoder = small_backbone(output_stride=32)
    backbone = keras_hub.models.DeepLabV3Backbone(
        image_encoder=encoder,
        spatial_pyramid_pooling_key="P5",  # keras-hub reads the stride from the key's digit: 2**5
        upsampling_size=8,  # P5 (stride 32) up to P2 (stride 4)
        dilation_rates=[2, 4],
        low_level_feature_key="P2",
        projection_filters=8,
        image_shape=(64, 64, 3),
    )
    segmenter = keras_hub.models.DeepLabV3ImageSegmenter(backbone=backbone, num_classes=3)
    segmenter.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=[keras.metrics.SparseCategoricalAccuracy()],
    )
    x = images(2, 64, 64) / 255.0
    masks = RNG.integers(0, 3, (2, 64, 64, 1))
    loss, accuracy = segmenter.train_on_batch(x, masks)
    assert np.isfinite(loss) and 0.0 <= accuracy <= 1.0
    assert segmenter.predict(x, verbose=0).shape == (2, 64, 64, 3)


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="LiteRT export goes through TensorFlow")
def test_litert_export_matches_keras(tmp_path):
    pytest.importorskip("ai_edge_litert.interpreter")
    from mnet_tools import litert

    segmenter = heads.create_deeplabv3plus(small_backbone(), 3, image_size=(48, 64), **SMALL)
    x = images(1, 48, 64)
    path = str(tmp_path / "deeplab.tflite")
    segmenter.export(path, format="litert", verbose=False)
    (actual,) = litert.run(path, x)
    expected = segmenter.predict(x, verbose=0)
    assert actual.shape == expected.shape == (1, 48, 64, 3)
    assert np.max(np.abs(actual - expected)) < 1e-4 * np.max(np.abs(expected))
