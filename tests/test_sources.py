"""The registry of checkpoint sources: every entry point dispatches through it, for every source.

Each registered source is driven through every entry point of each kind it
gives (our classes' `from_preset`, keras-hub's generic ones, the task base's
`from_preset`, the CLI's `convert` and `export`), offline on the shared
fixtures; a source a test registers (a tiny fake module) is reached from all
of them with no other change.
"""

import dataclasses
import importlib.util
import os
import types

import keras
import keras_hub
import pytest

import heads
from conftest import PARITY_DIR, requires_parity_fixtures
from heads.tasks import PyramidImageSegmenter, PyramidObjectDetector, PyramidTask
from mnet_backbones import MobileNetBackbone, MobileNetImageClassifier, restore_compile, sources
from mnet_tools import cli

TORCHVISION = os.path.join(PARITY_DIR, "torchvision")
HAS_TORCH = importlib.util.find_spec("torch") is not None
ON_TENSORFLOW = keras.backend.backend() == "tensorflow"

# One preset argument per registered source, read offline.
PRESETS = {
    "built-in": "mobilenetv3_small_050",
    "torchvision-classifier": os.path.join(TORCHVISION, "mobilenet_v3_small"),
    "timm": os.path.join(PARITY_DIR, "mobilenetv4_conv_small"),
    "torchvision-ssdlite": os.path.join(TORCHVISION, "ssdlite320_mobilenet_v3_large"),
    "torchvision-segmentation": os.path.join(TORCHVISION, "lraspp_mobilenet_v3_large"),
}
# What each kind gives from these presets.
EXPECTED = {
    "backbone": MobileNetBackbone,
    "classifier": MobileNetImageClassifier,
    "detector": heads.SSDLite320ObjectDetector,
    "segmenter": heads.LRASPPSegmenter,
}


def through_the_base(cls):
    """`cls.from_preset` as the task base writes it (what `cls` runs once its own copy is gone)."""
    return lambda preset, **kwargs: PyramidTask.from_preset.__func__(cls, preset, **kwargs)


def entry_points(kind):
    """(name, from_preset) of every entry point that gives `kind`."""
    if kind == "backbone":
        return [
            ("MobileNetBackbone", MobileNetBackbone.from_preset),
            ("keras_hub.models.Backbone", keras_hub.models.Backbone.from_preset),
        ]
    if kind == "classifier":
        return [
            ("MobileNetImageClassifier", MobileNetImageClassifier.from_preset),
            ("keras_hub.models.ImageClassifier", keras_hub.models.ImageClassifier.from_preset),
        ]
    if kind == "detector":
        classes = (heads.SSDLite320ObjectDetector, heads.SSDLiteObjectDetector, PyramidObjectDetector)
        generic = keras_hub.models.ObjectDetector
    else:
        classes = (heads.LRASPPSegmenter, heads.TapSegmenter, PyramidImageSegmenter)
        generic = keras_hub.models.ImageSegmenter
    points = [(f"keras_hub.models.{generic.__name__}", generic.from_preset)]
    points += [(cls.__name__, cls.from_preset) for cls in classes]
    points += [(f"{cls.__name__} (task base)", through_the_base(cls)) for cls in classes]
    return points


ENTRY_CLASSES = {
    cls.__name__: cls
    for cls in (
        MobileNetBackbone,
        MobileNetImageClassifier,
        heads.SSDLite320ObjectDetector,
        heads.SSDLiteObjectDetector,
        PyramidObjectDetector,
        heads.LRASPPSegmenter,
        heads.TapSegmenter,
        PyramidImageSegmenter,
    )
}


def dispatches_through_the_base(cls):
    return cls.from_preset.__func__ is PyramidTask.from_preset.__func__


@pytest.fixture
def spied(request):
    """`spied(name)`: the source's calls to `load`; the original is registered again afterwards."""
    originals = []

    def spy(name):
        source = next(source for source in sources.registered_sources() if source.name == name)
        originals.append(source)
        calls = []

        def load(cls, preset, **kwargs):
            calls.append(cls)
            return source.load(cls, preset, **kwargs)

        sources.register_source(dataclasses.replace(source, load=load))
        return calls

    yield spy
    for source in originals:
        sources.register_source(source)


