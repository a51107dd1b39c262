#!/usr/bin/env python
"""Parameters, FLOPs, activations and speed of a Mask2Former config.

    python tools/analyze_model.py --config-file CFG --tasks parameter flop activation speed \\
        [--input-size 800 1088] [--device cpu|cuda] [--opts KEY VALUE ...]

The model runs in eval mode (post-processing included) on one random image of
--input-size, given to the model as is (no test-time resize), with random weights
(counts do not depend on them) unless --load-weights loads MODEL.WEIGHTS. FLOPs follow fvcore's convention (one fused multiply-add = one
flop; element-wise ops are not counted). The deformable-attention op is counted by
`tools/flop_count.py` (5 multiply-adds per sampled point and channel: 4 bilinear
taps and the attention weight); when the pure-PyTorch path runs instead, its grid_sample
calls are counted at 4 per output value.
"""
import argparse
import logging
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Dict, List

import torch
from detectron2.modeling import build_model
from detectron2.utils.logger import setup_logger
from fvcore.nn import ActivationCountAnalysis, flop_count_table
from fvcore.nn import parameter_count, parameter_count_table
from tabulate import tabulate

from mask2former.config import build_config
from mask2former.utils.checkpoint import load_weights_checked
from mask2former.utils.errors import reporting_errors

sys.path.insert(0, str(Path(__file__).resolve().parent))  # flop_count.py, beside this tool
from flop_count import flop_analysis  # noqa: E402

logger = logging.getLogger("mask2former.analyze_model")


class TensorOutputs(torch.nn.Module):
    """Calls a detectron2-style model on one image tensor and returns only tensors, so that
    fvcore's jit tracing can follow it (segments_info and Instances are not traceable)."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor):
        height, width = image.shape[-2:]
        output = self.model([{"image": image, "height": height, "width": width}])[0]
        tensors = []
        if "sem_seg" in output:
            tensors.append(output["sem_seg"])
        if "panoptic_seg" in output:
            tensors.append(output["panoptic_seg"][0])
        if "instances" in output:
            tensors.append(output["instances"].pred_masks)
            tensors.append(output["instances"].scores)
        return tuple(tensors)


def setup_cfg(args):
    cfg = build_config(args.config_file, args.opts)
    cfg.MODEL.DEVICE = args.device
    cfg.freeze()
    return cfg


def random_image(height: int, width: int, device: str, seed: int = 0) -> torch.Tensor:
    """(3, H, W) uint8 noise image."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (3, height, width), dtype=torch.uint8, generator=generator).to(device)


def analyze_parameters(model) -> Dict[str, float]:
    print(parameter_count_table(model, max_depth=2))
    counts = parameter_count(model)
    return {"parameters (M)": counts[""] / 1e6}


def analyze_flops(model, image) -> Dict[str, float]:
    analysis = flop_analysis(TensorOutputs(model), (image,))
    print(flop_count_table(analysis, max_depth=2))
    skipped = Counter(analysis.unsupported_ops())
    if skipped:
        print("Ops not counted: " + ", ".join(f"{k} x{v}" for k, v in sorted(skipped.items())))
    return {"GFLOPs": analysis.total() / 1e9}


def analyze_activations(model, image) -> Dict[str, float]:
    analysis = ActivationCountAnalysis(TensorOutputs(model), (image,))
    analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    analysis.tracer_warnings("none")
    return {"activations (M)": analysis.total() / 1e6}


@torch.no_grad()
def measure_speed(model, image, batch_size: int, num_warmup: int, num_iters: int) -> Dict[str, float]:
    """Images per second of eval-mode forward passes (post-processing included)."""
    height, width = image.shape[-2:]
    batch = [{"image": image, "height": height, "width": width} for _ in range(batch_size)]

    def synchronize():
        if image.is_cuda:
            torch.cuda.synchronize()

    for _ in range(num_warmup):
        model(batch)
    synchronize()
    start = time.perf_counter()
    for _ in range(num_iters):
        model(batch)
    synchronize()
    elapsed = time.perf_counter() - start
    images_per_second = batch_size * num_iters / elapsed
    return {"images/s": images_per_second, "ms/image": 1000.0 / images_per_second}


def run(args) -> List[tuple]:
    cfg = setup_cfg(args)
    model = build_model(cfg).eval()
    if args.load_weights:
        load_weights_checked(model, cfg.MODEL.WEIGHTS, allow_partial=args.allow_partial_weights)
    if args.input_size:
        height, width = args.input_size
    else:
        height = cfg.INPUT.MIN_SIZE_TEST
        width = min(int(round(height * 4 / 3)), cfg.INPUT.MAX_SIZE_TEST)
    image = random_image(height, width, cfg.MODEL.DEVICE)
    rows = [("config", args.config_file), ("input", f"{height}x{width} on {cfg.MODEL.DEVICE}")]
    results = {}
    with torch.no_grad():
        if "parameter" in args.tasks:
            results.update(analyze_parameters(model))
        if "flop" in args.tasks:
            results.update(analyze_flops(model, image))
        if "activation" in args.tasks:
            results.update(analyze_activations(model, image))
    if "speed" in args.tasks:
        results.update(
            measure_speed(model, image, args.batch_size, args.num_warmup, args.num_iters)
        )
    rows += [(name, f"{value:.3f}") for name, value in results.items()]
    print(tabulate(rows, headers=["", "value"], tablefmt="pipe"))
    return rows


def get_parser():
    parser = argparse.ArgumentParser(description="Analyse a Mask2Former config")
    parser.add_argument("--config-file", required=True, metavar="FILE")
    parser.add_argument(
        "--tasks",
        nargs="+",
        choices=("parameter", "flop", "activation", "speed"),
        default=["parameter", "flop"],
    )
    parser.add_argument(
        "--input-size", nargs=2, type=int, metavar=("H", "W"),
        help="image size given to the model (default: MIN_SIZE_TEST x 4/3 of it)",
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch-size", type=int, default=1, help="images per pass (speed)")
    parser.add_argument("--num-warmup", type=int, default=3, help="untimed passes (speed)")
    parser.add_argument("--num-iters", type=int, default=10, help="timed passes (speed)")
    parser.add_argument("--load-weights", action="store_true", help="load MODEL.WEIGHTS")
    parser.add_argument("--allow-partial-weights", action="store_true")
    parser.add_argument("--opts", default=[], nargs=argparse.REMAINDER)
    return parser


@reporting_errors
def main(argv=None) -> int:
    args = get_parser().parse_args(argv)
    setup_logger(name="fvcore")
    setup_logger(name="mask2former")
    run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
