"""Inference time by stage (backbone, pixel decoder, transformer decoder, post-processing),
against the machine's measured matrix-multiply peak.

For a config (default: the published R50 COCO panoptic one, random weights) and an input
size (default 800x1088), each stage's median time, its multiply-adds (fvcore, counted as
`tools/analyze_model.py` counts them, for each timed code on its own), the achieved GFLOP/s
(2 flops per multiply-add) and that as a fraction of the matrix-multiply peak measured in
the same run (square products of 2048, the `--dtype`). The network's class and mask
outputs are replaced by predictions that keep 10-20 panoptic segments and ~50 instances
(as `bench_postprocessing.py` builds them), since random weights keep none. Peak memory is the
process's peak resident size during the calls (model weights included), under glibc's
default allocator (which keeps freed memory for reuse) and, from one more inference in a
process that returns freed memory at once, the peak of live memory.

Each timed code runs in fresh processes; `--compare-to REV` also times that git revision's
code (its `mask2former/`, with this checkout's compiled op), alternating process by process,
and prints the ratios.

    python benchmarks/bench_inference.py [--dtype bfloat16] [--compare-to main] [--size 800 1088]
        [--config-file CFG] [--repeats 2] [--rounds 2] [--threads N] [KEY VALUE ...]
"""
import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "benchmarks"), str(ROOT / "tools")]

from bench_postprocessing import (  # noqa: E402
    current_rss_bytes,
    import_only_timed_code,
    make_inputs,
    peak_rss_bytes,
    worker_environment,
)

DEFAULT_CONFIG = "configs/coco/panoptic-segmentation/maskformer2_R50_bs16_50ep.yaml"
STAGES = ("backbone", "pixel_decoder", "transformer_decoder", "postprocessing")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def build(config_file, opts, device):
    from detectron2.config import get_cfg
    from detectron2.modeling import build_model

    from mask2former.config import add_deeplab_config, add_maskformer2_config

    cfg = get_cfg()
    add_deeplab_config(cfg)
    add_maskformer2_config(cfg)
    cfg.merge_from_file(str(ROOT / config_file))
    cfg.merge_from_list(opts)
    cfg.MODEL.DEVICE = device
    cfg.MODEL.WEIGHTS = ""
    torch.manual_seed(0)
    return build_model(cfg).eval().requires_grad_(False)


def random_batch(size, device):
    g = torch.Generator().manual_seed(0)
    image = torch.randint(0, 256, (3, *size), dtype=torch.uint8, generator=g).to(device)
    return [{"image": image, "height": size[0], "width": size[1]}]


def planted(outputs):
    """The network's outputs with its final predictions replaced by ones that keep segments."""
    _, num_queries, num_classes_1 = outputs["pred_logits"].shape
    h, w = outputs["pred_masks"].shape[-2:]
    class_logits, mask_logits = make_inputs(outputs["pred_masks"].device, num_queries, num_classes_1 - 1, (4 * h, 4 * w))
    return dict(outputs, pred_logits=class_logits[None], pred_masks=mask_logits[None])


def timed_stages(model, batch, dtype):
    """One inference, stage by stage (the model's `forward` does the same in one go)."""
    device = model.device
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    times = {}
    images = model.preprocess_images(batch)
    head = model.sem_seg_head
    with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
        sync()
        start = time.perf_counter()
        features = getattr(model, "inference_features", model.backbone)(images.tensor)  # older code: no folding
        sync()
        times["backbone"] = time.perf_counter() - start
        start = time.perf_counter()
        mask_features, _, multi_scale = head.pixel_decoder.forward_features(features)
        sync()
        times["pixel_decoder"] = time.perf_counter() - start
        start = time.perf_counter()
        outputs = head.predictor(multi_scale, mask_features, None)
        sync()
        times["transformer_decoder"] = time.perf_counter() - start
    outputs = planted({k: v.float() for k, v in outputs.items() if k != "aux_outputs"})
    start = time.perf_counter()
    results = model.inference(outputs, batch, images)
    sync()
    times["postprocessing"] = time.perf_counter() - start
    return times, results


