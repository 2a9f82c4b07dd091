"""Files written whole or not at all, and files read with errors that name them.

Writing: `atomic_file` and `atomic_folder` hand out a temporary name in the
destination's own folder and rename it into place only once the writer is
done. A crash, a full disk or Ctrl-C in between leaves the destination as it
was (absent, or its old content) and removes the temporary. The temporary
shares the destination's folder because a rename is atomic only within one
file system.

Reading: `read_json`, `read_npz`, `check_hdf5_file`, `check_safetensors_file`,
`check_keras_file` and `check_preset_folder` look at a file before a loader
does, and raise a `ValueError` (bad content) or `OSError` (missing,
unreadable, cut short) whose message names the file and says what is wrong:
the JSON error's line and column, the bytes a truncated file lacks, the
corrupt member of a `.keras` archive. Loaders' own errors for such files are
a bare `JSONDecodeError`, h5py's "truncated file: eof = ..." or Keras's
"File not found" for a `.keras` file that exists. Anything but a regular
file (a FIFO, a socket, a device, possibly in an untrusted archive) is
refused before it is opened (`check_regular_file`): a loader opening a FIFO
waits forever.

Example:
```python
from mnet_backbones import files

with files.atomic_folder("converted") as staging:
    classifier.save_to_preset(staging)  # "converted" appears only when complete
files.check_preset_folder("converted")  # raises, naming the file, if one is broken
```
"""

import contextlib
import hashlib
import json
import math
import os
import re
import secrets
import shutil
import stat
import struct
import tempfile
import zipfile
import zlib

import h5py
import numpy as np

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
ZIP_SIGNATURE = b"PK\x03\x04"
KERAS_CONFIG = "config.json"
PRESET_METADATA = "metadata.json"
PRESET_WEIGHTS = "model.weights.h5"
# h5py's message for a file shorter than its superblock says it is.
_H5_TRUNCATED = re.compile(r"truncated file: eof = (\d+), sblock->base_addr = \d+, stored_eof = (\d+)")


# --------------------------------------------------------------------------
# Writing.
def _default_mode(mode):
    umask = os.umask(0)
    os.umask(umask)
    return mode & ~umask


def _check_writable_folder(folder, path):
    if not os.path.isdir(folder):
        what = "is a file" if os.path.exists(folder) else "does not exist"
        raise NotADirectoryError(f"Cannot write {path!r}: its folder {folder!r} {what}.")


@contextlib.contextmanager
def atomic_file(path):
    """Yield a temporary path to write; on success it is renamed to `path`.

    The temporary sits beside `path` and ends with `path`'s suffix (writers
    such as Keras's LiteRT export check it). On any exception, Ctrl-C
    included, the temporary is removed and `path` keeps its old content.

    Example:
    ```python
    with atomic_file("model.tflite") as partial:
        model.export(partial, format="litert")
    ```
    """
    path = os.fspath(path)
    folder, name = os.path.split(os.path.abspath(path))
    _check_writable_folder(folder, path)
    if os.path.isdir(path):
        raise IsADirectoryError(f"Cannot write the file {path!r}: it is a folder.")
    stem, suffix = os.path.splitext(name)
    partial = os.path.join(folder, f".{stem}.partial-{secrets.token_hex(4)}{suffix}")
    try:
        yield partial
        if not os.path.isfile(partial):
            raise OSError(f"Nothing was written to {partial!r} for {path!r}.")
        os.replace(partial, path)
    finally:
        if os.path.exists(partial):
            os.remove(partial)


def make_staging_folder(path):
    """Create and return an empty temporary folder beside `path`, for `atomic_folder`.

    Creating it is the check that `path`'s folder exists and is writable: an
    `OSError` naming `path` comes here, before any long work.
    """
    path = os.fspath(path)
    folder, name = os.path.split(os.path.abspath(path))
    _check_writable_folder(folder, path)
    if os.path.exists(path) and not os.path.isdir(path):
        raise FileExistsError(f"Cannot write the folder {path!r}: a file of that name exists.")
    try:
        staging = tempfile.mkdtemp(prefix=f".{name}.partial-", dir=folder)
    except OSError as error:
        raise OSError(
            f"Cannot write {path!r}: cannot create files in its folder {folder!r} ({error.strerror})."
        ) from None
    os.chmod(staging, _default_mode(0o777))  # mkdtemp's 0o700 is no mode for a model folder
    return staging


