"""The only place this project imports keras-hub's private (`keras_hub.src`) API.

keras-hub has no public way to do three things this project needs:
- register built-in presets for a backbone class, so that
  `keras_hub.models.Backbone.from_preset("<name>")` finds them
  (`register_presets`, which keras-hub's own models call);
- load a task saved with `save_to_preset` as a given class: the public
  `Task.from_preset` only looks up a task class registered for the saved
  backbone's class, and the heads take any backbone (`get_preset_loader`);
- hand a checkpoint that only this project converts faithfully (a timm
  MobileNetV4 snapshot, a timm MobileNetV3 that keras-hub would turn into its
  own, different model) from keras-hub's generic entry points
  (`keras_hub.models.Backbone.from_preset`, `ImageClassifier.from_preset`, ...)
  to this project's classes (`route_presets`, fed by the registry of checkpoint
  sources, `mnet_backbones.sources`). keras-hub picks a loader by
  the folder's `config.json` alone and has no registry of loaders, so the
  function its models call is wrapped.

Everything else comes from keras-hub's public API. If keras-hub moves any of
these, the import below fails at `import mnet_backbones`, and
`tests/test_layering.py` names this module; `tests/test_keras_hub_entry_points.py`
checks that the routing still reaches our classes.
"""

import os

from keras_hub.src.layers.preprocessing import image_converter as _image_converter_module
from keras_hub.src.models import backbone as _backbone_module
from keras_hub.src.models import preprocessor as _preprocessor_module
from keras_hub.src.models import task as _task_module
from keras_hub.src.utils.preset_utils import PresetLoader, get_preset_loader, register_presets

from mnet_backbones import files

__all__ = ["get_preset_loader", "load_task_preset", "register_presets", "route_presets"]

# The modules whose `from_preset` looks the loader up by this name.
_CALLERS = (_backbone_module, _task_module, _image_converter_module, _preprocessor_module)


def load_task_preset(task_cls, preset, load_weights=True, **kwargs):
    """Loads the task saved in `preset` (a `save_to_preset` folder or handle) as `task_cls`.

    A local folder's files are checked first, so that a broken one is named
    (`files.check_preset_folder`).
    """
    if isinstance(preset, str) and os.path.isdir(preset):
        files.check_preset_folder(preset, weights=load_weights)
    return get_preset_loader(preset).load_task(task_cls, load_weights, True, **kwargs)


class _DelegatingLoader(PresetLoader):
    """A keras-hub preset loader that hands the whole load to a checkpoint source's classes' `from_preset`."""

    def __init__(self, preset, source):
        super().__init__(preset, {})
        self.source = source
        self.backbone_cls = source.backbone_cls
        self.task_cls = source.task_cls

    def check_backbone_class(self):
        return self.backbone_cls

    def load_backbone(self, cls, load_weights, **kwargs):
        return self.backbone_cls.from_preset(self.preset, load_weights=load_weights, **kwargs)

    def load_task(self, cls, load_weights, load_task_weights, **kwargs):
        if self.task_cls is None or not issubclass(self.task_cls, cls):
            holds = self.task_cls or self.backbone_cls
            raise ValueError(
                f"{self.preset!r} holds a {holds.__name__} checkpoint; {cls.__name__} cannot load it. "
                f"Use {holds.__name__}.from_preset() or {self.backbone_cls.__name__}.from_preset()."
            )
        return self.task_cls.from_preset(self.preset, load_weights=load_weights, **kwargs)

    def _preprocessor(self):
        if self.task_cls is None:
            raise ValueError(f"{self.preset!r} ({self.backbone_cls.__name__}) has no preprocessor to load.")
        task = self.task_cls.from_preset(self.preset, load_weights=False)
        if getattr(task, "preprocessor", None) is None:
            raise ValueError(f"{self.preset!r} ({self.task_cls.__name__}) has no preprocessor to load.")
        return task.preprocessor

    def load_image_converter(self, cls, **kwargs):
        return self._preprocessor().image_converter

    def load_preprocessor(self, cls, config_file=None, **kwargs):
        return self._preprocessor()


_find_source = None


def _routed_get_preset_loader(preset):
    if isinstance(preset, str) and os.path.isdir(preset):
        # keras-hub's own reader gives a bare JSONDecodeError; the weights are checked when loaded.
        files.check_preset_folder(preset, weights=False)
    source = _find_source(preset) if _find_source is not None else None
    if source is not None:
        return _DelegatingLoader(preset, source)
    return get_preset_loader(preset)


def route_presets(find_source):
    """Send every preset for which `find_source(preset)` gives a checkpoint source to its classes.

    `find_source` is the registry's lookup (`mnet_backbones.sources`, which
    calls this once). After this, keras-hub's generic
    `Backbone.from_preset(preset)` returns the source's
    `backbone_cls.from_preset(preset)`, and the generic task entry point that
    finds its `task_cls` (`ImageClassifier.from_preset` for a classifier,
    `ObjectDetector.from_preset` for a detector deriving from a base
    registered for `backbone_cls`) returns `task_cls.from_preset(preset)`.
    Presets no source takes go to keras-hub's own loader unchanged.
    """
    global _find_source
    _find_source = find_source
    for module in _CALLERS:
        module.get_preset_loader = _routed_get_preset_loader
