"""Panoptic quality (PQ, SQ, RQ) computed in the evaluating process."""
import contextlib
import copy
import io
import itertools
import json
import logging
import os
import tempfile
from collections import OrderedDict

from detectron2.evaluation import COCOPanopticEvaluator
from detectron2.evaluation.panoptic_evaluation import _print_panoptic_results
from detectron2.utils import comm
from detectron2.utils.file_io import PathManager

from ..utils.file_io import atomic_write_json

__all__ = ["PanopticEvaluator", "score_panoptic_pairs", "summarize_pq"]

logger = logging.getLogger(__name__)


class PanopticEvaluator(COCOPanopticEvaluator):
    """detectron2's COCOPanopticEvaluator, scoring with panopticapi's per-image routine in
    this process instead of ``pq_compute``'s process pool.

    The pool forks the (large) evaluating process once per CPU core at every evaluation;
    calling ``pq_compute_single_core`` directly gives the same statistics without that,
    and works the same with ``panopticapi`` and ``panopticapi-lite``. Per image, only the
    PNG-encoded prediction (bytes) and its segments_info are kept until ``evaluate``.
    """

    def evaluate(self):
        comm.synchronize()
        predictions = list(itertools.chain(*comm.gather(self._predictions)))
        if not comm.is_main_process():
            return None

        gt_json = PathManager.get_local_path(self._metadata.panoptic_json)
        gt_folder = PathManager.get_local_path(self._metadata.panoptic_root)
        if not os.path.isfile(gt_json):
            raise FileNotFoundError(f"PanopticEvaluator: panoptic_json {gt_json} does not exist")
        if not os.path.isdir(gt_folder):
            raise FileNotFoundError(f"PanopticEvaluator: panoptic_root {gt_folder} does not exist")
        with open(gt_json) as f:
            gt_data = json.load(f)

        predictions_by_image = {p["image_id"]: p for p in predictions}
        missing = [a["image_id"] for a in gt_data["annotations"] if a["image_id"] not in predictions_by_image]
        if missing:
            raise ValueError(
                f"PanopticEvaluator: no prediction for {len(missing)} of {len(gt_data['annotations'])} "
                f"images of {gt_json} (first image_id: {missing[0]})"
            )
        annotations = [
            {k: copy.deepcopy(v) for k, v in p.items() if k != "png_string"} for p in predictions
        ]
        annotations_by_image = {a["image_id"]: a for a in annotations}

        with tempfile.TemporaryDirectory(prefix="panoptic_eval") as pred_dir:
            for p in predictions:
                with open(os.path.join(pred_dir, p["file_name"]), "wb") as f:
                    f.write(p["png_string"])
            if self._output_dir:
                PathManager.mkdirs(self._output_dir)
                atomic_write_json(
                    os.path.join(self._output_dir, "predictions.json"), dict(gt_data, annotations=annotations)
                )
            categories = {c["id"]: c for c in gt_data["categories"]}
            # panopticapi writes segment areas into the dicts it is given: hand it copies
            pairs = [(a, annotations_by_image[a["image_id"]]) for a in gt_data["annotations"]]
            pq_stat = score_panoptic_pairs(pairs, gt_folder, pred_dir, categories)
        return OrderedDict({"panoptic_seg": summarize_pq(pq_stat, categories)})


def score_panoptic_pairs(pairs, gt_folder, pred_folder, categories):
    """panopticapi's per-image scoring of ``(gt_annotation, pred_annotation)`` pairs whose
    PNGs are in ``gt_folder``/``pred_folder``, in this process; returns its ``PQStat``."""
    from panopticapi.evaluation import pq_compute_single_core

    with contextlib.redirect_stdout(io.StringIO()):
        return pq_compute_single_core(0, pairs, gt_folder, pred_folder, categories)


def summarize_pq(pq_stat, categories):
    """PQ, SQ, RQ (in %) for all categories, things (``_th``) and stuff (``_st``), printed
    as detectron2's table; NaN for a kind that has no category."""
    pq_res = {}
    for name, isthing in (("All", None), ("Things", True), ("Stuff", False)):
        try:
            pq_res[name], _ = pq_stat.pq_average(categories, isthing=isthing)
        except ZeroDivisionError:  # no category of this kind in ground truth or predictions
            pq_res[name] = {"pq": float("nan"), "sq": float("nan"), "rq": float("nan"), "n": 0}
    res = {}
    for key, name in (("", "All"), ("_th", "Things"), ("_st", "Stuff")):
        for metric in ("pq", "sq", "rq"):
            res[metric.upper() + key] = 100 * pq_res[name][metric]
    _print_panoptic_results(pq_res)
    return res

