"""The deformable attention as exported to ONNX (GridSample per level, in onnxruntime's CPU
provider) against the compiled C++ kernel and the pure-PyTorch grid_sample reference in
eager PyTorch, at the pixel-decoder encoder shapes of `bench_msdeformattn.py`.

    python benchmarks/bench_onnx_ms_deform_attn.py [--size 896] [--repeats 5]

This is what decides the ONNX form: if the standard-op graph ran far slower than the
C++ kernel, an onnxruntime custom-op library built from the kernel would be worth its cost.
Calls alternate between the three; printed: median time per call and ratio to the kernel,
and the largest difference from the kernel.
"""
import argparse
import os
import statistics
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_msdeformattn import make_inputs  # noqa: E402

from mask2former.deploy.onnx_ms_deform_attn import ONNX_OPSET, translation_table  # noqa: E402
from mask2former.ops import ms_deform_attn_reference  # noqa: E402


class Op(torch.nn.Module):
    def forward(self, value, spatial_shapes, level_start_index, sampling_locations, attention_weights):
        return torch.ops.mask2former.ms_deform_attn(
            value, spatial_shapes, level_start_index, sampling_locations, attention_weights
        )


def main():
    import onnxruntime

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=896, help="square input size (levels at strides 8/16/32)")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    inputs = make_inputs(args.size, args.batch)
    program = torch.export.export(Op(), inputs)  # level sizes are read from spatial_shapes at run time anyway
    path = os.path.join(tempfile.mkdtemp(prefix="onnx-msda-"), "ms_deform_attn.onnx")
    torch.onnx.export(program, f=path, opset_version=ONNX_OPSET, custom_translation_table=translation_table(),
                      dynamo=True, verbose=False)
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    feed = {i.name: t.numpy() for i, t in zip(session.get_inputs(), inputs)}
    runs = {
        "kernel (eager)": lambda: Op()(*inputs),
        "reference (eager)": lambda: ms_deform_attn_reference(*inputs),
        "onnxruntime": lambda: torch.from_numpy(session.run(None, feed)[0]),
    }
    outputs = {name: run() for name, run in runs.items()}  # warm-up
    times = {name: [] for name in runs}
    for _ in range(args.repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    kernel_median = statistics.median(times["kernel (eager)"])
    print(f"size {args.size}, batch {args.batch}, S = Lq = {inputs[0].shape[1]}, onnxruntime {onnxruntime.__version__}, "
          f"opset {ONNX_OPSET}, torch threads {torch.get_num_threads()}")
    for name in runs:
        median = statistics.median(times[name])
        diff = (outputs[name] - outputs["kernel (eager)"]).abs().max().item()
        print(f"{name:<18} {median * 1e3:9.1f} ms  {median / kernel_median:5.2f}x the kernel's time  max |d| {diff:.1e}")


if __name__ == "__main__":
    main()
