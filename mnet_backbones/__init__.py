"""MobileNet V1-V4 as keras-hub feature-pyramid backbones: the core models.

`import mnet_backbones` registers the built-in presets with keras-hub, so that
`keras_hub.models.Backbone.from_preset("mobilenetv4_conv_small")` works, and
registers the core's checkpoint sources (`sources`: built-in presets, timm
MobileNet snapshots, torchvision classifier checkpoints), which every
`from_preset` dispatches through, keras-hub's generic ones included (keras-hub's
own loader would fail on V4 and build its own model for V3).

Modules, each importing only those listed before it:
- `constants`, `validation`, `architectures` (the family as data),
  `keras_hub_internals` (the one place keras-hub's private API is used);
- `layers` (the layer vocabulary), `builder` (any table -> a Keras graph);
- `presets` (the built-in presets), `convert` (timm / keras.applications
  weights, walking the same tables), `weights` (the pretrained-weights cache),
  `sources` (the one registry of checkpoint sources);
- `backbone` (`MobileNetBackbone`), `classifier` (`MobileNetImageClassifier`);
- `schedules` (`train`'s learning-rate schedule, imported here so that the
  compiled `.keras` files a training run writes load after `import mnet_backbones`);
- `predecessor_api` (the predecessor project's `MobileNetV1`...`V4`,
  `create_mobilenetv1`...`v4`).

Heads for detection and segmentation are in the `heads` package; the CLI,
export, benchmark and demos in `mnet_tools`.
"""

from mnet_backbones import architectures, keras_hub_internals, layers, schedules, sources
from mnet_backbones._version import __version__
from mnet_backbones.architectures import ARCHITECTURES
from mnet_backbones.backbone import MobileNetBackbone
from mnet_backbones.classifier import (
    MobileNetImageClassifier,
    MobileNetImageClassifierPreprocessor,
    MobileNetImageConverter,
    restore_compile,
)
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
from mnet_backbones.sources import CheckpointSource, find_source, register_source
from mnet_backbones.weights import PretrainedWeightsUnavailableError

Backbone = MobileNetBackbone

register_presets(MobileNetBackbone)
# The core's checkpoint sources: built-in presets, torchvision classifiers, timm snapshots. Every
# entry point (ours, keras-hub's generic `Backbone/ImageClassifier.from_preset`, the CLI) finds them.
for _source in sources.core_sources(MobileNetBackbone, MobileNetImageClassifier):
    sources.register_source(_source)
