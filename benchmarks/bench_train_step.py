"""Training iteration time with a per-phase split: data, forward by stage (backbone, pixel
decoder, transformer decoder), matcher, criterion (without the matcher), backward and
optimizer step.

Default: `configs/quickstart/bench_train_R18.yaml` (R18-sized model, batch 8 of 256x256
synthetic shapes through the training loader). `--objects N` replaces the loader by
in-memory batches of random images with N random blob masks each (crowded crops: cells,
people), to show where the matcher and the criterion stand with many targets.
`--dtype bfloat16` runs forward and losses under bfloat16 autocast. Each code runs in
fresh processes; `--compare-to REV` also times that git revision's `mask2former/`,
alternating process by process, and prints the ratios.

    python benchmarks/bench_train_step.py [--dtype bfloat16] [--objects 80] [--compare-to main]
        [--iters 4] [--rounds 2] [--config-file CFG] [KEY VALUE ...]
"""
import json
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_inference import DTYPES, time_alternately, timing_parser  # noqa: E402
from bench_postprocessing import import_only_timed_code, worker_environment  # noqa: E402

DEFAULT_CONFIG = "configs/quickstart/bench_train_R18.yaml"
PHASES = (
    "data", "backbone", "pixel_decoder", "transformer_decoder", "matcher", "criterion", "backward", "optimizer",
)


class PhaseTimer:
    """Adds the wall time of wrapped calls to per-phase totals."""

    def __init__(self):
        self.seconds = defaultdict(float)

    def wrap(self, phase, fn):
        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds[phase] += time.perf_counter() - start

        return timed


def crowded_batches(cfg, num_objects, seed=0):
    """Endless batches of random images with `num_objects` random disc masks each."""
    from detectron2.structures import Instances

    g = torch.Generator().manual_seed(seed)
    size = cfg.INPUT.IMAGE_SIZE
    ys, xs = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    while True:
        batch = []
        for _ in range(cfg.SOLVER.IMS_PER_BATCH):
            centres = torch.rand(num_objects, 2, generator=g) * size
            radii = 4 + 12 * torch.rand(num_objects, generator=g)
            distance = (ys[None] - centres[:, 0, None, None]) ** 2 + (xs[None] - centres[:, 1, None, None]) ** 2
            instances = Instances((size, size))
            instances.gt_masks = distance < radii[:, None, None] ** 2
            instances.gt_classes = torch.randint(0, cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES, (num_objects,), generator=g)
            image = torch.randint(0, 256, (3, size, size), dtype=torch.uint8, generator=g)
            batch.append({"image": image, "instances": instances, "height": size, "width": size})
        yield batch


def worker(args):
    """Times `--iters` training iterations (after one warm-up) of the code on sys.path."""
    from detectron2.config import get_cfg

    from mask2former.config import add_deeplab_config, add_maskformer2_config
    from mask2former.engine.trainer import Trainer

    cfg = get_cfg()
    add_deeplab_config(cfg)
    add_maskformer2_config(cfg)
    cfg.merge_from_file(str(ROOT / args.config_file))
    cfg.merge_from_list(args.opts)
    cfg.MODEL.DEVICE = "cpu"
    torch.manual_seed(0)
    model = Trainer.build_model(cfg).train()
    optimizer = Trainer.build_optimizer(cfg, model)
    batches = iter(crowded_batches(cfg, args.objects)) if args.objects else iter(Trainer.build_train_loader(cfg))

    timer = PhaseTimer()
    head, criterion = model.sem_seg_head, model.criterion
    model.backbone.forward = timer.wrap("backbone", model.backbone.forward)
    head.pixel_decoder.forward_features = timer.wrap("pixel_decoder", head.pixel_decoder.forward_features)
    head.predictor.forward = timer.wrap("transformer_decoder", head.predictor.forward)
    criterion.matcher.forward = timer.wrap("matcher", criterion.matcher.forward)
    criterion.forward = timer.wrap("criterion", criterion.forward)
    dtype = DTYPES[args.dtype]

    def step():
        batch = timer.wrap("data", next)(batches)
        with torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32):
            losses = model(batch)
        loss = sum(losses.values())
        timer.wrap("backward", loss.backward)()
        timer.wrap("optimizer", optimizer.step)()
        optimizer.zero_grad(set_to_none=True)

    step()  # warm-up
    iterations = []
    for _ in range(args.iters):
        timer.seconds.clear()
        start = time.perf_counter()
        step()
        phases = dict(timer.seconds)
        phases["criterion"] -= phases.get("matcher", 0.0)  # the criterion calls the matcher
        phases["total"] = time.perf_counter() - start
        iterations.append(phases)
    print(json.dumps(iterations))


def run_worker(args, code_root):
    env = worker_environment(code_root)
    command = [sys.executable, __file__, "--worker", "--dtype", args.dtype, "--config-file", args.config_file]
    command += ["--iters", str(args.iters), "--objects", str(args.objects), "--threads", str(args.threads), *args.opts]
    out = subprocess.run(command, check=True, capture_output=True, text=True, env=env, cwd=code_root).stdout
    return json.loads(out.strip().splitlines()[-1])


def main():
    parser = timing_parser(__doc__, DEFAULT_CONFIG)
    parser.add_argument("--objects", type=int, default=0, help="in-memory batches with this many objects per image")
    parser.add_argument("--iters", type=int, default=4, help="timed iterations per process")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.worker:
        import_only_timed_code()
        worker(args)
        return

    data = f"{args.objects} objects per image, in memory" if args.objects else "training loader"
    print(f"{args.config_file}, {args.dtype}, {data}, {args.threads} threads")
    results = time_alternately(args.compare_to, args.rounds, lambda code_root: run_worker(args, code_root))
    runs = {label: [it for iterations in r for it in iterations] for label, r in results.items()}
    codes = list(runs)
    medians = {
        label: {p: statistics.median(it.get(p, 0.0) for it in its) for p in (*PHASES, "total")}
        for label, its in runs.items()
    }
    print(f"\n{'median s per iteration':<24}" + "".join(f"{label:>16}" for label in codes))
    for phase in (*PHASES, "total"):
        print(f"{phase:<24}" + "".join(f"{medians[label][phase]:>16.3f}" for label in codes))
    if args.compare_to:
        ours, theirs = medians["this checkout"], medians[args.compare_to]
        print(f"time ratio this checkout / {args.compare_to}: {ours['total'] / theirs['total']:.2f}x per iteration")


if __name__ == "__main__":
    main()
