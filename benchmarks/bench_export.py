"""Exported Mask2Former networks against eager PyTorch, measured in the same run.

    python benchmarks/bench_export.py --config-file configs/coco/panoptic-segmentation/maskformer2_R50_bs16_50ep.yaml \\
        --size 800 1088 [--variants eager compile export aoti onnx eager-bf16 aoti-bf16] [--repeats 5] \\
        [--check-size 640 864] [--opts MODEL.WEIGHTS W ...]

Each variant runs the network of `mask2former.deploy.network` (normalised padded batch ->
pred_logits, pred_masks) on one random batch: eager, `torch.compile`, the `torch.export`
program (`.module()`), the AOTInductor package and onnxruntime's CPU provider (fp32), and
with "-bf16" the same network under bfloat16 autocast. Calls alternate between variants,
one call each per round, so that machine load affects all alike. Printed per variant: the
build time (export/compile, not in the timings), the median time per call, its speed-up
over eager fp32 (eager median / variant median), the peak resident memory above the level
before the call (sampled every 2 ms), and the largest difference of both outputs from eager
fp32. `--check-size` also compares the exported fp32 formats with eager at the benchmark size
and a second size, batch 1 and 2 each (largest absolute difference, and relative to the
largest eager value), and whether the post-processed panoptic and instance results (thresholds
at zero) are identical; and the differences from eager run with its standard operators
(`onednn.standard_operators()`: no folded batch norm or fused CPU kernels), the computation
the exported graphs hold.
Random weights unless MODEL.WEIGHTS is given.
"""
import argparse
import copy
import dataclasses
import os
import statistics
import sys
import tempfile
import threading
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools"))
from export_model import build_model_for_export, setup_cfg  # noqa: E402

from mask2former.deploy.export import save_program  # noqa: E402
from mask2former.deploy.network import ExportableNetwork, export_program  # noqa: E402
from mask2former.deploy.runtime import load_network  # noqa: E402
from mask2former.ops import onednn  # noqa: E402

VARIANTS = ("eager", "compile", "export", "aoti", "onnx", "eager-bf16", "export-bf16", "aoti-bf16")


class PeakRSS:
    """Largest resident set size seen while the context is open, sampled by a thread."""

    def __init__(self, interval=0.002):
        self.interval = interval

    @staticmethod
    def current():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def _sample(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self.current())
            time.sleep(self.interval)

    def __enter__(self):
        self.start = self.peak = self.current()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.current())


def build_variant(name, model, example, workdir, programs):
    """A callable images -> (pred_logits, pred_masks) for variant `name`."""
    fmt, _, dtype = name.partition("-")
    dtype = torch.bfloat16 if dtype == "bf16" else torch.float32
    model = copy.copy(model)  # shares the modules; only the inference dtype differs
    model.inference_dtype = dtype
    network = ExportableNetwork(model)
    if fmt == "eager":
        return network
    if fmt == "compile":
        compiled = torch.compile(network)
        with torch.no_grad():  # as it is timed: a graph traced with grad on would be compiled again
            compiled(example)
        return compiled
    if dtype not in programs:
        programs[dtype] = export_program(network, model.size_divisibility)
    suffix = ".onnx" if fmt == "onnx" else ".pt2"
    path = os.path.join(workdir, name + suffix)
    save_program(programs[dtype], path, fmt)
    return load_network(path, fmt)


def postprocessed(outputs, image_size, options):
    """Post-processed results of the first image of a batch."""
    from mask2former.postprocessing import postprocess_image

    logits, masks = outputs
    return postprocess_image(logits[0], masks[0], image_size, image_size, image_size, options)


def differences(outputs, reference) -> str:
    """Largest absolute and relative (to the reference's largest magnitude) difference of both outputs."""
    worst = max((a - b).abs().max().item() for a, b in zip(outputs, reference))
    relative = max(((a - b).abs().max() / b.abs().max().clamp_min(1e-12)).item() for a, b in zip(outputs, reference))
    return f"max |d| {worst:.2e} (relative {relative:.2e})"


