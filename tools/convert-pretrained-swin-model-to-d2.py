#!/usr/bin/env python
"""Convert an official Swin Transformer release (.pth holding {"model": ...}) to a .pkl
for D2SwinTransformer.

    python tools/convert-pretrained-swin-model-to-d2.py swin_tiny_patch4_window7_224.pth swin_tiny.pkl

The classification head and the final norm are dropped (the backbone has its own
per-stage output norms), as are precomputed attention-mask buffers; every other name is
kept, which is what D2SwinTransformer expects. Swin weights expect RGB input normalised
with the ImageNet mean/std in 0-255 units, as the published Swin configs set.
"""
import sys

from mask2former.utils.errors import reporting_errors
from mask2former.utils.weight_conversion import conversion_main, swin_to_d2


@reporting_errors
def main(argv=None) -> int:
    return conversion_main(
        argv, __doc__.splitlines()[0], "official Swin Transformer weights (.pth)", swin_to_d2, author="third_party"
    )


if __name__ == "__main__":
    sys.exit(main())
