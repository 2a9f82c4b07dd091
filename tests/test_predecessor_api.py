"""The predecessor project's API: variant names map onto the presets, and its workflow runs."""

import keras
import numpy as np
import pytest

import mnet_backbones.predecessor_api as api
from conftest import REFERENCE, trainable_count
from mnet_backbones.backbone import MobileNetBackbone
from mnet_backbones.classifier import MobileNetImageClassifier
from mnet_backbones.presets import PRESETS

# At 32 x 32 the hybrids' key/value maps shrink to one pixel: a softmax over a
# single key is correct there, and Keras warns about it.
pytestmark = pytest.mark.filterwarnings("ignore:You are using a softmax over axis")

SMALL = (32, 32, 3)

# (generation, variant, preset, channels of the final feature map)
VARIANTS = [
    (api.MobileNetV1, "1.0", "mobilenetv1_100", 1024),
    (api.MobileNetV1, "0.75", "mobilenetv1_075", 768),
    (api.MobileNetV1, "0.5", "mobilenetv1_050", 512),
    (api.MobileNetV1, "0.25", "mobilenetv1_025", 256),
    (api.MobileNetV2, "1.4", "mobilenetv2_140", 1792),
    (api.MobileNetV2, "1.0", "mobilenetv2_100", 1280),
    (api.MobileNetV2, "0.75", "mobilenetv2_075", 1280),
    (api.MobileNetV2, "0.5", "mobilenetv2_050", 1280),
    (api.MobileNetV2, "0.35", "mobilenetv2_035", 1280),
    (api.MobileNetV3, "large", "mobilenetv3_large_100", 960),
    (api.MobileNetV3, "small", "mobilenetv3_small_100", 576),
    (api.MobileNetV4, "conv_small", "mobilenetv4_conv_small", 960),
    (api.MobileNetV4, "conv_medium", "mobilenetv4_conv_medium", 960),
    (api.MobileNetV4, "conv_large", "mobilenetv4_conv_large", 960),
    (api.MobileNetV4, "hybrid_medium", "mobilenetv4_hybrid_medium", 960),
    (api.MobileNetV4, "hybrid_large", "mobilenetv4_hybrid_large", 960),
]
VARIANT_IDS = [f"{cls.__name__}-{variant}" for cls, variant, _, _ in VARIANTS]


def random_images(batch=2, shape=SMALL, seed=0):
    return np.random.default_rng(seed).uniform(0.0, 1.0, (batch, *shape)).astype("float32")


def test_variant_names_and_presets():
    expected = {}
    for cls, variant, preset, _ in VARIANTS:
        expected.setdefault(cls, {})[variant] = preset
    for cls in (api.MobileNetV1, api.MobileNetV2, api.MobileNetV3, api.MobileNetV4):
        mapping = {variant: data["preset"] for variant, data in cls.MODEL_VARIANTS.items()}
        assert mapping == expected[cls], cls.__name__


@pytest.mark.parametrize("cls, variant, preset, channels", VARIANTS, ids=VARIANT_IDS)
def test_every_variant_builds_with_and_without_top(cls, variant, preset, channels):
    images = random_images()

    classifier = cls.from_variant(variant, num_classes=10, input_shape=SMALL)
    assert isinstance(classifier, MobileNetImageClassifier)
    probabilities = keras.ops.convert_to_numpy(classifier(images, training=False))
    assert probabilities.shape == (2, 10)
    assert np.all(probabilities >= 0.0)
    np.testing.assert_allclose(probabilities.sum(axis=1), [1.0, 1.0], atol=1e-5)

    backbone = cls.from_variant(variant, num_classes=10, input_shape=SMALL, include_top=False)
    assert isinstance(backbone, MobileNetBackbone)
    row = PRESETS[preset]
    assert backbone.architecture == row.architecture
    assert backbone.width_multiplier == row.width_multiplier
    assert (backbone.padding, backbone.bn_epsilon) == (row.padding, row.bn_epsilon)
    features = keras.ops.convert_to_numpy(backbone(images, training=False))
    assert features.shape == (2, 1, 1, channels)


@pytest.mark.parametrize(
    "create, variant, preset",
    [
        (api.create_mobilenetv4, "conv_small", "mobilenetv4_conv_small"),
        (api.create_mobilenetv3, "large", "mobilenetv3_large_100"),
    ],
)
def test_imagenet_parameter_count_matches_reference(create, variant, preset):
    model = create(variant=variant)
    assert model.output.shape == (None, 1000)
    assert trainable_count(model) == REFERENCE[preset]["classifier_params"]


@pytest.mark.parametrize(
    "cls, variant, width_multiplier, preset",
    [
        (api.MobileNetV1, "1.0", 0.25, "mobilenetv1_025"),
        (api.MobileNetV2, "1.0", 1.4, "mobilenetv2_140"),
        (api.MobileNetV3, "small", 0.75, "mobilenetv3_small_075"),
    ],
)
def test_width_multiplier_overrides_the_preset(cls, variant, width_multiplier, preset):
    model = cls.from_variant(variant, width_multiplier=width_multiplier)
    assert model.backbone.width_multiplier == width_multiplier
    assert trainable_count(model) == REFERENCE[preset]["classifier_params"]


def test_width_multiplier_applies_to_v4():
    backbone = api.create_mobilenetv4(variant="conv_small", input_shape=SMALL, include_top=False, width_multiplier=0.5)
    assert backbone.width_multiplier == 0.5
    assert backbone.output.shape == (None, 1, 1, 480)


