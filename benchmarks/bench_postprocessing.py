"""Inference post-processing: upsampling all queries first vs only the ones each result needs.

Both paths produce semantic, panoptic and instance results for one 800x1088 (padded)
image with Q=100 queries and K=133 classes (COCO panoptic sizes). Each path runs in a
fresh process so that its peak memory can be read on its own; the script prints time
and peak memory of each and the ratios selective / all-queries.

With `--large`, quickstart-sized predictions (Q=20, K=7, a 128x192 network input) are
post-processed to a 24-megapixel (4000x6000) output, by the selective path only: the
peak memory above the process's size before the call is what matters there.

`--compare-to REV` also times that git revision's selective path (its `mask2former/`),
process by process in turn with this checkout's (`--rounds` processes each), and prints
the ratios.

    python benchmarks/bench_postprocessing.py [--repeats 3] [--rounds 1] [--device cpu|cuda] [--large]
        [--compare-to REV]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]

PADDED = (800, 1088)
IMAGE = (800, 1066)
NUM_QUERIES = 100
NUM_CLASSES = 133
NUM_THINGS = 80
# --large: a quickstart model's predictions for a 24-megapixel photo
LARGE = dict(padded=(128, 192), output=(4000, 6000), num_queries=20, num_classes=7, num_things=4)


def make_inputs(device, num_queries=NUM_QUERIES, num_classes=NUM_CLASSES, padded_size=PADDED):
    """Class logits with one query in four confident; each mask a blob around its own centre
    (at stride 4 of `padded_size`)."""
    g = torch.Generator().manual_seed(0)
    class_logits = torch.randn(num_queries, num_classes + 1, generator=g)
    confident = torch.arange(0, num_queries, 4)
    class_logits[confident, torch.randint(0, num_classes, (len(confident),), generator=g)] += 8.0
    h, w = padded_size[0] // 4, padded_size[1] // 4
    centres = torch.rand(num_queries, 2, generator=g) * torch.tensor([h, w])
    radii = (10 + 30 * torch.rand(num_queries, generator=g)) * min(h, w) / 200
    ys = torch.arange(h).view(1, h, 1).float()
    xs = torch.arange(w).view(1, 1, w).float()
    distance = ((ys - centres[:, 0, None, None]) ** 2 + (xs - centres[:, 1, None, None]) ** 2).sqrt()
    mask_logits = 8 * (1 - distance / radii[:, None, None]) + torch.randn(num_queries, h, w, generator=g)
    return class_logits.to(device), mask_logits.to(device)


def options(num_classes=NUM_CLASSES, num_things=NUM_THINGS, detections=100):
    """The post-processing settings, as keywords of `PostprocessOptions`."""
    return dict(
        num_classes=num_classes,
        semantic_on=True,
        panoptic_on=True,
        instance_on=True,
        resize_before_semantic=True,
        object_mask_threshold=0.8,
        overlap_threshold=0.8,
        detections_per_image=detections,
        thing_classes=frozenset(range(num_things)),
    )


def current_rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_rss_bytes():
    """VmHWM of this process (unlike ru_maxrss, not inherited from the parent over exec)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def scene(large):
    """(class logits, mask logits, padded size, image size, output size, options)."""
    if not large:
        return (*make_inputs("cpu"), PADDED, IMAGE, IMAGE, options())
    q, k = LARGE["num_queries"], LARGE["num_classes"]
    logits = make_inputs("cpu", q, k, LARGE["padded"])
    return (*logits, LARGE["padded"], LARGE["padded"], LARGE["output"], options(k, LARGE["num_things"], q))


# The huge-page setting this benchmark was launched with (importing `mask2former` here sets one).
LAUNCH_HUGE_PAGES = os.environ.get("THP_MEM_ALLOC_ENABLE")


def worker_environment(code_root, **variables):
    """The environment of a worker process timing the code at `code_root`: the huge-page
    setting of the allocator is left to that code (as it would be in a process of its
    own) unless this benchmark was launched with one."""
    env = dict(os.environ, PYTHONPATH=str(code_root), **variables)
    env.pop("THP_MEM_ALLOC_ENABLE", None)
    if LAUNCH_HUGE_PAGES is not None:
        env["THP_MEM_ALLOC_ENABLE"] = LAUNCH_HUGE_PAGES
    return env


def import_only_timed_code():
    """In a worker process, let `mask2former` come only from the code on PYTHONPATH: the
    editable install's import finder would otherwise supply, from this checkout, any module
    that a compared revision lacks."""
    sys.meta_path[:] = [f for f in sys.meta_path if not getattr(f, "__module__", "").startswith("__editable__")]


def postprocessing_function(path):
    """fn(class_logits, mask_logits, padded, image, output, **options) of the code on
    sys.path (revisions from before `PostprocessOptions` took these keywords directly)."""
    import mask2former

    # asked by file, not by import: an editable install would supply a missing module
    if not (Path(mask2former.__file__).parent / "postprocessing.py").exists():
        from mask2former.modeling.postprocessing import postprocess_all_queries, postprocess_image

        return {"all_queries": postprocess_all_queries, "selective": postprocess_image}[path]
    from mask2former.postprocessing import PostprocessOptions, postprocess_all_queries, postprocess_image

    fn = {"all_queries": postprocess_all_queries, "selective": postprocess_image}[path]
    return lambda *args, **keywords: fn(*args, PostprocessOptions(**keywords))


