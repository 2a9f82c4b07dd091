"""`mnet_tools.export` and `mnet-backbones export`: LiteRT and ONNX files that
compute what Keras computes, and int8 files that are integer inside and agree."""

import os

import keras
import numpy as np
import pytest
from PIL import Image

import heads
from conftest import ONE_PER_GENERATION, PARITY_DIR, condition, requires_parity_fixtures
from mnet_tools import cli, detection_export, export, litert

pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow",
    reason="export converts through TensorFlow; run with KERAS_BACKEND=tensorflow.",
)
pytest.importorskip("ai_edge_litert", reason="pip install ai-edge-litert")
pytest.importorskip("onnxruntime", reason="pip install onnxruntime")
pytest.importorskip("tf2onnx", reason="pip install tf2onnx")

FLOAT_TOLERANCE = 1e-4  # of the largest absolute output
SIZE = (64, 96)  # not square, so that a height/width mix-up shows


def figure(printed, label):
    """The number after `label ...:` in the command's output."""
    (line,) = [line for line in printed.splitlines() if line.startswith(label)]
    return float(line.rsplit(":", 1)[1])


def smooth_images(count, size, seed):
    return export.random_images(size, count=count, seed=seed)


@pytest.mark.parametrize("preset", ONE_PER_GENERATION)
def test_onnx_matches_keras_for_every_generation(preset, tmp_path):
    model, normalize = export.load_model(preset, task="backbone", load_weights=False)
    inputs = normalize(smooth_images(2, SIZE, seed=1))
    condition(model, inputs)  # trained-like BatchNorm statistics, so errors are not hidden
    path = export.export_model(model, tmp_path / "model.onnx", "onnx", SIZE)
    report = export.compare(model, path, inputs)
    assert report["max_relative_error"] < FLOAT_TOLERANCE


def test_cli_exports_a_classifier_and_prints_its_agreement(tmp_path, capsys):
    out = tmp_path / "v1.tflite"
    status = cli.main(["export", "mobilenetv1_025", str(out), "--no-weights", "--image-size", "64", "96"])
    assert status == 0 and out.stat().st_size > 100_000
    printed = capsys.readouterr().out
    assert "input 64 x 96" in printed
    error = figure(printed, "max relative error")
    assert error < FLOAT_TOLERANCE
    assert "top1 agreement" in printed


def test_cli_exports_a_preset_folder_at_the_size_its_image_converter_records(tmp_path, capsys):
    from mnet_backbones import MobileNetBackbone, MobileNetImageClassifier

    classifier = MobileNetImageClassifier.from_preset("mobilenetv1_025", load_weights=False, num_classes=5)
    classifier.preprocessor.image_converter.image_size = (80, 48)
    folder = tmp_path / "classifier"
    classifier.save_to_preset(str(folder))
    out = tmp_path / "c.tflite"
    assert cli.main(["export", str(folder), str(out)]) == 0
    printed = capsys.readouterr().out
    assert "input 80 x 48 (recorded by its image converter; --image-size H W overrides)" in printed
    assert cli.main(["export", str(folder), str(out), "--image-size", "64"]) == 0
    assert "input 64 x 64 (--image-size)" in capsys.readouterr().out
    bare = tmp_path / "backbone"
    # A bare backbone's folder has no image converter: it records no size.
    MobileNetBackbone.from_preset("mobilenetv1_025", load_weights=False).save_to_preset(str(bare))
    assert cli.main(["export", str(bare), str(out)]) == 2
    assert "takes images of any size and records none; pass --image-size H W" in capsys.readouterr().err


def write_images(folder, count, size):
    folder.mkdir()
    for i, pixels in enumerate(smooth_images(count, size, seed=2)):
        Image.fromarray(pixels.clip(0, 255).astype("uint8")).save(folder / f"{i:03d}.png")
    return folder


@requires_parity_fixtures()
def test_int8_classifier_from_timm_weights_is_integer_and_agrees(tmp_path, capsys):
    """mobilenetv4_conv_small from its parity snapshot: timm's format, random weights (not ImageNet's)."""
    calibration = write_images(tmp_path / "calibration", 16, (224, 224))
    out = tmp_path / "small_int8.tflite"
    snapshot = os.path.join(PARITY_DIR, "mobilenetv4_conv_small")
    argv = ["export", snapshot, str(out), "--image-size", "224", "--int8", "--calibration-data", str(calibration)]
    assert cli.main(argv) == 0
    assert litert.is_full_integer(out)
    float_size = 3_774_024 * 4  # the classifier's parameters in float32
    assert out.stat().st_size < 0.4 * float_size
    printed = capsys.readouterr().out
    agreement = figure(printed, "top1 agreement on 16 calibration images")
    assert agreement >= 0.75


