#!/usr/bin/env python
"""Convert an official Swin Transformer release (.pth holding {"model": ...}) to a .pkl
for D2SwinTransformer.

    python tools/convert-pretrained-swin-model-to-d2.py swin_tiny_patch4_window7_224.pth swin_tiny.pkl

The classification head and the final norm are dropped (the backbone has its own
per-stage output norms), as are precomputed attention-mask buffers; every other name is
kept, which is what D2SwinTransformer expects. Swin weights expect RGB input normalised
with the ImageNet mean/std in 0-255 units, as the published Swin configs set.
"""
import argparse
import sys

from mask2former.utils.weight_conversion import (
    WeightConversionError,
    load_torch_state_dict,
    swin_to_d2,
    write_d2_pickle,
)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("input", help="official Swin Transformer weights (.pth)")
    parser.add_argument("output", help="detectron2 weights to write (.pkl)")
    args = parser.parse_args(argv)
    try:
        weights = swin_to_d2(load_torch_state_dict(args.input))
    except (WeightConversionError, FileNotFoundError) as e:
        print(f"error: {args.input}: {e}", file=sys.stderr)
        return 1
    write_d2_pickle(args.output, weights, author="third_party")
    print(f"Wrote {len(weights)} tensors to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
