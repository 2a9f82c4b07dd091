"""Optimizers for `train`: AdamW or SGD with momentum, a cosine schedule with linear warmup.

Weight decay is not applied to BatchNorm scales and offsets, nor to biases
(as timm and torchvision's reference recipes exclude them): decaying a BN
scale towards 0 shrinks the activations it normalised, which is not a
regulariser but a change of the function. They are the model's one-dimensional
variables, so the rule is "decay only the kernels".
"""

import math

import keras


@keras.saving.register_keras_serializable(package="mnet_tools")
class WarmupCosine(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warmup to `peak`, then a half cosine to 0 at `total_steps`.

    `step` is the optimizer's count of updates already applied (0 for the first):
    - `step < warmup_steps`: `peak * (step + 1) / warmup_steps` (the first
      update already moves, the last warmup update uses `peak`);
    - after: `peak * 0.5 * (1 + cos(pi * (step - warmup_steps) / (total_steps - warmup_steps)))`;
    - from `total_steps` on: 0.

    Example:
    ```python
    from mnet_tools.train.optim import WarmupCosine

    schedule = WarmupCosine(peak=0.1, warmup_steps=10, total_steps=110)
    float(schedule(0)), float(schedule(9)), float(schedule(60))  # 0.01, 0.1, 0.05
    ```
    """

    def __init__(self, peak, warmup_steps, total_steps):
        if not total_steps > warmup_steps >= 0:
            raise ValueError(
                f"The schedule needs 0 <= warmup steps < total steps; got {warmup_steps} and {total_steps}. "
                "Lower --warmup-epochs or raise --epochs."
            )
        self.peak = float(peak)
        self.warmup_steps = int(warmup_steps)
        self.total_steps = int(total_steps)

    def __call__(self, step):
        step = keras.ops.cast(step, "float32")
        warmup = self.peak * (step + 1.0) / max(self.warmup_steps, 1)
        progress = keras.ops.minimum((step - self.warmup_steps) / (self.total_steps - self.warmup_steps), 1.0)
        cosine = 0.5 * self.peak * (1.0 + keras.ops.cos(math.pi * progress))
        return keras.ops.where(step < self.warmup_steps, warmup, cosine)

    def get_config(self):
        return {"peak": self.peak, "warmup_steps": self.warmup_steps, "total_steps": self.total_steps}


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
