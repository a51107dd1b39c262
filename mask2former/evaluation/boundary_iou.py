"""Boundary IoU and Boundary AP (Cheng et al., "Boundary IoU: Improving Object-Centric
Image Segmentation Evaluation", CVPR 2021).

The boundary region of a mask is the set of its pixels within distance ``d`` of its contour,
``d = dilation_ratio x image diagonal`` rounded to whole pixels (at least 1). Distances are
chessboard distances, so the region is what ``d`` erosions with a 3x3 square remove; pixels
outside the image count as background (a mask touching the border has a contour there).
Boundary IoU is the IoU of the two boundary regions. Boundary AP is COCO's mask AP with
``min(mask IoU, boundary IoU)`` as the IoU that matches a detection to a ground truth.
"""
import contextlib
import io
import json
import math

import cv2
import numpy as np
import pycocotools.mask as mask_util
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from tqdm import tqdm

from .instance_evaluation import InstanceSegEvaluator

__all__ = [
    "BOUNDARY_AP_METRICS",
    "BoundaryAPEvaluator",
    "BoundaryCOCOeval",
    "boundary_ap_from_files",
    "boundary_ap_metrics",
    "boundary_dilation",
    "boundary_iou",
    "evaluate_boundary_ap",
    "mask_boundary",
]

# the order of COCOeval.stats[:6]
BOUNDARY_AP_METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")


def boundary_dilation(height: int, width: int, dilation_ratio: float) -> int:
    """``d`` in pixels: ``dilation_ratio`` times the image diagonal, rounded, at least 1."""
    return max(1, int(round(dilation_ratio * math.hypot(height, width))))


def mask_boundary(mask: np.ndarray, dilation: int) -> np.ndarray:
    """The pixels of ``mask`` (H, W) within chessboard distance ``dilation`` of its contour,
    as a bool (H, W) array."""
    mask = np.ascontiguousarray(mask, dtype=np.uint8)
    boundary = np.zeros(mask.shape, dtype=bool)
    # Only the mask's bounding box is transformed: pixels around it are background, and the
    # zero frame stands for them (or, at the image border, makes the border a contour).
    x, y, w, h = cv2.boundingRect(mask)
    if w == 0:
        return boundary
    box = mask[y : y + h, x : x + w]
    framed = cv2.copyMakeBorder(box, 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0)
    distance = cv2.distanceTransform(framed, cv2.DIST_C, 3)[1:-1, 1:-1]
    boundary[y : y + h, x : x + w] = (box > 0) & (distance <= dilation)
    return boundary


def boundary_iou(gt: np.ndarray, dt: np.ndarray, dilation_ratio: float = 0.02) -> float:
    """Boundary IoU of two binary masks of the same image; 0 when both are empty."""
    if gt.shape != dt.shape:
        raise ValueError(f"boundary_iou: masks of different sizes {gt.shape} and {dt.shape}")
    dilation = boundary_dilation(gt.shape[0], gt.shape[1], dilation_ratio)
    gt_boundary, dt_boundary = mask_boundary(gt, dilation), mask_boundary(dt, dilation)
    union = np.count_nonzero(gt_boundary | dt_boundary)
    return float(np.count_nonzero(gt_boundary & dt_boundary) / union) if union else 0.0


def _rle_boundary(rle: dict, dilation_ratio: float) -> dict:
    height, width = rle["size"]
    mask = mask_util.decode(rle)
    boundary = mask_boundary(mask, boundary_dilation(height, width, dilation_ratio))
    return mask_util.encode(np.asfortranarray(boundary, dtype=np.uint8))


class BoundaryCOCOeval(COCOeval):
    """pycocotools' COCOeval for ``segm`` whose matching IoU is min(mask IoU, boundary IoU).

    Everything but the IoU matrix (matching, crowd handling, areas, accumulation, summary)
    is COCOeval's own. Boundary regions are computed once per annotation, kept as RLE, and
    compared with pycocotools' RLE IoU (a crowd ground truth is scored as COCO does: the
    intersection over the detection's boundary region).
    """

    def __init__(self, coco_gt, coco_dt, dilation_ratio: float = 0.02):
        super().__init__(coco_gt, coco_dt, iouType="segm")
        self.dilation_ratio = dilation_ratio

    def _prepare(self):
        super()._prepare()  # turns every segmentation into RLE
        annotations = [a for anns in (self._gts, self._dts) for per_image in anns.values() for a in per_image]
        for ann in tqdm(annotations, desc="Boundary regions", unit="mask", leave=False):
            ann["boundary"] = _rle_boundary(ann["segmentation"], self.dilation_ratio)

    def computeIoU(self, imgId, catId):
        mask_ious = super().computeIoU(imgId, catId)
        if len(mask_ious) == 0:
            return mask_ious
        p = self.params
        if p.useCats:
            gt, dt = self._gts[imgId, catId], self._dts[imgId, catId]
        else:
            gt = [g for c in p.catIds for g in self._gts[imgId, c]]
            dt = [d for c in p.catIds for d in self._dts[imgId, c]]
        # the detections in the order and number super().computeIoU used
        order = np.argsort([-d["score"] for d in dt], kind="mergesort")[: p.maxDets[-1]]
        dt_boundaries = [dt[i]["boundary"] for i in order]
        iscrowd = [int(g["iscrowd"]) for g in gt]
        boundary_ious = mask_util.iou(dt_boundaries, [g["boundary"] for g in gt], iscrowd)
        return np.minimum(mask_ious, boundary_ious)


