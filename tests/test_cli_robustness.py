"""The command line on broken files, bad folders and Ctrl-C: one clear line, a
non-zero status, nothing half-written, and a rerun that works. Also: `--help`
answers without importing Keras, TensorFlow's log stays off the terminal, and
`convert`'s output exports offline."""

import os
import signal
import subprocess
import sys
import zipfile

import keras
import pytest

import heads
from conftest import PARITY_DIR, assert_one_line_error, requires_parity_fixtures, run_cli
from mnet_backbones import MobileNetBackbone, MobileNetImageClassifier, files, weights
from mnet_backbones.convert import timm
from mnet_tools import cli, export

pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow",
    reason="the command line is checked on TensorFlow, which export needs",
)

PRESET = "mobilenetv3_small_050"  # small, with timm weights (faked here: no network)
SIZE = "32"
PRESET_FILES = ("config.json", "model.weights.h5", "task.json", "metadata.json", "preprocessor.json")


def leftovers(folder):
    """Temporary files or folders an interrupted write would leave behind."""
    return [name for name in os.listdir(folder) if ".partial-" in name or ".converting-" in name or ".old-" in name]


def fake_convert(name, classifier_cls=None, progress=print):
    """What `weights.convert_classifier` returns, without the download: random weights."""
    return MobileNetImageClassifier.from_preset(name, load_weights=False, num_classes=1000)


