"""DeepLabV3 and LR-ASPP: torchvision's checkpoints load and reproduce torchvision's logits (shared/parity/torchvision),
all or nothing; the built-in names, training, evaluation, saving and LiteRT export."""

import os
import shutil

import keras
import keras_hub
import numpy as np
import pytest

import heads
from conftest import PARITY_DIR
from heads.segmentation import torchvision as torchvision_segmentation
from heads.segmentation.layers import DeepLabV3ASPP, FCNHead, LRASPPHead, ResizeToMatch
from mnet_backbones import MobileNetBackbone
from mnet_backbones.convert import torchvision as tv_convert
from mnet_backbones.convert.mapping import WeightMismatchError

FIXTURES = os.path.join(PARITY_DIR, "torchvision")
DEEPLAB = os.path.join(FIXTURES, "deeplabv3_mobilenet_v3_large")
LRASPP = os.path.join(FIXTURES, "lraspp_mobilenet_v3_large")
RNG = np.random.default_rng(0)
TOLERANCE = 1e-4  # of the largest reference |value|

pytestmark = pytest.mark.skipif(
    not os.path.isdir(DEEPLAB) or not os.path.isdir(LRASPP),
    reason=f"torchvision parity fixtures not found at {FIXTURES} (set MNET_SHARED_DIR).",
)
# Reading a .pth file needs torch (the optional extra).
requires_torch = pytest.mark.skipif(
    __import__("importlib").util.find_spec("torch") is None, reason="reading .pth files needs torch"
)
tensorflow_only = pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="TensorFlow only (cost)")
tensorflow_only_cost = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow", reason="cost: round trips run on TensorFlow; parity runs on every backend"
)


def to_numpy(x):
    return keras.ops.convert_to_numpy(x)


def relative_error(actual, expected):
    return float(np.max(np.abs(np.asarray(actual, "float64") - expected)) / np.max(np.abs(expected)))


@pytest.fixture(scope="module")
def references():
    return {
        name: dict(np.load(os.path.join(folder, "reference.npz")))
        for name, folder in (("deeplab", DEEPLAB), ("lraspp", LRASPP))
    }


@pytest.fixture(scope="module")
def deeplab():
    return heads.DeepLabV3Segmenter.from_preset(DEEPLAB)


@pytest.fixture(scope="module")
def lraspp():
    return heads.LRASPPSegmenter.from_preset(LRASPP)


def small_backbone():
    """MobileNetV3-Large at width 0.35, torchvision's conventions: the taps the heads read by default."""
    return MobileNetBackbone(
        "mobilenetv3_large", width_multiplier=0.35, output_stride=16, **tv_convert.TORCHVISION_CONVENTION
    )


def images(batch, height, width):
    return RNG.uniform(0, 255, (batch, height, width, 3)).astype("float32")


# --- Parity with torchvision ---


@requires_torch
@pytest.mark.parametrize("index", [0, 1], ids=["224x224", "161x193"])
def test_deeplabv3_matches_torchvision(deeplab, references, index):
    ref = references["deeplab"]
    image = ref[f"image_{index}"][None].astype("float32")  # uint8 pixels, 0..255
    assert deeplab.aux_head and deeplab.num_classes == 21
    out = to_numpy(deeplab(image, training=False))
    aux = to_numpy(deeplab.aux_model(image, training=False))
    assert out.shape == aux.shape == ref[f"out_{index}"].shape == (1, *image.shape[1:3], 21)
    assert relative_error(out, ref[f"out_{index}"]) < TOLERANCE
    assert relative_error(aux, ref[f"aux_{index}"]) < TOLERANCE


@requires_torch
@pytest.mark.parametrize("index", [0, 1], ids=["224x224", "161x193"])
def test_lraspp_matches_torchvision(lraspp, references, index):
    ref = references["lraspp"]
    image = ref[f"image_{index}"][None].astype("float32")
    out = to_numpy(lraspp(image, training=False))
    assert out.shape == ref[f"out_{index}"].shape == (1, *image.shape[1:3], 21)
    assert relative_error(out, ref[f"out_{index}"]) < TOLERANCE