def same_results(a, b):
    pan_a, pan_b = a["panoptic_seg"], b["panoptic_seg"]
    same_panoptic = torch.equal(pan_a[0], pan_b[0]) and pan_a[1] == pan_b[1]
    ins_a, ins_b = a["instances"], b["instances"]
    same_instances = torch.equal(ins_a.masks, ins_b.masks) and torch.equal(ins_a.classes, ins_b.classes)
    return same_panoptic, same_instances


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", required=True)
    parser.add_argument("--size", type=int, nargs=2, default=(800, 1088), metavar=("H", "W"))
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--check-size", type=int, nargs=2, default=None, metavar=("H", "W"))
    parser.add_argument("--workdir", default=None, help="where the artefacts go (default: a temporary folder)")
    parser.add_argument("--opts", default=[], nargs=argparse.REMAINDER)
    args = parser.parse_args()

    torch.manual_seed(0)
    cfg = setup_cfg(args.config_file, args.opts)
    model = build_model_for_export(cfg)
    network = ExportableNetwork(model)
    divisibility = model.size_divisibility
    if args.size[0] % divisibility or args.size[1] % divisibility:
        parser.error(f"--size must be a multiple of the size divisibility {divisibility}")
    images = torch.randn(args.batch, 3, *args.size)
    workdir = args.workdir or tempfile.mkdtemp(prefix="bench_export-")
    print(f"{args.config_file} at {args.batch}x{args.size[0]}x{args.size[1]}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, artefacts in {workdir}", flush=True)

    runners, build_s, programs = {}, {}, {}
    for name in args.variants:
        start = time.perf_counter()
        runners[name] = build_variant(name, model, images, workdir, programs)
        build_s[name] = time.perf_counter() - start
        print(f"built {name} in {build_s[name]:.0f} s", flush=True)

    times = {name: [] for name in runners}
    peaks = {name: 0 for name in runners}
    outputs = {}
    with torch.no_grad():
        for name, run in runners.items():  # warm-up, and the outputs compared below
            outputs[name] = run(images)
        for _ in range(args.repeats):
            for name, run in runners.items():
                with PeakRSS() as rss:
                    start = time.perf_counter()
                    run(images)
                    times[name].append(time.perf_counter() - start)
                peaks[name] = max(peaks[name], rss.peak - rss.start)

    reference = outputs.get("eager")
    base = statistics.median(times["eager"]) if "eager" in times else None
    print(f"\n{'variant':<12} {'build s':>8} {'median s':>9} {'vs eager':>9} {'peak MB':>8} {'max |d| logits':>15} {'max |d| masks':>14}")
    for name in runners:
        median = statistics.median(times[name])
        ratio = f"{base / median:.2f}x" if base else "-"
        if reference is not None:
            d_logits, d_masks = ((a - b).abs().max().item() for a, b in zip(outputs[name], reference))
            diffs = f"{d_logits:>15.2e} {d_masks:>14.2e}"
        else:
            diffs = ""
        print(f"{name:<12} {build_s[name]:>8.0f} {median:>9.3f} {ratio:>9} {peaks[name] / 2**20:>8.0f} {diffs}")

    if args.check_size and reference is not None:
        # Thresholds at zero, so that random weights still give segments to compare.
        options = dataclasses.replace(
            model.postprocess_options.with_tasks(panoptic_on=True, instance_on=True),
            object_mask_threshold=0.0, overlap_threshold=0.0,
        )
        checks = [(images, tuple(args.size))] + [
            (torch.randn(batch, 3, *size), tuple(size)) for size in (args.size, args.check_size) for batch in (1, 2)
            if (batch, tuple(size)) != (args.batch, tuple(args.size))
        ]
        print(f"\nfp32 variants against eager (batch 1 and 2 at {tuple(args.size)} and {tuple(args.check_size)}):")
        with torch.no_grad():
            eager_out = [network(x) for x, _ in checks]
            with onednn.standard_operators():  # what the exported graphs hold
                standard_out = [network(x) for x, _ in checks]
            for name, run in runners.items():
                if name not in ("export", "aoti", "onnx"):  # torch.compile would recompile
                    continue
                for (x, size), ref, standard in zip(checks, eager_out, standard_out):
                    out = run(x)
                    expected = postprocessed(ref, size, options)
                    pan, ins = same_results(postprocessed(out, size, options), expected)
                    print(f"  {name:<8} {tuple(x.shape)}: {differences(out, ref)}, panoptic identical {pan} "
                          f"({len(expected['panoptic_seg'][1])} segments), instances identical {ins}; "
                          f"against eager's standard operators {differences(out, standard)}", flush=True)


if __name__ == "__main__":
    main()
