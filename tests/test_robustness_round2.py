"""Issue 22, items 4, 5, 7, 8 and three of item 10: checked caches, non-regular files,
bench's options, messages that name the file, convert's broken snapshot, weights of another width.

No test touches the network: downloads are monkeypatched.
"""

import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import urllib.error

import keras
import keras_hub
import numpy as np
import pytest

import heads
from conftest import assert_one_line_error, run_cli
from mnet_backbones import MobileNetBackbone, MobileNetImageClassifier, files, weights
from mnet_backbones.convert import timm
from mnet_backbones.convert import torchvision as tv
from mnet_backbones.convert.mapping import WeightMismatchError
from mnet_tools import cli, detection_export
from mnet_tools.train import checkpoints

requires_tensorflow = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow", reason="the command line is checked on TensorFlow"
)
PRESET = "mobilenetv3_small_050"
FIFO_MESSAGE = "is a named pipe (FIFO), not a regular file"


@contextlib.contextmanager
def no_hang(seconds=30):
    """Fail instead of waiting forever (a loader opening a FIFO blocks until a writer comes)."""

    def hung(signum, frame):
        raise TimeoutError(f"still waiting after {seconds} s: the file was opened")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def _offline(url, destination):
    raise urllib.error.URLError("no network in tests")


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """Classifier presets of two widths of one architecture, 4 classes."""
    root = tmp_path_factory.mktemp("round2")
    for width in ("050", "075"):
        classifier = MobileNetImageClassifier.from_preset(
            f"mobilenetv3_small_{width}", num_classes=4, load_weights=False
        )
        classifier.save_to_preset(str(root / width))
    return root


def copy_preset(saved, width, tmp_path):
    folder = tmp_path / f"preset_{width}"
    shutil.copytree(saved / width, folder)
    return folder


# --------------------------------------------------------------------------
# Item 4: a cached download is checked against its published SHA-256 prefix on use.
def test_a_hand_copied_torchvision_file_with_other_contents_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv(weights.CACHE_ENV, str(tmp_path))
    monkeypatch.setattr(tv, "_fetch", _offline)
    cache = tmp_path / "torchvision"
    cache.mkdir()
    impostor = cache / "mobilenet_v3_small-047dcff4.pth"
    impostor.write_bytes(b"not the published checkpoint")
    digest = hashlib.sha256(impostor.read_bytes()).hexdigest()
    for load in (MobileNetImageClassifier.from_preset, MobileNetBackbone.from_preset):
        with pytest.raises(ValueError) as caught:
            load("mobilenetv3_small_100_torchvision")
        message = str(caught.value)
        assert str(impostor) in message and digest in message and "starts with 047dcff4" in message
        assert "not the published file" in message
    assert not (tmp_path / "mobilenetv3_small_100_torchvision").exists()  # nothing converted from it


def test_the_heads_builtin_names_check_the_cached_file_too(tmp_path, monkeypatch):
    monkeypatch.setenv(weights.CACHE_ENV, str(tmp_path))
    monkeypatch.setattr(tv, "_fetch", _offline)
    cache = tmp_path / "torchvision"
    cache.mkdir()
    (cache / "lraspp_mobilenet_v3_large-d234d4ea.pth").write_bytes(b"something else")
    with pytest.raises(ValueError, match=r"lraspp_mobilenet_v3_large-d234d4ea\.pth.*SHA-256 [0-9a-f]{64}.*d234d4ea"):
        heads.LRASPPSegmenter.from_preset("lraspp_mobilenetv3_large_voc")


def test_a_cached_file_is_checked_on_every_use(tmp_path, monkeypatch):
    monkeypatch.setenv(weights.CACHE_ENV, str(tmp_path))
    payload = b"checkpoint bytes"
    prefix = hashlib.sha256(payload).hexdigest()[:8]
    url = f"https://example.invalid/models/mobilenet_v2-{prefix}.pth"
    monkeypatch.setattr(tv, "_fetch", _offline)
    path = tmp_path / "torchvision" / f"mobilenet_v2-{prefix}.pth"
    path.parent.mkdir()
    path.write_bytes(payload)  # the published file, copied by hand: used
    assert tv.download_checkpoint(url) == str(path)
    assert tv.download_checkpoint(url) == str(path)
    path.write_bytes(b"changed after its first use")  # no marker of the first check vouches for it now
    with pytest.raises(ValueError, match=hashlib.sha256(b"changed after its first use").hexdigest()):
        tv.download_checkpoint(url)


