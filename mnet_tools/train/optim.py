"""Optimizers for `train`: AdamW or SGD with momentum, a cosine schedule with linear warmup.

Weight decay is not applied to BatchNorm scales and offsets, nor to biases
(as timm and torchvision's reference recipes exclude them): decaying a BN
scale towards 0 shrinks the activations it normalised, which is not a
regulariser but a change of the function. They are the model's one-dimensional
variables, so the rule is "decay only the kernels".
"""

import keras

# The schedule lives in the core package so that `import mnet_backbones` alone loads a run's `.keras` files.
from mnet_backbones.schedules import WarmupCosine

__all__ = ["WarmupCosine", "make_optimizer"]


def make_optimizer(config, model, steps_per_epoch):
    """The optimizer of `config` for `model`, with its schedule, and decay excluded from 1-D variables.

    Build it while every variable is trainable (see `train`): frozen-backbone
    epochs then update a subset of the variables it was built with.
    """
    total_steps = config.epochs * steps_per_epoch
    warmup_steps = round(config.warmup_epochs * steps_per_epoch)
    schedule = WarmupCosine(config.learning_rate, warmup_steps, total_steps)
    weight_decay = config.weight_decay or None
    if config.optimizer == "adamw":
        optimizer = keras.optimizers.AdamW(schedule, weight_decay=config.weight_decay, global_clipnorm=10.0)
    else:
        optimizer = keras.optimizers.SGD(
            schedule, momentum=config.momentum, nesterov=True, weight_decay=weight_decay, global_clipnorm=10.0
        )
    excluded = [v for v in model.trainable_variables if len(v.shape) < 2]
    if excluded:
        optimizer.exclude_from_weight_decay(var_list=excluded)
    return optimizer