def worker(args):
    """Times `--repeats` inferences (after one warm-up) of the code on sys.path; prints JSON."""
    dtype = DTYPES[args.dtype]
    model = build(args.config_file, args.opts, args.device)
    batch = random_batch(args.size, args.device)
    with torch.no_grad():
        timed_stages(model, batch, dtype)
        before = torch.cuda.memory_allocated() if args.device == "cuda" else current_rss_bytes()
        if args.device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        else:
            with open("/proc/self/clear_refs", "w") as f:  # restart the peak resident size
                f.write("5")
        runs = []
        for _ in range(args.repeats):
            times, results = timed_stages(model, batch, dtype)
            runs.append(times)
            del results
    peak = torch.cuda.max_memory_allocated() if args.device == "cuda" else peak_rss_bytes()
    print(json.dumps({"runs": runs, "peak_bytes": peak, "before_bytes": before}))


def matmul_peak(dtype, device, n=2048, repeats=3):
    """Best GFLOP/s of an n x n x n product in `dtype`, through PyTorch's BLAS and, on the
    CPU, through oneDNN (`torch.ops.mkldnn`): which is faster depends on the CPU (MKL runs
    float32 at about half of oneDNN's speed on AMD processors)."""
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    products = [lambda: a @ b]
    if device == "cpu" and hasattr(torch.ops.mkldnn, "_linear_pointwise") and torch.backends.mkldnn.is_available():
        products.append(lambda: torch.ops.mkldnn._linear_pointwise(a, b, None, "none", [], ""))
    best = float("inf")
    for product in products:
        for _ in range(repeats + 1):
            start = time.perf_counter()
            product()
            if device == "cuda":
                torch.cuda.synchronize()
            best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9


def stage_macs(args):
    """Multiply-adds of the three network stages (fvcore, float32 trace)."""
    from flop_count import flop_analysis

    model = build(args.config_file, args.opts, args.device)
    images = model.preprocess_images(random_batch(args.size, args.device)).tensor
    head = model.sem_seg_head
    names = list(model.backbone.output_shape())

    class Backbone(torch.nn.Module):
        def forward(self, x):
            features = model.backbone(x)
            return tuple(features[k] for k in names)

    class PixelDecoder(torch.nn.Module):
        def forward(self, *features):
            mask_features, _, multi_scale = head.pixel_decoder.forward_features(dict(zip(names, features)))
            return (mask_features, *multi_scale)

    class TransformerDecoder(torch.nn.Module):
        def forward(self, mask_features, *multi_scale):
            outputs = head.predictor(list(multi_scale), mask_features, None)
            return outputs["pred_logits"], outputs["pred_masks"]

    with torch.no_grad():
        features = Backbone()(images)
        decoded = PixelDecoder()(*features)
        return {
            "backbone": flop_analysis(Backbone(), (images,)).total(),
            "pixel_decoder": flop_analysis(PixelDecoder(), features).total(),
            "transformer_decoder": flop_analysis(TransformerDecoder(), decoded).total(),
        }


def code_checkout(rev, workdir):
    """`mask2former/` of git revision `rev` under `workdir`, with this checkout's compiled op."""
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", rev, "mask2former"], check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(workdir)], input=archive, check=True)
    for library in (ROOT / "mask2former").glob("_C*.so"):
        shutil.copy(library, Path(workdir) / "mask2former" / library.name)
    return str(workdir)


def timing_parser(description, default_config):
    """Command line shared by the benchmarks that time this checkout against a revision."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", default=default_config)
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float32")
    parser.add_argument("--compare-to", metavar="GIT_REV", help="also time this revision's code, alternating")
    parser.add_argument("--rounds", type=int, default=2, help="processes per code")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE ...")
    return parser


def time_alternately(compare_to, rounds, run_one):
    """{label: [run_one(code_root) per round]} for this checkout and, if `compare_to` is
    set, that revision's code, one process per code and round in turn."""
    codes = {"this checkout": str(ROOT)}
    with tempfile.TemporaryDirectory() as workdir:
        if compare_to:
            codes[compare_to] = code_checkout(compare_to, workdir)
        results = {label: [] for label in codes}
        for _ in range(rounds):
            for label, code_root in codes.items():
                results[label].append(run_one(code_root))
    return results


def run_worker(args, code_root, repeats=None, env_variables=None, count_flops=False):
    env = worker_environment(code_root, **(env_variables or {}))
    command = [sys.executable, __file__, "--worker", "--dtype", args.dtype, "--device", args.device]
    command += ["--count-flops"] if count_flops else []
    command += ["--config-file", args.config_file, "--size", *map(str, args.size)]
    command += ["--repeats", str(repeats or args.repeats), "--threads", str(args.threads), *args.opts]
    out = subprocess.run(command, check=True, capture_output=True, text=True, env=env, cwd=code_root).stdout
    return json.loads(out.strip().splitlines()[-1])


