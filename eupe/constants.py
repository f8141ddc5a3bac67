"""Constants shared by every layer: the input normalisation of all EUPE encoders (ImageNet statistics, RGB)."""

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