def _hub_cache(root, content, blob_name=None):
    """A Hugging Face cache snapshot whose model.safetensors links to blobs/<SHA-256>."""
    blobs, snapshot = root / "blobs", root / "snapshots" / "0123abcd"
    blobs.mkdir(parents=True)
    snapshot.mkdir(parents=True)
    blob = blobs / (blob_name or hashlib.sha256(content).hexdigest())
    blob.write_bytes(content)
    (snapshot / "model.safetensors").symlink_to(os.path.relpath(blob, snapshot))
    (snapshot / "config.json").write_text(json.dumps({"architecture": "mobilenetv3_small_050"}))
    return snapshot


def test_a_hub_cache_file_that_is_not_its_blob_is_refused(tmp_path, monkeypatch):
    import huggingface_hub

    published = b"the published weights"
    snapshot = _hub_cache(tmp_path / "good", published)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda *args, **kwargs: str(snapshot))
    assert timm.download_snapshot("hf://timm/mobilenetv3_small_050.lamb_in1k") == str(snapshot)

    expected = hashlib.sha256(published).hexdigest()
    snapshot = _hub_cache(tmp_path / "swapped", b"other weights", blob_name=expected)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda *args, **kwargs: str(snapshot))
    with pytest.raises(ValueError) as caught:
        timm.download_snapshot("hf://timm/mobilenetv3_small_050.lamb_in1k")
    message = str(caught.value)
    assert str(snapshot / "model.safetensors") in message
    assert expected in message and hashlib.sha256(b"other weights").hexdigest() in message


# --------------------------------------------------------------------------
# Item 5: files that are not regular files are refused before they are opened.
def _fifo(path):
    if os.path.exists(path):
        os.remove(path)
    os.mkfifo(path)
    return path


LOADERS = {
    "backbone": MobileNetBackbone.from_preset,
    "classifier": MobileNetImageClassifier.from_preset,
    "keras_hub.Backbone": keras_hub.models.Backbone.from_preset,
    "keras_hub.ImageClassifier": keras_hub.models.ImageClassifier.from_preset,
}


@pytest.mark.parametrize("name", ["config.json", "model.weights.h5", "task.json"])
@pytest.mark.parametrize("loader", sorted(LOADERS))
def test_a_fifo_in_a_preset_folder_is_refused(saved, tmp_path, loader, name):
    folder = copy_preset(saved, "050", tmp_path)
    _fifo(folder / name)
    with no_hang(), pytest.raises(OSError) as caught:
        LOADERS[loader](str(folder))
    assert str(folder / name) in str(caught.value) and FIFO_MESSAGE in str(caught.value)


def test_a_fifo_in_a_task_folder_is_refused(tmp_path):
    detector = heads.create_ssdlite(PRESET, num_classes=3, image_size=96, load_weights=False)
    folder = tmp_path / "detector"
    detector.save_to_preset(str(folder))
    _fifo(folder / "config.json")
    with no_hang(), pytest.raises(OSError, match=re.escape(FIFO_MESSAGE)):
        heads.SSDLiteObjectDetector.from_preset(str(folder))


def test_a_fifo_checkpoint_file_is_refused(tmp_path):
    pth = _fifo(tmp_path / "mobilenet_v3_small-047dcff4.pth")
    with no_hang():
        for load in (MobileNetImageClassifier.from_preset, MobileNetBackbone.from_preset):
            with pytest.raises(OSError, match=re.escape(FIFO_MESSAGE)):
                load(str(pth))
        with pytest.raises(OSError, match=re.escape(FIFO_MESSAGE)):
            tv.read_state_dict(pth)


def test_every_reader_refuses_a_fifo(tmp_path):
    snapshot = tmp_path / "snapshot"
    snapshot.mkdir()
    (snapshot / "config.json").write_text(json.dumps({"architecture": "mobilenetv3_small_050"}))
    _fifo(snapshot / "model.safetensors")
    last = tmp_path / "run" / "last"
    last.mkdir(parents=True)
    (last / "progress.json").write_text("{}")
    _fifo(last / "state.npz")
    (tmp_path / "detector.tflite").write_bytes(b"TFL3")
    _fifo(tmp_path / "detector_postprocess.npz")
    readers = {
        "timm weights": lambda: timm.read_state_dict(snapshot),
        "timm snapshot folder": lambda: MobileNetBackbone.from_preset(str(snapshot)),
        "state.npz": lambda: checkpoints.load_last(str(tmp_path / "run"), model=None),
        "_postprocess.npz": lambda: detection_export.read_settings(tmp_path / "detector.tflite"),
        "json": lambda: files.read_json(_fifo(tmp_path / "x.json")),
        "h5": lambda: files.check_hdf5_file(_fifo(tmp_path / "x.weights.h5")),
        "safetensors": lambda: files.check_safetensors_file(_fifo(tmp_path / "x.safetensors")),
        "keras": lambda: files.check_keras_file(_fifo(tmp_path / "x.keras")),
        "npz": lambda: files.read_npz(_fifo(tmp_path / "x.npz")),
    }
    for what, read in readers.items():
        with no_hang(), pytest.raises(OSError, match=re.escape(FIFO_MESSAGE)):
            read()
        print("refused:", what)


