"""What `import heads` loads, and what the heads modules may import."""

import ast
import json
import os
import pathlib
import subprocess
import sys

import pytest

HEADS = pathlib.Path(__file__).resolve().parents[1] / "heads"
LAZY_MODULES = (
    "heads.datasets",
    "heads.coco_eval",
    "heads.detection.coco_eval",
    "heads.segmentation_eval",
    "heads.segmentation.evaluation",
)
# The core modules a head may use; `import mnet_backbones` itself registers the presets.
ALLOWED_CORE = {
    "mnet_backbones",
    "mnet_backbones.constants",
    # torchvision's checkpoints of the heads (SSDLite, DeepLabV3, LR-ASPP) load through the core's
    # torchvision reader, backbone slots and all-or-nothing assignment.
    "mnet_backbones.convert.mapping",
    "mnet_backbones.convert.torchvision",
    "mnet_backbones.keras_hub_internals",
    "mnet_backbones.layers",
    "mnet_backbones.validation",
}
# Function-local imports allowed: optional heavy dependencies, loaded on use.
LAZY_DEPENDENCIES = ("pycocotools", "PIL")
# The one bridge to tf.distribute (a loss's count summed over replicas), imported lazily.
REPLICA_SUM = ("heads/losses.py", "tensorflow")

PROBE = """
import json, sys
import heads
loaded_after_import = sorted(m for m in sys.modules if m.startswith({lazy}))
evaluate_coco = heads.evaluate_coco
evaluate_segmentation = heads.evaluate_segmentation
load_coco = heads.datasets.load_coco
import heads.coco_eval
import heads.segmentation_eval
print(json.dumps({{
    "loaded_after_import": loaded_after_import,
    "evaluate_coco": evaluate_coco.__module__,
    "evaluate_segmentation": evaluate_segmentation.__module__,
    "load_coco": load_coco.__module__,
    "loaded_on_use": sorted(m for m in {lazy} if m in sys.modules),
}}))
"""


def test_import_heads_loads_the_models_only_and_the_rest_on_use():
    env = dict(os.environ, KERAS_BACKEND="jax", TF_CPP_MIN_LOG_LEVEL="3")
    probe = PROBE.format(lazy=repr(LAZY_MODULES))
    result = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["loaded_after_import"] == []
    assert report["evaluate_coco"] == "heads.detection.coco_eval"
    assert report["evaluate_segmentation"] == "heads.segmentation.evaluation"
    assert report["load_coco"] == "heads.datasets.coco"
    assert report["loaded_on_use"] == sorted(LAZY_MODULES)


def test_heads_names_its_lazy_attributes_and_no_others():
    import heads

    assert {"datasets", "evaluate_coco", "evaluate_segmentation"} <= set(dir(heads))
    with pytest.raises(AttributeError, match="no attribute 'nonexistent'"):
        heads.nonexistent  # noqa: B018


def heads_modules():
    return sorted(HEADS.rglob("*.py"))


def imports(path):
    """(module name, is function-local) for every import in `path`."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []

    def visit(node, local):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import):
                found.extend((alias.name, local) for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                found.append((child.module or "", local))
            visit(child, local or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)))

    visit(tree, False)
    return found


@pytest.mark.parametrize("path", heads_modules(), ids=lambda path: str(path.relative_to(HEADS.parent)))
def test_heads_imports_stay_in_bounds(path):
    in_datasets = path.parent.name == "datasets"
    for name, local in imports(path):
        top = name.split(".")[0]
        assert top != "mnet_tools", f"{name}: the heads never import the tools"
        assert not name.startswith("keras_hub.src"), f"{name}: keras-hub's private API (use keras_hub_internals)"
        if top == "mnet_backbones":
            assert name in ALLOWED_CORE, f"{name}: a backbone internal"
        replica_sum = (path.relative_to(path.parents[1]).as_posix(), top) == REPLICA_SUM and local
        if top == "tensorflow":
            assert in_datasets or replica_sum, f"{name}: model and evaluation code use keras.ops / numpy"
        if local:
            assert top in LAZY_DEPENDENCIES or replica_sum, f"function-local import of {name}"
