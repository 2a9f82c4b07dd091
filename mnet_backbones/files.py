"""Files written whole or not at all, and files read with errors that name them.

Writing: `atomic_file` and `atomic_folder` hand out a temporary name in the
destination's own folder and rename it into place only once the writer is
done. A crash, a full disk or Ctrl-C in between leaves the destination as it
was (absent, or its old content) and removes the temporary. The temporary
shares the destination's folder because a rename is atomic only within one
file system.

Reading: `read_json`, `check_hdf5_file`, `check_safetensors_file`,
`check_keras_file` and `check_preset_folder` look at a file before a loader
does, and raise a `ValueError` (bad content) or `OSError` (missing,
unreadable, cut short) whose message names the file and says what is wrong:
the JSON error's line and column, the bytes a truncated file lacks, the
corrupt member of a `.keras` archive. Loaders' own errors for such files are
a bare `JSONDecodeError`, h5py's "truncated file: eof = ..." or Keras's
"File not found" for a `.keras` file that exists.

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
import os
import re
import secrets
import shutil
import struct
import tempfile
import zipfile
import zlib

import h5py

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
ZIP_SIGNATURE = b"PK\x03\x04"
KERAS_CONFIG = "config.json"
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


def _size(path):
    if os.path.isdir(path):
        raise IsADirectoryError(f"{path!r} is a folder, not a file.")
    if not os.path.exists(path):
        raise FileNotFoundError(f"No such file: {path!r}.")
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
    _size(path)
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
    size = _size(path)
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
    size = _size(path)
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
    size = _size(path)
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


def check_preset_folder(folder, weights=True):
    """Check every JSON, HDF5 and safetensors file of a preset or timm snapshot folder.

    Raises the first fault, naming its file (see the module docstring); a
    missing file is the loader's to report, since what is required depends
    on what loads the folder. `weights=False` checks the JSON files only, for
    a model built without the folder's weights.
    """
    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        raise NotADirectoryError(f"{folder!r} is not a folder.")
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        if not os.path.isfile(path):
            continue
        if name.endswith(".json"):
            read_json(path)
        elif name.endswith(".h5") and weights:
            check_hdf5_file(path)
        elif name.endswith(".safetensors") and weights:
            check_safetensors_file(path)
