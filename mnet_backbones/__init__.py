"""MobileNet V1-V4 as keras-hub feature-pyramid backbones: the core models.

`import mnet_backbones` registers the built-in presets with keras-hub, so that
`keras_hub.models.Backbone.from_preset("mobilenetv4_conv_small")` works, and
routes timm MobileNet snapshots and torchvision classifier checkpoints given to
keras-hub's generic `from_preset` to our converters (keras-hub's own would fail on V4 and build its own model for V3).

Modules, each importing only those listed before it:
- `constants`, `validation`, `architectures` (the family as data),
  `keras_hub_internals` (the one place keras-hub's private API is used);
- `layers` (the layer vocabulary), `builder` (any table -> a Keras graph);
- `presets` (the built-in presets), `convert` (timm / keras.applications
  weights, walking the same tables), `weights` (the pretrained-weights cache);
- `backbone` (`MobileNetBackbone`), `classifier` (`MobileNetImageClassifier`);
- `schedules` (`train`'s learning-rate schedule, imported here so that the
  compiled `.keras` files a training run writes load after `import mnet_backbones`);
- `predecessor_api` (the predecessor project's `MobileNetV1`...`V4`,
  `create_mobilenetv1`...`v4`).

Heads for detection and segmentation are in the `heads` package; the CLI,
export, benchmark and demos in `mnet_tools`.
"""

from mnet_backbones import architectures, keras_hub_internals, layers, schedules
from mnet_backbones._version import __version__
from mnet_backbones.architectures import ARCHITECTURES
from mnet_backbones.backbone import MobileNetBackbone
from mnet_backbones.classifier import (
    MobileNetImageClassifier,
    MobileNetImageClassifierPreprocessor,
    MobileNetImageConverter,
)
from mnet_backbones.convert import timm as _timm
from mnet_backbones.convert import torchvision as _torchvision
from mnet_backbones.predecessor_api import (
    MobileNetV1,
    MobileNetV2,
    MobileNetV3,
    MobileNetV4,
    create_mobilenetv1,
    create_mobilenetv2,
    create_mobilenetv3,
    create_mobilenetv4,
)
from mnet_backbones.presets import PRESETS, register_presets
from mnet_backbones.weights import PretrainedWeightsUnavailableError

Backbone = MobileNetBackbone

register_presets(MobileNetBackbone)
# keras-hub's generic entry points (`keras_hub.models.Backbone.from_preset`,
# `ImageClassifier.from_preset`) give our models for the checkpoints we convert.
keras_hub_internals.route_presets(_timm.is_mobilenet_snapshot, MobileNetBackbone, MobileNetImageClassifier)
keras_hub_internals.route_presets(_torchvision.is_classifier_checkpoint, MobileNetBackbone, MobileNetImageClassifier)
