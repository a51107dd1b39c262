#!/usr/bin/env python
"""Convert torchvision ImageNet ResNet weights to a detectron2 .pkl for the R50/R101 configs.

    python tools/convert-torchvision-to-d2.py resnet50-0676ba61.pth R-50.pkl

Input: a torchvision ResNet state dict (.pth), optionally wrapped as {"model": ...} or
{"state_dict": ...}. Output: {"model": {name: numpy}, "__author__": "torchvision",
"matching_heuristics": True} with detectron2's names (stem.conv1, res2.0.conv1.norm,
res2.0.shortcut, ...); the classifier is dropped.

torchvision weights were trained on RGB images normalised with mean/std in 0-255 units,
and torchvision puts the stride of a bottleneck in its 3x3 conv. The published R50/R101
configs match that: INPUT.FORMAT "RGB", MODEL.PIXEL_MEAN [123.675, 116.28, 103.53],
MODEL.PIXEL_STD [58.395, 57.12, 57.375], MODEL.RESNETS.STRIDE_IN_1X1 False. Use the same
settings with any other config that loads the converted file.
"""
import sys

from mask2former.utils.errors import reporting_errors
from mask2former.utils.weight_conversion import conversion_main, torchvision_resnet_to_d2


@reporting_errors
def main(argv=None) -> int:
    return conversion_main(
        argv, __doc__.splitlines()[0], "torchvision ResNet weights (.pth)", torchvision_resnet_to_d2, author="torchvision"
    )


if __name__ == "__main__":
    sys.exit(main())