@requires_torch
def test_taps_and_conventions_are_torchvisions(lraspp):
    backbone = lraspp.backbone
    assert backbone.bn_epsilon == 1e-3 and backbone.padding == "symmetric" and backbone.output_stride == 16
    # torchvision's "low" is features[4], "high" features[16].
    assert tv_convert.torchvision_index(backbone, "blocks.2.0") == 4
    assert tv_convert.torchvision_index(backbone, "final") == 16
    taps = lraspp.feature_extractor.output
    assert taps["blocks.2.0"].shape[-1] == 40 and taps["final"].shape[-1] == 960
    # The head's own BatchNorm keeps PyTorch's default epsilon.
    assert lraspp.head.cbr.bn.epsilon == 1e-5


@requires_torch
def test_trainable_parameters_equal_torchvisions_counts(deeplab, lraspp):
    def trainable(model):
        return sum(int(np.prod(v.shape)) for v in model.trainable_weights)

    # torchvision's num_params (parameters, not BatchNorm's running statistics).
    assert trainable(deeplab) == torchvision_segmentation.PRESETS["deeplabv3_mobilenetv3_large_voc"]["num_params"]
    assert trainable(deeplab) == 11029328
    assert trainable(lraspp) == torchvision_segmentation.PRESETS["lraspp_mobilenetv3_large_voc"]["num_params"]
    assert trainable(lraspp) == 3221538


# --- Loading: all or nothing ---


def snapshot(model):
    return [np.array(to_numpy(v)) for v in model.weights]


def unchanged(model, before):
    return all(np.array_equal(to_numpy(v), b) for v, b in zip(model.weights, before))


@requires_torch
@pytest.mark.parametrize(
    "folder, key, bad_shape",
    [(LRASPP, "classifier.cbr.0.weight", (64, 960, 1, 1)), (DEEPLAB, "aux_classifier.0.weight", (10, 40, 1, 1))],
    ids=["lraspp_head", "deeplab_aux"],
)
def test_a_wrong_shape_names_the_tensor_and_loads_nothing(folder, key, bad_shape):
    state_dict = tv_convert.read_state_dict(os.path.join(folder, "model.pth"))
    segmenter = heads.load_torchvision_segmenter(folder, load_weights=False)
    before = snapshot(segmenter)
    bad = dict(state_dict, **{key: np.zeros(bad_shape, "float32")})
    with pytest.raises(WeightMismatchError, match=rf"'{key}'.*{bad_shape}".replace("(", r"\(").replace(")", r"\)")):
        torchvision_segmentation.load_torchvision_weights(segmenter, bad, "model.pth")
    assert unchanged(segmenter, before)
    # A missing tensor and a stray one are refused alike.
    missing = {k: v for k, v in state_dict.items() if k != "backbone.4.block.0.0.weight"}
    with pytest.raises(WeightMismatchError, match="backbone.4.block.0.0.weight"):
        torchvision_segmentation.load_torchvision_weights(segmenter, missing, "model.pth")
    stray = dict(state_dict, **{"classifier.extra.weight": np.zeros((3,), "float32")})
    with pytest.raises(WeightMismatchError, match="classifier.extra.weight"):
        torchvision_segmentation.load_torchvision_weights(segmenter, stray, "model.pth")
    assert unchanged(segmenter, before)


