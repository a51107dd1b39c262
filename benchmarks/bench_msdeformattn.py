"""Speed and memory of the compiled multi-scale deformable attention op against the
pure-PyTorch ``grid_sample`` reference, at the pixel-decoder encoder shapes.

Encoder shapes: levels at strides 8/16/32 of a square input, Lq = S = sum of H_l * W_l,
8 heads, D = 32, 4 points; queries sample around their own cell centre.

Times: warm-up, then the median of repeats, kernel and reference interleaved so that load
from other processes hits both alike; ratio = reference time / kernel time.
Peak memory: in a fresh process per measurement, the RSS high-water mark (``VmHWM`` of
/proc/self/status, reset just before the call through /proc/self/clear_refs) minus the RSS
at that moment, i.e. what one call allocates beyond its inputs (Linux only).

    python benchmarks/bench_msdeformattn.py                      # everything
    python benchmarks/bench_msdeformattn.py --sizes 512 --batches 1 --no-memory   # quick
"""
import argparse
import statistics
import subprocess
import sys
import time

import torch

from mask2former.ops import _extension, ms_deform_attn_reference

STRIDES = (8, 16, 32)
HEADS, CHANNELS, POINTS = 8, 32, 4


def make_inputs(size: int, batch: int, dtype=torch.float32, seed: int = 0):
    """Encoder-like inputs for a size x size image: locations a few pixels around cell centres."""
    generator = torch.Generator().manual_seed(seed)
    shapes = torch.tensor([[size // s, size // s] for s in STRIDES], dtype=torch.int64)
    level_sizes = shapes.prod(1)
    starts = torch.cat([level_sizes.new_zeros(1), level_sizes.cumsum(0)[:-1]])
    S = int(level_sizes.sum())
    L = len(STRIDES)
    value = torch.randn(batch, S, HEADS, CHANNELS, generator=generator, dtype=dtype)
    centres = torch.cat(
        [
            torch.stack(
                torch.meshgrid((torch.arange(h) + 0.5) / h, (torch.arange(w) + 0.5) / w, indexing="ij")[::-1], -1
            ).reshape(-1, 2)
            for h, w in shapes.tolist()
        ]
    ).to(dtype)
    offsets = torch.randn(batch, S, HEADS, L, POINTS, 2, generator=generator, dtype=dtype) * 3.0
    locations = centres[None, :, None, None, None, :] + offsets / shapes.flip(-1).to(dtype)[None, None, None, :, None, :]
    weights = torch.randn(batch, S, HEADS, L * POINTS, generator=generator, dtype=dtype).softmax(-1)
    weights = weights.view(batch, S, HEADS, L, POINTS)
    return value, shapes, starts, locations, weights


def kernel(*args):
    return torch.ops.mask2former.ms_deform_attn(*args)


IMPLEMENTATIONS = {"kernel": kernel, "reference": ms_deform_attn_reference}


def make_step(impl: str, mode: str, inputs):
    fn = IMPLEMENTATIONS[impl]
    value, shapes, starts, locations, weights = inputs
    if mode == "fwd":

        def step():
            with torch.no_grad():
                fn(value, shapes, starts, locations, weights)

        return step
    value, locations, weights = (t.detach().requires_grad_() for t in (value, locations, weights))
    grad_output = torch.ones(value.shape[0], locations.shape[1], HEADS * CHANNELS, dtype=value.dtype)

    def step():
        out = fn(value, shapes, starts, locations, weights)
        torch.autograd.grad(out, (value, locations, weights), grad_output)

    return step


def _status_bytes(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"/proc/self/status has no {field} field")


def memory_probe(size: int, batch: int, impl: str, mode: str, dtype: torch.dtype) -> int:
    """Peak bytes allocated by one call beyond its inputs (run in a fresh process)."""
    step = make_step(impl, mode, make_inputs(size, batch, dtype))
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets the peak RSS (VmHWM) to the current RSS
    before = _status_bytes("VmRSS")
    step()
    return _status_bytes("VmHWM") - before


def measure_memory(size, batch, impl, mode, dtype_name) -> float:
    cmd = [sys.executable, __file__, "--memory-probe", str(size), str(batch), impl, mode, "--dtype", dtype_name]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return int(out.strip().splitlines()[-1]) / 2**20


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 1024])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--modes", nargs="+", default=["fwd", "fwdbwd"], choices=["fwd", "fwdbwd"])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64", "bfloat16"])
    parser.add_argument("--threads", type=int, default=0, help="intra-op threads (default: all cores)")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    parser.add_argument("--memory-probe", nargs=4, metavar=("SIZE", "BATCH", "IMPL", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    dtype = getattr(torch, args.dtype)
    if args.threads > 0:
        torch.set_num_threads(args.threads)

    if args.memory_probe:
        size, batch, impl, mode = args.memory_probe
        print(memory_probe(int(size), int(batch), impl, mode, dtype))
        return
    if not _extension.is_available():
        sys.exit(f"the compiled op is not available: {_extension.load_error()!r}")

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.dtype}, "
          f"median of {args.repeats} after {args.warmup} warm-up")
    header = f"{'input':>6} {'batch':>5} {'Lq=S':>6} {'mode':>7} | {'kernel ms':>10} {'ref ms':>10} {'speed-up':>8}"
    if not args.no_memory:
        header += f" | {'kernel MiB':>10} {'ref MiB':>10}"
    print(header)
    print("-" * len(header))
    for size in args.sizes:
        for batch in args.batches:
            inputs = make_inputs(size, batch, dtype)
            for mode in args.modes:
                steps = {impl: make_step(impl, mode, inputs) for impl in IMPLEMENTATIONS}
                times = {impl: [] for impl in IMPLEMENTATIONS}
                for i in range(args.warmup + args.repeats):
                    for impl, step in steps.items():
                        start = time.perf_counter()
                        step()
                        if i >= args.warmup:
                            times[impl].append(time.perf_counter() - start)
                k_ms = statistics.median(times["kernel"]) * 1e3
                r_ms = statistics.median(times["reference"]) * 1e3
                line = (f"{size:>6} {batch:>5} {inputs[0].shape[1]:>6} {mode:>7} | "
                        f"{k_ms:>10.1f} {r_ms:>10.1f} {r_ms / k_ms:>7.1f}x")
                if not args.no_memory:
                    k_mem = measure_memory(size, batch, "kernel", mode, args.dtype)
                    r_mem = measure_memory(size, batch, "reference", mode, args.dtype)
                    line += f" | {k_mem:>10.1f} {r_mem:>10.1f}"
                print(line, flush=True)


if __name__ == "__main__":
    main()
