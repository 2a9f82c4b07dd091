"""Shared test helpers: the reference figures, fixtures paths, random statistics."""

import csv
import os

import keras
import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
SHARED = os.environ.get("MNET_SHARED_DIR", os.path.join(REPO, "..", "shared"))
PARITY_DIR = os.path.join(SHARED, "parity")


def reference_figures():
    """{preset: row} from tests/data/reference_figures.csv (REFERENCE.md's table)."""
    path = os.path.join(HERE, "data", "reference_figures.csv")
    with open(path, encoding="utf-8") as f:
        lines = [line for line in f if not line.startswith("#")]
    rows = {}
    for row in csv.DictReader(lines):
        rows[row["preset"]] = {
            "resolution": int(row["resolution"]),
            "classifier_params": int(row["classifier_params"]),
            "pyramid_channels": tuple(int(row[k]) for k in ("P2", "P3", "P4", "P5")),
            "macs_millions": float(row["macs_millions"]) if row["macs_millions"] else None,
        }
    return rows


REFERENCE = reference_figures()
ALL_PRESETS = sorted(REFERENCE)
# One preset per generation, the hybrid V4 included: for the costlier checks.
ONE_PER_GENERATION = [
    "mobilenetv1_025",
    "mobilenetv2_035",
    "mobilenetv3_small_100",
    "mobilenetv4_conv_small",
    "mobilenetv4_hybrid_medium",
]


def trainable_count(model):
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


def randomize_statistics(model, seed=0):
    """Give BatchNorm statistics, affine terms and layer scales random values,

    so that a misplaced tensor or a wrong epsilon changes the outputs."""
    rng = np.random.default_rng(seed)
    for variable in model.weights:
        path = variable.path
        shape = tuple(variable.shape)
        if path.endswith("moving_variance"):
            value = rng.uniform(0.5, 2.0, shape)
        elif path.endswith(("moving_mean", "beta")):
            value = rng.normal(0.0, 0.2, shape)
        elif path.endswith("gamma"):
            value = rng.uniform(0.5, 1.5, shape)
        else:
            continue
        variable.assign(value.astype(variable.dtype))


def condition(model, images, seed=0):
    """Random but trained-like weights for numerical comparisons.

    Layer scales and BatchNorm affine terms get random values, then every
    BatchNorm's moving statistics are set to those of `images` (as training
    leaves them, plus a floor), so that activations keep a trained network's
    scale instead of growing block after block as an untrained network's do
    in inference.
    """
    rng = np.random.default_rng(seed)
    norms = []
    for layer in model._flatten_layers():
        if isinstance(layer, keras.layers.BatchNormalization):
            norms.append(layer)
            layer.gamma.assign(rng.uniform(0.5, 1.5, layer.gamma.shape).astype("float32"))
            layer.beta.assign(rng.normal(0.0, 0.2, layer.beta.shape).astype("float32"))
        elif getattr(layer, "layer_scale", None) is not None and hasattr(layer, "gamma"):
            layer.gamma.assign(rng.uniform(0.5, 1.5, layer.gamma.shape).astype("float32"))
    momenta = [layer.momentum for layer in norms]
    for layer in norms:
        layer.momentum = 0.0  # one training-mode call sets the statistics
    model(images, training=True)
    for layer, momentum in zip(norms, momenta):
        layer.momentum = momentum
        # A channel that was (nearly) constant on these few images would
        # amplify rounding noise 300x; trained statistics are not that sharp.
        variance = keras.ops.convert_to_numpy(layer.moving_variance)
        layer.moving_variance.assign(variance + 0.1 * variance.mean())


def relative_error(actual, expected):
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    return float(np.max(np.abs(actual - expected)) / np.max(np.abs(expected)))


@pytest.fixture
def float32_policy():
    """Restore the global dtype policy after a test changes it."""
    yield
    keras.mixed_precision.set_global_policy("float32")


def requires_parity_fixtures():
    return pytest.mark.skipif(
        not os.path.isdir(PARITY_DIR),
        reason=f"timm parity fixtures not found at {PARITY_DIR} (they live in the "
        "project's shared/ folder beside the repository; set MNET_SHARED_DIR).",
    )


def run_cli(argv, capsys):
    """Status and stderr of `mnet_tools.cli.main(argv)`; argparse's own exits count as a status."""
    from mnet_tools import cli

    try:
        status = cli.main(argv)
    except SystemExit as exit:
        status = exit.code
    return status, capsys.readouterr().err


def assert_one_line_error(status, error, *fragments):
    """A CLI error: exit status 2, one line, no traceback, with every fragment in it."""
    assert status == 2, error
    assert error.count("\n") == 1 and "Traceback" not in error, error
    for fragment in fragments:
        assert fragment in error, (fragment, error)


class GroundTruthDetector:
    """Stands in for a detector: 'predicts' the resized ground truth of a COCO set, perfect scores.

    `num_classes`, when given, is the attribute `heads.evaluate_coco` checks
    the file's categories against; without it the detector has none.
    """

    def __init__(self, annotation_file, image_dir, image_size, bounding_box_format="xyxy", num_classes=None):
        from heads.datasets import load_coco

        self.image_size = image_size
        self.bounding_box_format = bounding_box_format
        if num_classes is not None:
            self.num_classes = num_classes
        batches = list(load_coco(annotation_file, image_dir, image_size, 64, bounding_box_format=bounding_box_format))
        self.targets = batches[0][1]

    def predict(self, dataset, verbose=0):
        labels = self.targets["labels"].numpy()
        return {
            "boxes": self.targets["boxes"].numpy(),
            "labels": np.maximum(labels, 0),
            "confidence": np.where(labels >= 0, 0.8, -1.0),
            "num_detections": (labels >= 0).sum(axis=1),
        }
