"""The shared argument checks and constants: what they accept, what they reject."""

import numpy as np
import pytest

from mnet_backbones import constants
from mnet_backbones.validation import check_image_shape, check_image_size, check_positive_int


def test_positive_int():
    assert check_positive_int("batch_size", 8) == 8
    assert check_positive_int("batch_size", np.int64(3)) == 3
    for bad in (0, -1, 2.7, 16.0, True, "8", None):
        with pytest.raises(ValueError, match=r"`batch_size` must be a positive int, got"):
            check_positive_int("batch_size", bad)


def test_image_size():
    assert check_image_size(320) == (320, 320)
    assert check_image_size([256, 320]) == (256, 320)
    assert check_image_size(8, minimum=1) == (8, 8)
    for bad in (16, (32,), (32, 31), (32.0, 32), "320", (True, 64)):
        with pytest.raises(ValueError, match=r"`image_size` must be an int or a \(height, width\) pair"):
            check_image_size(bad)


def test_image_shape():
    assert check_image_shape((None, None, 3)) == (None, None, 3)
    assert check_image_shape([224, 160, 1]) == (224, 160, 1)
    with pytest.raises(ValueError, match="channels last"):
        check_image_shape((224, 224))
    with pytest.raises(ValueError, match="channel count"):
        check_image_shape((224, 224, 0))
    with pytest.raises(ValueError, match="at least 32"):
        check_image_shape((16, 224, 3))


def test_pixel_statistics_are_imagenets_on_0_255():
    np.testing.assert_allclose(constants.IMAGENET_PIXEL_MEAN, (123.675, 116.28, 103.53))
    np.testing.assert_allclose(np.sqrt(constants.IMAGENET_PIXEL_VARIANCE), (58.395, 57.12, 57.375))
    assert constants.IMAGENET_CLASSES == 1000