def test_the_registry_lists_every_source_once():
    registered = sources.registered_sources()
    assert [source.name for source in registered] == list(PRESETS)
    for source in registered:
        assert source.description and source.kinds and set(source.kinds) <= set(sources.KINDS)
        assert source.convert is not None, f"{source.name}: convert takes every registered source"
        assert issubclass(source.backbone_cls, keras_hub.models.Backbone)
    # Each fixture is recognised by its own source, and by no other (a preset has one source).
    for name, preset in PRESETS.items():
        assert [source.name for source in registered if source.recognises(preset)] == [name]
    assert sources.find_source("no/such/preset") is None


def test_one_lookup_per_kind_and_the_looser_test_for_the_sources_own_classes(tmp_path):
    # A .pth under any name: LR-ASPP's own from_preset takes it (its keys say which model), no other entry point.
    stray = tmp_path / "my_weights.pth"
    stray.write_bytes(b"")
    assert sources.find_source(str(stray)) is None
    assert sources.find_source(str(stray), heads.LRASPPSegmenter).name == "torchvision-segmentation"
    assert sources.find_source(str(stray), heads.DeepLabV3PlusSegmenter) is None
    assert sources.find_source(str(stray), keras_hub.models.ImageSegmenter) is None
    # Kinds filter: a segmentation checkpoint is no source of backbones by name; our backbone's own
    # torchvision reader takes any torchvision folder, and names the task that loads this one.
    assert sources.find_source(PRESETS["torchvision-segmentation"], keras_hub.models.Backbone) is None
    assert sources.find_source(PRESETS["torchvision-segmentation"], MobileNetBackbone).name == "torchvision-classifier"
    if HAS_TORCH:
        with pytest.raises(ValueError, match="segmentation checkpoint .* matching heads task"):
            MobileNetBackbone.from_preset(PRESETS["torchvision-segmentation"], load_weights=False)
    assert sources.find_source(PRESETS["torchvision-ssdlite"], keras_hub.models.ImageSegmenter) is None
    assert sources.find_source(PRESETS["torchvision-segmentation"], heads.SSDLiteObjectDetector) is None
    # Any hf:// handle goes to timm for our classes (its download says what it is); not for keras-hub's.
    assert sources.find_source("hf://timm/resnet50.a1_in1k", MobileNetImageClassifier).name == "timm"
    assert sources.find_source("hf://timm/resnet50.a1_in1k", generic_only=True) is None
    # Built-in names are keras-hub's own registered presets: its generic loaders find them without us.
    assert sources.find_source("mobilenetv3_small_050", generic_only=True) is None
    assert sources.kind_of(keras_hub.models.CausalLM) is None
    # A source convert does not take is not offered to it.
    unconvertible = sources.CheckpointSource(
        "no-convert",
        "a checkpoint convert cannot write",
        lambda preset: preset == "x://y",
        ("backbone",),
        None,
        MobileNetBackbone,
    )
    sources.register_source(unconvertible)
    try:
        assert sources.find_source("x://y") is unconvertible
        assert sources.find_source("x://y", convertible=True) is None
    finally:
        sources.unregister_source("no-convert")
    assert "no-convert" not in [source.name for source in sources.registered_sources()]
    with pytest.raises(ValueError, match="kinds must be some of"):
        sources.CheckpointSource("x", "x", bool, ("regressor",), None, MobileNetBackbone)
    with pytest.raises(TypeError, match="CheckpointSource"):
        sources.register_source(object())


CASES = [
    (name, kind, point)
    for name, preset in PRESETS.items()
    for kind in next(source.kinds for source in sources.registered_sources() if source.name == name)
    for point, _ in entry_points(kind)
]