def test_xnnpack_runs_the_whole_of_mobilenetv3_in_int8_and_float(tmp_path):
    """In LiteRT, an operator XNNPACK does not take splits the graph and runs
    in the slow builtin kernel. The fused HARD_SWISH is such an operator in
    int8, so the int8 export writes hard-swish in a form XNNPACK takes."""
    model, normalize = export.load_model("mobilenetv3_small_100", load_weights=False)
    inputs = normalize(smooth_images(4, SIZE, seed=1))
    condition(model, inputs)
    float_path = export.export_model(model, tmp_path / "float.tflite", image_size=SIZE)
    int8_path = export.export_model(model, tmp_path / "int8.tflite", image_size=SIZE, int8=True,
                                    calibration_images=inputs)  # fmt: skip
    assert litert.xnnpack_coverage(float_path) == {"partitions": 1, "outside": {}}
    assert litert.xnnpack_coverage(int8_path) == {"partitions": 1, "outside": {}}
    assert litert.is_full_integer(int8_path)
    # The form is the export's: the Keras model still computes what it did.
    assert export.compare(model, float_path, inputs)["max_relative_error"] < FLOAT_TOLERANCE
    assert export.compare(model, int8_path, inputs)["max_relative_error"] < 0.2


def test_xnnpack_coverage_names_the_operators_it_leaves_out(tmp_path):
    inputs = keras.Input((16, 16, 3))
    outputs = keras.layers.Conv2D(4, 1)(keras.layers.Activation("hard_silu")(keras.layers.Conv2D(8, 3)(inputs)))
    model = keras.Model(inputs, outputs)
    path = export.export_model(model, tmp_path / "m.tflite", int8=True,
                               calibration_images=smooth_images(4, (16, 16), seed=3) / 127.5 - 1)  # fmt: skip
    assert litert.xnnpack_coverage(path) == {"partitions": 2, "outside": {"HARD_SWISH": 1}}


def test_int8_needs_calibration_data_and_litert(tmp_path, capsys):
    out = str(tmp_path / "m.tflite")
    assert cli.main(["export", "mobilenetv1_025", out, "--no-weights", "--int8"]) == 2
    assert "--calibration-data" in capsys.readouterr().err
    onnx = str(tmp_path / "m.onnx")
    assert (
        cli.main(
            ["export", "mobilenetv1_025", onnx, "--no-weights", "--format", "onnx", "--int8", "--calibration-data", "x"]
        )
        == 2
    )
    assert "litert only" in capsys.readouterr().err
    assert cli.main(["export", "mobilenetv1_025", out, "--format", "onnx"]) == 2
    assert "must end with .onnx" in capsys.readouterr().err
    assert cli.main(["export", "no_such_model", out]) == 2
    assert "mobilenetv4_conv_small" in capsys.readouterr().err  # the valid presets are listed


@pytest.fixture(scope="module")
def segmenter(tmp_path_factory):
    keras.utils.set_random_seed(0)
    model = heads.create_deeplabv3plus(
        "mobilenetv1_025", 3, image_size=SIZE, load_weights=False,
        aspp_filters=16, low_level_filters=8, decoder_filters=16,
    )  # fmt: skip
    condition(model, smooth_images(4, SIZE, seed=3))
    path = tmp_path_factory.mktemp("segmenter") / "segmenter.keras"
    model.save(path)
    return model, path


@pytest.fixture(scope="module")
def detector(tmp_path_factory):
    keras.utils.set_random_seed(0)
    model = heads.create_ssdlite("mobilenetv1_025", 3, image_size=64, load_weights=False)
    condition(model, smooth_images(4, (64, 64), seed=3))
    path = tmp_path_factory.mktemp("detector") / "detector.keras"
    model.save(path)
    return model, path


@pytest.mark.parametrize("format", export.FORMATS)
def test_segmenter_from_a_keras_file_exports(segmenter, format, tmp_path, capsys):
    _, path = segmenter
    out = tmp_path / f"seg{export.SUFFIXES[format]}"
    assert cli.main(["export", str(path), str(out), "--format", format]) == 0
    printed = capsys.readouterr().out
    assert "input 64 x 96" in printed
    error = figure(printed, "max relative error")
    assert error < FLOAT_TOLERANCE
    agreement = figure(printed, "pixel agreement")
    assert agreement > 0.99


def test_int8_segmenter_is_integer_and_mostly_agrees(segmenter, tmp_path):
    model, _ = segmenter
    calibration = smooth_images(8, SIZE, seed=4)
    path = export.export_model(model, tmp_path / "seg_int8.tflite", int8=True, calibration_images=calibration,
                               batch_size=1)  # fmt: skip
    assert litert.is_full_integer(path)
    assert litert.xnnpack_coverage(path) == {"partitions": 1, "outside": {}}
    report = export.compare(model, path, smooth_images(4, SIZE, seed=5))  # four images through a batch-1 file
    assert report["pixel_agreement"] > 0.8


