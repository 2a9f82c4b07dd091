"""What the heads do with images Keras would misread: a clear ValueError, or the right result."""

import keras
import numpy as np
import pytest

import heads

SIZE = 96
tensorflow_only_cost = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow",
    reason="cost: two predict graphs; the resizing is keras.ops, checked on TensorFlow",
)


@pytest.fixture(scope="module")
def detector():
    return heads.create_ssdlite("mobilenetv3_small_050", num_classes=3, image_size=SIZE, load_weights=False)


@pytest.fixture(scope="module")
def segmenter():
    return heads.create_deeplabv3plus("mobilenetv3_small_050", num_classes=4, image_size=SIZE, load_weights=False)


BAD_BATCHES = {
    "empty batch": (np.zeros((0, SIZE, SIZE, 3)), "empty batch"),
    "no pixels": (np.zeros((1, 0, 0, 3)), "no pixels"),
    "RGBA": (np.zeros((1, SIZE, SIZE, 4)), r"RGB images .* \(1, 96, 96, 4\)"),
    "another size": (np.zeros((1, SIZE + 32, SIZE, 3)), "built for 96x96 images; got 128x96"),
    "no batch axis": (np.zeros((SIZE, SIZE, 3)), r"one image of shape \(96, 96, 3\).*image\[None\]"),
}


@pytest.mark.parametrize("task", ["detector", "segmenter"])
@pytest.mark.parametrize("case", sorted(BAD_BATCHES))
def test_bad_batches_are_named(task, case, request):
    model = request.getfixturevalue(task)
    images, message = BAD_BATCHES[case]
    with pytest.raises(ValueError, match=message):
        model.predict(images.astype("float32"), verbose=0)


@tensorflow_only_cost
def test_detector_predicts_a_list_of_sizes_in_each_images_pixels():
    """Each image is resized to the detector's size; its boxes come back in its own pixels."""
    detector = heads.create_ssdlite(
        "mobilenetv3_small_050", num_classes=3, image_size=SIZE, load_weights=False, score_threshold=0.0
    )
    rng = np.random.default_rng(0)
    square = rng.uniform(0, 255, (SIZE, SIZE, 3)).astype("float32")
    # Every column twice: bilinear resizing back to SIZE x SIZE gives `square` exactly.
    wide = np.repeat(square, 2, axis=1)
    together = detector.predict([square, wide], verbose=0)
    alone = detector.predict(square[None], verbose=0)
    found = int(alone["num_detections"][0])
    assert found > 0
    np.testing.assert_array_equal(together["num_detections"], [found, found])
    np.testing.assert_allclose(together["boxes"][0, :found], alone["boxes"][0, :found], atol=1e-3)
    np.testing.assert_allclose(together["boxes"][1, :found], alone["boxes"][0, :found] * [2, 1, 2, 1], atol=1e-3)
    np.testing.assert_array_equal(together["labels"][1], alone["labels"][0])


def test_segmenter_refuses_a_list_of_sizes(segmenter):
    images = [np.zeros((SIZE, SIZE, 3)), np.zeros((SIZE + 8, SIZE, 3))]
    with pytest.raises(ValueError, match="different sizes"):
        segmenter.predict(images, verbose=0)


def test_unknown_box_format_fails_at_construction():
    with pytest.raises(ValueError, match="bounding_box_format='xywhz'"):
        heads.create_ssdlite(
            "mobilenetv3_small_050", num_classes=3, image_size=SIZE, load_weights=False, bounding_box_format="xywhz"
        )


def test_fit_refuses_a_coco_dataset_with_more_categories_than_classes(tmp_path):
    from heads.datasets import load_coco, make_shapes

    files = make_shapes(str(tmp_path / "shapes"), num_images=2, image_size=64)  # 3 categories
    dataset = load_coco(files["annotations"], files["images"], image_size=64, batch_size=2)
    detector = heads.create_ssdlite("mobilenetv3_small_050", num_classes=2, image_size=64, load_weights=False)
    detector.compile()
    with pytest.raises(ValueError, match=r"annotations.json has 3 categories .* num_classes=2"):
        detector.fit(dataset, epochs=1, verbose=0)
