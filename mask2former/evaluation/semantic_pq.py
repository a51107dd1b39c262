"""Panoptic quality (PQ, SQ, RQ) of semantic segmentation predictions.

In every image, each class present is one segment made of all its pixels, in the ground
truth and in the prediction alike; ground-truth pixels with the dataset's ``ignore_label``
are void. Both label maps are written as panoptic PNGs (segment id = class + 1, 0 = void)
and scored by panopticapi's per-image routine (``score_panoptic_pairs``): a predicted and a
ground-truth segment of the same class match at IoU > 0.5, void pixels are left out of the
union, and a prediction lying mostly on void is not a false positive.
"""
import itertools
import json
import os
import tempfile
from collections import OrderedDict, defaultdict
from typing import Callable, Dict, List

import cv2
import numpy as np
import pycocotools.mask as mask_util
from detectron2.data import MetadataCatalog
from detectron2.evaluation import DatasetEvaluator
from detectron2.utils import comm
from detectron2.utils.file_io import PathManager
from PIL import Image
from tqdm import tqdm

from .panoptic_evaluation import score_panoptic_pairs, summarize_pq
from .sem_seg_evaluation import check_semantic_dataset, read_semantic_ground_truth

__all__ = [
    "SemanticPQEvaluator",
    "semantic_pq",
    "semantic_results_json_loader",
    "semantic_to_panoptic",
]


def semantic_to_panoptic(labels: np.ndarray, ignore_label: int):
    """Panoptic form of a semantic label map (H, W): the id map (H, W) int64 with segment id
    ``class + 1`` and 0 for ``ignore_label``, and the segments_info (one segment per class,
    ``category_id`` = class, with its area)."""
    labels = np.asarray(labels, dtype=np.int64)
    valid = labels != ignore_label
    ids = np.where(valid, labels + 1, 0)
    classes, areas = np.unique(labels[valid], return_counts=True)
    segments = [
        {"id": int(c) + 1, "category_id": int(c), "area": int(a), "iscrowd": 0} for c, a in zip(classes, areas)
    ]
    return ids, segments


def _write_id_png(path: str, ids: np.ndarray) -> None:
    from panopticapi.utils import id2rgb

    Image.fromarray(id2rgb(ids)).save(path)


def _categories(meta) -> Dict[int, dict]:
    """Every semantic class, a thing when the metadata lists its contiguous id as one."""
    things = set(meta.get("thing_dataset_id_to_contiguous_id", {}).values())
    return {i: {"id": i, "name": name, "isthing": int(i in things)} for i, name in enumerate(meta.stuff_classes)}


def semantic_pq(dataset_name: str, load_prediction: Callable[[str], np.ndarray]) -> "OrderedDict":
    """PQ/SQ/RQ (in %, all / things ``_th`` / stuff ``_st``) of semantic predictions on every
    image of ``dataset_name``. ``load_prediction(file_name)`` gives the (H, W) contiguous
    class labels predicted for an image (``file_name`` as in the dataset's records); pixels
    it leaves at ``ignore_label`` belong to no predicted segment."""
    records = check_semantic_dataset(dataset_name, "semantic PQ")
    meta = MetadataCatalog.get(dataset_name)
    num_classes, ignore_label = len(meta.stuff_classes), meta.ignore_label
    categories = _categories(meta)

    pairs = []
    with tempfile.TemporaryDirectory(prefix="semantic_pq") as tmp:
        gt_dir, pred_dir = os.path.join(tmp, "gt"), os.path.join(tmp, "pred")
        os.makedirs(gt_dir)
        os.makedirs(pred_dir)
        for index, record in enumerate(tqdm(records, desc="Semantic PQ", unit="image", leave=False)):
            gt = read_semantic_ground_truth(record["sem_seg_file_name"], num_classes, ignore_label, "semantic PQ")
            pred = np.asarray(load_prediction(record["file_name"]), dtype=np.int64)
            if pred.shape != gt.shape:
                raise ValueError(
                    f"semantic PQ: prediction for {record['file_name']} is {pred.shape}, "
                    f"but its ground truth {record['sem_seg_file_name']} is {gt.shape}"
                )
            out_of_range = (pred != ignore_label) & ((pred < 0) | (pred >= num_classes))
            if out_of_range.any():
                raise ValueError(
                    f"semantic PQ: prediction for {record['file_name']} has classes "
                    f"{sorted(np.unique(pred[out_of_range]).tolist())[:10]} outside [0, {num_classes})"
                )
            png_name = f"{index:07d}.png"
            annotations = []
            for folder, labels in ((gt_dir, gt), (pred_dir, pred)):
                ids, segments = semantic_to_panoptic(labels, ignore_label)
                _write_id_png(os.path.join(folder, png_name), ids)
                annotations.append({"image_id": index, "file_name": png_name, "segments_info": segments})
            pairs.append(tuple(annotations))
        pq_stat = score_panoptic_pairs(pairs, gt_dir, pred_dir, categories)
    return OrderedDict({"semantic_pq": summarize_pq(pq_stat, categories)})