@requires_torch
def test_sources_a_bare_pth_and_the_generic_loader(tmp_path, lraspp, references):
    # A .pth file under any name: the keys say which model it is.
    path = tmp_path / "my_weights.pth"
    shutil.copy(os.path.join(LRASPP, "model.pth"), path)
    segmenter = heads.load_torchvision_segmenter(str(path), image_size=(161, 193))
    assert type(segmenter) is heads.LRASPPSegmenter and segmenter.image_size == (161, 193)
    image = references["lraspp"]["image_1"][None].astype("float32")
    assert relative_error(segmenter.predict(image, verbose=0), references["lraspp"]["out_1"]) < TOLERANCE
    with pytest.raises(ValueError, match="DeepLabV3Segmenter"):
        heads.LRASPPSegmenter.from_preset(DEEPLAB)
    with pytest.raises(ValueError, match="aux_head"):
        heads.DeepLabV3Segmenter.from_preset(DEEPLAB, aux_head=False, load_weights=False)
    # What a tool dispatching many sources may send here, without reading weights.
    assert torchvision_segmentation.is_segmentation_source(DEEPLAB)
    assert torchvision_segmentation.is_segmentation_source("lraspp_mobilenetv3_large_voc")
    assert torchvision_segmentation.is_segmentation_source("/x/deeplabv3_mobilenet_v3_large-fc3c493d.pth")
    assert not torchvision_segmentation.is_segmentation_source(str(path))
    assert not torchvision_segmentation.is_segmentation_source("/x/mobilenet_v3_large-8738ca79.pth")
    assert not torchvision_segmentation.is_segmentation_source(os.path.join(FIXTURES, "mobilenet_v3_small"))
    with pytest.raises(OSError, match="no_such.pth"):
        heads.LRASPPSegmenter.from_preset(str(tmp_path / "no_such.pth"))


@requires_torch
def test_convert_to_preset_writes_a_folder_keras_hub_loads(tmp_path, references):
    messages = []
    out = tmp_path / "converted"
    out.mkdir()  # the CLI converts into an empty staging folder
    torchvision_segmentation.convert_to_preset(DEEPLAB, out, progress=messages.append)
    assert len(messages) == 2 and DEEPLAB in messages[0]
    loaded = keras_hub.models.ImageSegmenter.from_preset(str(out))
    assert type(loaded) is heads.DeepLabV3Segmenter and loaded.aux_head and loaded.image_size is None
    image = references["deeplab"]["image_1"][None].astype("float32")
    assert relative_error(to_numpy(loaded(image)), references["deeplab"]["out_1"]) < TOLERANCE


# --- Built-in names ---


def test_builtin_names_published_figures_and_urls():
    deeplab_row = torchvision_segmentation.PRESETS["deeplabv3_mobilenetv3_large_voc"]
    lraspp_row = torchvision_segmentation.PRESETS["lraspp_mobilenetv3_large_voc"]
    assert deeplab_row["url"] == "https://download.pytorch.org/models/deeplabv3_mobilenet_v3_large-fc3c493d.pth"
    assert lraspp_row["url"] == "https://download.pytorch.org/models/lraspp_mobilenet_v3_large-d234d4ea.pth"
    assert deeplab_row["metrics"] == {"mIoU": 60.3, "pixel_accuracy": 91.2}
    assert lraspp_row["metrics"] == {"mIoU": 57.9, "pixel_accuracy": 91.2}
    names = torchvision_segmentation.VOC_CLASS_NAMES
    assert len(names) == 21 and names[0] == "__background__" and names[15] == "person" and names[20] == "tvmonitor"


def test_builtin_name_without_weights_needs_no_network(monkeypatch):
    def no_network(url, destination):
        raise AssertionError(f"fetched {url}")

    monkeypatch.setattr(tv_convert, "_fetch", no_network)
    segmenter = heads.create_lraspp("lraspp_mobilenetv3_large_voc", load_weights=False)
    assert type(segmenter) is heads.LRASPPSegmenter
    assert segmenter.class_names == torchvision_segmentation.VOC_CLASS_NAMES
    assert sum(int(np.prod(v.shape)) for v in segmenter.trainable_weights) == 3221538
    with pytest.raises(ValueError, match="21 classes"):
        heads.create_lraspp("lraspp_mobilenetv3_large_voc", num_classes=5, load_weights=False)


