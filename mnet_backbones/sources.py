"""The one registry of checkpoint sources: where a preset argument's model comes from.

A `CheckpointSource` says how it recognises a preset argument (a built-in
name, a timm snapshot, a torchvision `.pth`...), which kinds of model it gives
(`"backbone"`, `"classifier"`, `"detector"`, `"segmenter"`), how it loads one
for the class asked, and how `mnet-backbones convert` writes it as a preset
folder. Every entry point asks `find_source` and hands the load to the answer:
`MobileNetBackbone.from_preset`, `MobileNetImageClassifier.from_preset`, the
heads' task `from_preset`, keras-hub's generic `Backbone`, `ImageClassifier`,
`ObjectDetector` and `ImageSegmenter.from_preset` (through
`keras_hub_internals.route_presets`), and the CLI's `convert`. A preset no
source takes goes to keras-hub's own loader (a `save_to_preset` folder, a
keras-hub handle).

The core registers the built-in presets (their cached conversion), timm
snapshots and `hf://timm/...` handles, and torchvision's classifier
checkpoints (`core_sources`, from `mnet_backbones/__init__.py`); `heads`
registers torchvision's SSDLite, DeepLabV3 and LR-ASPP (`heads/sources.py`).
Adding a source is one module (its converter) and one `register_source` call.

Example:
```python
from mnet_backbones import sources

[source.name for source in sources.registered_sources()]
# ['built-in', 'torchvision-classifier', 'timm', ...]
sources.find_source("mobilenetv4_conv_small").name  # 'built-in'
```
"""

import dataclasses
import shutil
from collections.abc import Callable
from typing import Any

import keras_hub

from mnet_backbones import files, keras_hub_internals, weights
from mnet_backbones.convert import timm, torchvision
from mnet_backbones.presets import is_builtin_preset

__all__ = [
    "KINDS",
    "CheckpointSource",
    "core_sources",
    "find_source",
    "kind_of",
    "load_with_keras_hub",
    "register_source",
    "registered_sources",
    "unregister_source",
]

# The kinds of model a source gives, and the keras-hub class each kind derives from.
KINDS = {
    "backbone": keras_hub.models.Backbone,
    "classifier": keras_hub.models.ImageClassifier,
    "detector": keras_hub.models.ObjectDetector,
    "segmenter": keras_hub.models.ImageSegmenter,
}


@dataclasses.dataclass(frozen=True)
class CheckpointSource:
    """One kind of checkpoint every entry point takes.

    Attributes:
        name: a short name, unique in the registry (`"timm"`).
        description: what it takes, for people (`convert`'s error lists them):
            "a timm snapshot folder or hf://timm handle".
        recognises: `preset -> bool`, true only for what is recognisably this
            source's, reading no weights and downloading nothing: the test
            keras-hub's generic entry points and `convert` use.
        kinds: the kinds of model it gives (keys of `KINDS`).
        load: `(cls, preset, load_weights=True, **kwargs) -> model`, a model
            for the class asked (a subclass of the kind's class; a source may
            give its own class for a base, as SSDLite's does).
        backbone_cls: the backbone its models are built on: keras-hub's
            generic task loaders look the task class up by it.
        task_cls: the task class keras-hub's generic task entry points hand
            the preset to (None: backbones only).
        convert: `(preset, folder, progress) -> None`, writes the preset into
            the empty `folder`; None if `convert` does not take it.
        also_takes: `preset -> bool`, a looser test for the source's own
            classes (`backbone_cls`, `task_cls` and their subclasses): what
            their `from_preset` takes though no other entry point would
            claim it (any `.pth` file for a torchvision segmenter, any
            `hf://` handle for our classifier). None: `recognises` only.
        generic: whether keras-hub's generic entry points hand it to our
            classes (False for names keras-hub finds by itself, the
            registered built-in presets).
    """

    name: str
    description: str
    recognises: Callable[[Any], bool]
    kinds: tuple
    load: Callable[..., Any]
    backbone_cls: type
    task_cls: type = None
    convert: Callable[..., None] = None
    also_takes: Callable[[Any], bool] = None
    generic: bool = True

    def __post_init__(self):
        unknown = set(self.kinds) - set(KINDS)
        if not self.kinds or unknown:
            raise ValueError(f"Source {self.name!r}: kinds must be some of {sorted(KINDS)}; got {self.kinds!r}.")

    def own_class(self, kind):
        """The class of ours that gives `kind` from this source."""
        return self.backbone_cls if kind == "backbone" else self.task_cls


_SOURCES = []


def register_source(source):
    """Adds `source` to the registry (a source of the same name is replaced, keeping its place)."""
    if not isinstance(source, CheckpointSource):
        raise TypeError(f"register_source takes a CheckpointSource. Received: {type(source).__name__}.")
    for index, registered in enumerate(_SOURCES):
        if registered.name == source.name:
            _SOURCES[index] = source
            return source
    _SOURCES.append(source)
    return source


def unregister_source(name):
    """Removes the source named `name` (for tests that register their own)."""
    _SOURCES[:] = [source for source in _SOURCES if source.name != name]


def registered_sources():
    """The registered sources, in the order they are tried."""
    return tuple(_SOURCES)