@pytest.fixture
def offline_cache(tmp_path, monkeypatch):
    """An empty weights cache that fills with random-weight classifiers, never from the network."""
    monkeypatch.setenv(weights.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setattr(weights, "convert_classifier", fake_convert)
    return tmp_path / "cache"


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A classifier preset folder and .keras file, small (4 classes)."""
    folder = tmp_path_factory.mktemp("saved")
    classifier = MobileNetImageClassifier.from_preset(PRESET, load_weights=False, num_classes=4)
    classifier.save_to_preset(str(folder / "preset"))
    classifier.save(str(folder / "classifier.keras"))
    return folder


def copy_of(saved, name, tmp_path):
    source = saved / name
    target = tmp_path / name
    if source.is_dir():
        import shutil

        shutil.copytree(source, target)
    else:
        target.write_bytes(source.read_bytes())
    return target


# --------------------------------------------------------------------------
# Start-up: no Keras for --help, no TensorFlow log.
def cli_env(**extra):
    env = {key: value for key, value in os.environ.items() if key != cli.TF_LOG_LEVEL}
    env.update(KERAS_BACKEND="tensorflow", **extra)
    return env


def test_help_version_and_argument_errors_answer_without_keras():
    script = (
        "import sys\n"
        "from mnet_tools import cli\n"
        "for argv in (['--help'], ['--version'], ['export', '--help'], ['summary', 'x', '--size', '9'], ['demo'],\n"
        "             ['demo', 'detection', '--help'], ['demo', 'segmentation', '--epochs', '0']):\n"
        "    try:\n"
        "        cli.main(argv)\n"
        "    except SystemExit:\n"
        "        pass\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('keras', 'tensorflow', 'keras_hub', 'mnet_backbones'))\n"
        "print('HEAVY', heavy)\n"
    )
    # What makes them answer at once (well under 2 s): nothing heavy is imported. Not timed here:
    # speed is a benchmark's business on shared machines.
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=cli_env(), timeout=60)
    assert "HEAVY []" in result.stdout, result.stdout + result.stderr
    assert "usage: mnet-backbones" in result.stdout and "mnet-backbones 0." in result.stdout
    assert "expected 2 arguments" in result.stderr and "{detection,segmentation}" in result.stderr
    assert "usage: mnet-backbones demo detection" in result.stdout
    assert "--epochs: must be a positive integer, got 0" in result.stderr


def test_tensorflow_log_stays_off_the_terminal(tmp_path):
    # Export loads TensorFlow, converts with it and runs the file in LiteRT: each prints notices.
    argv = ["export", "mobilenetv1_025", str(tmp_path / "m.tflite"), "--no-weights", "--image-size", SIZE]
    result = subprocess.run([sys.executable, "-m", "mnet_tools", *argv], capture_output=True, text=True,
                            env=cli_env(), timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""


# --------------------------------------------------------------------------
# Ctrl-C.
PAUSING_CLI = r"""
import contextlib, os, signal, sys, time
# Ctrl-C in a terminal: SIGINT at its default, whatever the test runner inherited (a shell's
# background job starts with SIGINT ignored, and Python then raises no KeyboardInterrupt).
signal.signal(signal.SIGINT, signal.default_int_handler)
from mnet_tools import cli
cli.start_keras()
from mnet_backbones import files, sources, weights
from mnet_backbones.classifier import MobileNetImageClassifier
from mnet_tools import export

pause_at = os.environ["PAUSE_AT"]

def pause(where):
    if where == pause_at:
        print("PAUSED", file=sys.stderr, flush=True)
        time.sleep(120)

def fake_convert(name, classifier_cls=None, progress=print):  # no network: random weights
    progress("converting")
    return MobileNetImageClassifier.from_preset(name, load_weights=False, num_classes=1000)

weights.convert_classifier = fake_convert
save_to_preset = MobileNetImageClassifier.save_to_preset
def paused_save_to_preset(self, folder, *args, **kwargs):  # the cache is written with it
    save_to_preset(self, folder, *args, **kwargs)
    pause("cache")
MobileNetImageClassifier.save_to_preset = paused_save_to_preset
copytree = sources.shutil.copytree
def paused_copytree(*args, **kwargs):  # OUT_DIR is copied from the cache with it (the built-in source's convert)
    copytree(*args, **kwargs)
    pause("copy")
sources.shutil.copytree = paused_copytree
atomic_file = files.atomic_file
@contextlib.contextmanager
def paused_atomic_file(path):  # the exported file, written but not yet renamed
    with atomic_file(path) as partial:
        yield partial
        pause("written")
files.atomic_file = paused_atomic_file
sys.exit(cli.main(sys.argv[1:]))
"""


def interrupt_when_paused(argv, env):
    """Run the CLI with PAUSING_CLI, send SIGINT at its pause; return (status, stderr)."""
    process = subprocess.Popen([sys.executable, "-c", PAUSING_CLI, *argv], stderr=subprocess.PIPE, text=True,
                               stdout=subprocess.DEVNULL, env=env)  # fmt: skip
    lines = []
    try:
        for line in process.stderr:
            lines.append(line)
            if line.strip() == "PAUSED":
                break
        assert lines and lines[-1].strip() == "PAUSED", "".join(lines)
        process.send_signal(signal.SIGINT)
        rest = process.stderr.read()
        process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    return process.returncode, "".join(lines) + rest


@pytest.mark.parametrize("pause_at", ["cache", "copy"])
def test_ctrl_c_during_convert_leaves_nothing_half_written(pause_at, tmp_path, offline_cache, capsys):
    out = tmp_path / "out"
    status, error = interrupt_when_paused(["convert", PRESET, str(out)], cli_env(
        MNET_BACKBONES_CACHE=str(offline_cache), PAUSE_AT=pause_at))  # fmt: skip
    assert status == cli.INTERRUPTED, error
    assert "Traceback" not in error and "interrupted" in error, error
    assert not out.exists()
    assert leftovers(tmp_path) == []
    if offline_cache.exists():  # the cache is complete or has nothing of the preset
        assert leftovers(offline_cache) == []
        assert weights.is_cached(PRESET) == (pause_at == "copy")
    # The rerun works, and writes a preset that loads.
    assert cli.main(["convert", PRESET, str(out)]) == 0
    assert all((out / name).is_file() for name in PRESET_FILES)
    assert leftovers(tmp_path) == []
    assert isinstance(MobileNetImageClassifier.from_preset(str(out)), MobileNetImageClassifier)


def test_ctrl_c_during_export_leaves_no_file(tmp_path, capsys):
    out = tmp_path / "model.tflite"
    argv = ["export", "mobilenetv1_025", str(out), "--no-weights", "--image-size", SIZE]
    status, error = interrupt_when_paused(argv, cli_env(PAUSE_AT="written"))
    assert status == cli.INTERRUPTED, error
    assert "Traceback" not in error and "interrupted" in error, error
    assert os.listdir(tmp_path) == []  # neither the file nor its temporary
    assert cli.main(argv) == 0
    assert os.listdir(tmp_path) == ["model.tflite"]


def test_an_exported_file_replaces_the_old_one_only_when_complete(tmp_path, monkeypatch):
    model, _ = export.load_model("mobilenetv1_025", task="backbone", load_weights=False)
    out = tmp_path / "m.tflite"
    out.write_bytes(b"the old file")

    def export_half(path, *args, **kwargs):
        with open(path, "wb") as file:
            file.write(b"half a model")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(model, "export", export_half)
    with pytest.raises(OSError, match="No space left"):
        export.export_model(model, out, image_size=32)
    assert out.read_bytes() == b"the old file" and os.listdir(tmp_path) == ["m.tflite"]


# --------------------------------------------------------------------------
# Output folders and calibration data: checked before the work starts.
def test_convert_checks_its_output_folder_first(tmp_path, offline_cache, capsys, monkeypatch):
    monkeypatch.setattr(weights, "convert_classifier", lambda *a, **k: pytest.fail("converted before the check"))
    (tmp_path / "file").write_text("x")
    assert_one_line_error(*run_cli(["convert", PRESET, str(tmp_path / "file")], capsys), "is a file")
    assert_one_line_error(*run_cli(["convert", PRESET, str(tmp_path / "file" / "out")], capsys), "is a file")

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(files.tempfile, "mkdtemp", refuse)  # as a read-only folder does, even for root
    status, error = run_cli(["convert", PRESET, str(tmp_path / "out")], capsys)
    assert_one_line_error(status, error, "cannot create files in its folder", "Permission denied")


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes to read-only folders")
def test_convert_into_a_read_only_folder_fails_at_once(tmp_path, offline_cache, capsys, monkeypatch):
    monkeypatch.setattr(weights, "convert_classifier", lambda *a, **k: pytest.fail("converted before the check"))
    read_only = tmp_path / "read_only"
    read_only.mkdir(mode=0o555)
    status, error = run_cli(["convert", PRESET, str(read_only / "out")], capsys)
    assert_one_line_error(status, error, "cannot create files in its folder")


def test_export_checks_out_and_calibration_data_first(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    base = ["export", "mobilenetv1_025", "--no-weights", "--image-size", SIZE]
    cases = [
        ([str(tmp_path / "file" / "m.tflite")], "is a file; create it first"),
        ([str(tmp_path / "missing" / "m.tflite")], "does not exist; create it first"),
        ([str(tmp_path / "dir.tflite")], "is a folder"),
        ([str(tmp_path / "m.tflite"), "--calibration-data", str(tmp_path / "file")], "is a file; give a folder"),
        ([str(tmp_path / "m.tflite"), "--calibration-data", str(tmp_path / "none")], "does not exist; give a folder"),
    ]
    (tmp_path / "dir.tflite").mkdir()
    for extra, message in cases:
        status, error = run_cli([*base[:2], extra[0], *base[2:], *extra[1:]], capsys)
        assert_one_line_error(status, error, message)
    assert sorted(os.listdir(tmp_path)) == ["dir.tflite", "file"]


def test_a_broken_calibration_image_is_named(tmp_path, capsys):
    images = tmp_path / "images"
    images.mkdir()
    (images / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    argv = ["export", "mobilenetv1_025", str(tmp_path / "m.tflite"), "--no-weights", "--image-size", SIZE,
            "--calibration-data", str(images)]  # fmt: skip
    assert_one_line_error(*run_cli(argv, capsys), "broken.png")
    assert not (tmp_path / "m.tflite").exists()


# --------------------------------------------------------------------------
# Broken files: the error names the file and what is wrong.
def truncate(path, fraction=0.5):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])


def flip_a_byte_of_member(archive_path, member):
    """Damage the stored data of one member of a zip archive, as a bad disk or copy would."""
    with zipfile.ZipFile(archive_path) as archive:
        info = archive.getinfo(member)
    data = bytearray(archive_path.read_bytes())
    name_length, extra_length = (
        int.from_bytes(data[info.header_offset + 26 : info.header_offset + 28], "little"),
        (int.from_bytes(data[info.header_offset + 28 : info.header_offset + 30], "little")),
    )
    start = info.header_offset + 30 + name_length + extra_length
    data[start + info.compress_size // 2] ^= 0xFF
    archive_path.write_bytes(bytes(data))


def damaged_keras_files(saved, tmp_path):
    """(path, fragments its error must contain), one per way a .keras file breaks."""
    truncated = copy_of(saved, "classifier.keras", tmp_path / "t")
    truncate(truncated)
    bad_crc = copy_of(saved, "classifier.keras", tmp_path / "c")
    flip_a_byte_of_member(bad_crc, "model.weights.h5")
    not_zip = tmp_path / "n" / "classifier.keras"
    not_zip.write_text("not a model")
    bad_config = tmp_path / "j" / "classifier.keras"
    with zipfile.ZipFile(saved / "classifier.keras") as source, zipfile.ZipFile(bad_config, "w") as target:
        for item in source.infolist():
            data = (
                b'{"class_name": "Functional",\n "config": }' if item.filename == "config.json" else source.read(item)
            )
            target.writestr(item, data)
    return [
        (truncated, ["truncated"]),
        (bad_crc, ["corrupt", "model.weights.h5"]),
        (not_zip, ["not a .keras file"]),
        (bad_config, ["config.json", "not valid JSON", "line 2, column 12"]),
    ]


def damaged_preset_folders(saved, tmp_path):
    bad_json = copy_of(saved, "preset", tmp_path / "j")
    (bad_json / "config.json").write_text('{"module": "mnet_backbones.backbone",\n  "class_name": ,}')
    truncated = copy_of(saved, "preset", tmp_path / "t")
    truncate(truncated / "model.weights.h5")
    not_hdf5 = copy_of(saved, "preset", tmp_path / "h")
    (not_hdf5 / "task.weights.h5").write_text("<html>rate limited</html>")
    return [
        (bad_json, ["config.json", "not valid JSON", "line 2, column 17"]),
        (truncated, ["model.weights.h5", "truncated"]),
        (not_hdf5, ["task.weights.h5", "not an HDF5 file"]),
    ]


@pytest.fixture
def damaged(saved, tmp_path):
    for name in "tcnjh":
        (tmp_path / name).mkdir()
    return damaged_keras_files(saved, tmp_path) + damaged_preset_folders(saved, tmp_path)


def test_load_model_names_the_broken_file(damaged):
    for path, fragments in damaged:
        with pytest.raises((OSError, ValueError)) as error:
            export.load_model(path)
        message = str(error.value)
        assert str(path) in message, message
        for fragment in fragments:
            assert fragment in message, (fragment, message)


def test_cli_names_the_broken_file_in_one_line(damaged, tmp_path, capsys):
    for path, fragments in damaged:
        status, error = run_cli(["export", str(path), str(tmp_path / "m.tflite"), "--image-size", SIZE], capsys)
        assert_one_line_error(status, error, str(path), *fragments)
    assert not (tmp_path / "m.tflite").exists()


def test_summary_names_a_broken_config(saved, tmp_path, capsys):
    (tmp_path / "j").mkdir()
    (folder, fragments), *_ = damaged_preset_folders(saved, tmp_path)
    status, error = run_cli(["summary", str(folder), "--size", SIZE, SIZE], capsys)
    assert_one_line_error(status, error, str(folder / "config.json"), *fragments)


# --------------------------------------------------------------------------
# What export loads: every save_to_preset folder, convert's output offline.
def test_convert_output_exports_offline(tmp_path, offline_cache, capsys):
    out = tmp_path / "converted"
    assert cli.main(["convert", PRESET, str(out)]) == 0
    capsys.readouterr()
    assert cli.main(["export", str(out), str(tmp_path / "classifier.tflite"), "--image-size", SIZE]) == 0
    assert "top1 agreement" in capsys.readouterr().out
    assert cli.main(["export", str(out), str(tmp_path / "backbone.tflite"), "--task", "backbone",
                     "--image-size", SIZE]) == 0  # fmt: skip
    assert "top1 agreement" not in capsys.readouterr().out
    assert sorted(os.listdir(tmp_path)) == ["backbone.tflite", "cache", "classifier.tflite", "converted"]


def test_export_loads_every_saved_preset_as_what_it_holds(tmp_path):
    detector = heads.create_ssdlite("mobilenetv1_025", 3, image_size=64, load_weights=False)
    detector.save_to_preset(str(tmp_path / "detector"))
    backbone = MobileNetBackbone.from_preset("mobilenetv1_025", load_weights=False)
    backbone.save_to_preset(str(tmp_path / "backbone"))

    loaded, _ = export.load_model(tmp_path / "detector")
    assert isinstance(loaded, heads.SSDLiteObjectDetector)
    loaded, _ = export.load_model(tmp_path / "detector", task="backbone")
    assert isinstance(loaded, MobileNetBackbone)
    with pytest.raises(ValueError, match="SSDLiteObjectDetector, not a classifier"):
        export.load_model(tmp_path / "detector", task="classifier")
    loaded, _ = export.load_model(tmp_path / "backbone")
    assert isinstance(loaded, MobileNetBackbone)
    with pytest.raises(ValueError, match="without a classifier head"):
        export.load_model(tmp_path / "backbone", task="classifier")
    loaded, _ = export.load_model(tmp_path / "backbone", num_classes=5)
    assert isinstance(loaded, MobileNetImageClassifier) and loaded.num_classes == 5
    with pytest.raises(ValueError, match="num_classes is for classifiers"):
        export.load_model(tmp_path / "detector", num_classes=5)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="has no config.json"):
        export.load_model(tmp_path / "empty")


@requires_parity_fixtures()
@pytest.mark.parametrize("snapshot", ["mobilenetv3_large_100", "mobilenetv4_conv_small"])
def test_a_timm_snapshot_backbone_goes_through_our_converter(snapshot):
    # keras-hub's own converter would make its MobileNet of V3 (4.6e-4 from
    # timm) and fail on V4.
    backbone, _ = export.load_model(os.path.join(PARITY_DIR, snapshot), task="backbone")
    assert type(backbone) is MobileNetBackbone
    assert backbone.padding == "symmetric"


def test_offline_export_names_the_flag_in_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv(weights.CACHE_ENV, str(tmp_path / "cache"))

    def offline(handle):
        raise timm.DownloadError(f"cannot reach huggingface.co for {handle}")

    monkeypatch.setattr(timm, "download_snapshot", offline)
    status, error = run_cli(["export", PRESET, str(tmp_path / "m.tflite")], capsys)
    assert_one_line_error(status, error, "--no-weights", "cannot reach huggingface.co", f"convert {PRESET} DIR")
    assert "load_weights" not in error


def test_offline_convert_of_a_handle_is_one_line(tmp_path, capsys, monkeypatch):
    def offline(handle):
        raise timm.DownloadError(f"Could not download {handle!r}\nSecond line\n  pass load_weights=False")

    monkeypatch.setattr(timm, "download_snapshot", offline)
    handle = f"hf://timm/{PRESET}.lamb_in1k"
    status, error = run_cli(["convert", handle, str(tmp_path / "out")], capsys)
    error = "".join(line for line in error.splitlines(keepends=True) if not line.startswith("[1/3"))  # progress
    assert_one_line_error(status, error, f"could not download {handle}", "give a local timm snapshot folder")
    assert "load_weights" not in error
    assert os.listdir(tmp_path) == []


def test_a_missing_optional_package_is_one_line_with_the_extra(tmp_path, capsys, monkeypatch):
    def missing(*args, **kwargs):
        raise ModuleNotFoundError("No module named 'tf2onnx'")

    monkeypatch.setattr(export, "export_model", missing)
    status, error = run_cli(["export", "mobilenetv1_025", str(tmp_path / "m.onnx"), "--format", "onnx",
                             "--no-weights", "--image-size", SIZE], capsys)  # fmt: skip
    assert status == 1 and error.count("\n") == 1, error
    assert "No module named 'tf2onnx'" in error and "pip install 'mnet-backbones[export]'" in error