@contextlib.contextmanager
def atomic_folder(path, replace=False, staging=None):
    """Yield a temporary folder to fill; on success it is renamed to `path`.

    `path` may not exist or be an empty folder; a folder with content is
    replaced only with `replace=True` (and removed only after the new one is
    in place). `staging` is a folder from `make_staging_folder(path)`, for a
    caller that checks the destination before long work; by default one is
    made here. On any exception, Ctrl-C included, the temporary is removed.

    Example:
    ```python
    with atomic_folder("converted") as staging:
        classifier.save_to_preset(staging)
    ```
    """
    path = os.fspath(path)
    staging = staging or make_staging_folder(path)
    old = None
    try:
        yield staging
        if os.path.isdir(path) and os.listdir(path):
            if not replace:
                raise FileExistsError(f"{path!r} exists and is not empty; it was left as it was.")
            old = tempfile.mkdtemp(
                prefix=f".{os.path.basename(os.path.abspath(path))}.old-", dir=os.path.dirname(staging)
            )
            os.replace(path, os.path.join(old, "content"))
        elif os.path.isdir(path):
            os.rmdir(path)
        os.replace(staging, path)
    finally:
        if os.path.exists(staging):
            shutil.rmtree(staging, ignore_errors=True)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


# --------------------------------------------------------------------------
# Reading.
def sha256_of(path):
    """The SHA-256 of the file at `path`, as hex, read in 1 MiB chunks.

    Example:
    ```python
    sha256_of("model.tflite")  # "9f86d0..."
    ```
    """
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