@requires_tensorflow
def test_convert_refuses_a_fifo_config_in_one_line(tmp_path, capsys):
    snapshot = tmp_path / "snapshot"
    snapshot.mkdir()
    _fifo(snapshot / "config.json")
    with no_hang():
        status, error = run_cli(["convert", str(snapshot), str(tmp_path / "out")], capsys)
    assert_one_line_error(status, error, "config.json", FIFO_MESSAGE)


# --------------------------------------------------------------------------
# Item 7: every bench option is checked before any work.
@pytest.fixture
def no_bench_work(monkeypatch):
    from mnet_tools import bench

    def work(*args, **kwargs):
        pytest.fail("the bench started before its options were checked")

    for name in ("run_benchmark", "run_task_benchmark", "block_profile", "measure", "measure_task"):
        monkeypatch.setattr(bench, name, work)


@requires_tensorflow
@pytest.mark.parametrize(
    "argv, fragments",
    [
        (
            ["--checkpoint", "lraspp_mobilenetv3_large_voc=x.pth"],
            ["--checkpoint would be ignored without --pretrained"],
        ),
        (
            ["--pretrained", "lraspp_mobilenetv3_large_voc", "--checkpoint", "ssdlite320_mobilenetv3_large_coco=x.pth"],
            ["'ssdlite320_mobilenetv3_large_coco' is not benchmarked in this run", "lraspp_mobilenetv3_large_voc"],
        ),
        (["--pretrained", "--checkpoint", "lraspp_mobilenetv3_large_voc=missing.pth"], ["No such file", "missing.pth"]),
        (["--pretrained", "--checkpoint", "no-equals-sign"], ["NAME=PATH", "no-equals-sign"]),
        (["--plot", "missing-folder/pareto.png"], ["--plot's folder", "missing-folder", "does not exist"]),
        (["--plot", "pareto.svg"], ["ending with .png"]),
        (["--pretrained", "--plot", "pareto.png"], ["--plot would be ignored with --pretrained"]),
        (["--blocks", "--no-peers", PRESET], ["--no-peers would be ignored with --blocks"]),
        (["--pretrained", "--no-peers", "mobilenetv1_025"], ["--no-peers would be ignored with --pretrained"]),
        (["--pretrained", "--blocks"], ["two different benches"]),
        (["--quick", "--repeats", "5"], ["--quick sets 3 repeats"]),
        (["--blocks", PRESET, "mobilenetv9"], ["Unknown preset 'mobilenetv9'"]),
    ],
)
def test_bench_options_are_checked_before_any_work(argv, fragments, no_bench_work, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    status, error = run_cli(["bench", *argv], capsys)
    assert_one_line_error(status, error, *fragments)


@requires_tensorflow
def test_bench_takes_a_checkpoint_of_a_benchmarked_head(tmp_path, monkeypatch, capsys):
    from mnet_tools import bench

    checkpoint = tmp_path / "lraspp.pth"
    checkpoint.write_bytes(b"weights")
    received = {}

    def run_task_benchmark(names, repeats, int8=True, checkpoints=None, progress=None):
        received.update(names=names, checkpoints=checkpoints)
        return []

    monkeypatch.setattr(bench, "run_task_benchmark", run_task_benchmark)
    monkeypatch.setattr(bench, "task_results_table", lambda rows: "table")
    argv = ["bench", "--pretrained", "--checkpoint", f"lraspp_mobilenetv3_large_voc={checkpoint}"]
    assert cli.main(argv) == 0
    assert received == {"names": bench.DEFAULT_TASKS, "checkpoints": {"lraspp_mobilenetv3_large_voc": str(checkpoint)}}


# --------------------------------------------------------------------------
# Item 8: messages name the file, and never advise turning a safeguard off.
def test_an_object_array_in_state_npz_is_named(tmp_path):
    last = tmp_path / "run" / "last"
    last.mkdir(parents=True)
    (last / "progress.json").write_text("{}")
    np.savez(last / "state.npz", **{"model/00000": np.array([{"code": "here"}], dtype=object)})
    with pytest.raises(ValueError) as caught:
        checkpoints.load_last(str(tmp_path / "run"), model=None)
    message = str(caught.value)
    assert str(last / "state.npz") in message and "'model/00000'" in message and "pickled" in message
    assert "allow_pickle" not in message


def test_an_object_array_in_postprocess_npz_is_named(tmp_path):
    tflite = tmp_path / "detector.tflite"
    tflite.write_bytes(b"TFL3")
    np.savez(tmp_path / "detector_postprocess.npz", anchors=np.array([object()], dtype=object))
    with pytest.raises(ValueError) as caught:
        detection_export.read_settings(tflite)
    message = str(caught.value)
    assert str(tmp_path / "detector_postprocess.npz") in message and "'anchors'" in message
    assert "allow_pickle" not in message


def test_a_pickled_file_posing_as_npz_gets_no_advice_to_unpickle(tmp_path):
    import pickle

    path = tmp_path / "state.npz"
    path.write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(ValueError) as caught:
        files.read_npz(path)
    assert str(path) in str(caught.value) and "allow_pickle" not in str(caught.value)


def test_a_whole_pickled_model_pth_is_explained(tmp_path):
    torch = pytest.importorskip("torch")
    path = tmp_path / "mobilenet_v3_small-whole.pth"
    torch.save(torch.nn.Sequential(torch.nn.Linear(2, 2)), path)
    with pytest.raises(WeightMismatchError) as caught:
        tv.read_state_dict(path)
    message = str(caught.value)
    assert str(path) in message and "torch.nn.modules.container.Sequential" in message
    assert "torch.save(model.state_dict(), path)" in message
    assert "weights_only" not in message and "\x1b" not in message
    with pytest.raises(WeightMismatchError) as caught:  # the same through from_preset
        MobileNetImageClassifier.from_preset(str(path))
    assert "torch.save(model.state_dict(), path)" in str(caught.value) and "weights_only" not in str(caught.value)


def test_a_damaged_pth_is_one_plain_line(tmp_path):
    pytest.importorskip("torch")
    path = tmp_path / "mobilenet_v3_small-047dcff4.pth"
    path.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(WeightMismatchError) as caught:
        tv.read_state_dict(path)
    message = str(caught.value)
    assert str(path) in message and "\x1b" not in message and "weights_only" not in message


# --------------------------------------------------------------------------
# Item 10: convert of a snapshot with invalid JSON; weights of another width.
@requires_tensorflow
def test_convert_of_a_snapshot_with_invalid_json_is_one_line(tmp_path, capsys):
    snapshot = tmp_path / "snapshot"
    snapshot.mkdir()
    (snapshot / "config.json").write_text('{"architecture": oops')
    status, error = run_cli(["convert", str(snapshot), str(tmp_path / "out")], capsys)
    assert_one_line_error(status, error, f"{snapshot / 'config.json'} is not valid JSON", "line 1, column 18")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("loader", sorted(LOADERS))
def test_weights_of_another_width_are_named(saved, tmp_path, loader):
    folder = copy_preset(saved, "050", tmp_path)
    shutil.copy(saved / "075" / "model.weights.h5", folder / "model.weights.h5")
    with pytest.raises(ValueError) as caught:
        LOADERS[loader](str(folder))
    message = str(caught.value)
    assert str(folder / "model.weights.h5") in message and str(folder / "config.json") in message
    assert "width_multiplier 0.5" in message
    # The first block whose channels depend on the width: 16 channels at 0.75, 8 at 0.5.
    assert "layer 'blocks_0_0'" in message and "has shape (16,), the model's (8,)" in message
    assert "could not be loaded" not in message


def test_fitting_weights_load_and_a_stale_count_alone_does_not_refuse(saved, tmp_path):
    folder = copy_preset(saved, "050", tmp_path)
    reference = MobileNetBackbone.from_preset(str(folder))
    metadata = json.loads((folder / "metadata.json").read_text())
    metadata["parameter_count"] += 1  # wrong, but the weights fit the config: they load
    (folder / "metadata.json").write_text(json.dumps(metadata))
    again = MobileNetBackbone.from_preset(str(folder))
    for ours, theirs in zip(again.weights, reference.weights):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(ours), keras.ops.convert_to_numpy(theirs))