@requires_parity_fixtures()
@pytest.mark.parametrize("name, kind, point", CASES, ids=["-".join(case) for case in CASES])
def test_every_entry_point_reaches_every_source(name, kind, point, spied):
    if name.startswith("torchvision") and not HAS_TORCH:
        pytest.skip("reading .pth files needs torch")
    source = next(source for source in sources.registered_sources() if source.name == name)
    calls = spied(name)
    # A built-in name's classifier without weights has no saved head: it is given its classes.
    kwargs = {"num_classes": 3} if (name, kind) == ("built-in", "classifier") else {}
    model = dict(entry_points(kind))[point](PRESETS[name], load_weights=False, **kwargs)
    assert type(model) is EXPECTED[kind]
    # The class whose from_preset does the load: keras-hub's generic loaders hand it to the source's.
    if point.startswith("keras_hub."):
        if not source.generic:
            assert not calls  # keras-hub finds our registered built-in presets itself
            return
        final = source.backbone_cls if kind == "backbone" else source.task_cls
    elif point.endswith("(task base)"):
        final = PyramidTask
    else:
        final = ENTRY_CLASSES[point]
    if issubclass(final, PyramidTask) and final is not PyramidTask and not dispatches_through_the_base(final):
        # A head module's own from_preset, still there until the head modules have moved (the
        # "(task base)" case of the same class checks what it will run then).
        return
    assert calls, f"{point} did not load {name!r} through the registry"


def same_config(model, other):
    """Whether two models have the same config, but for Keras' generated layer names."""

    def unnamed(value):
        if isinstance(value, dict):
            return {key: unnamed(item) for key, item in value.items() if key != "name"}
        if isinstance(value, (list, tuple)):
            return [unnamed(item) for item in value]
        return value

    return unnamed(model.get_config()) == unnamed(other.get_config())


@requires_parity_fixtures()
def test_the_task_base_loads_what_each_tasks_own_copy_loads(tmp_path):
    """The base's from_preset gives what the heads' own copies (deleted since) gave, saved folders included."""
    if not HAS_TORCH:
        pytest.skip("reading .pth files needs torch")
    # What each class's own from_preset gave: a torchvision SSDLite loads as the paper's detector
    # whichever detector class asks; the base segmenter lets the checkpoint (LR-ASPP) pick the class.
    for cls, preset, kwargs, expected_cls in (
        (heads.SSDLite320ObjectDetector, PRESETS["torchvision-ssdlite"], {"score_threshold": 0.3}, heads.SSDLite320ObjectDetector),
        (heads.SSDLiteObjectDetector, PRESETS["torchvision-ssdlite"], {}, heads.SSDLite320ObjectDetector),
        (heads.LRASPPSegmenter, PRESETS["torchvision-segmentation"], {"image_size": (96, 128)}, heads.LRASPPSegmenter),
        (heads.TapSegmenter, PRESETS["torchvision-segmentation"], {}, heads.LRASPPSegmenter),
    ):  # fmt: skip
        base = through_the_base(cls)(preset, load_weights=False, **kwargs)
        assert type(base) is expected_cls, cls.__name__
        for name, value in kwargs.items():
            assert tuple(getattr(base, name)) == value if name == "image_size" else getattr(base, name) == value, name
    with pytest.raises(ValueError, match="DeepLabV3PlusSegmenter cannot load"):
        through_the_base(heads.DeepLabV3PlusSegmenter)(PRESETS["torchvision-segmentation"], load_weights=False)
    with pytest.raises(OSError, match="no_such.pth"):
        through_the_base(heads.LRASPPSegmenter)(str(tmp_path / "no_such.pth"))
    detector = heads.create_ssdlite("mobilenetv3_small_050", num_classes=3, image_size=96, load_weights=False)
    detector.save_to_preset(str(tmp_path / "saved"))
    for cls in (heads.SSDLiteObjectDetector, PyramidObjectDetector):
        loaded = through_the_base(cls)(str(tmp_path / "saved"))
        assert type(loaded) is heads.SSDLiteObjectDetector and same_config(loaded, detector)
    backbone = MobileNetBackbone("mobilenetv3_small", width_multiplier=0.5)
    backbone.save_to_preset(str(tmp_path / "bare"))
    with pytest.raises(ValueError, match="create_ssdlite"):
        through_the_base(PyramidObjectDetector)(str(tmp_path / "bare"))


