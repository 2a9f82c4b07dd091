"""The run configuration: every option that decides a run's result, saved as `config.json`.

A run folder belongs to one configuration. Running the same command again
resumes it; a command whose configuration differs is refused, naming each
differing option with both values, and the folder is left as it was (so a
typo in `--learning-rate` cannot silently graft a new run onto an old one).
"""

import dataclasses
import json
import math
import os

from mnet_backbones import files
from mnet_tools.train.lock import LOCK_FILE

CONFIG_FILE = "config.json"
TASKS = ("classification", "detection", "segmentation")
HEADS = {
    "classification": ("classifier",),
    "detection": ("ssdlite", "ssdlite320"),
    "segmentation": ("deeplabv3plus", "deeplabv3", "lraspp"),
}
# What `train`/`val` hold per task, in order (the CLI's metavars).
DATA_PARTS = {
    "classification": ("FOLDER",),
    "detection": ("ANNOTATIONS_JSON", "IMAGE_DIR"),
    "segmentation": ("IMAGE_DIR", "MASK_DIR"),
}
OPTIMIZERS = ("adamw", "sgd")
MIXED_PRECISION = ("off", "float16", "bfloat16")
# Python argument -> the CLI option that sets it, for messages.
OPTION_NAMES = {
    "task": "TASK",
    "train_data": "--train",
    "val_data": "--val",
    "preset": "--preset",
    "from_model": "--from",
    "load_weights": "--no-weights",
    "head": "--head",
    "num_classes": "--num-classes",
    "image_size": "--image-size",
    "epochs": "--epochs",
    "batch_size": "--batch-size",
    "optimizer": "--optimizer",
    "learning_rate": "--learning-rate",
    "weight_decay": "--weight-decay",
    "momentum": "--momentum",
    "warmup_epochs": "--warmup-epochs",
    "frozen_epochs": "--frozen-epochs",
    "mixed_precision": "--mixed-precision",
    "augment": "--no-augment",
    "seed": "--seed",
    "class_names": "the class list (read from the data)",
}


DEFAULT_WARMUP_EPOCHS = 1.0


def default_warmup(epochs):
    """The warm-up when none is given: one epoch, and at most half of a shorter run (so `--epochs 1` runs)."""
    is_number = isinstance(epochs, (int, float)) and not isinstance(epochs, bool)
    if is_number and 0 < epochs < 2 * DEFAULT_WARMUP_EPOCHS:
        return epochs / 2
    return DEFAULT_WARMUP_EPOCHS


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything that decides a run's weights. See `mnet_tools.train.train` for the meaning of each."""

    task: str
    train_data: tuple
    val_data: tuple
    preset: str = None
    from_model: str = None
    load_weights: bool = True
    head: str = None
    num_classes: int = None
    image_size: int = 224
    epochs: int = 10
    batch_size: int = 32
    optimizer: str = "adamw"
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    momentum: float = 0.9
    warmup_epochs: float = DEFAULT_WARMUP_EPOCHS
    frozen_epochs: int = 0
    mixed_precision: str = "off"
    augment: bool = True
    seed: int = 0
    class_names: tuple = None

    def __post_init__(self):
        check_config(self)

    def to_json(self):
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, values, source):
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"{source} has options this version does not know: {', '.join(unknown)}.")
        values = dict(values)
        for key in ("train_data", "val_data", "class_names"):
            if values.get(key) is not None:
                values[key] = tuple(values[key])
        return cls(**values)


def _choice(name, value, allowed):
    if value not in allowed:
        raise ValueError(f"{OPTION_NAMES[name]} must be one of {', '.join(allowed)}; got {value!r}.")


def _positive(name, value, integer=True, zero=False):
    kind = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kind) or not math.isfinite(value):
        raise TypeError(f"{OPTION_NAMES[name]} must be a {'whole ' if integer else ''}number; got {value!r}.")
    if value < 0 or (value == 0 and not zero):
        raise ValueError(f"{OPTION_NAMES[name]} must be {'>= 0' if zero else '> 0'}; got {value!r}.")