def test_a_fixed_batch_lets_xnnpack_take_the_dilated_convolutions(segmenter, tmp_path):
    model, _ = segmenter
    free = export.export_model(model, tmp_path / "free.tflite")
    fixed = export.export_model(model, tmp_path / "fixed.tflite", batch_size=1)
    # With a free batch the converter writes each dilated depthwise convolution
    # as SPACE_TO_BATCH / convolution / BATCH_TO_SPACE, and XNNPACK takes neither.
    assert set(litert.xnnpack_coverage(free)["outside"]) == {"SPACE_TO_BATCH_ND", "BATCH_TO_SPACE_ND"}
    assert litert.xnnpack_coverage(fixed) == {"partitions": 1, "outside": {}}
    report = export.compare(model, fixed, smooth_images(3, SIZE, seed=9))
    assert report["max_relative_error"] < FLOAT_TOLERANCE


@pytest.mark.parametrize("format", export.FORMATS)
def test_detector_from_a_keras_file_exports_raw_outputs(detector, format, tmp_path):
    model, path = detector
    loaded, normalize = export.load_model(path)
    out = export.export_model(loaded, tmp_path / f"det{export.SUFFIXES[format]}", format)
    inputs = normalize(smooth_images(2, (64, 64), seed=6))
    assert export.compare(model, out, inputs)["max_relative_error"] < FLOAT_TOLERANCE


def test_cli_sets_the_detectors_threshold_and_count_in_the_exported_file(detector, segmenter, tmp_path, capsys):
    model, path = detector
    out = tmp_path / "det.tflite"
    assert cli.main(["export", str(path), str(out), "--score-threshold", "0.25", "--max-detections", "7"]) == 0
    settings = detection_export.read_settings(str(out))
    assert float(settings["score_threshold"]) == 0.25 and int(settings["max_detections"]) == 7
    assert (model.score_threshold, model.max_detections) == (0.3, 100)  # the saved detector is not changed
    assert cli.main(["export", str(segmenter[1]), str(tmp_path / "s.tflite"), "--score-threshold", "0.5"]) == 2
    assert "--score-threshold applies to a detector" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["export", str(path), str(out), "--score-threshold", "1"])
    assert "must be in [0, 1), got 1" in capsys.readouterr().err


def test_int8_detector_keeps_its_detections(detector, tmp_path):
    model, _ = detector
    calibration = smooth_images(8, (64, 64), seed=7)
    path = export.export_model(model, tmp_path / "det_int8.tflite", int8=True, calibration_images=calibration)
    assert litert.is_full_integer(path)
    assert litert.xnnpack_coverage(path) == {"partitions": 1, "outside": {}}
    assert os.path.exists(tmp_path / "det_int8_postprocess.npz")
    report = export.compare(model, path, smooth_images(2, (64, 64), seed=8))
    # A random network quantises worse than a trained one (its outputs are
    # noise-sized): this catches a broken file (error ~1), while the detection
    # demo measures what int8 costs a trained detector in AP.
    assert report["mean_relative_error"] < 0.5
    detections = detection_export.run_litert(path, smooth_images(2, (64, 64), seed=8))
    assert detections["boxes"].shape[-1] == 4


def test_bad_arguments_name_the_value(tmp_path):
    model, _ = export.load_model("mobilenetv1_025", task="backbone", load_weights=False)
    with pytest.raises(ValueError, match="image_size"):
        export.export_model(model, tmp_path / "m.tflite")  # any-size backbone: size needed
    with pytest.raises(ValueError, match="'tflite'"):
        export.export_model(model, tmp_path / "m.tflite", format="tflite", image_size=64)
    with pytest.raises(ValueError, match=r"\(N, 64, 64, 3\)"):
        export.export_model(model, tmp_path / "m.tflite", image_size=64, int8=True,
                            calibration_images=np.zeros((2, 32, 32, 3)))  # fmt: skip
    with pytest.raises(ValueError, match="batch_size.*0"):
        export.export_model(model, tmp_path / "m.tflite", image_size=64, batch_size=0)
    with pytest.raises(ValueError, match="task"):
        export.load_model("mobilenetv1_025", task="detector")


def test_int8_traces_a_copy_whose_backbones_write_the_int8_hard_swish(detector):
    model, normalize = export.load_model("mobilenetv3_small_100", load_weights=False, num_classes=10)
    copy = export.with_hard_swish_form(model, "int8")
    assert copy is not model
    assert model.backbone.hard_swish_form == "fused"  # the model itself is left as it is
    assert copy.backbone.hard_swish_form == "int8" and copy.get_config()["num_classes"] == 10
    inputs = normalize(smooth_images(2, SIZE, seed=1))
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(copy(inputs, training=False)),
        keras.ops.convert_to_numpy(model(inputs, training=False)),
        atol=1e-5,
    )
    assert export.with_hard_swish_form(detector[0], "int8").backbone.hard_swish_form == "int8"
    plain = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(2, 1)])
    assert export.with_hard_swish_form(plain, "int8") is plain  # no backbone: nothing to copy