def kind_of(cls):
    """The kind (`"backbone"`, `"classifier"`, ...) of model class `cls`, or None for another task."""
    for kind, base in KINDS.items():
        if isinstance(cls, type) and issubclass(cls, base):
            return kind
    return None


def find_source(preset, cls=None, generic_only=False, convertible=False):
    """The source that takes `preset`, or None (keras-hub's own loader then).

    With `cls` (the class whose `from_preset` was called), only sources
    giving its kind are asked: first whether one recognises `preset`, then
    whether one of whose own classes `cls` is also takes it. Without `cls`
    (keras-hub's generic loaders, `convert`), the first source that
    recognises it. `generic_only` leaves out the sources keras-hub finds by
    itself; `convertible` keeps only those `convert` takes.
    """
    kind = kind_of(cls) if cls is not None else None
    if cls is not None and kind is None:
        return None
    candidates = [
        source
        for source in _SOURCES
        if (kind is None or kind in source.kinds)
        and (source.generic or not generic_only)
        and (source.convert is not None or not convertible)
    ]
    for source in candidates:
        if source.recognises(preset):
            return source
    if kind is None:
        return None
    for source in candidates:
        own = source.own_class(kind)
        if source.also_takes is not None and own is not None and issubclass(cls, own) and source.also_takes(preset):
            return source
    return None


def _route(preset):
    return find_source(preset, generic_only=True)


keras_hub_internals.route_presets(_route)


# ---------------------------------------------------------------------------
# The core's sources. The model classes come in as arguments: this module sits below them.


def load_with_keras_hub(cls, preset, load_weights=True, **kwargs):
    """keras-hub's own `from_preset` for `cls` (a folder or handle no source takes)."""
    base = keras_hub.models.Backbone if issubclass(cls, keras_hub.models.Backbone) else keras_hub.models.Task
    return base.from_preset.__func__(cls, preset, load_weights=load_weights, **kwargs)


def _is_backbone(cls):
    return issubclass(cls, keras_hub.models.Backbone)


def _load_built_in(cls, name, load_weights=True, **kwargs):
    if load_weights:
        # The cache holds the whole classifier; a backbone reads its part.
        name = weights.ensure_cached(name) if _is_backbone(cls) else weights.ensure_cached(name, cls)
    return load_with_keras_hub(cls, name, load_weights=load_weights, **kwargs)


def _load_torchvision_classifier(cls, preset, load_weights=True, **kwargs):
    load = torchvision.backbone_from_checkpoint if _is_backbone(cls) else torchvision.classifier_from_checkpoint
    return load(cls, preset, load_weights=load_weights, **kwargs)


def _load_timm(cls, preset, load_weights=True, **kwargs):
    snapshot = timm.resolve_snapshot(preset)
    load = timm.backbone_from_snapshot if _is_backbone(cls) else timm.classifier_from_snapshot
    return load(cls, snapshot, load_weights=load_weights, **kwargs)


def _takes_torchvision_checkpoint(preset):
    # Any torchvision checkpoint folder or file: one of another task is refused by name when loaded.
    return torchvision.resolve_checkpoint(preset) is not None


def _takes_timm(preset):
    return isinstance(preset, str) and (preset.startswith(timm.HF_SCHEME) or timm.is_timm_snapshot(preset))


def core_sources(backbone_cls, classifier_cls):
    """The core's sources, on its two classes (`mnet_backbones/__init__.py` registers them)."""

    def convert_built_in(name, folder, progress):
        progress(f"resolving {weights.checkpoint_source(name)}")
        cached = weights.ensure_cached(name, classifier_cls, progress=progress)
        progress(f"copying {cached}")
        shutil.copytree(cached, folder, dirs_exist_ok=True)

    def convert_timm(preset, folder, progress):
        progress(f"reading {preset}")
        snapshot = timm.resolve_snapshot(preset)
        files.check_preset_folder(snapshot)
        progress("converting")
        classifier = timm.classifier_from_snapshot(classifier_cls, snapshot)
        progress("writing")
        classifier.save_to_preset(folder)

    def convert_torchvision_classifier(preset, folder, progress):
        progress(f"converting {preset}")
        classifier = classifier_cls.from_preset(preset)
        progress("writing")
        classifier.save_to_preset(folder)

    common = dict(kinds=("backbone", "classifier"), backbone_cls=backbone_cls, task_cls=classifier_cls)
    return (
        CheckpointSource(
            name="built-in",
            description="a built-in preset",
            recognises=is_builtin_preset,
            load=_load_built_in,
            convert=convert_built_in,
            generic=False,
            **common,
        ),
        CheckpointSource(
            name="torchvision-classifier",
            description="a torchvision ImageNet classifier checkpoint",
            recognises=torchvision.is_classifier_checkpoint,
            load=_load_torchvision_classifier,
            convert=convert_torchvision_classifier,
            also_takes=_takes_torchvision_checkpoint,
            **common,
        ),
        CheckpointSource(
            name="timm",
            description="a timm snapshot folder or hf://timm handle",
            recognises=timm.is_mobilenet_snapshot,
            load=_load_timm,
            convert=convert_timm,
            also_takes=_takes_timm,
            **common,
        ),
    )