def tiny_tasks():
    """One small model of each task family with its own compile, built offline."""
    yield MobileNetImageClassifier.from_preset("mobilenetv3_small_050", num_classes=3, load_weights=False)
    yield heads.create_ssdlite("mobilenetv3_small_050", num_classes=3, image_size=96, load_weights=False)
    yield heads.SSDLite320ObjectDetector.from_preset(PRESETS["torchvision-ssdlite"], load_weights=False)
    yield heads.create_deeplabv3plus("mobilenetv3_small_050", num_classes=4, image_size=64, load_weights=False)
    yield heads.LRASPPSegmenter.from_preset(PRESETS["torchvision-segmentation"], load_weights=False)


@requires_parity_fixtures()
def test_the_task_base_restores_a_saved_compile_as_each_tasks_own_copy_does():
    """compile_from_config, written once (mnet_backbones.restore_compile), against each class's own."""
    if not HAS_TORCH:
        pytest.skip("reading .pth files needs torch")
    for model in tiny_tasks():
        model.compile(optimizer=keras.optimizers.SGD(0.0125, momentum=0.5))
        config = model.get_compile_config()
        own, shared = (type(model).from_config(model.get_config()) for _ in range(2))
        type(model).compile_from_config(own, config)
        shared_restore = PyramidTask.compile_from_config if isinstance(model, PyramidTask) else restore_compile
        shared_restore(shared, config)
        name = type(model).__name__
        assert shared.get_compile_config() == own.get_compile_config() == config, name
        assert type(shared.optimizer) is keras.optimizers.SGD and shared.optimizer.built, name
        assert len(shared.optimizer.variables) == len(own.optimizer.variables), name


# ---------------------------------------------------------------------------
# The CLI's convert and export.


@requires_parity_fixtures()
@pytest.mark.skipif(not ON_TENSORFLOW, reason="the CLI runs on TensorFlow")
@pytest.mark.parametrize("name", [name for name in PRESETS if name != "built-in"])
def test_convert_goes_through_the_registry_for_every_source(name, tmp_path, capsys, spied):
    if name.startswith("torchvision") and not HAS_TORCH:
        pytest.skip("reading .pth files needs torch")
    source = next(source for source in sources.registered_sources() if source.name == name)
    converted = []
    sources.register_source(
        dataclasses.replace(source, convert=lambda *args: converted.append(args[0]) or source.convert(*args))
    )
    try:
        out = str(tmp_path / "out")
        assert cli.main(["convert", PRESETS[name], out]) == 0, capsys.readouterr().err
    finally:
        sources.register_source(source)
    assert converted == [PRESETS[name]]
    kind = next(kind for kind in source.kinds if kind != "backbone")
    generic = {"classifier": keras_hub.models.ImageClassifier, "detector": keras_hub.models.ObjectDetector}
    loaded = generic.get(kind, keras_hub.models.ImageSegmenter).from_preset(out, load_weights=False)
    assert type(loaded) is EXPECTED[kind]


@pytest.mark.skipif(not ON_TENSORFLOW, reason="the CLI runs on TensorFlow")
def test_convert_of_a_built_in_name_goes_through_the_registry(tmp_path, capsys, monkeypatch):
    source = next(source for source in sources.registered_sources() if source.name == "built-in")
    written = []

    def convert(preset, folder, progress):
        written.append(preset)
        MobileNetImageClassifier.from_preset(preset, num_classes=2, load_weights=False).save_to_preset(folder)

    sources.register_source(dataclasses.replace(source, convert=convert))
    try:
        assert cli.main(["convert", PRESETS["built-in"], str(tmp_path / "out")]) == 0
    finally:
        sources.register_source(source)
    assert written == [PRESETS["built-in"]]
    assert MobileNetImageClassifier.from_preset(str(tmp_path / "out")).num_classes == 2


def test_list_names_every_source(capsys):
    assert cli.main(["list", "--sources"]) == 0
    out = capsys.readouterr().out
    for source in sources.registered_sources():
        assert f"| {source.name} " in out and source.description in out


# ---------------------------------------------------------------------------
# A source a test registers: one module, one registry entry, every entry point.


