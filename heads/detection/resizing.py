"""Images of any size to the paper head's input size, as torchvision's transform resizes them.

`SSDLite320ObjectDetector` (like torchvision's SSD) takes images of any size
and resizes each to its `image_size` (bilinear, half-pixel centres, no
antialiasing); boxes follow their image. The LiteRT export's post-processing
(`mnet_tools.detection_export`) resizes with the same functions.
"""

import keras
import numpy as np
from keras import ops

from mnet_backbones.validation import check_image_size

bounding_boxes = keras.utils.bounding_boxes


def resize_images(images, image_size):
    """Images (B, H, W, 3) resized to `image_size` as torch's `F.interpolate(bilinear, align_corners=False)`.

    Half-pixel centres and no antialiasing, on any backend. Returns a tensor
    of the backend.

    Example:
    ```python
    resize_images(np.zeros((1, 240, 400, 3), "float32"), 320).shape  # (1, 320, 320, 3)
    ```
    """
    height, width = check_image_size(image_size, minimum=1)
    images = ops.cast(images, "float32")
    if tuple(images.shape[1:3]) == (height, width):
        return images
    return ops.image.resize(images, (height, width), interpolation="bilinear", antialias=False)


def resize_image_batch(x, image_size, caller="SSDLite320ObjectDetector.predict"):
    """Images (an array or a list of HWC arrays) resized to `image_size` (numpy), and their (height, width).

    A single image without a batch axis, an empty batch and images that are
    not (height, width, 3) raise a ValueError naming `caller`.

    Example:
    ```python
    batch, sizes = resize_image_batch([np.zeros((240, 400, 3)), np.zeros((64, 64, 3))], 320)
    # batch (2, 320, 320, 3); sizes [[240, 400], [64, 64]]
    ```
    """
    if isinstance(x, (list, tuple)):
        images = [np.asarray(image) for image in x]
    else:
        array = np.asarray(keras.ops.convert_to_numpy(x))
        if array.ndim == 3 and array.shape[-1] in (1, 3, 4):
            raise ValueError(
                f"{caller} takes a batch of images (batch, height, width, 3); got one "
                f"image of shape {array.shape}. Add a batch axis: predict(image[None])."
            )
        images = list(array)
    if not images:
        raise ValueError(f"{caller} got no images (a batch of 0): nothing to predict.")
    for i, image in enumerate(images):
        if image.ndim != 3 or image.shape[-1] != 3 or min(image.shape[:2]) < 1:
            raise ValueError(
                f"{caller}: image {i} has shape {image.shape}; each image must be "
                "(height, width, 3) RGB with at least one pixel. Convert gray or RGBA images to RGB first "
                "(e.g. PIL's image.convert('RGB'))."
            )
    sizes = np.array([image.shape[:2] for image in images], "float32")
    resized = [keras.ops.convert_to_numpy(resize_images(image[None], image_size))[0] for image in images]
    return np.stack(resized), sizes


def resize_with_boxes(images, targets, image_size, bounding_box_format="xyxy"):
    """Array `images` (B, H, W, 3) of another size resized to `image_size`, the boxes of `targets` with them.

    `targets` is `{"boxes": (B, M, 4) pixels in `bounding_box_format`,
    "labels": (B, M)}` padded with label -1 (padded boxes stay -1). Returns
    `(images, targets)` in numpy; images already of `image_size` come back as
    they are.
    """
    image_size = check_image_size(image_size, minimum=1)
    if tuple(images.shape[1:3]) == image_size:
        return images, targets
    xyxy = keras.ops.convert_to_numpy(
        bounding_boxes.convert_format(
            targets["boxes"], source=bounding_box_format, target="xyxy", height=images.shape[1], width=images.shape[2]
        )
    )
    scale = np.array([image_size[1] / images.shape[2], image_size[0] / images.shape[1]] * 2, "float32")
    xyxy = np.where(targets["labels"][..., None] >= 0, xyxy * scale, -1.0)
    boxes = keras.ops.convert_to_numpy(
        bounding_boxes.convert_format(
            xyxy, source="xyxy", target=bounding_box_format, height=image_size[0], width=image_size[1]
        )
    )
    return keras.ops.convert_to_numpy(resize_images(images, image_size)), dict(targets, boxes=boxes)
