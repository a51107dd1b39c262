"""The transformer decoders' mask products at CPU float32 inference: PyTorch's einsum against
the oneDNN paths (`onednn.mask_logits` for images, `onednn.clip_mask_logits` for the video
decoder's clips), timed alternately in the same run, with their largest difference.

    python benchmarks/bench_mask_products.py [--queries 100] [--channels 256]
        [--image-size 200 272] [--clip-size 90 160] [--frames 10] [--repeats 5]

Sizes are of the mask features (stride 4): 200x272 is an 800x1088 input, 90x160 a 360x640
video frame.
"""
import argparse
import statistics
import time

import torch

from mask2former.ops import onednn


def seconds(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def compare(label, einsum, fused, repeats):
    with torch.no_grad():
        expected, actual = einsum(), fused()  # warm-up, and the difference printed
        times = {"einsum": [], "onednn": []}
        for _ in range(repeats):  # alternating, so that load from elsewhere hits both
            times["einsum"].append(seconds(einsum))
            times["onednn"].append(seconds(fused))
    reference, ours = (statistics.median(times[k]) for k in ("einsum", "onednn"))
    difference = (actual - expected).abs().max().item()
    print(f"{label:<34} {reference * 1e3:>10.1f} {ours * 1e3:>10.1f} {ours / reference:>8.2f}x {difference:>12.2e}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--channels", type=int, default=256)
    parser.add_argument("--image-size", type=int, nargs=2, default=(200, 272))
    parser.add_argument("--clip-size", type=int, nargs=2, default=(90, 160))
    parser.add_argument("--frames", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    embed = torch.randn(1, args.queries, args.channels, generator=g)
    image = torch.randn(1, args.channels, *args.image_size, generator=g)
    clip = torch.randn(1, args.frames, args.channels, *args.clip_size, generator=g)

    print(f"float32, {args.threads} threads, {args.queries} queries, {args.channels} channels")
    print(f"{'product':<34} {'einsum ms':>10} {'onednn ms':>10} {'ratio':>9} {'max |d|':>12}")
    compare(
        f"image {args.image_size[0]}x{args.image_size[1]}",
        lambda: torch.einsum("bqc,bchw->bqhw", embed, image),
        lambda: onednn.mask_logits(embed, image),
        args.repeats,
    )
    compare(
        f"clip {args.frames}x{args.clip_size[0]}x{args.clip_size[1]}",
        lambda: torch.einsum("bqc,btchw->bqthw", embed, clip),
        lambda: onednn.clip_mask_logits(embed, clip),
        args.repeats,
    )


if __name__ == "__main__":
    main()
