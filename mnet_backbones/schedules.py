"""The learning-rate schedule of `mnet-backbones train`, here so that the files a run writes load anywhere.

A compiled model's `.keras` file stores its optimizer, and with it the
schedule, by registered name. Keras finds a custom class only once the module
registering it has been imported; the schedule lives in the lowest package so
that `import mnet_backbones` (which every reader of these models imports) is
enough to load `best.keras` with `keras.saving.load_model`, compiled or not,
and `mnet-backbones export` needs nothing from the training code.

Files written before it moved name it `mnet_tools>WarmupCosine`; that name
resolves to this class too.
"""

import math

import keras


@keras.saving.register_keras_serializable(package="mnet_backbones")
class WarmupCosine(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warmup to `peak`, then a half cosine to 0 at `total_steps`.

    `step` is the optimizer's count of updates already applied (0 for the first):
    - `step < warmup_steps`: `peak * (step + 1) / warmup_steps` (the first
      update already moves, the last warmup update uses `peak`);
    - after: `peak * 0.5 * (1 + cos(pi * (step - warmup_steps) / (total_steps - warmup_steps)))`;
    - from `total_steps` on: 0.

    Example:
    ```python
    from mnet_backbones.schedules import WarmupCosine

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


# The name under which files written before the move (by `mnet_tools.train.optim`) stored the schedule.
FORMER_REGISTERED_NAME = "mnet_tools>WarmupCosine"
keras.saving.get_custom_objects()[FORMER_REGISTERED_NAME] = WarmupCosine
