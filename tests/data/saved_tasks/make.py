"""Writes the saved-task fixtures: one `.keras` file and one preset folder per task.

Run once on the layout these files were written with (main at cf7c210, before
the heads moved into `heads/detection` and `heads/segmentation`), from the
repository root: `KERAS_BACKEND=tensorflow python tests/data/saved_tasks/make.py`.
`tests/test_saved_tasks.py` loads them on the current code and compares its
outputs with the ones recorded here, so they are never rewritten by the code
under test.
"""

import pathlib

import keras
import numpy as np

import heads

HERE = pathlib.Path(__file__).resolve().parent
SIZE = 96


def tasks():
    keras.utils.set_random_seed(0)
    small = "mobilenetv1_025"
    yield (
        "ssdlite",
        heads.create_ssdlite(small, num_classes=3, image_size=SIZE, extra_filters=(64, 32), load_weights=False),
    )
    yield (
        "ssdlite320",
        heads.create_ssdlite(
            "mobilenetv3_small_050",
            num_classes=4,
            image_size=SIZE,
            head="paper",
            extra_filters=(64, 32, 32, 16),
            load_weights=False,
        ),
    )
    yield (
        "deeplabv3plus",
        heads.create_deeplabv3plus(
            small, num_classes=3, image_size=SIZE, aspp_filters=32, decoder_filters=32, load_weights=False
        ),
    )
    yield (
        "deeplabv3",
        heads.create_deeplabv3(small, num_classes=3, image_size=SIZE, aspp_filters=32, load_weights=False),
    )
    yield "lraspp", heads.create_lraspp(small, num_classes=3, image_size=SIZE, load_weights=False)


def main():
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (2, SIZE, SIZE, 3)).astype("float32")
    outputs = {"images": images}
    for name, task in tasks():
        task.save(HERE / f"{name}.keras")
        task.save_to_preset(str(HERE / f"{name}_preset"))
        raw = task(images, training=False)
        for key, value in raw.items() if isinstance(raw, dict) else [("raw", raw)]:
            outputs[f"{name}/raw/{key}"] = keras.ops.convert_to_numpy(value)
        predicted = task.predict(images, verbose=0)
        if isinstance(predicted, dict):
            for key, value in predicted.items():
                outputs[f"{name}/{key}"] = np.asarray(value)
        else:
            outputs[f"{name}/logits"] = np.asarray(predicted)
        print(name, type(task).__name__, task.count_params())
    np.savez_compressed(HERE / "expected.npz", **outputs)


if __name__ == "__main__":
    main()
