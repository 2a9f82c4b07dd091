"""MobileNet V1-V4 as keras-hub feature-pyramid backbones.

`import mnet_backbones` registers the built-in presets with keras-hub, so that
`keras_hub.models.Backbone.from_preset("mobilenetv4_conv_small")` works.
"""

from mnet_backbones import architectures, layers
from mnet_backbones.architectures import ARCHITECTURES
from mnet_backbones.backbone import MobileNetBackbone
from mnet_backbones.classifier import (
    MobileNetImageClassifier,
    MobileNetImageClassifierPreprocessor,
    MobileNetImageConverter,
)
from mnet_backbones.macs import count_macs
from mnet_backbones.presets import PRESETS, register_presets
from mnet_backbones.seed import (
    MobileNetV1,
    MobileNetV2,
    MobileNetV3,
    MobileNetV4,
    create_mobilenetv1,
    create_mobilenetv2,
    create_mobilenetv3,
    create_mobilenetv4,
)
from mnet_backbones.weights import PretrainedWeightsUnavailableError

Backbone = MobileNetBackbone

register_presets()

__version__ = "0.1.0"
