"""Task files saved before the heads moved into `heads/detection` and `heads/segmentation` still load.

`tests/data/saved_tasks` holds a `.keras` file and a preset folder of each
task, written by `tests/data/saved_tasks/make.py` on main at cf7c210 (the flat
`heads/` layout, registered names of that time), with the outputs that code
gave on two fixed images. Loaded on today's code, each must be the same class
of task and give the same outputs.
"""

import pathlib

import keras
import keras_hub
import numpy as np
import pytest

import heads

DATA = pathlib.Path(__file__).resolve().parent / "data" / "saved_tasks"
TASKS = {
    "ssdlite": (heads.SSDLiteObjectDetector, keras_hub.models.ObjectDetector),
    "ssdlite320": (heads.SSDLite320ObjectDetector, keras_hub.models.ObjectDetector),
    "deeplabv3plus": (heads.DeepLabV3PlusSegmenter, keras_hub.models.ImageSegmenter),
    "deeplabv3": (heads.DeepLabV3Segmenter, keras_hub.models.ImageSegmenter),
    "lraspp": (heads.LRASPPSegmenter, keras_hub.models.ImageSegmenter),
}


@pytest.fixture(scope="module")
def expected():
    with np.load(DATA / "expected.npz") as recorded:
        return dict(recorded)


def load(name, form):
    if form == "keras":
        return keras.saving.load_model(DATA / f"{name}.keras")
    return TASKS[name][1].from_preset(str(DATA / f"{name}_preset"))


def assert_same_outputs(task, name, expected):
    images = expected["images"]
    raw = task(images, training=False)
    raw = raw if isinstance(raw, dict) else {"raw": raw}
    recorded = {key.split("/", 2)[2]: value for key, value in expected.items() if key.startswith(f"{name}/raw/")}
    assert sorted(raw) == sorted(recorded)
    for key, value in recorded.items():
        got = keras.ops.convert_to_numpy(raw[key])
        np.testing.assert_allclose(got, value, rtol=1e-4, atol=1e-4 * float(np.abs(value).max()), err_msg=key)
    predicted = task.predict(images, verbose=0)
    if isinstance(predicted, dict):
        np.testing.assert_array_equal(predicted["num_detections"], expected[f"{name}/num_detections"])
    else:
        np.testing.assert_array_equal(np.argmax(predicted, -1), np.argmax(expected[f"{name}/logits"], -1))


@pytest.mark.parametrize("form", ["keras", "preset"])
@pytest.mark.parametrize("name", sorted(TASKS))
def test_a_task_saved_by_the_flat_layout_loads_and_predicts_the_same(name, form, expected):
    task = load(name, form)
    assert type(task) is TASKS[name][0]
    assert_same_outputs(task, name, expected)


def test_the_comparison_catches_other_weights(expected):
    task = load("lraspp", "keras")
    kernel = next(v for v in task.weights if v.path.endswith("kernel") and "classifier" in v.path)
    kernel.assign(kernel.numpy() * 1.5)
    with pytest.raises(AssertionError):
        assert_same_outputs(task, "lraspp", expected)
