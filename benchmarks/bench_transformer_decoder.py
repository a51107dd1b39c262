"""MultiScaleMaskedTransformerDecoder on CPU: attention without averaged attention maps
(``need_weights=False``, fused scaled-dot-product attention) against the same decoder forced
to compute them (``need_weights=True``, the explicit path), in the same run.

    python benchmarks/bench_transformer_decoder.py [--size 768] [--queries 100] [--repeats 3]

Shapes are those of an input of ``--size`` pixels: memories at strides 32/16/8 and
mask features at stride 4, 256 channels. Runs alternate between the two variants so that
load from other processes hits both alike; the median time of each is reported.
"""
import argparse
import statistics
import time

import torch
from torch import nn

from mask2former.modeling.transformer_decoder import MultiScaleMaskedTransformerDecoder

_fused_forward = nn.MultiheadAttention.forward


def _forward_with_weights(self, *args, **kwargs):
    kwargs["need_weights"] = True
    return _fused_forward(self, *args, **kwargs)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=768)
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    torch.manual_seed(0)
    decoder = MultiScaleMaskedTransformerDecoder(
        in_channels=256, num_classes=133, hidden_dim=256, num_queries=args.queries, nheads=8,
        dim_feedforward=2048, dec_layers=9, pre_norm=False, mask_dim=256, enforce_input_project=False,
    ).eval()
    x = [torch.randn(1, 256, args.size // s, args.size // s) for s in (32, 16, 8)]
    mask_features = torch.randn(1, 256, args.size // 4, args.size // 4)

    times = {"reference (need_weights=True)": [], "fused (need_weights=False)": []}
    outputs = {}
    with torch.no_grad():
        for _ in range(args.repeats + 1):  # the first round is a warm-up
            for name, forward in zip(times, (_forward_with_weights, _fused_forward)):
                nn.MultiheadAttention.forward = forward
                try:
                    start = time.perf_counter()
                    outputs[name] = decoder(x, mask_features)["pred_masks"]
                    times[name].append(time.perf_counter() - start)
                finally:
                    nn.MultiheadAttention.forward = _fused_forward
    reference, fused = (statistics.median(t[1:]) for t in times.values())
    diff = (outputs["reference (need_weights=True)"] - outputs["fused (need_weights=False)"]).abs().max().item()
    print(f"MultiScaleMaskedTransformerDecoder, {args.queries} queries, input {args.size}x{args.size}, "
          f"{torch.get_num_threads()} threads")
    print(f"  reference (need_weights=True): {reference * 1000:8.1f} ms")
    print(f"  fused (need_weights=False):    {fused * 1000:8.1f} ms   speed-up x{reference / fused:.2f}")
    print(f"  largest mask-logit difference: {diff:.2e}")


if __name__ == "__main__":
    main()
