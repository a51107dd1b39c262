"""YouTube-VIS metrics: COCO-style AP and AR where the unit is an object track.

What differs from COCO mask AP:
- The IoU of a predicted and a ground-truth track is spatio-temporal: intersections
  summed over the frames divided by unions summed over the frames (a frame where only one
  of them is present adds its area to the union).
- A track's area, for the small/medium/large ranges, is its mean area over the frames
  where it is present.
Everything else is COCO's: per (video, category) greedy matching in score order at IoU
0.50:0.05:0.95, crowd or out-of-range ground truth ignored, at most 1/10/100 predictions
per video, precision interpolated at 101 recall points, AP and AR averaged over the
categories that have ground truth. Values are in percent; -1 where nothing was evaluated.

Tracks are lists of per-frame compressed RLEs (None where absent), as produced by
`track_rles`.
"""

from collections import defaultdict
from typing import Dict, List, Optional, Sequence

import numpy as np
import pycocotools.mask as mask_util

__all__ = ["track_rles", "track_iou", "track_area", "evaluate_tracks", "METRIC_NAMES"]

IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)
RECALL_THRESHOLDS = np.linspace(0.0, 1.0, 101)
MAX_DETECTIONS = (1, 10, 100)
AREA_RANGES = {
    "all": (0.0, 1e10),
    "small": (0.0, 32.0**2),
    "medium": (32.0**2, 96.0**2),
    "large": (96.0**2, 1e10),
}
METRIC_NAMES = (
    "AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"
)  # fmt: skip


def track_rles(segmentations: Sequence, height: int, width: int) -> List[Optional[dict]]:
    """Per-frame segmentations (polygons, compressed or uncompressed RLE, None/[] where
    absent) -> compressed RLEs with bytes counts, None where absent."""
    rles = []
    for segm in segmentations:
        if not segm:
            rles.append(None)
        elif isinstance(segm, list):  # polygons
            rles.append(mask_util.merge(mask_util.frPyObjects(segm, height, width)))
        elif isinstance(segm.get("counts"), list):  # uncompressed RLE
            rles.append(mask_util.frPyObjects(segm, *segm["size"]))
        else:
            counts = segm["counts"]
            counts = counts.encode("ascii") if isinstance(counts, str) else counts
            rles.append({"size": segm["size"], "counts": counts})
    return rles


def track_iou(a: Sequence[Optional[dict]], b: Sequence[Optional[dict]]) -> float:
    """Spatio-temporal IoU of two tracks of the same video (0 when both are empty)."""
    if len(a) != len(b):
        raise ValueError(f"Tracks of {len(a)} and {len(b)} frames cannot be compared.")
    intersection = union = 0.0
    for x, y in zip(a, b):
        if x is not None and y is not None:
            intersection += float(mask_util.area(mask_util.merge([x, y], intersect=True)))
            union += float(mask_util.area(mask_util.merge([x, y], intersect=False)))
        elif x is not None or y is not None:
            union += float(mask_util.area(x if x is not None else y))
    return intersection / union if union > 0 else 0.0


def track_area(rles: Sequence[Optional[dict]]) -> float:
    """Mean area over the frames where the track is present (non-empty); 0 if none."""
    areas = [float(mask_util.area(r)) for r in rles if r is not None]
    areas = [a for a in areas if a > 0]
    return float(np.mean(areas)) if areas else 0.0


def _match(ious, gt_ignore, gt_crowd):
    """COCO's greedy matching of score-sorted predictions (rows of `ious`) to ground
    truth sorted with non-ignored first. Returns (matched gt index + 1 or 0, whether the
    match was to an ignored gt), each (num_thresholds, num_predictions)."""
    num_dt, num_gt = ious.shape
    dt_match = np.zeros((len(IOU_THRESHOLDS), num_dt), dtype=np.int64)
    dt_ignore = np.zeros((len(IOU_THRESHOLDS), num_dt), dtype=bool)
    for t, threshold in enumerate(IOU_THRESHOLDS):
        gt_taken = np.zeros(num_gt, dtype=bool)
        for d in range(num_dt):
            best, best_iou = -1, min(threshold, 1 - 1e-10)
            for g in range(num_gt):
                if gt_taken[g] and not gt_crowd[g]:
                    continue
                # Once matched to a regular gt, stop at the ignored ones (sorted last).
                if best > -1 and not gt_ignore[best] and gt_ignore[g]:
                    break
                if ious[d, g] < best_iou:
                    continue
                best, best_iou = g, ious[d, g]
            if best == -1:
                continue
            dt_match[t, d] = best + 1
            dt_ignore[t, d] = gt_ignore[best]
            gt_taken[best] = True
    return dt_match, dt_ignore


