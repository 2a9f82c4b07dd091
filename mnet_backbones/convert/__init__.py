"""Weight converters: timm checkpoints (`convert.timm`), torchvision `.pth`
checkpoints (`convert.torchvision`) and keras.applications models
(`from_keras_application`), each one mapping walking the architecture
tables; `convert.mapping` assigns all tensors or none."""

from mnet_backbones.convert.keras_applications import from_keras_application
from mnet_backbones.convert.mapping import WeightMismatchError