def semantic_results_json_loader(json_file: str, dataset_name: str) -> Callable[[str], np.ndarray]:
    """``load_prediction`` for ``semantic_pq`` from the ``sem_seg_predictions.json`` that
    ``SemSegEvaluator`` writes (one RLE per image and class, dataset class ids); a mask is
    decoded only when its image is scored."""
    meta = MetadataCatalog.get(dataset_name)
    with PathManager.open(json_file, "r") as f:
        try:
            results = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{json_file} is not valid json: {e}") from None
    if not isinstance(results, list) or not all(
        isinstance(r, dict) and {"file_name", "category_id", "segmentation"} <= set(r) for r in results
    ):
        raise ValueError(
            f"{json_file}: expected a list of {{'file_name', 'category_id', 'segmentation'}} "
            f"(the sem_seg_predictions.json of SemSegEvaluator)"
        )
    to_contiguous = meta.get("stuff_dataset_id_to_contiguous_id", None)
    by_file: Dict[str, List[dict]] = defaultdict(list)
    for r in results:
        if to_contiguous is not None and r["category_id"] not in to_contiguous:
            raise ValueError(
                f"{json_file}: category_id {r['category_id']} of {r['file_name']} is not a class of "
                f"dataset '{dataset_name}'"
            )
        by_file[r["file_name"]].append(r)

    def load_prediction(file_name: str) -> np.ndarray:
        if file_name not in by_file:
            raise ValueError(f"{json_file} has no prediction for {file_name} of dataset '{dataset_name}'")
        entries = by_file[file_name]
        labels = np.full(entries[0]["segmentation"]["size"], meta.ignore_label, dtype=np.int64)
        for r in entries:
            label = r["category_id"] if to_contiguous is None else to_contiguous[r["category_id"]]
            labels[mask_util.decode(r["segmentation"]).astype(bool)] = label
        return labels

    return load_prediction


class SemanticPQEvaluator(DatasetEvaluator):
    """``semantic_pq`` of a model's ``sem_seg`` outputs (argmax of the class scores).
    Per image only the predicted label map is kept, as 16-bit PNG bytes."""

    def __init__(self, dataset_name: str, distributed: bool = True):
        self._dataset_name = dataset_name
        self._distributed = distributed
        self._predictions = {}

    def reset(self):
        self._predictions = {}

    def process(self, inputs, outputs):
        for input, output in zip(inputs, outputs):
            labels = output["sem_seg"].argmax(dim=0).cpu().numpy().astype(np.uint16)
            self._predictions[input["file_name"]] = cv2.imencode(".png", labels)[1].tobytes()

    def evaluate(self):
        if self._distributed:
            comm.synchronize()
            gathered = comm.gather(self._predictions)
            if not comm.is_main_process():
                return None
        else:
            gathered = [self._predictions]
        predictions = dict(itertools.chain(*(p.items() for p in gathered)))

        def load_prediction(file_name):
            if file_name not in predictions:
                raise ValueError(
                    f"SemanticPQEvaluator: no prediction for {file_name} of dataset '{self._dataset_name}'"
                )
            png = np.frombuffer(predictions[file_name], dtype=np.uint8)
            return cv2.imdecode(png, cv2.IMREAD_UNCHANGED)

        return semantic_pq(self._dataset_name, load_prediction)