def evaluate_tracks(ground_truth: List[dict], predictions: List[dict]) -> Dict[str, float]:
    """AP/AR (see the module docstring) of `predictions` against `ground_truth`.

    Args:
        ground_truth: {"video_id", "category_id", "rles", "area", "iscrowd"} per track.
        predictions: {"video_id", "category_id", "rles", "score"} per track.
    Returns:
        {name: value in percent} for METRIC_NAMES, plus "AP-<category id>" per category.
    """
    gts, dts = defaultdict(list), defaultdict(list)
    for g in ground_truth:
        gts[g["video_id"], g["category_id"]].append(g)
    known_videos = {g["video_id"] for g in ground_truth}
    for d in predictions:
        if d["video_id"] in known_videos:
            dts[d["video_id"], d["category_id"]].append(d)
    categories = sorted({c for _, c in gts})
    videos = sorted(known_videos)
    areas = list(AREA_RANGES.values())
    shape = (len(IOU_THRESHOLDS), len(categories), len(areas), len(MAX_DETECTIONS))
    precision = -np.ones(shape[:1] + (len(RECALL_THRESHOLDS),) + shape[1:])
    recall = -np.ones(shape)

    for k, category in enumerate(categories):
        per_video = []
        for video in videos:
            g_list, d_list = gts[video, category], dts[video, category]
            if not g_list and not d_list:
                continue
            d_list = sorted(d_list, key=lambda d: -d["score"])[: MAX_DETECTIONS[-1]]
            ious = np.array([[track_iou(d["rles"], g["rles"]) for g in g_list] for d in d_list])
            d_areas = np.array([track_area(d["rles"]) for d in d_list])
            per_video.append((g_list, d_list, ious.reshape(len(d_list), len(g_list)), d_areas))
        for a, (low, high) in enumerate(areas):
            matched = []
            for g_list, d_list, ious, d_areas in per_video:
                ignore = np.array(
                    [bool(g.get("iscrowd", 0)) or not low <= g["area"] <= high for g in g_list],
                    dtype=bool,
                )
                order = np.argsort(ignore, kind="mergesort")
                crowd = np.array([bool(g_list[i].get("iscrowd", 0)) for i in order], dtype=bool)
                dt_match, dt_ignore = _match(ious[:, order], ignore[order], crowd)
                out_of_range = (d_areas < low) | (d_areas > high)
                dt_ignore |= (dt_match == 0) & out_of_range[None]
                scores = np.array([d["score"] for d in d_list])
                matched.append((scores, dt_match, dt_ignore, int((~ignore).sum())))
            num_gt = sum(m[3] for m in matched)
            if num_gt == 0:
                continue
            for m_i, max_det in enumerate(MAX_DETECTIONS):
                scores = np.concatenate([m[0][:max_det] for m in matched])
                order = np.argsort(-scores, kind="mergesort")
                dt_match = np.concatenate([m[1][:, :max_det] for m in matched], axis=1)[:, order]
                dt_ignore = np.concatenate([m[2][:, :max_det] for m in matched], axis=1)[:, order]
                tps = np.cumsum((dt_match > 0) & ~dt_ignore, axis=1).astype(float)
                fps = np.cumsum((dt_match == 0) & ~dt_ignore, axis=1).astype(float)
                for t in range(len(IOU_THRESHOLDS)):
                    tp, fp = tps[t], fps[t]
                    rc = tp / num_gt
                    pr = tp / np.maximum(tp + fp, np.spacing(1))
                    recall[t, k, a, m_i] = rc[-1] if len(tp) else 0.0
                    # Interpolate: precision at recall r is the best precision at >= r.
                    pr = np.maximum.accumulate(pr[::-1])[::-1] if len(pr) else pr
                    q = np.zeros(len(RECALL_THRESHOLDS))
                    found = np.searchsorted(rc, RECALL_THRESHOLDS, side="left")
                    valid = found < len(pr)
                    q[valid] = pr[found[valid]]
                    precision[t, :, k, a, m_i] = q

    def mean(values):
        values = values[values > -1]
        return float(values.mean() * 100) if values.size else -1.0

    area_index = {name: i for i, name in enumerate(AREA_RANGES)}
    last = len(MAX_DETECTIONS) - 1
    t50, t75 = 0, 5  # IoU 0.50 and 0.75

    def ap(t=slice(None), area="all"):
        return mean(precision[t, :, :, area_index[area], last])

    def ar(max_det_index=last, area="all"):
        return mean(recall[:, :, area_index[area], max_det_index])

    results = {
        "AP": ap(),
        "AP50": ap(t50),
        "AP75": ap(t75),
        "APs": ap(area="small"),
        "APm": ap(area="medium"),
        "APl": ap(area="large"),
        "AR1": ar(0),
        "AR10": ar(1),
        "AR100": ar(2),
        "ARs": ar(area="small"),
        "ARm": ar(area="medium"),
        "ARl": ar(area="large"),
    }
    for k, category in enumerate(categories):
        results[f"AP-{category}"] = mean(precision[:, :, k, area_index["all"], last])
    return results