_FILE_KINDS = (
    (stat.S_ISFIFO, "a named pipe (FIFO)"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


def check_regular_file(path):
    """Raise unless `path` is a regular file (or a link to one); return its size.

    Called before a file is opened: opening a FIFO for reading waits for a
    writer forever, and a device can stream without end. An `OSError` names
    the file and what it is instead.

    Example:
    ```python
    check_regular_file("converted/config.json")  # 1234
    ```
    """
    path = os.fspath(path)
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        what = " (a link to nothing)" if os.path.islink(path) else ""
        raise FileNotFoundError(f"No such file: {path!r}{what}.") from None
    if stat.S_ISDIR(mode):
        raise IsADirectoryError(f"{path!r} is a folder, not a file.")
    if not stat.S_ISREG(mode):
        what = next((name for test, name in _FILE_KINDS if test(mode)), "not a regular file")
        raise OSError(
            f"{path} is {what}, not a regular file: refused without opening it (a loader reading it could "
            "wait forever or read without end). Model and configuration files must be plain files."
        )
    return os.path.getsize(path)


def _json_error(name, error):
    return ValueError(
        f"{name} is not valid JSON: {error.msg} at line {error.lineno}, column {error.colno} (character {error.pos})."
    )


def parse_json(text, name):
    """`json.loads(text)`, with an error that names `name` and the position of the fault."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise _json_error(name, error) from None


def read_json(path):
    """The JSON object in `path`; a `ValueError` names the file, line and column of a fault.

    Example:
    ```python
    config = read_json("converted/config.json")
    ```
    """
    path = os.fspath(path)
    check_regular_file(path)
    try:
        with open(path, "rb") as file:
            text = file.read().decode("utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(f"{path} is not UTF-8 text (byte {error.start}), so not JSON.") from None
    return parse_json(text, path)


def _missing_bytes(path, size, expected):
    return OSError(
        f"{path} is truncated: {size:,} of its {expected:,} bytes are there "
        "(an interrupted download or copy?); fetch or write it again."
    )


def check_hdf5_file(path):
    """Raise an `OSError` naming `path` unless it is a whole HDF5 file (Keras's `.weights.h5`).

    Catches an empty file, another format, a file cut short (HDF5 records
    its length), and damaged object headers (every group and dataset header
    is visited; the array data is not read).
    """
    path = os.fspath(path)
    size = check_regular_file(path)
    with open(path, "rb") as file:
        head = file.read(len(HDF5_SIGNATURE))
    if head != HDF5_SIGNATURE:
        what = "empty" if size == 0 else "not an HDF5 file (no HDF5 signature at its start)"
        raise OSError(f"{path} is {what}; Keras weights files (.weights.h5) are HDF5.")
    try:
        with h5py.File(path, "r") as weights:
            weights.visit(lambda name: None)
    except OSError as error:
        truncated = _H5_TRUNCATED.search(str(error))
        if truncated:
            raise _missing_bytes(path, int(truncated.group(1)), int(truncated.group(2))) from None
        raise OSError(f"{path} is a damaged HDF5 file: {error}") from None


def check_safetensors_file(path):
    """Raise an `OSError`/`ValueError` naming `path` unless it is a whole safetensors file.

    The format is an 8-byte header length, a JSON header giving each
    tensor's byte range, then the data: the file must be as long as the
    header says.
    """
    path = os.fspath(path)
    size = check_regular_file(path)
    with open(path, "rb") as file:
        prefix = file.read(8)
        if len(prefix) < 8:
            raise _missing_bytes(path, size, 8) if size else OSError(f"{path} is empty.")
        (header_length,) = struct.unpack("<Q", prefix)
        if header_length > size - 8:
            if header_length > 100 * 2**20:
                raise ValueError(f"{path} is not a safetensors file (header length {header_length:,}).")
            raise _missing_bytes(path, size, 8 + header_length)
        header = file.read(header_length)
    try:
        header = json.loads(header.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ValueError(f"{path} is not a safetensors file (its header is not JSON).") from None
    ends = [entry["data_offsets"][1] for key, entry in header.items() if key != "__metadata__"]
    expected = 8 + header_length + max(ends, default=0)
    if size < expected:
        raise _missing_bytes(path, size, expected)


def check_keras_file(path):
    """Raise an `OSError`/`ValueError` naming `path` unless it is a whole `.keras` archive.

    A `.keras` file is a zip archive; each member is read to its end, which
    checks its CRC-32, and its `config.json` must be valid JSON.
    """
    path = os.fspath(path)
    size = check_regular_file(path)
    if not zipfile.is_zipfile(path):
        with open(path, "rb") as file:
            head = file.read(len(ZIP_SIGNATURE))
        if head == ZIP_SIGNATURE:
            raise OSError(
                f"{path} is truncated: it starts as a .keras (zip) archive but its end, the archive's "
                f"directory, is missing ({size:,} bytes); save or copy it again."
            )
        what = "empty" if size == 0 else "not a .keras file (.keras files are zip archives)"
        raise ValueError(f"{path} is {what}.")
    with zipfile.ZipFile(path) as archive:
        if KERAS_CONFIG not in archive.namelist():
            raise ValueError(f"{path} is a zip archive without {KERAS_CONFIG}, so not a .keras file.")
        for member in archive.infolist():
            try:
                with archive.open(member) as data:
                    while data.read(2**20):  # reading to the end checks the CRC-32
                        pass
            except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as error:
                raise OSError(
                    f"{path} is corrupt: its member {member.filename!r} cannot be read ({error}); "
                    "save or copy it again."
                ) from None
        parse_json(archive.read(KERAS_CONFIG).decode("utf-8"), f"{path} (its {KERAS_CONFIG})")


def _hdf5_shapes(path):
    """{dataset path: shape} of every dataset in an HDF5 file."""
    shapes = {}
    with h5py.File(path, "r") as store:
        store.visititems(
            lambda name, item: shapes.update({name: item.shape}) if isinstance(item, h5py.Dataset) else None
        )
    return shapes


def _snake_case(name):
    # Keras's rule for the groups of a `.weights.h5` file: a layer's class name, snake case, then _1, _2, ...
    name = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", re.sub(r"\W+", "", name))
    return re.sub(r"([a-z])([A-Z])", r"\1_\2", name).lower()


def _layer_groups(model):
    """{`.weights.h5` group: layer name} for the model's own layers, as Keras names the groups."""
    used, groups = {}, {}
    for layer in model.layers:
        name = _snake_case(type(layer).__name__)
        used[name] = used.get(name, -1) + 1
        groups[f"layers/{name}" + (f"_{used[name]}" if used[name] else "")] = layer.name
    return groups


def _first_weight_difference(model, path):
    """(what differs, count of differing weights, count of the model's weights), or None if `path` fits `model`."""
    with tempfile.TemporaryDirectory() as folder:
        reference = os.path.join(folder, "reference.weights.h5")
        model.save_weights(reference)
        expected = _hdf5_shapes(reference)
    found = _hdf5_shapes(path)
    groups = _layer_groups(model)

    def model_order(key):
        group = "/".join(key.split("/")[:2])
        return (list(groups).index(group) if group in groups else len(groups), key)

    differing = sorted(
        (key for key in expected.keys() | found.keys() if expected.get(key) != found.get(key)), key=model_order
    )
    if not differing:
        return None
    key = differing[0]
    group = "/".join(key.split("/")[:2])
    where = f"layer {groups[group]!r} ({key})" if group in groups else key
    if key not in found:
        what = f"it lacks {where}, shape {tuple(expected[key])} in the model"
    elif key not in expected:
        what = f"it holds {where}, shape {tuple(found[key])}, which the model does not have"
    else:
        what = f"its {where} has shape {tuple(found[key])}, the model's {tuple(expected[key])}"
    return what, len(differing), len(expected)


def check_weights_fit(folder):
    """Raise a `ValueError` when a preset folder's weights are not those of the model its config describes.

    Keras's own error for a `model.weights.h5` of another width ("A total of 88
    objects could not be loaded") names neither the folder nor the file. The
    message here names the file and the first weight that differs, with both
    shapes. It costs nothing when the weights fit: their count is compared
    with the `parameter_count` keras-hub writes in `metadata.json` beside
    them; only a difference builds the model from `config.json` (Keras is
    imported then) to compare weight by weight. Without `metadata.json` or a
    count in it nothing is checked.
    """
    folder = os.fspath(folder)
    config_path, weights_path = os.path.join(folder, KERAS_CONFIG), os.path.join(folder, PRESET_WEIGHTS)
    metadata_path = os.path.join(folder, PRESET_METADATA)
    if not all(os.path.isfile(path) for path in (config_path, weights_path, metadata_path)):
        return
    metadata = read_json(metadata_path)
    count = metadata.get("parameter_count") if isinstance(metadata, dict) else None
    if not isinstance(count, int) or isinstance(count, bool):
        return
    stored = sum(math.prod(shape) for shape in _hdf5_shapes(weights_path).values())
    if stored == count:
        return
    import keras  # only on a mismatch: the model the config describes, to compare with

    config = read_json(config_path)
    try:
        model = keras.saving.deserialize_keras_object(config)
    except Exception:  # a config only keras-hub's loader builds: say what the counts say
        raise ValueError(
            f"{weights_path} holds {stored:,} numbers, but {metadata_path} says the model of {config_path} "
            f"has {count:,} parameters: the weights file belongs to another model. Copy a preset folder's "
            "files together, or save the preset again."
        ) from None
    difference = _first_weight_difference(model, weights_path)
    if difference is None:
        return  # the metadata was stale; the weights fit
    what, differing, total = difference
    arguments = config.get("config", {}) if isinstance(config, dict) else {}
    described = ", ".join(f"{key} {arguments[key]}" for key in ("architecture", "width_multiplier") if key in arguments)
    raise ValueError(
        f"{weights_path} does not fit the model {config_path} describes ({described or type(model).__name__}): "
        f"{what}; {differing} of the model's {total} weights differ. The weights file belongs to another model "
        "(another width or architecture?): copy a preset folder's files together, or save the preset again."
    )


def check_preset_folder(folder, weights=True):
    """Check every JSON, HDF5 and safetensors file of a preset or timm snapshot folder.

    Every entry but a subfolder must be a regular file (`check_regular_file`).
    Raises the first fault, naming its file (see the module docstring); a
    missing file is the loader's to report, since what is required depends
    on what loads the folder. With `weights`, `model.weights.h5` must also be
    that of the model `config.json` describes (`check_weights_fit`).
    `weights=False` checks the JSON files only, for a model built without the
    folder's weights.
    """
    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        raise NotADirectoryError(f"{folder!r} is not a folder.")
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        if os.path.isdir(path):
            continue
        check_regular_file(path)  # loaders open these by name: a FIFO would hang them
        if name.endswith(".json"):
            read_json(path)
        elif name.endswith(".h5") and weights:
            check_hdf5_file(path)
        elif name.endswith(".safetensors") and weights:
            check_safetensors_file(path)
    if weights:
        check_weights_fit(folder)


def read_npz(path):
    """{name: array} of a NumPy `.npz` file, read without unpickling; errors name the file.

    An object array (pickled Python objects) is refused, naming the file and
    the array: unpickling could run code that came with the file. A file cut
    short or not an `.npz` archive is named as such.

    Example:
    ```python
    state = read_npz("runs/x/last/state.npz")
    ```
    """
    path = os.fspath(path)
    check_regular_file(path)
    try:
        archive = np.load(path, allow_pickle=False)
    except ValueError as error:  # a pickle, or no NumPy format at all; NumPy's advice to unpickle is not relayed
        what = (
            "it reads as pickled Python data, which is not unpickled" if "pickle" in str(error) else "no NumPy format"
        )
        raise ValueError(f"{path} is not a NumPy .npz archive ({what}).") from None
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as error:
        raise OSError(
            f"{path} is damaged or truncated ({type(error).__name__}: {error}); write or copy it again."
        ) from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise ValueError(f"{path} is a single .npy array, not an .npz archive.")
    arrays = {}
    with archive:
        for key in archive.files:
            try:
                arrays[key] = archive[key]
            except ValueError as error:
                if "allow_pickle" not in str(error):
                    raise ValueError(f"{path}: its array {key!r} cannot be read ({error}).") from None
                raise ValueError(
                    f"{path} holds pickled Python objects (its array {key!r} has dtype object), which are not "
                    "read: unpickling could run code that came with the file. This package writes numbers and "
                    "strings only; write the file again with the tool that made it."
                ) from None
            except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as error:
                raise OSError(
                    f"{path} is damaged or truncated: its array {key!r} cannot be read "
                    f"({type(error).__name__}: {error}); write or copy it again."
                ) from None
    return arrays
