"""The only place this project imports keras-hub's private (`keras_hub.src`) API.

keras-hub has no public way to do two things this project needs:
- register built-in presets for a backbone class, so that
  `keras_hub.models.Backbone.from_preset("<name>")` finds them
  (`register_presets`, which keras-hub's own models call);
- load a task saved with `save_to_preset` as a given class: the public
  `Task.from_preset` only looks up a task class registered for the saved
  backbone's class, and the heads take any backbone (`get_preset_loader`).

Everything else comes from keras-hub's public API. If keras-hub moves either
function, the import below fails at `import mnet_backbones`, and
`tests/test_layering.py` names this module.
"""

from keras_hub.src.utils.preset_utils import get_preset_loader, register_presets

__all__ = ["get_preset_loader", "load_task_preset", "register_presets"]


def load_task_preset(task_cls, preset, load_weights=True, **kwargs):
    """Loads the task saved in `preset` (a `save_to_preset` folder or handle) as `task_cls`."""
    return get_preset_loader(preset).load_task(task_cls, load_weights, True, **kwargs)