def boundary_ap_metrics(coco_eval: COCOeval) -> dict:
    """AP, AP50, AP75, APs, APm, APl in % from an evaluated and summarized COCOeval; NaN
    where COCOeval has -1 (no ground truth of that size), as detectron2 reports it."""
    stats = coco_eval.stats[: len(BOUNDARY_AP_METRICS)]
    return {name: float(100 * s) if s >= 0 else float("nan") for name, s in zip(BOUNDARY_AP_METRICS, stats)}


def evaluate_boundary_ap(coco_gt: COCO, coco_results: list, dilation_ratio: float = 0.02, img_ids=None):
    """Boundary AP of ``coco_results`` (COCO instance results with RLE ``segmentation``)
    against ``coco_gt``; returns the summarized ``BoundaryCOCOeval`` (its ``summarize``
    table is printed)."""
    if not coco_results:
        raise ValueError("evaluate_boundary_ap: no detections to evaluate")
    # without 'bbox', loadRes takes areas (APs/m/l) from the masks, as COCO's mask AP does
    results = [{k: v for k, v in r.items() if k != "bbox"} for r in coco_results]
    with contextlib.redirect_stdout(io.StringIO()):
        coco_dt = coco_gt.loadRes(results)
    coco_eval = BoundaryCOCOeval(coco_gt, coco_dt, dilation_ratio)
    if img_ids is not None:
        coco_eval.params.imgIds = img_ids
    with contextlib.redirect_stdout(io.StringIO()):
        coco_eval.evaluate()
        coco_eval.accumulate()
    print(f"Boundary AP (dilation ratio {dilation_ratio}):")
    coco_eval.summarize()
    return coco_eval



def _read_json(path: str, what: str):
    with open(path) as f:
        try:
            return json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{what} {path} is not valid json: {e}") from None


def boundary_ap_from_files(gt_json: str, dt_json: str, dilation_ratio: float = 0.02) -> dict:
    """Boundary AP metrics (``BOUNDARY_AP_METRICS``, in %) of the instance results in
    ``dt_json`` (e.g. the ``coco_instances_results.json`` of ``InstanceSegEvaluator``)
    against the COCO instance annotations ``gt_json``. Problems name the file."""
    gt = _read_json(gt_json, "ground truth")
    if not isinstance(gt, dict) or not {"images", "annotations", "categories"} <= set(gt):
        raise ValueError(f"ground truth {gt_json} is not a COCO instance json (images, annotations, categories)")
    results = _read_json(dt_json, "results")
    if not isinstance(results, list) or not results:
        raise ValueError(f"results {dt_json}: expected a non-empty list of instance results")
    required = {"image_id", "category_id", "segmentation", "score"}
    incomplete = [i for i, r in enumerate(results) if not isinstance(r, dict) or not required <= set(r)]
    if incomplete:
        raise ValueError(f"results {dt_json}: entry {incomplete[0]} lacks one of {sorted(required)}")
    unknown = {r["image_id"] for r in results} - {im["id"] for im in gt["images"]}
    if unknown:
        raise ValueError(f"results {dt_json} have image ids not in {gt_json}: {sorted(unknown)[:10]}")
    coco_gt = COCO()
    coco_gt.dataset = gt
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt.createIndex()
    return boundary_ap_metrics(evaluate_boundary_ap(coco_gt, results, dilation_ratio))

class BoundaryAPEvaluator(InstanceSegEvaluator):
    """Boundary AP of a model's instance predictions, reported as ``boundary_segm`` (AP,
    AP50, AP75, APs, APm, APl and per-class AP). Predictions are collected and mapped to
    dataset class ids as by ``InstanceSegEvaluator``; no results file is written (the
    instance evaluator next to it writes the same ``coco_instances_results.json``)."""

    def __init__(self, dataset_name, dilation_ratio=0.02, distributed=True, output_dir=None):
        super().__init__(
            dataset_name, tasks=("segm",), distributed=distributed, output_dir=output_dir, use_fast_impl=False
        )
        self._dilation_ratio = dilation_ratio

    def _eval_predictions(self, predictions, img_ids=None):
        coco_results = self._results_with_dataset_ids(predictions)
        coco_eval = (
            evaluate_boundary_ap(self._coco_api, coco_results, self._dilation_ratio, img_ids=img_ids)
            if coco_results
            else None  # no detection at all: NaN, as for mask AP
        )
        self._results["boundary_segm"] = self._derive_coco_results(
            coco_eval, "segm", class_names=self._metadata.get("thing_classes")
        )
