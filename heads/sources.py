"""The heads' checkpoint sources: torchvision's SSDLite320, DeepLabV3 and LR-ASPP.

Registered with the core's registry (`mnet_backbones.sources`) on `import heads`,
so that every entry point takes them: the tasks' `from_preset`, keras-hub's
generic `ObjectDetector` / `ImageSegmenter.from_preset`, and
`mnet-backbones convert`. The converters are `heads.detection.torchvision` and
`heads.segmentation.torchvision`.
"""

from heads.detection import torchvision as torchvision_ssdlite
from heads.detection.ssdlite320 import SSDLite320ObjectDetector
from heads.segmentation import torchvision as torchvision_segmentation
from heads.segmentation.segmenter import TapSegmenter
from mnet_backbones import CheckpointSource, MobileNetBackbone, register_source


def load_torchvision_detector(cls, preset, load_weights=True, **kwargs):
    """torchvision's SSDLite320 as `cls`, or as `SSDLite320ObjectDetector` for any other detector class asked."""
    detector_cls = cls if issubclass(cls, SSDLite320ObjectDetector) else SSDLite320ObjectDetector
    return torchvision_ssdlite.load_ssdlite(detector_cls, preset, load_weights=load_weights, **kwargs)


def convert_torchvision_detector(preset, folder, progress):
    progress(f"converting {preset}")
    detector = SSDLite320ObjectDetector.from_preset(preset)
    progress("writing")
    detector.save_to_preset(folder)


def load_torchvision_segmenter(cls, preset, load_weights=True, **kwargs):
    """torchvision's DeepLabV3 / LR-ASPP as `cls`; on a base class the checkpoint picks the class."""
    if issubclass(TapSegmenter, cls):
        cls = None  # a base: the checkpoint picks DeepLabV3 or LR-ASPP
    elif not issubclass(cls, TapSegmenter):
        raise ValueError(
            f"{preset!r} is a torchvision DeepLabV3 / LR-ASPP checkpoint, which {cls.__name__} cannot load; use "
            "heads.DeepLabV3Segmenter, heads.LRASPPSegmenter or keras_hub.models.ImageSegmenter.from_preset()."
        )
    return torchvision_segmentation.load_segmenter(cls, preset, load_weights=load_weights, **kwargs)


def convert_torchvision_segmenter(preset, folder, progress):
    torchvision_segmentation.convert_to_preset(preset, folder, progress=progress)


TORCHVISION_DETECTOR = register_source(
    CheckpointSource(
        name="torchvision-ssdlite",
        description="a torchvision SSDLite320 checkpoint or name",
        recognises=torchvision_ssdlite.is_torchvision_source,
        kinds=("detector",),
        load=load_torchvision_detector,
        backbone_cls=MobileNetBackbone,
        task_cls=SSDLite320ObjectDetector,
        convert=convert_torchvision_detector,
    )
)
TORCHVISION_SEGMENTER = register_source(
    CheckpointSource(
        name="torchvision-segmentation",
        description="a torchvision DeepLabV3 / LR-ASPP checkpoint or name",
        recognises=torchvision_segmentation.is_segmentation_source,
        kinds=("segmenter",),
        load=load_torchvision_segmenter,
        backbone_cls=MobileNetBackbone,
        task_cls=TapSegmenter,
        convert=convert_torchvision_segmenter,
        # A segmenter's own from_preset takes any .pth (its keys say which model) or a folder with model.pth.
        also_takes=torchvision_segmentation.is_torchvision_source,
    )
)