def test_builtin_name_offline_says_what_to_do(monkeypatch, tmp_path):
    fetched = []

    def offline(url, destination):
        fetched.append(url)
        raise OSError("Network is unreachable")

    monkeypatch.setenv("MNET_BACKBONES_CACHE", str(tmp_path))
    monkeypatch.setattr(tv_convert, "_fetch", offline)
    with pytest.raises(tv_convert.DownloadError, match="load_weights=False") as caught:
        heads.DeepLabV3Segmenter.from_preset("deeplabv3_mobilenetv3_large_voc")
    assert fetched == [torchvision_segmentation.PRESETS["deeplabv3_mobilenetv3_large_voc"]["url"]]
    assert "deeplabv3_mobilenet_v3_large-fc3c493d.pth" in str(caught.value)
    assert os.listdir(tmp_path / "torchvision") == []  # no partial file left


@requires_torch
def test_builtin_name_loads_from_the_cache_with_its_class_names(monkeypatch, tmp_path, references):
    # The cached file stands in for the download. A cached file is checked against the SHA-256
    # prefix of its published name: the built-in name points at the fixture's own hash.
    import hashlib

    with open(os.path.join(LRASPP, "model.pth"), "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()[:8]
    spec = dict(torchvision_segmentation.PRESETS["lraspp_mobilenetv3_large_voc"])
    spec["url"] = spec["url"].replace("d234d4ea", digest)
    monkeypatch.setitem(torchvision_segmentation.PRESETS, "lraspp_mobilenetv3_large_voc", spec)
    monkeypatch.setenv("MNET_BACKBONES_CACHE", str(tmp_path))
    monkeypatch.setattr(tv_convert, "_fetch", lambda url, destination: pytest.fail(f"fetched {url}"))
    cache = tmp_path / "torchvision"
    cache.mkdir()
    shutil.copy(os.path.join(LRASPP, "model.pth"), cache / f"lraspp_mobilenet_v3_large-{digest}.pth")
    segmenter = heads.LRASPPSegmenter.from_preset("lraspp_mobilenetv3_large_voc")
    assert segmenter.class_names[15] == "person"
    image = references["lraspp"]["image_0"][None].astype("float32")
    assert relative_error(to_numpy(segmenter(image)), references["lraspp"]["out_0"]) < TOLERANCE


# --- The tasks ---


@tensorflow_only_cost
def test_heads_on_the_default_taps_and_their_layers_round_trip_configs():
    backbone = small_backbone()
    deeplab = heads.DeepLabV3Segmenter(backbone, num_classes=3, image_size=(48, 64), aspp_filters=16, aux_head=True)
    assert deeplab.aux_classifier.filters == backbone.feature_taps["blocks.2.0"].shape[-1] // 4
    lraspp = heads.LRASPPSegmenter(small_backbone(), num_classes=3, inter_filters=8)
    x = images(2, 48, 64)
    assert deeplab.predict(x, verbose=0).shape == (2, 48, 64, 3)
    assert to_numpy(deeplab.aux_model(x)).shape == (2, 48, 64, 3)
    # Any size without a fixed image_size, as torchvision.
    assert to_numpy(lraspp(images(1, 37, 45))).shape == (1, 37, 45, 3)
    for layer in (DeepLabV3ASPP(8, (1, 2), dropout=0.2), FCNHead(3, 4), LRASPPHead(3, 8), ResizeToMatch()):
        assert type(layer).from_config(layer.get_config()).get_config() == layer.get_config()
    with pytest.raises(ValueError, match="'blocks.9.9'.*Available"):
        heads.LRASPPSegmenter(small_backbone(), num_classes=3, low_feature="blocks.9.9")
    with pytest.raises(ValueError, match="class_names"):
        heads.LRASPPSegmenter(small_backbone(), num_classes=3, class_names=["a", "b"])


def test_training_loss_adds_the_auxiliary_heads_at_half_weight():
    x = images(2, 32, 32)
    masks = RNG.integers(0, 3, (2, 32, 32, 1))
    segmenter = heads.DeepLabV3Segmenter(
        small_backbone(), num_classes=3, image_size=32, aspp_filters=8, aux_head=True, dropout=0.0, aux_dropout=0.0
    )
    assert segmenter.aux_loss_weight == 0.5  # the task compiles itself: "auto", torchvision's 0.5
    segmenter.compile()
    cross_entropy = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    # No dropout, and BatchNorm in training mode reads the batch: the same logits each call.
    logits = segmenter(x, training=True)
    expected = float(cross_entropy(masks, logits)) + 0.5 * float(
        cross_entropy(masks, segmenter.aux_model(x, training=True))
    )
    loss = segmenter.compute_loss(x=x, y=masks, y_pred=logits, training=True)
    assert float(to_numpy(loss)) == pytest.approx(expected, rel=1e-4)
    assert float(to_numpy(segmenter.compute_loss(x=x, y=masks, y_pred=logits, training=False))) == pytest.approx(
        float(cross_entropy(masks, logits)), rel=1e-4
    )
    segmenter.compile(aux_loss_weight=0.0)
    assert float(to_numpy(segmenter.compute_loss(x=x, y=masks, y_pred=logits, training=True))) == pytest.approx(
        float(cross_entropy(masks, logits)), rel=1e-4
    )
    with pytest.raises(ValueError, match="aux_head"):
        heads.DeepLabV3Segmenter(small_backbone(), num_classes=3, aspp_filters=8).compile(aux_loss_weight=0.5)
    with pytest.raises(ValueError, match="loss object"):
        segmenter.compile(loss="sparse_categorical_crossentropy", aux_loss_weight=0.5)


@tensorflow_only
def test_fit_trains_both_heads():
    keras.utils.set_random_seed(2)
    x = images(4, 32, 32)
    masks = RNG.integers(0, 3, (4, 32, 32, 1))
    segmenter = heads.create_deeplabv3(small_backbone(), num_classes=3, image_size=32, aspp_filters=8, aux_head=True)
    segmenter.compile()
    aux_before = snapshot(segmenter.aux_classifier)
    history = segmenter.fit(x, masks, batch_size=2, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0]) and "mean_iou" in history.history
    # The auxiliary loss reached the auxiliary head.
    assert not unchanged(segmenter.aux_classifier, aux_before)


