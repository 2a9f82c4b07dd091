"""How a head takes its backbone: any keras-hub feature pyramid, or a preset name.

A head sees only the backbone's maps it names, through a model on the
backbone's inputs: pyramid levels (`pyramid_model`, `backbone.pyramid_outputs`)
or named feature taps (`tap_model`: `backbone.feature_taps`, falling back to
the pyramid levels, as torchvision's heads read a MobileNetV3's maps by
name). The `create_*` functions take a backbone instance or a preset name and
split their keyword arguments between the backbone's `from_preset` and the
head.
"""

import inspect

import keras
import keras_hub


def _check_feature_pyramid(backbone):
    if not isinstance(backbone, keras.Model) or not hasattr(backbone, "pyramid_outputs"):
        raise TypeError(
            "`backbone` must be a keras_hub FeaturePyramidBackbone (a model with "
            f"`pyramid_outputs`), got {type(backbone).__name__}."
        )


def check_pyramid_backbone(backbone, levels, head):
    """A TypeError unless `backbone` is a feature pyramid model, a ValueError unless it has `levels`.

    Example:
    ```python
    check_pyramid_backbone(backbone, ("P4", "P5"), "SSDLite")
    ```
    """
    _check_feature_pyramid(backbone)
    missing = set(levels) - set(backbone.pyramid_outputs)
    if missing:
        raise ValueError(
            f"{head} needs pyramid levels {' and '.join(levels)}; the backbone lacks {sorted(missing)} "
            f"(it has {sorted(backbone.pyramid_outputs)})."
        )


def pyramid_model(backbone, levels):
    """A model from the backbone's inputs to `{level: map}` for `levels`: all a head reads of it.

    Example:
    ```python
    features = pyramid_model(backbone, ("P4", "P5"))(images)  # {"P4": ..., "P5": ...}
    ```
    """
    return keras.Model(backbone.inputs, {level: backbone.pyramid_outputs[level] for level in levels}, name="pyramid")


def available_taps(backbone):
    """`{name: symbolic map}`: the backbone's `feature_taps` where it has them, and its pyramid levels.

    Example:
    ```python
    sorted(available_taps(backbone))  # [..., "P5", "blocks.2.0", ..., "final", "stem"]
    ```
    """
    _check_feature_pyramid(backbone)
    taps = dict(backbone.pyramid_outputs)
    taps.update(getattr(backbone, "feature_taps", None) or {})
    return taps


def tap_model(backbone, names, head):
    """A model from the backbone's inputs to `{name: map}` for the taps a head reads.

    Raises a ValueError naming the missing tap and those the backbone has.

    Example:
    ```python
    features = tap_model(backbone, ("blocks.2.0", "final"), "LR-ASPP")(images)
    ```
    """
    taps = available_taps(backbone)
    for name in names:
        if name not in taps:
            raise ValueError(
                f"{head} reads the backbone's map {name!r}, which this backbone does not have. "
                f"Available: {sorted(taps)}."
            )
    return keras.Model(backbone.inputs, {name: taps[name] for name in names}, name="taps")


def split_task_kwargs(task_cls, kwargs):
    """`kwargs` split into `(task_kwargs, backbone_kwargs)` by the task's constructor arguments.

    The task takes the named parameters of `task_cls.__init__` and `name`
    (which Keras takes); everything else is left for the backbone.

    Example:
    ```python
    split_task_kwargs(heads.SSDLiteObjectDetector, {"score_threshold": 0.2, "load_weights": False})
    # ({"score_threshold": 0.2}, {"load_weights": False})
    ```
    """
    parameters = inspect.signature(task_cls.__init__).parameters.values()
    named = {p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)} | {"name"}
    task_kwargs = {key: value for key, value in kwargs.items() if key in named}
    backbone_kwargs = {key: value for key, value in kwargs.items() if key not in named}
    return task_kwargs, backbone_kwargs


def resolve_backbone(backbone, backbone_kwargs, **preset_kwargs):
    """`backbone` itself, or the backbone of that preset name loaded with `backbone_kwargs` and `preset_kwargs`.

    `backbone_kwargs` (the caller's arguments the head does not take) are
    `from_preset` arguments: with a backbone instance, any of them is a
    TypeError naming them. `preset_kwargs` are the head's own settings for
    a preset backbone (DeepLab's `output_stride`).

    Example:
    ```python
    backbone = resolve_backbone("mobilenetv4_conv_small", {"load_weights": False})
    ```
    """
    if isinstance(backbone, str):
        return keras_hub.models.Backbone.from_preset(backbone, **preset_kwargs, **backbone_kwargs)
    if backbone_kwargs:
        raise TypeError(
            f"Unexpected arguments {sorted(backbone_kwargs)}: preset arguments only apply when "
            "`backbone` is a preset name."
        )
    return backbone
