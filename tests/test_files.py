"""`mnet_backbones.files`: writes that are whole or absent, and reads whose errors name the file."""

import json
import os
import stat
import zipfile

import h5py
import numpy as np
import pytest
from safetensors.numpy import save_file

from mnet_backbones import files


class Interrupted(BaseException):
    """Stands for KeyboardInterrupt, which pytest would take as the user's."""


def test_atomic_file_appears_only_when_written(tmp_path):
    path = tmp_path / "model.tflite"
    with files.atomic_file(path) as partial:
        assert partial.endswith(".tflite") and os.path.dirname(partial) == str(tmp_path)
        assert not path.exists()
        with open(partial, "wb") as file:
            file.write(b"new")
    assert path.read_bytes() == b"new" and os.listdir(tmp_path) == ["model.tflite"]


@pytest.mark.parametrize("error", [OSError, Interrupted])
def test_atomic_file_keeps_the_old_content_on_an_error(tmp_path, error):
    path = tmp_path / "model.onnx"
    path.write_bytes(b"old")
    with pytest.raises(error):
        with files.atomic_file(path) as partial:
            with open(partial, "wb") as file:
                file.write(b"half")
            raise error()
    assert path.read_bytes() == b"old" and os.listdir(tmp_path) == ["model.onnx"]


def test_atomic_file_refuses_a_bad_destination(tmp_path):
    (tmp_path / "folder.tflite").mkdir()
    (tmp_path / "file").write_text("x")
    with pytest.raises(IsADirectoryError, match="folder.tflite"):
        with files.atomic_file(tmp_path / "folder.tflite"):
            pass
    with pytest.raises(NotADirectoryError, match="is a file"):
        with files.atomic_file(tmp_path / "file" / "m.tflite"):
            pass
    with pytest.raises(OSError, match="Nothing was written"):
        with files.atomic_file(tmp_path / "m.tflite"):
            pass
    assert sorted(os.listdir(tmp_path)) == ["file", "folder.tflite"]


def test_atomic_folder_appears_only_when_complete(tmp_path):
    path = tmp_path / "preset"
    with files.atomic_folder(path) as staging:
        (tmp_path / staging / "config.json").write_text("{}")
        assert not path.exists()
    assert os.listdir(path) == ["config.json"]
    assert os.listdir(tmp_path) == ["preset"]
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o777 & ~umask  # a folder's usual mode, not mkdtemp's 0o700


def test_atomic_folder_leaves_nothing_on_an_error(tmp_path):
    with pytest.raises(Interrupted):
        with files.atomic_folder(tmp_path / "preset") as staging:
            (tmp_path / staging / "config.json").write_text("{}")
            raise Interrupted()
    assert os.listdir(tmp_path) == []


def test_atomic_folder_replaces_content_only_when_asked(tmp_path):
    path = tmp_path / "preset"
    path.mkdir()
    (path / "old.json").write_text("{}")
    with pytest.raises(FileExistsError, match="not empty"):
        with files.atomic_folder(path) as staging:
            (tmp_path / staging / "new.json").write_text("{}")
    assert os.listdir(path) == ["old.json"] and os.listdir(tmp_path) == ["preset"]
    with files.atomic_folder(path, replace=True) as staging:
        (tmp_path / staging / "new.json").write_text("{}")
    assert os.listdir(path) == ["new.json"] and os.listdir(tmp_path) == ["preset"]
    (tmp_path / "empty").mkdir()
    with files.atomic_folder(tmp_path / "empty") as staging:
        (tmp_path / staging / "new.json").write_text("{}")
    assert os.listdir(tmp_path / "empty") == ["new.json"]