def test_predict_and_evaluate_segmentation(tmp_path):
    from PIL import Image

    segmenter = heads.LRASPPSegmenter(small_backbone(), num_classes=3, image_size=(40, 48), inter_filters=8)
    x = images(2, 40, 48).round()
    predicted = np.argmax(segmenter.predict(x, verbose=0), axis=-1)
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    for i in range(2):
        Image.fromarray(x[i].astype("uint8")).save(tmp_path / "images" / f"{i}.png")
        Image.fromarray(predicted[i].astype("uint8")).save(tmp_path / "masks" / f"{i}.png")
    # Masks that are the segmenter's own predictions: every pixel right.
    scores = heads.evaluate_segmentation(segmenter, tmp_path / "images", tmp_path / "masks", num_classes=3)
    assert scores["pixel_accuracy"] == 1.0
    # One label flipped away from the prediction: no longer perfect.
    wrong = predicted[0].copy()
    wrong[:10] = (wrong[:10] + 1) % 3
    Image.fromarray(wrong.astype("uint8")).save(tmp_path / "masks" / "0.png")
    scores = heads.evaluate_segmentation(segmenter, tmp_path / "images", tmp_path / "masks", num_classes=3)
    assert scores["pixel_accuracy"] == pytest.approx(1 - 10 * 48 / (2 * 40 * 48))


