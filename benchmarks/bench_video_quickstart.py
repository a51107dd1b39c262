"""Training speed of the video quickstart against the image quickstart, in the same run.

Builds both trainers (configs/quickstart/video_R18_synthetic.yaml and
panoptic_R18_synthetic.yaml, with their data), then times training iterations in
alternating blocks, so that both see the same machine load. Prints seconds per
iteration of each, the ratio video / image and, from the image quickstart's measured
speed on an unloaded 2-core machine (docs/TRAINING.md), the implied video speed there.

    python benchmarks/bench_video_quickstart.py [--blocks 3] [--iters 3] [--image-s-per-iter 0.68]
"""
import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from detectron2.engine import default_argument_parser
from detectron2.utils.events import EventStorage

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
import train_net_video  # noqa: E402  (registers the video model and data)

from mask2former.engine import Trainer, setup_cfg  # noqa: E402
from mask2former.video.trainer import VIDEO_CONFIGS, VideoTrainer  # noqa: E402

CONFIGS = {
    "video": (REPO / "configs/quickstart/video_R18_synthetic.yaml", VideoTrainer, VIDEO_CONFIGS),
    "image": (REPO / "configs/quickstart/panoptic_R18_synthetic.yaml", Trainer, ()),
}


def build(name, output_dir, opts):
    config_file, trainer_cls, extra = CONFIGS[name]
    args = default_argument_parser().parse_args(
        ["--config-file", str(config_file), "OUTPUT_DIR", output_dir, "DATALOADER.NUM_WORKERS", "0", *opts]
    )
    trainer = trainer_cls(setup_cfg(args, extra_configs=extra))
    trainer.resume_or_load(resume=False)
    return trainer


def time_steps(trainer, storage, iters):
    start = time.perf_counter()
    for _ in range(iters):
        storage.iter = trainer.iter
        trainer._trainer.iter = trainer.iter
        trainer.run_step()
        trainer.iter += 1
    return (time.perf_counter() - start) / iters


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--blocks", type=int, default=3)
    parser.add_argument("--iters", type=int, default=3, help="iterations per block")
    parser.add_argument("--image-s-per-iter", type=float, default=0.68,
                        help="the image quickstart's seconds per iteration on an unloaded 2-core machine")
    parser.add_argument("--opts", nargs=argparse.REMAINDER, default=[], help="overrides of the video config")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        trainers = {
            "video": build("video", os.path.join(tmp, "video"), args.opts),
            "image": build("image", os.path.join(tmp, "image"), []),
        }
        times = {name: [] for name in trainers}
        with EventStorage(0) as storage:
            for trainer in trainers.values():
                trainer.storage = storage
                time_steps(trainer, storage, 1)  # warm-up (loader start, first allocations)
            for _ in range(args.blocks):
                for name, trainer in trainers.items():
                    times[name].append(time_steps(trainer, storage, args.iters))
    video, image = statistics.median(times["video"]), statistics.median(times["image"])
    print(f"load average: {os.getloadavg()}")
    print(f"image quickstart: {image:.3f} s/iter (blocks: {', '.join(f'{t:.3f}' for t in times['image'])})")
    print(f"video quickstart: {video:.3f} s/iter (blocks: {', '.join(f'{t:.3f}' for t in times['video'])})")
    print(f"ratio video / image: {video / image:.3f}")
    print(f"implied video speed on an unloaded 2-core machine: {video / image * args.image_s_per_iter:.3f} s/iter")


if __name__ == "__main__":
    main()