def worker(path, repeats, device, large):
    """Runs one path `repeats` times in this process; prints a JSON line."""
    fn = postprocessing_function(path)
    class_logits, mask_logits, padded, image, output, opts = scene(large)
    class_logits, mask_logits = class_logits.to(device), mask_logits.to(device)
    baseline = current_rss_bytes()
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        baseline = torch.cuda.memory_allocated()
    times = []
    with torch.no_grad():
        for _ in range(repeats):
            start = time.perf_counter()
            result = fn(class_logits, mask_logits, padded, image, output, **opts)
            if device == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
            del result
    if device == "cuda":
        peak = torch.cuda.max_memory_allocated() - baseline
    else:
        peak = peak_rss_bytes() - baseline
    print(json.dumps({"path": path, "seconds": statistics.median(times), "peak_bytes": peak}))


def run_in_child(path, repeats, device, large, code_root=str(ROOT)):
    # A fixed mmap threshold makes glibc give every large tensor back on free, so that the
    # peak resident size follows the peak of live tensors.
    env = worker_environment(code_root, MALLOC_MMAP_THRESHOLD_="131072")
    out = subprocess.run(
        [sys.executable, __file__, "--worker", path, "--repeats", str(repeats), "--device", device]
        + (["--large"] if large else []),
        check=True,
        capture_output=True,
        text=True,
        env=env,
        cwd=code_root,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def check_same_results(device):
    """The two paths must agree before their speed means anything."""
    from mask2former.postprocessing import PostprocessOptions, postprocess_all_queries, postprocess_image

    class_logits, mask_logits = make_inputs(device)
    opts = PostprocessOptions(**options())
    with torch.no_grad():
        a = postprocess_image(class_logits, mask_logits, PADDED, IMAGE, IMAGE, opts)
        b = postprocess_all_queries(class_logits, mask_logits, PADDED, IMAGE, IMAGE, opts)
    assert torch.allclose(a["sem_seg"], b["sem_seg"], rtol=1e-4, atol=1e-5)
    assert torch.equal(a["panoptic_seg"][0], b["panoptic_seg"][0]) and a["panoptic_seg"][1] == b["panoptic_seg"][1]
    assert torch.equal(a["instances"].masks, b["instances"].masks)
    # each band of columns adds its part of a mask's mean probability: same terms, other order
    assert torch.allclose(a["instances"].scores, b["instances"].scores, rtol=1e-6, atol=0)
    return len(a["panoptic_seg"][1]), len(a["instances"].scores)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--large", action="store_true", help="24-megapixel output of quickstart-sized predictions")
    parser.add_argument("--compare-to", metavar="GIT_REV", help="also time this revision's selective path")
    parser.add_argument("--rounds", type=int, default=1, help="processes per code and path, alternating")
    parser.add_argument("--worker", choices=["all_queries", "selective"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        import_only_timed_code()
        worker(args.worker, args.repeats, args.device, args.large)
        return
    if args.large:
        r = run_in_child("selective", args.repeats, args.device, large=True)
        size = "x".join(map(str, LARGE["output"]))
        print(
            f"Q={LARGE['num_queries']}, K={LARGE['num_classes']}, {size} output, semantic+panoptic+instance: "
            f"{r['seconds']:.1f} s, peak +{r['peak_bytes'] / 2**30:.2f} GiB"
        )
        return

    segments, detections = check_same_results(args.device)
    print(
        f"padded {PADDED[0]}x{PADDED[1]}, Q={NUM_QUERIES}, K={NUM_CLASSES}, semantic+panoptic+instance, "
        f"{args.device}, {torch.get_num_threads()} threads; same results (pixel-identical, scores within 1e-6) "
        f"({segments} panoptic segments, {detections} instances)"
    )
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_inference import time_alternately

    def run_one(code_root):
        paths = ("all_queries", "selective") if code_root == str(ROOT) else ("selective",)
        return {path: run_in_child(path, args.repeats, args.device, False, code_root) for path in paths}

    runs = time_alternately(args.compare_to, args.rounds, run_one)
    rows = {"all_queries": [r["all_queries"] for r in runs["this checkout"]]}
    rows["selective"] = [r["selective"] for r in runs["this checkout"]]
    if args.compare_to:
        rows[f"selective at {args.compare_to}"] = [r["selective"] for r in runs[args.compare_to]]
    summary = {
        label: (statistics.median(r["seconds"] for r in rs), max(r["peak_bytes"] for r in rs))
        for label, rs in rows.items()
    }
    width = max(map(len, summary))
    for label, (seconds, peak) in summary.items():
        print(f"{label:>{width}}: {seconds * 1000:8.1f} ms  peak +{peak / 2**20:7.1f} MiB")
    ours = summary["selective"]
    for label, (seconds, peak) in summary.items():
        if label != "selective":
            print(f"ratio selective/{label}: time {ours[0] / seconds:.2f}x, peak memory {ours[1] / peak:.2f}x")


if __name__ == "__main__":
    main()
