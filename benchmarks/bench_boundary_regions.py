"""Time the boundary regions of Boundary AP: the distance transform on each mask's bounding
box (mask2former.evaluation.boundary_iou.mask_boundary) against the same transform on the
whole image, alternating in one run; both must give the same regions.

    python benchmarks/bench_boundary_regions.py [--masks 200] [--size 480 640] [--repeat 3]
"""
import argparse
import time

import cv2
import numpy as np

from mask2former.evaluation.boundary_iou import boundary_dilation, mask_boundary


def whole_image_boundary(mask, dilation):
    """Reference: one chessboard distance transform over the whole framed image."""
    mask = np.ascontiguousarray(mask, dtype=np.uint8)
    framed = cv2.copyMakeBorder(mask, 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0)
    return (mask > 0) & (cv2.distanceTransform(framed, cv2.DIST_C, 3)[1:-1, 1:-1] <= dilation)


def random_masks(count, height, width, seed=0):
    """Blobs of COCO-like sizes (4% to 40% of the image side) at random places."""
    rng = np.random.default_rng(seed)
    masks = []
    for _ in range(count):
        side = int(rng.uniform(0.04, 0.4) * min(height, width))
        blob = cv2.GaussianBlur(rng.random((side, side)), (0, 0), max(1.0, side / 8)) > 0.5
        mask = np.zeros((height, width), np.uint8)
        y, x = rng.integers(0, height - side), rng.integers(0, width - side)
        mask[y : y + side, x : x + side] = blob
        masks.append(mask)
    return masks


def _time(fn, masks, dilation):
    start = time.perf_counter()
    out = [fn(m, dilation) for m in masks]
    return time.perf_counter() - start, out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--masks", type=int, default=200)
    parser.add_argument("--size", type=int, nargs=2, default=(480, 640), metavar=("H", "W"))
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    masks = random_masks(args.masks, *args.size)
    dilation = boundary_dilation(*args.size, 0.02)
    best = {"whole image": float("inf"), "bounding box": float("inf")}
    for _ in range(args.repeat):  # alternate, keep the best of each
        t_ref, ref = _time(whole_image_boundary, masks, dilation)
        t_box, box = _time(mask_boundary, masks, dilation)
        assert all(np.array_equal(a, b) for a, b in zip(ref, box)), "the regions differ"
        best["whole image"] = min(best["whole image"], t_ref)
        best["bounding box"] = min(best["bounding box"], t_box)
    for name, seconds in best.items():
        print(f"{name:>12}: {1e3 * seconds / len(masks):.3f} ms per mask")
    print(f"speed-up of the bounding box: {best['whole image'] / best['bounding box']:.1f}x (same regions)")


if __name__ == "__main__":
    main()
