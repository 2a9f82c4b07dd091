"""The package layout holds: three floors that import only downward, no cycles.

Floors, lowest first: the core models (`mnet_backbones`), the heads (`heads`:
tasks on any feature pyramid, their data and evaluation), the tools
(`mnet_tools`: CLI, export, benchmark, MACs, demos). Every module's imports are
read from its source (module level and inside functions alike), so a
function-local import cannot hide an upward edge or a cycle.
"""

import ast
import os
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
FLOORS = {"mnet_backbones": 0, "heads": 1, "mnet_tools": 2}
# keras-hub's private API, allowed in this one module only (see its docstring).
PRIVATE_KERAS_HUB_MODULE = "mnet_backbones.keras_hub_internals"
# Model code runs on every backend through keras.ops; only these may import a
# backend or TensorFlow's data stack directly.
BACKEND_MODULES = ("tensorflow", "jax", "torch")
MAY_IMPORT_A_BACKEND = ("heads.datasets",)
# Reading a .pth file needs torch's unpickler: this one function may import
# torch, lazily (torch is an optional extra), and nothing else in its module.
LAZY_TORCH_READER = ("mnet_backbones.convert.torchvision", "read_state_dict")
# A loss's count summed over tf.distribute replicas: this one function may
# import tensorflow, lazily (Keras has no public cross-replica sum).
LAZY_TF_REPLICA_SUM = ("heads.losses", "sum_over_replicas")


def lazy_imports(path, function_name, package="torch"):
    """`import <package>` statements inside the function `function_name` of `path`."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and node.name == function_name:
            for inner in ast.walk(node):
                if isinstance(inner, ast.Import):
                    found.update(id(alias) for alias in inner.names if alias.name == package)
    return found


def module_name(path):
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_modules():
    modules = {}
    for package in FLOORS:
        for path in sorted((ROOT / package).rglob("*.py")):
            modules[module_name(path)] = path
    return modules


MODULES = project_modules()


def imported_names(path):
    """Every module name `path` imports, with `from X import Y` giving X.Y where X.Y is a module."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    this = module_name(path)
    package = this if path.name == "__init__.py" else this.rpartition(".")[0]
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                names.append(candidate if candidate in MODULES else base)
    return names


def project_target(name):
    """The project module `name` refers to (itself or the package that holds it), or None."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def floor(name):
    return FLOORS[name.split(".")[0]]


GRAPH = {
    module: sorted({target for name in imported_names(path) if (target := project_target(name)) and target != module})
    for module, path in MODULES.items()
}


def test_the_three_packages_are_found():
    assert {
        "mnet_backbones",
        "mnet_backbones.backbone",
        "heads",
        "heads.ssdlite",
        "heads.detection.ssdlite",
        "heads.detection.ssdlite320",
        "mnet_tools",
        "mnet_tools.cli",
    } <= set(MODULES)


def test_imports_only_go_down_a_floor():
    upward = [
        f"{module} (floor {floor(module)}) imports {target} (floor {floor(target)})"
        for module, targets in GRAPH.items()
        for target in targets
        if floor(target) > floor(module)
    ]
    assert not upward, "imports that go up a floor:\n" + "\n".join(upward)


def find_cycle(graph):
    """One cycle of module names as a list (first == last), or None."""
    state = {}

    def visit(node, trail):
        state[node] = "open"
        for target in graph.get(node, ()):
            if state.get(target) == "open":
                return trail[trail.index(target) :] + [target]
            if target not in state:
                cycle = visit(target, trail + [target])
                if cycle:
                    return cycle
        state[node] = "done"
        return None

    for start in sorted(graph):
        if start not in state:
            cycle = visit(start, [start])
            if cycle:
                return cycle
    return None


def test_no_import_cycles_between_modules():
    cycle = find_cycle(GRAPH)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_cycle_finder_finds_cycles():
    # The checks above can fail: a made-up graph with a cycle through a package.
    assert find_cycle({"a": ["b"], "b": ["c"], "c": ["a"]}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": ["b"], "b": [], "c": ["a"]}) is None


def test_keras_hub_private_api_in_one_module_only():
    offenders = [
        module
        for module, path in MODULES.items()
        if module != PRIVATE_KERAS_HUB_MODULE and any(name.startswith("keras_hub.src") for name in imported_names(path))
    ]
    assert not offenders, f"keras_hub.src imported outside {PRIVATE_KERAS_HUB_MODULE}: {offenders}"


def test_keras_hub_private_api_is_where_we_expect_it():
    # Fails loudly, naming the module, if keras-hub moves what we borrow.
    from mnet_backbones import keras_hub_internals

    assert callable(keras_hub_internals.register_presets)
    assert callable(keras_hub_internals.get_preset_loader)
    assert callable(keras_hub_internals.load_task_preset)


def test_model_code_imports_no_backend_directly():
    reader_module, reader = LAZY_TORCH_READER
    allowed_torch = len(lazy_imports(MODULES[reader_module], reader))
    assert allowed_torch == 1, f"{reader_module}.{reader} should import torch once, lazily"
    sum_module, summer = LAZY_TF_REPLICA_SUM
    assert len(lazy_imports(MODULES[sum_module], summer, "tensorflow")) == 1, f"{sum_module}.{summer}"
    offenders = []
    for module, path in MODULES.items():
        if floor(module) >= FLOORS["mnet_tools"] or module.startswith(MAY_IMPORT_A_BACKEND):
            continue
        names = [name for name in imported_names(path) if name.split(".")[0] in BACKEND_MODULES]
        if module == reader_module:
            names.remove("torch")  # the one import inside the reader
        if module == sum_module:
            names.remove("tensorflow")  # the one import inside the replica sum
        offenders += [f"{module} imports {name}" for name in names]
    assert not offenders, "model code must use keras.ops:\n" + "\n".join(offenders)


@pytest.mark.parametrize("package", sorted(FLOORS))
def test_every_module_imports(package):
    # The graph above is read from source; this checks it is the real one.
    import importlib

    for module in MODULES:
        if module.split(".")[0] == package and not module.endswith("__main__"):
            importlib.import_module(module)


def test_pyproject_reads_the_one_version():
    import mnet_backbones

    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert 'dynamic = ["version"]' in text
    assert 'version = { attr = "mnet_backbones._version.__version__" }' in text
    assert "\nversion =" not in text.split("[tool.setuptools.dynamic]")[0]
    assert mnet_backbones.__version__ == mnet_backbones._version.__version__
    assert os.path.basename(mnet_backbones._version.__file__) == "_version.py"
