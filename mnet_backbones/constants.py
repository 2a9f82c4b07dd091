"""Numbers more than one module needs: ImageNet's label count and statistics."""

# ImageNet-1k, the label set of every published MobileNet checkpoint.
IMAGENET_CLASSES = 1000

# Per-channel RGB statistics of ImageNet, on [0, 1] pixels: the normalisation
# timm's MobileNet weights were trained with.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# The same statistics on 0..255 pixels, as the heads take raw images: mean and
# variance (std squared), the form keras' normalisation layers take.
IMAGENET_PIXEL_MEAN = tuple(mean * 255 for mean in IMAGENET_MEAN)
IMAGENET_PIXEL_VARIANCE = tuple((std * 255) ** 2 for std in IMAGENET_STD)
