"""The two task bases every head in `heads` derives from, for keras-hub's generic loaders.

keras-hub's `ObjectDetector.from_preset(folder)` and
`ImageSegmenter.from_preset(folder)` read the backbone class saved in the
folder and look for a task class registered with that `backbone_cls`. The
heads take any feature pyramid, so their own classes declare none; these
bases declare `MobileNetBackbone`, so a detector or segmenter saved on one of
our backbones is found, and keras-hub then loads the exact class its
`task.json` names (any subclass of the base). A preset folder without a saved
task (a bare backbone) has no head to load: the base says which function
builds one.
"""

import keras
from keras_hub.models import ImageSegmenter, ObjectDetector

from mnet_backbones import MobileNetBackbone


def _refuse(task_name, builders):
    raise ValueError(
        f"This preset holds no {task_name} (no task.json saved by save_to_preset): only a backbone. "
        f"Build a head on it with {builders}, e.g. heads.create_ssdlite(preset, num_classes=...)."
    )


@keras.saving.register_keras_serializable(package="heads")
class PyramidObjectDetector(ObjectDetector):
    """Base of the detectors in `heads` (see the module docstring); not built itself."""

    backbone_cls = MobileNetBackbone

    def __init__(self, *args, **kwargs):
        if type(self) is PyramidObjectDetector:
            _refuse("detector", "heads.create_ssdlite()")
        super().__init__(*args, **kwargs)


@keras.saving.register_keras_serializable(package="heads")
class PyramidImageSegmenter(ImageSegmenter):
    """Base of the segmenters in `heads` (see the module docstring); not built itself."""

    backbone_cls = MobileNetBackbone

    def __init__(self, *args, **kwargs):
        if type(self) is PyramidImageSegmenter:
            _refuse("segmenter", "heads.create_deeplabv3plus()")
        super().__init__(*args, **kwargs)