@pytest.mark.parametrize("width_multiplier", [0, -0.5])
def test_non_positive_width_multiplier_raises(width_multiplier):
    with pytest.raises(ValueError, match="width_multiplier must be positive"):
        api.create_mobilenetv1(variant="0.25", input_shape=SMALL, width_multiplier=width_multiplier)


@pytest.mark.parametrize(
    "create, valid",
    [
        (api.create_mobilenetv1, "['1.0', '0.75', '0.5', '0.25']"),
        (api.create_mobilenetv2, "['1.4', '1.0', '0.75', '0.5', '0.35']"),
        (api.create_mobilenetv3, "['large', 'small']"),
        (
            api.create_mobilenetv4,
            "['conv_small', 'conv_medium', 'conv_large', 'hybrid_medium', 'hybrid_large']",
        ),
    ],
)
def test_unknown_variant_lists_valid_names(create, valid):
    for wrong in ("medium", 1.0, None):
        with pytest.raises(ValueError) as error:
            create(variant=wrong, input_shape=SMALL)
        assert f"Valid variants: {valid}." in str(error.value)


def test_input_shape_must_be_height_width_channels():
    with pytest.raises(ValueError, match=r"`image_shape` must be \(height, width, channels\)"):
        api.create_mobilenetv2(variant="0.35", input_shape=(32, 32))


def test_generations_are_not_instantiated():
    with pytest.raises(TypeError, match=r"MobileNetV3.from_variant\(variant"):
        api.MobileNetV3()


def test_defaults_are_imagenet_at_224():
    model = api.create_mobilenetv2(variant="0.35")
    assert model.input.shape == (None, 224, 224, 3)
    assert model.output.shape == (None, 1000)


# On TensorFlow V4 trains eagerly: tracing its training step takes some 10 s,
# and V1 (here) and examples/predecessor_api.py (V4) cover the compiled step. JAX is
# the other way round: its eager step is the slow one.
@pytest.mark.parametrize(
    "create, variant, preset, head_features, eager_on_tensorflow",
    [
        (api.create_mobilenetv1, "0.25", "mobilenetv1_025", 256, False),
        (api.create_mobilenetv4, "conv_small", "mobilenetv4_conv_small", 1280, True),
    ],
)
def test_predecessor_readme_workflow(tmp_path, create, variant, preset, head_features, eager_on_tensorflow):
    model = create(variant=variant, num_classes=10, input_shape=SMALL)
    # The reference ImageNet count less the 990 classes' weights and biases.
    expected_trainable = REFERENCE[preset]["classifier_params"] - 990 * (head_features + 1)
    assert trainable_count(model) == expected_trainable
    batch_norm_statistics = model.count_params() - expected_trainable
    assert batch_norm_statistics > 0

    model.compile(
        optimizer=keras.optimizers.AdamW(learning_rate=1e-3),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
        run_eagerly=eager_on_tensorflow and keras.backend.backend() == "tensorflow",
    )
    images, labels = random_images(batch=4), np.array([0, 3, 7, 9])
    before = [keras.ops.convert_to_numpy(w) for w in model.trainable_weights]
    loss, _ = model.train_on_batch(images, labels)
    assert np.isfinite(loss)
    after = [keras.ops.convert_to_numpy(w) for w in model.trainable_weights]
    assert any(not np.array_equal(b, a) for b, a in zip(before, after))

    probabilities = model.predict(images, verbose=0)
    assert probabilities.shape == (4, 10)
    np.testing.assert_allclose(probabilities.sum(axis=1), np.ones(4), atol=1e-5)

    path = str(tmp_path / f"{preset}.keras")
    model.save(path)
    restored = keras.models.load_model(path)
    assert isinstance(restored, MobileNetImageClassifier)
    assert restored.activation == "softmax"
    # The compile travels too: the same optimizer, with its state.
    assert isinstance(restored.optimizer, keras.optimizers.AdamW)
    assert int(keras.ops.convert_to_numpy(restored.optimizer.iterations)) == 1
    assert restored.count_params() == model.count_params()
    for saved, loaded in zip(model.weights, restored.weights):
        assert saved.path == loaded.path
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(loaded), keras.ops.convert_to_numpy(saved))
    # Identical weights; a compiled and an eager step may still round apart.
    np.testing.assert_allclose(restored.predict(images, verbose=0), probabilities, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize(
    "cls, variant",
    [
        (api.MobileNetV1, "0.25"),
        (api.MobileNetV2, "0.35"),
        (api.MobileNetV3, "small"),
        (api.MobileNetV4, "conv_small"),
        (api.MobileNetV4, "hybrid_medium"),
    ],
)
def test_mixed_float16_outputs_are_finite(float32_policy, cls, variant):
    keras.mixed_precision.set_global_policy("mixed_float16")
    images = random_images()
    classifier = cls.from_variant(variant, num_classes=10, input_shape=SMALL)
    assert classifier.backbone.dtype_policy.name == "mixed_float16"
    probabilities = keras.ops.convert_to_numpy(classifier(images, training=False))
    assert probabilities.shape == (2, 10)
    assert np.all(np.isfinite(probabilities))
    np.testing.assert_allclose(probabilities.astype("float32").sum(axis=1), [1.0, 1.0], atol=1e-2)

    features = keras.ops.convert_to_numpy(classifier.backbone(images, training=False))
    assert features.dtype == np.float16
    assert np.all(np.isfinite(features))
