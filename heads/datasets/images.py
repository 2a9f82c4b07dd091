"""The one image reader of every loader and evaluator: Pillow decode, EXIF orientation, RGB.

Every image goes through `read_image`, so training, evaluation and the demos
see the same pixels: EXIF orientation applied as `PIL.ImageOps.exif_transpose`
applies it (labelling tools draw boxes and masks on the rotated view), any
mode made 8-bit RGB (16-bit grey scaled to 8 bits as TensorFlow's PNG decoder
scales it, alpha dropped as TensorFlow drops it), and every failure an
`OSError` or `ValueError` that names the file.

`inspect_image` is the cheap check the loaders run on every file before
training starts (no pixel decoding for complete JPEG and PNG files); the
pixels are decoded later, in the `tf.data` pipeline, by `read_image` again.
"""

import os
from typing import NamedTuple

import numpy as np
import tensorflow as tf

ORIENTATION_TAG = 0x0112  # EXIF "Orientation"
# EXIF orientations that turn the stored image by a quarter turn (or transpose
# it): the displayed image is the stored one with height and width swapped.
QUARTER_TURNS = (5, 6, 7, 8)
# How much of a file's end `inspect_image` reads to find its end marker.
TAIL_BYTES = 64 * 1024
# Modes Pillow converts to RGB itself; alpha is dropped, not composited.
_CONVERTIBLE = ("RGB", "RGBA", "RGBX", "RGBa", "L", "LA", "La", "P", "PA", "1", "CMYK", "YCbCr")
# 16-bit (or wider) single-channel modes: Pillow's convert would clip them to 255.
_WIDE_GREY = ("I;16", "I;16B", "I;16L", "I;16N", "I")


class ImageInfo(NamedTuple):
    """What `inspect_image` learns about a file: the size as displayed (EXIF applied)."""

    height: int
    width: int
    orientation: int
    format: str
    mode: str


def _open(path):
    """`PIL.Image.open`, with every failure an OSError naming the file."""
    from PIL import Image, UnidentifiedImageError

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Image file {path!r} not found.")
    if os.path.getsize(path) == 0:
        raise OSError(f"Image file {path!r} is empty (0 bytes).")
    try:
        return Image.open(path)
    except UnidentifiedImageError as error:
        raise OSError(
            f"{path!r} is not an image file Pillow can read (PNG, JPEG, BMP, GIF, TIFF, WebP, ...)."
        ) from error
    except Exception as error:
        raise OSError(f"Cannot read image file {path!r}: {error}") from error


def _orientation(image):
    try:
        orientation = image.getexif().get(ORIENTATION_TAG, 1)
    except Exception:  # an unreadable EXIF block: Pillow's exif_transpose would fail too; show it stored
        return 1
    return orientation if isinstance(orientation, int) and 1 <= orientation <= 8 else 1


def _ends_complete(path, image_format):
    """Whether a JPEG or PNG file visibly reaches its end marker (a truncated file does not).

    Reads the last `TAIL_BYTES` only. JPEG: an end-of-image marker with no
    start-of-scan after it (entropy-coded data holds neither byte pair, so
    these are real markers); PNG: the IEND chunk. False for other formats
    and for files with more trailing data than that: those are decoded.
    """
    if image_format not in ("JPEG", "MPO", "PNG"):
        return False
    with open(path, "rb") as f:
        f.seek(max(os.path.getsize(path) - TAIL_BYTES, 0))
        tail = f.read()
    if image_format == "PNG":
        return tail.rfind(b"IEND\xaeB`\x82") >= 0  # the IEND chunk, with its fixed CRC
    end = tail.rfind(b"\xff\xd9")
    return end >= 0 and tail.find(b"\xff\xda", end) < 0


def _decode(image, path):
    try:
        image.load()
    except Exception as error:
        raise OSError(f"Image file {path!r} is truncated or corrupt: {error}") from error