def test_round_trips_keras_file_and_preset(tmp_path):
    segmenter = heads.DeepLabV3Segmenter(
        small_backbone(), num_classes=2, image_size=(32, 48), aspp_filters=8, aux_head=True, class_names=["bg", "fg"]
    )
    x = images(1, 32, 48)
    expected, expected_aux = segmenter.predict(x, verbose=0), to_numpy(segmenter.aux_model(x))
    segmenter.compile(aux_loss_weight=0.25)
    path = str(tmp_path / "deeplabv3.keras")
    segmenter.save(path)
    restored = keras.models.load_model(path)
    assert isinstance(restored, heads.DeepLabV3Segmenter) and restored.class_names == ("bg", "fg")
    assert restored.aux_loss_weight == 0.25
    np.testing.assert_allclose(restored.predict(x, verbose=0), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(to_numpy(restored.aux_model(x)), expected_aux, rtol=1e-5, atol=1e-5)
    lraspp = heads.LRASPPSegmenter(small_backbone(), num_classes=2, inter_filters=8)
    lraspp.save_to_preset(str(tmp_path / "preset"))
    loaded = heads.LRASPPSegmenter.from_preset(str(tmp_path / "preset"))
    assert loaded.image_size is None
    # predict (compiled) against an eager call: float32 rounding relative to the largest logit.
    eager = to_numpy(lraspp(x))
    np.testing.assert_allclose(loaded.predict(x, verbose=0), eager, rtol=1e-5, atol=1e-5 * np.abs(eager).max())
    # keras-hub's generic loader finds the class too.
    assert type(keras_hub.models.ImageSegmenter.from_preset(str(tmp_path / "preset"))) is heads.LRASPPSegmenter


# --- LiteRT ---


# int8 against torchvision's logits: max error / largest logit, and the pixels whose class is kept.
# Measured on the fixtures (image 0, calibrated on itself): LR-ASPP 0.259 and 67.0%, DeepLabV3 0.492
# and 68.8%. Where it is lost: nowhere in particular. Tensor by tensor (each int8 tensor against the
# float file's, rmse / std), the error grows steadily through the backbone, 0.02 after the stem to
# 0.7 at its last block, about 1.3x a block; no single op (sigmoid gates, SE means, the pooling branch,
# the ASPP concatenation, the classifier) kept in float brings it down. The float model itself does
# the same to faint noise: +-2 grey levels of uniform noise on the input image moves its logits by 0.275
# (LR-ASPP) and 0.531 (DeepLabV3) of the largest, about the int8 figures (see the test below that asserts it).
# The fixtures' random weights, with BatchNorm statistics measured on images, make a chaotic network
# that amplifies any perturbation; a trained one does not. The bounds are the measured figures with
# room for other CPUs' rounding, tight enough to catch a broken export (a wrong normalisation or
# scale: error near 1, agreement near chance).
INT8_BOUNDS = {"lraspp": (0.35, 0.6), "deeplab": (0.6, 0.6)}  # max error, least pixel agreement
INPUT_NOISE_PIXELS = 2.0  # grey levels of a 0..255 image


@tensorflow_only
@pytest.mark.parametrize("name", ["lraspp", "deeplab"])
def test_the_fixtures_amplify_faint_input_noise(request, references, name):
    """Why int8 costs these fixtures so much: their float model moves as far under +-2 grey levels of input noise."""
    segmenter = request.getfixturevalue(name)
    image = references[name]["image_0"][None].astype("float32")
    noise = np.random.default_rng(0).uniform(-INPUT_NOISE_PIXELS, INPUT_NOISE_PIXELS, image.shape)
    clean = to_numpy(segmenter(image, training=False))
    noisy = to_numpy(segmenter((image + noise).astype("float32"), training=False))
    error = relative_error(noisy, clean)
    print(
        f"{name} float32 under +-{INPUT_NOISE_PIXELS} grey levels of input noise: max error {error:.2%} of the largest logit"
    )
    # Measured 0.275 (LR-ASPP) and 0.531 (DeepLabV3): at least 60% of each int8 bound.
    assert error > 0.6 * INT8_BOUNDS[name][0]


@tensorflow_only
@requires_torch
@pytest.mark.parametrize("name", ["lraspp", "deeplab"])
def test_litert_float32_and_int8_on_the_parity_inputs(request, references, tmp_path, name):
    pytest.importorskip("ai_edge_litert.interpreter")
    from mnet_tools import export, litert

    segmenter = request.getfixturevalue(name)
    ref = references[name]
    image = ref["image_0"][None].astype("float32")
    expected = to_numpy(segmenter(image, training=False))
    float_path = export.export_model(segmenter, str(tmp_path / "f32.tflite"), image_size=(224, 224), batch_size=1)
    (actual,) = litert.run(float_path, image)
    assert relative_error(actual, expected) < TOLERANCE
    assert relative_error(actual, ref["out_0"]) < TOLERANCE
    assert litert.xnnpack_coverage(float_path) == {"partitions": 1, "outside": {}}
    int8_path = export.export_model(
        segmenter, str(tmp_path / "int8.tflite"), image_size=(224, 224), batch_size=1, int8=True,
        calibration_images=image,
    )  # fmt: skip
    (quantised,) = litert.run(int8_path, image)
    error = relative_error(quantised, ref["out_0"])
    agreement = float(np.mean(quantised.argmax(-1) == ref["out_0"].argmax(-1)))
    print(
        f"{name} int8 on the parity image: max error {error:.2%} of the largest logit, pixel agreement {agreement:.1%}"
    )
    assert litert.is_full_integer(int8_path)
    assert litert.xnnpack_coverage(int8_path)["partitions"] == 1
    max_error, least_agreement = INT8_BOUNDS[name]  # measured, and why so large: see INT8_BOUNDS
    assert error < max_error and agreement > least_agreement


@tensorflow_only
def test_macs_at_520_are_torchvisions_published_operations():
    from mnet_tools.macs import count_macs

    # torchvision's weights metadata: LR-ASPP "_ops" 2.1 (GFLOPS, counted as multiply-adds) at 520 x 520.
    segmenter = heads.load_torchvision_segmenter("lraspp_mobilenetv3_large_voc", load_weights=False, image_size=520)
    assert count_macs(segmenter) == pytest.approx(2.1e9, rel=0.01)


FLAT_MODULES = {
    "heads.deeplab": (
        "DeepLabV3PlusSegmenter",
        "create_deeplabv3plus",
        "AtrousSpatialPyramidPooling",
        "BilinearResize",
    ),
    "heads.deeplabv3": ("DeepLabV3Segmenter", "create_deeplabv3", "DeepLabV3ASPP", "FCNHead", "head_conv"),
    "heads.lraspp": ("LRASPPSegmenter", "create_lraspp", "LRASPPHead"),
    "heads.tap_segmenter": ("TapSegmenter", "tap_model", "available_taps", "ResizeToMatch", "resize_bilinear"),
    "heads.torchvision_segmentation": ("PRESETS", "SEGMENTER_CLASSES", "load_segmenter", "conv_bn_slots"),
    "heads.segmentation_eval": ("evaluate_segmentation", "confusion_matrix", "predict_masks"),
}


def test_the_flat_modules_name_the_moved_objects():
    """Saved files and callers name the flat modules of before heads.segmentation: they re-export the same objects."""
    import importlib

    import heads.segmentation.evaluation
    import heads.segmentation.layers
    import heads.segmentation.segmenter
    from heads import pyramid
    from mnet_backbones.convert import mapping

    homes = (
        heads.segmentation,
        heads.segmentation.layers,
        heads.segmentation.segmenter,
        heads.segmentation.evaluation,
        torchvision_segmentation,
        pyramid,
        mapping,
    )
    for module_name, names in FLAT_MODULES.items():
        module = importlib.import_module(module_name)
        for name in names:
            moved = [getattr(home, name) for home in homes if hasattr(home, name)]
            assert moved and getattr(module, name) is moved[0], f"{module_name}.{name}"
    assert heads.DeepLabV3Segmenter.__module__ == "heads.segmentation.deeplabv3"
    assert torchvision_segmentation.SEGMENTER_CLASSES["lraspp_mobilenet_v3_large"] is heads.LRASPPSegmenter