def check_config(config):
    """Checks every option; raises ValueError/TypeError naming the option, the value and what is allowed."""
    _choice("task", config.task, TASKS)
    parts = DATA_PARTS[config.task]
    for name in ("train_data", "val_data"):
        data = getattr(config, name)
        if not isinstance(data, tuple) or len(data) != len(parts):
            raise ValueError(f"{OPTION_NAMES[name]} for {config.task} takes {' '.join(parts)}; got {data!r}.")
    if (config.preset is None) == (config.from_model is None):
        raise ValueError("Give exactly one of --preset (a backbone preset) and --from (a model to continue from).")
    if config.head is not None:
        _choice("head", config.head, HEADS[config.task])
    if config.num_classes is not None:
        _positive("num_classes", config.num_classes)
    for name in ("image_size", "epochs", "batch_size"):
        _positive(name, getattr(config, name))
    _choice("optimizer", config.optimizer, OPTIMIZERS)
    _choice("mixed_precision", config.mixed_precision, MIXED_PRECISION)
    _positive("learning_rate", config.learning_rate, integer=False)
    _positive("weight_decay", config.weight_decay, integer=False, zero=True)
    _positive("momentum", config.momentum, integer=False, zero=True)
    _positive("warmup_epochs", config.warmup_epochs, integer=False, zero=True)
    _positive("frozen_epochs", config.frozen_epochs, zero=True)
    if config.warmup_epochs >= config.epochs:
        raise ValueError(
            f"--warmup-epochs ({config.warmup_epochs}) must be less than --epochs ({config.epochs}): "
            "the cosine decay follows the warmup."
        )
    if config.frozen_epochs > config.epochs:
        raise ValueError(f"--frozen-epochs ({config.frozen_epochs}) is more than --epochs ({config.epochs}).")
    if not isinstance(config.seed, int) or isinstance(config.seed, bool):
        raise TypeError(f"--seed must be a whole number; got {config.seed!r}.")


def differences(saved, wanted):
    """`[(option, saved value, wanted value)]` for each option the two configurations set differently."""
    rows = []
    for field in dataclasses.fields(TrainConfig):
        old, new = getattr(saved, field.name), getattr(wanted, field.name)
        if old != new:
            rows.append((OPTION_NAMES[field.name], old, new))
    return rows


def read_config(folder):
    """The configuration saved in a run folder, or None if it has none."""
    path = os.path.join(folder, CONFIG_FILE)
    if not os.path.exists(path):
        return None
    return TrainConfig.from_dict(files.read_json(path), path)


def check_resumable(folder, config):
    """Raises a ValueError naming every differing option if `folder` holds a run of another configuration.

    A folder with files but no `config.json` is not a run folder, and is refused too.
    """
    saved = read_config(folder)
    if saved is None:
        names = os.listdir(folder) if os.path.isdir(folder) else []
        # The lock file alone is that of a run killed before it wrote its configuration, or of this run.
        visible = [name for name in names if not name.startswith(".") and name != LOCK_FILE]
        if visible:
            raise ValueError(
                f"Output folder {folder!r} is not empty and has no {CONFIG_FILE}, so it is not a run folder; "
                "give a new or empty --out-dir. Nothing was changed in it."
            )
        return None
    rows = differences(saved, config)
    if rows:
        listed = "; ".join(f"{option}: {old!r} in the folder, {new!r} now" for option, old, new in rows)
        raise ValueError(
            f"Run folder {folder!r} holds a run of another configuration ({listed}). Run the same command to "
            "resume it, or give a new --out-dir. Nothing was changed in it."
        )
    return saved


def write_config(folder, config):
    with files.atomic_file(os.path.join(folder, CONFIG_FILE)) as partial:
        with open(partial, "w") as file:
            file.write(config.to_json())