def inspect_image(path):
    """Checks an image file before training and returns its displayed size.

    The file must exist, be non-empty, be an image Pillow can read and be
    complete: JPEG and PNG files are checked for their end marker (reading
    the header and the file's end, not decoding it: about 0.3 s per 1000
    files), other formats, and any file that fails that check, are decoded. The size is
    the one after EXIF orientation, the size boxes and masks are drawn on.

    Raises:
        FileNotFoundError, OSError: naming the file and what is wrong.

    Example:
    ```python
    info = inspect_image("images/000001.jpg")
    info.height, info.width, info.orientation  # e.g. 480, 640, 1
    ```
    """
    path = os.fspath(path)
    with _open(path) as image:
        orientation = _orientation(image)
        width, height = image.size
        if not _ends_complete(path, image.format):
            _decode(image, path)
        info = ImageInfo(height, width, orientation, image.format, image.mode)
    if orientation in QUARTER_TURNS:
        info = info._replace(height=width, width=height)
    return info


def _to_rgb(image, path):
    """An RGB uint8 array of any Pillow mode; wide grey scaled to 8 bits, not clipped."""
    if image.mode in _WIDE_GREY:
        # 16-bit grey keeps its high byte, as TensorFlow's PNG decoder and
        # Pillow's own 16-bit RGB reading do.
        grey = np.clip(np.asarray(image, dtype="int64"), 0, 65535) >> 8
        return np.repeat(grey.astype("uint8")[..., None], 3, axis=-1)
    if image.mode not in _CONVERTIBLE:
        raise ValueError(
            f"Image {path!r} has mode {image.mode!r}, which has no defined conversion to 8-bit RGB; "
            f"allowed: {', '.join(_CONVERTIBLE + _WIDE_GREY)}."
        )
    if image.mode != "RGB":
        image = image.convert("RGB")
    return np.asarray(image, dtype="uint8")


def read_image(path):
    """An image file as a `(height, width, 3)` uint8 RGB array, as displayed.

    EXIF orientation is applied (`PIL.ImageOps.exif_transpose`); grey,
    palette, RGBA, CMYK and 16-bit images become 8-bit RGB (16-bit values
    keep their high byte, alpha is dropped).

    Raises:
        FileNotFoundError, OSError: the file is missing, empty, not an image,
            truncated or corrupt (the message names it).
        ValueError: a mode without an RGB conversion (e.g. 32-bit float).

    Example:
    ```python
    pixels = read_image("images/000001.jpg")  # (480, 640, 3) uint8
    ```
    """
    from PIL import ImageOps

    path = os.fspath(path)
    with _open(path) as image:
        _decode(image, path)
        if _orientation(image) != 1:
            image = ImageOps.exif_transpose(image)
        return _to_rgb(image, path)


def read_single_channel(path):
    """A single-channel image file (a mask) as a 2-D array of its values, as displayed.

    EXIF orientation is applied if the file has one (masks rarely do), so a
    mask stays aligned with an image that has the same orientation tag.
    Palette images read as their indices. Returns `(array, mode)`.
    """
    from PIL import ImageOps

    path = os.fspath(path)
    with _open(path) as image:
        _decode(image, path)
        if _orientation(image) != 1:
            image = ImageOps.exif_transpose(image)
        return np.asarray(image), image.mode


def image_tensor(path):
    """`read_image` inside a `tf.data` pipeline: a `(height, width, 3)` uint8 tensor.

    `path` is a scalar string tensor. The pixels are Pillow's, as displayed
    (EXIF orientation applied, any mode made 8-bit RGB): those the loaders
    and evaluators read (`tf.io.decode_image` would ignore the orientation).
    A file that fails to decode stops iteration with TensorFlow's error
    carrying `read_image`'s message, which names the file.

    Example:
    ```python
    import tensorflow as tf
    import heads

    files = heads.datasets.make_shapes("shapes", num_images=2, image_size=32)
    paths = tf.data.Dataset.list_files(files["images"] + "/*.png", shuffle=False)
    images = paths.map(heads.datasets.image_tensor)  # (32, 32, 3) uint8 each
    ```
    """

    def read(path_bytes):
        return read_image(os.fsdecode(path_bytes))

    image = tf.numpy_function(read, [path], tf.uint8, stateful=False)
    return tf.ensure_shape(image, (None, None, 3))
