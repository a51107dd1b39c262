"""Cost of the training mappers on a Cityscapes-sized record (1024x2048 image and labels).

For each mapper the reference is detectron2's own `DatasetMapper` doing the same reading
and the same augmentations on the same record (image + sem_seg, no targets), measured in
the same run, interleaved; ratio = mapper time / reference time. The "no checks" rows
show what the input validation (label range, sizes) costs.

    python benchmarks/bench_mappers.py [--repeats 5] [--size 1024x2048]
"""

import argparse
import statistics
import tempfile
import time

import numpy as np
from PIL import Image

from detectron2.data import DatasetMapper
from detectron2.data import transforms as T
from panopticapi.utils import id2rgb

from mask2former.data.dataset_mappers import (
    MaskFormerPanopticDatasetMapper,
    MaskFormerSemanticDatasetMapper,
)


def make_record(
    folder: str, height: int, width: int, num_segments: int = 40, seed: int = 0
) -> dict:
    """A random Voronoi-like panoptic layout with 19 classes, written in the real formats."""
    rng = np.random.default_rng(seed)
    centres = rng.integers(0, [height, width], size=(num_segments, 2))
    ys, xs = np.mgrid[0:height:8, 0:width:8]
    nearest = ((ys[..., None] - centres[:, 0]) ** 2 + (xs[..., None] - centres[:, 1]) ** 2).argmin(
        -1
    )
    segment = np.kron(nearest, np.ones((8, 8), np.int64))[:height, :width]
    classes = rng.integers(0, 19, num_segments)
    sem = classes[segment].astype(np.uint8)
    ids = segment + 1
    Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(
        f"{folder}/img.png"
    )
    Image.fromarray(sem).save(f"{folder}/sem.png")
    Image.fromarray(id2rgb(ids)).save(f"{folder}/pan.png")
    return {
        "file_name": f"{folder}/img.png",
        "sem_seg_file_name": f"{folder}/sem.png",
        "pan_seg_file_name": f"{folder}/pan.png",
        "segments_info": [
            {"id": i + 1, "category_id": int(c), "iscrowd": 0} for i, c in enumerate(classes)
        ],
        "height": height,
        "width": width,
    }


def augmentations(height: int):
    # The Cityscapes semantic recipe: short-edge resize around the original size, 512x1024 crop.
    return [
        T.ResizeShortestEdge([height], 4 * height, "choice"),
        T.RandomCrop_CategoryAreaConstraint("absolute", (height // 2, height), 1.0, 255),
        T.RandomFlip(),
    ]


def timed(fn, record) -> float:
    start = time.perf_counter()
    fn(dict(record))
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--size", default="1024x2048")
    args = parser.parse_args()
    height, width = map(int, args.size.split("x"))

    with tempfile.TemporaryDirectory() as folder:
        record = make_record(folder, height, width)
        semantic_record = {
            k: v for k, v in record.items() if k not in ("pan_seg_file_name", "segments_info")
        }
        common = dict(image_format="RGB", ignore_label=255, size_divisibility=-1)
        reference = DatasetMapper(
            is_train=True, augmentations=augmentations(height), image_format="RGB"
        )
        candidates = {
            "mask_former_semantic": (
                MaskFormerSemanticDatasetMapper(
                    augmentations=augmentations(height), num_classes=19, **common
                ),
                semantic_record,
            ),
            "mask_former_semantic (no checks)": (
                MaskFormerSemanticDatasetMapper(augmentations=augmentations(height), **common),
                semantic_record,
            ),
            "mask_former_panoptic": (
                MaskFormerPanopticDatasetMapper(
                    augmentations=augmentations(height), num_classes=19, **common
                ),
                record,
            ),
        }
        print(
            f"record {height}x{width}, {len(record['segments_info'])} segments, {args.repeats} repeats (median)"
        )
        print(f"{'mapper':34s} {'time (ms)':>10s} {'reference (ms)':>15s} {'ratio':>6s}")
        for name, (mapper, rec) in candidates.items():
            timed(mapper, rec), timed(reference, semantic_record)  # warm-up
            ours, theirs = [], []
            for _ in range(args.repeats):
                ours.append(timed(mapper, rec))
                theirs.append(timed(reference, semantic_record))
            a, b = statistics.median(ours), statistics.median(theirs)
            print(f"{name:34s} {1000 * a:10.1f} {1000 * b:15.1f} {a / b:6.2f}")


if __name__ == "__main__":
    main()
