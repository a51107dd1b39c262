#!/usr/bin/env python
"""Export a Mask2Former network for deployment: torch.export program, AOTInductor package or ONNX.

    python tools/export_model.py --config-file CFG --format export|aoti|onnx --output PATH \\
        [--dtype float32|bfloat16] [--opts MODEL.WEIGHTS W ...]

What is exported: the network from a normalised, padded image batch (N, 3, H, W) to
pred_logits (N, Q, K+1) and pred_masks (N, Q, H/4, W/4), with N, H and W dynamic (H, W
multiples of the model's size divisibility, from `min_side` (64, more for a Swin backbone) to
1536). `meta.json` is written beside the artefact with what the runner needs (class names,
thing classes, colours, pixel mean/std, size divisibility, smallest side, test resize, input
format, post-processing thresholds).
Run the result with `python -m mask2former.deploy.run`; see docs/DEPLOYMENT.md.
"""
import argparse
import logging
import sys
import time

import torch
from detectron2.modeling import build_model
from detectron2.utils.logger import setup_logger

from mask2former.config import build_config
from mask2former.deploy.export import FORMATS, export_metadata, metadata_path, save_program, write_metadata
from mask2former.deploy.network import ExportableNetwork, ExportError, export_program
from mask2former.utils.checkpoint import CheckpointMismatchError, load_weights_checked

logger = logging.getLogger("mask2former.export_model")


def get_parser():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config-file", required=True, metavar="FILE")
    parser.add_argument("--format", required=True, choices=FORMATS)
    parser.add_argument("--output", required=True, help="file to write (.pt2 or .onnx); meta.json goes beside it")
    parser.add_argument(
        "--dtype", default=None, choices=("float32", "bfloat16"),
        help="dtype the network runs in (autocast for bfloat16); default MASK2FORMER.INFERENCE_DTYPE",
    )
    parser.add_argument("--opts", default=[], nargs=argparse.REMAINDER, help="config overrides: KEY VALUE ...")
    return parser


def setup_cfg(config_file, opts, dtype=None):
    cfg = build_config(config_file, opts)
    cfg.MODEL.DEVICE = "cpu"  # exported on the CPU; AOTInductor compiles for the export device
    if dtype is not None:
        cfg.MASK2FORMER.INFERENCE_DTYPE = dtype
    cfg.freeze()
    return cfg


def build_model_for_export(cfg):
    """The model of `cfg` in eval mode with MODEL.WEIGHTS loaded (random weights if empty)."""
    model = build_model(cfg).eval()
    if cfg.MODEL.WEIGHTS:
        load_weights_checked(model, cfg.MODEL.WEIGHTS)
    else:
        logger.warning("MODEL.WEIGHTS is empty: exporting random weights.")
    return model


def main(argv=None) -> int:
    args = get_parser().parse_args(argv)
    setup_logger(name="mask2former")
    try:
        cfg = setup_cfg(args.config_file, args.opts, args.dtype)
        model = build_model_for_export(cfg)
    except (OSError, ValueError, KeyError, CheckpointMismatchError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.format == "onnx" and model.inference_dtype != torch.float32:
        print("error: --format onnx is exported in float32 only (--dtype float32)", file=sys.stderr)
        return 2
    network = ExportableNetwork(model)
    start = time.perf_counter()
    try:
        program = export_program(network, model.size_divisibility)
        logger.info(f"torch.export done in {time.perf_counter() - start:.0f} s; writing {args.format} to {args.output}")
        save_program(program, args.output, args.format)
    except ExportError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    write_metadata(metadata_path(args.output), export_metadata(model, cfg, args.format))
    logger.info(f"wrote {args.output} and {metadata_path(args.output)} in {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