# glibc keeps freed blocks for reuse, so a process's resident size stays near its highest
# need; with a fixed mmap threshold it gives every large block back on free, and the peak
# resident size follows the peak of live tensors (at the cost of fresh pages for each).
LIVE_MEMORY_ENV = {"MALLOC_MMAP_THRESHOLD_": "131072"}


def run_code(args, code_root, count_flops):
    """Stage times and resident peak under the default allocator, the peak of live memory
    from one more inference in a process that returns freed memory at once and, if
    `count_flops`, the multiply-adds of this code's stages."""
    result = run_worker(args, code_root)
    if args.device == "cpu":
        live = run_worker(args, code_root, repeats=1, env_variables=LIVE_MEMORY_ENV)
        result["live_peak_bytes"], result["live_before_bytes"] = live["peak_bytes"], live["before_bytes"]
    if count_flops:
        result["macs"] = run_worker(args, code_root, count_flops=True)["macs"]
    return result


def summarize(results):
    """Per stage (and in total): (median, min, max) seconds over all timed inferences; the
    memory peaks over all processes."""
    runs = [dict(run, total=sum(run.values())) for r in results for run in r["runs"]]
    times = {stage: [run[stage] for run in runs] for stage in (*STAGES, "total")}
    spread = {stage: (statistics.median(t), min(t), max(t)) for stage, t in times.items()}
    memory = {key: max(r[key] for r in results) for key in results[0] if key.endswith("_bytes")}
    macs = next((r["macs"] for r in results if "macs" in r), {})
    return spread, memory, macs


def print_table(label, spread, memory, macs, peak_gflops):
    print(f"\n{label}")
    print(f"{'stage':<20}{'median s':>10}{'min-max s':>14}{'GMAC':>9}{'GFLOP/s':>10}{'of peak':>9}")
    for stage in (*STAGES, "total"):
        seconds, fastest, slowest = spread[stage]
        row = f"{stage:<20}{seconds:>10.3f}{f'{fastest:.3f}-{slowest:.3f}':>14}"
        if stage in macs:
            gflops = 2 * macs[stage] / seconds / 1e9
            print(f"{row}{macs[stage] / 1e9:>9.1f}{gflops:>10.1f}{gflops / peak_gflops:>9.0%}")
        else:
            print(f"{row}{'-':>9}{'-':>10}{'-':>9}")

    def gib(key):
        return f"{memory[key] / 2**30:.2f} GiB"

    print(f"peak resident memory during the calls: {gib('peak_bytes')} ({gib('before_bytes')} before them)")
    if "live_peak_bytes" in memory:
        print(
            f"peak live memory (freed memory returned at once): {gib('live_peak_bytes')}"
            f" ({gib('live_before_bytes')} before)"
        )


def main():
    parser = timing_parser(__doc__, DEFAULT_CONFIG)
    parser.add_argument("--size", type=int, nargs=2, default=[800, 1088], metavar=("H", "W"))
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--repeats", type=int, default=2, help="timed inferences per process")
    parser.add_argument("--no-flops", action="store_true", help="skip the fvcore count")
    parser.add_argument("--count-flops", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.worker:
        import_only_timed_code()
        if args.count_flops:
            print(json.dumps({"macs": stage_macs(args)}))
        else:
            worker(args)
        return

    peaks = {name: matmul_peak(d, args.device) for name, d in DTYPES.items()}
    print(
        f"{args.config_file} at {args.size[0]}x{args.size[1]}, {args.dtype}, {args.device}, {args.threads} threads; "
        + ", ".join(f"matmul peak {name} {gflops:.0f} GFLOP/s" for name, gflops in peaks.items())
    )
    counted = set()

    def run_one(code_root):
        # each code's own computation is counted (once): a change may do less work
        count_flops = not args.no_flops and code_root not in counted
        counted.add(code_root)
        return run_code(args, code_root, count_flops)

    results = time_alternately(args.compare_to, args.rounds, run_one)
    summaries = {label: summarize(r) for label, r in results.items()}
    for label, summary in summaries.items():
        print_table(label, *summary, peaks[args.dtype])
    if args.compare_to:
        ours, theirs = summaries["this checkout"][0], summaries[args.compare_to][0]
        print(f"\ntime ratio this checkout / {args.compare_to} (same run, alternating processes):")
        print("  " + ", ".join(f"{stage} {ours[stage][0] / theirs[stage][0]:.2f}x" for stage in (*STAGES, "total")))


if __name__ == "__main__":
    main()