def fake_checkpoints_module():
    """A tiny checkpoint source: presets `fake://<kind>`, each a small random model."""
    module = types.ModuleType("fake_checkpoints")
    module.loads = []

    def recognises(preset):
        return isinstance(preset, str) and preset.startswith("fake://")

    def load(cls, preset, load_weights=True, **kwargs):
        module.loads.append((cls, preset))
        kind = sources.kind_of(cls)
        if kind == "backbone":
            return MobileNetBackbone("mobilenetv3_small", width_multiplier=0.5)
        if kind == "classifier":
            return MobileNetImageClassifier(MobileNetBackbone("mobilenetv3_small", width_multiplier=0.5), num_classes=2)
        if kind == "detector":
            return heads.create_ssdlite("mobilenetv3_small_050", num_classes=2, image_size=64, load_weights=False)
        return heads.create_deeplabv3plus("mobilenetv3_small_050", num_classes=2, image_size=64, load_weights=False)

    def convert(preset, folder, progress):
        progress(f"converting {preset}")
        load(MobileNetImageClassifier, preset).save_to_preset(folder)

    module.recognises, module.load, module.convert = recognises, load, convert
    return module


@pytest.fixture
def fake_sources():
    """The fake module's registry entries (one per task class keras-hub's generic loaders hand it to)."""
    module = fake_checkpoints_module()
    entries = (
        ("fake-classifier", ("backbone", "classifier"), MobileNetImageClassifier),
        ("fake-detector", ("detector",), PyramidObjectDetector),
        ("fake-segmenter", ("segmenter",), PyramidImageSegmenter),
    )
    for name, kinds, task_cls in entries:
        sources.register_source(
            sources.CheckpointSource(
                name=name,
                description=f"a fake {kinds[-1]} checkpoint",
                recognises=lambda preset, kind=kinds[-1]: module.recognises(preset) and preset.endswith(kind),
                kinds=kinds,
                load=module.load,
                backbone_cls=MobileNetBackbone,
                task_cls=task_cls,
                convert=module.convert,
            )
        )
    yield module
    for name, _, _ in entries:
        sources.unregister_source(name)


FAKE_CASES = [(kind, point) for kind in sources.KINDS for point, _ in entry_points(kind)]


@pytest.mark.parametrize("kind, point", FAKE_CASES, ids=["-".join(case) for case in FAKE_CASES])
def test_a_registered_source_is_reached_from_every_entry_point(kind, point, fake_sources):
    from_preset = dict(entry_points(kind))[point]
    owner = getattr(from_preset, "__self__", None)
    if isinstance(owner, type) and issubclass(owner, PyramidTask) and not dispatches_through_the_base(owner):
        pytest.skip(f"{owner.__name__} still has its own from_preset; its '(task base)' case runs what it will")
    preset = f"fake://{'classifier' if kind == 'backbone' else kind}"
    model = from_preset(preset, load_weights=False)
    assert fake_sources.loads and fake_sources.loads[-1][1] == preset
    assert sources.kind_of(type(model)) == kind


@pytest.mark.skipif(not ON_TENSORFLOW, reason="the CLI runs on TensorFlow")
def test_a_registered_source_is_reached_from_convert_and_export(fake_sources, tmp_path, capsys):
    out = str(tmp_path / "converted")
    assert cli.main(["convert", "fake://classifier", out]) == 0
    assert type(keras_hub.models.ImageClassifier.from_preset(out)) is MobileNetImageClassifier
    assert cli.main(["convert", str(tmp_path / "nothing"), str(tmp_path / "out")]) == 2
    assert "a fake classifier checkpoint" in capsys.readouterr().err
    assert cli.main(["list", "--sources"]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if "| fake-detector " in line)
    assert [cell.strip() for cell in row.strip("|").split("|")] == [
        "fake-detector",
        "detector",
        "a fake detector checkpoint",
    ]
    exported = str(tmp_path / "fake.tflite")
    assert cli.main(["export", "fake://classifier", exported, "--image-size", "32"]) == 0, capsys.readouterr().err
    assert os.path.getsize(exported) > 0
    assert [preset for _, preset in fake_sources.loads] == ["fake://classifier"] * 2