def test_a_staging_folder_is_made_beside_the_destination_or_refused(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(FileExistsError, match="a file of that name"):
        files.make_staging_folder(tmp_path / "file")
    with pytest.raises(NotADirectoryError, match="is a file"):
        files.make_staging_folder(tmp_path / "file" / "preset")
    with pytest.raises(NotADirectoryError, match="does not exist"):
        files.make_staging_folder(tmp_path / "missing" / "preset")
    staging = files.make_staging_folder(tmp_path / "preset")
    assert os.path.dirname(staging) == str(tmp_path) and os.listdir(staging) == []


def test_read_json_names_the_file_line_and_column(tmp_path):
    path = tmp_path / "config.json"
    path.write_text('{"a": 1,\n "b": }')
    with pytest.raises(ValueError, match=r"config.json is not valid JSON: .* at line 2, column 7 \(character 15\)"):
        files.read_json(path)
    path.write_bytes(b'{"a": "\xff"}')
    with pytest.raises(ValueError, match="not UTF-8 text"):
        files.read_json(path)
    with pytest.raises(FileNotFoundError, match="missing.json"):
        files.read_json(tmp_path / "missing.json")
    path.write_text('{"a": [1, 2]}')
    assert files.read_json(path) == {"a": [1, 2]}


def test_check_hdf5_file(tmp_path):
    path = tmp_path / "model.weights.h5"
    with h5py.File(path, "w") as weights:
        weights.create_dataset("layers/dense/vars/0", data=np.arange(5000, dtype="float32"))
    files.check_hdf5_file(path)
    whole = path.read_bytes()
    path.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(
        OSError, match=rf"model.weights.h5 is truncated: {len(whole) // 2:,} of its {len(whole):,} bytes"
    ):
        files.check_hdf5_file(path)
    path.write_bytes(b"")
    with pytest.raises(OSError, match="is empty"):
        files.check_hdf5_file(path)
    path.write_text("<html>Not found</html>")
    with pytest.raises(OSError, match="not an HDF5 file"):
        files.check_hdf5_file(path)


def test_check_safetensors_file(tmp_path):
    path = tmp_path / "model.safetensors"
    save_file({"weight": np.ones((100, 10), "float32")}, str(path))
    files.check_safetensors_file(path)
    whole = path.read_bytes()
    path.write_bytes(whole[:-100])
    with pytest.raises(OSError, match=rf"truncated: {len(whole) - 100:,} of its {len(whole):,} bytes"):
        files.check_safetensors_file(path)
    path.write_bytes(whole[:20])
    with pytest.raises(OSError, match="truncated"):
        files.check_safetensors_file(path)
    path.write_text("version https://git-lfs.github.com/spec/v1\n")  # a Git LFS pointer
    with pytest.raises(ValueError, match="not a safetensors file"):
        files.check_safetensors_file(path)


def write_archive(path, members, compression=zipfile.ZIP_STORED):
    with zipfile.ZipFile(path, "w", compression=compression) as archive:
        for name, data in members.items():
            archive.writestr(name, data)


def test_check_keras_file(tmp_path):
    path = tmp_path / "model.keras"
    weights = bytes(range(256)) * 40
    write_archive(path, {"config.json": json.dumps({"class_name": "Functional"}), "model.weights.h5": weights})
    files.check_keras_file(path)
    whole = path.read_bytes()

    damaged = bytearray(whole)
    damaged[whole.index(weights) + 5000] ^= 0xFF
    path.write_bytes(bytes(damaged))
    with pytest.raises(OSError, match=r"model.keras is corrupt: its member 'model.weights.h5' .*CRC"):
        files.check_keras_file(path)
    path.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(OSError, match="model.keras is truncated"):
        files.check_keras_file(path)
    path.write_text("not a model")
    with pytest.raises(ValueError, match="not a .keras file"):
        files.check_keras_file(path)
    write_archive(path, {"config.json": '{"class_name": }'})
    with pytest.raises(ValueError, match=r"model.keras \(its config.json\) is not valid JSON: .* line 1, column 16"):
        files.check_keras_file(path)
    write_archive(path, {"weights.h5": weights})
    with pytest.raises(ValueError, match="without config.json"):
        files.check_keras_file(path)
    with pytest.raises(FileNotFoundError, match="other.keras"):
        files.check_keras_file(tmp_path / "other.keras")


def test_check_preset_folder_finds_the_broken_file(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "model.weights.h5").write_bytes(b"\x89HDF\r\n\x1a\n cut short")
    with pytest.raises(OSError, match="model.weights.h5"):
        files.check_preset_folder(tmp_path)
    files.check_preset_folder(tmp_path, weights=False)
    (tmp_path / "metadata.json").write_text("{")
    with pytest.raises(ValueError, match="metadata.json is not valid JSON"):
        files.check_preset_folder(tmp_path, weights=False)
    with pytest.raises(NotADirectoryError):
        files.check_preset_folder(tmp_path / "config.json")
