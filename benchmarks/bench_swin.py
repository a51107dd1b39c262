"""Swin backbone on CPU: window attention through fused scaled_dot_product_attention
against the explicit (q k^T + bias).softmax() v formulation, measured in the same run.

    python benchmarks/bench_swin.py [--size 512] [--embed-dim 96] [--repeats 3]

Prints the time per forward of each and their ratio, plus the largest output difference.
"""
import argparse
import time

import torch

from mask2former.modeling.backbone.swin import D2SwinTransformer, WindowAttention


def explicit_window_attention(self, x, mask=None):
    """The reference formulation: explicit matmuls, bias and mask added before softmax."""
    B_, N, C = x.shape
    qkv = self.qkv(x).reshape(B_, N, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0] * self.scale, qkv[1], qkv[2]
    attn = q @ k.transpose(-2, -1)
    bias = self.relative_position_bias_table[self.relative_position_index.view(-1)].view(N, N, -1)
    attn = attn + bias.permute(2, 0, 1).unsqueeze(0)
    if mask is not None:
        num_windows = mask.shape[0]
        attn = attn.view(B_ // num_windows, num_windows, self.num_heads, N, N) + mask[None, :, None]
        attn = attn.view(-1, self.num_heads, N, N)
    x = (self.attn_drop(attn.softmax(-1)) @ v).transpose(1, 2).reshape(B_, N, C)
    return self.proj_drop(self.proj(x))


def _time(model, images, repeats):
    with torch.no_grad():
        model(images)  # warm-up
        start = time.perf_counter()
        for _ in range(repeats):
            out = model(images)
    return (time.perf_counter() - start) / repeats, out


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=512, help="square input size")
    parser.add_argument("--embed-dim", type=int, default=96, help="96 = Swin-T, 128 = Swin-B, 192 = Swin-L")
    parser.add_argument("--window-size", type=int, default=7)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    torch.manual_seed(0)
    heads = [args.embed_dim // 32 * 2**i for i in range(4)]
    model = D2SwinTransformer(embed_dim=args.embed_dim, num_heads=heads, window_size=args.window_size).eval()
    images = torch.randn(1, 3, args.size, args.size)

    fused_s, fused_out = _time(model, images, args.repeats)
    fused_forward = WindowAttention.forward
    WindowAttention.forward = explicit_window_attention
    try:
        explicit_s, explicit_out = _time(model, images, args.repeats)
    finally:
        WindowAttention.forward = fused_forward
    max_diff = max((fused_out[k] - explicit_out[k]).abs().max().item() for k in fused_out)
    print(f"Swin (embed {args.embed_dim}, window {args.window_size}) forward on 1x3x{args.size}x{args.size}, "
          f"{torch.get_num_threads()} threads")
    print(f"  explicit attention (reference): {explicit_s * 1000:8.1f} ms")
    print(f"  fused attention:                {fused_s * 1000:8.1f} ms   speed-up x{explicit_s / fused_s:.2f}")
    print(f"  largest output difference: {max_diff:.2e}")


if __name__ == "__main__":
    main()
