#!/usr/bin/env python
"""Check that a checkpoint fits a config exactly, without running anything.

    python tools/check_checkpoint.py --config-file CFG model_final.pkl [--opts KEY VALUE ...]

Builds the config's model on the CPU, loads the weights (published .pkl, detectron2 .pkl
or a trained .pth) and lists missing, unexpected and shape-mismatched keys. Exit status 0
when every key matches, 1 otherwise.
"""
import argparse
import sys

from detectron2.modeling import build_model

from mask2former.config import build_config
from mask2former.utils.checkpoint import load_weights_checked
from mask2former.utils.errors import reporting_errors


@reporting_errors
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config-file", required=True, metavar="FILE")
    parser.add_argument("weights", help="checkpoint to check")
    parser.add_argument("--opts", default=[], nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)

    cfg = build_config(args.config_file, args.opts + ["MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", ""])
    model = build_model(cfg)
    report = load_weights_checked(model, args.weights, allow_partial=True)
    num_keys = len(model.state_dict())
    if report.is_clean:
        print(f"OK: all {num_keys} keys of the model are in '{args.weights}' with matching shapes.")
        return 0
    print(f"'{args.weights}' does not fit '{args.config_file}' ({num_keys} model keys):")
    print(report.describe(max_keys=50))
    return 1


if __name__ == "__main__":
    sys.exit(main())
