"""YouTube-VIS evaluation of a video model's predictions.

The model returns, per video, {"image_size", "pred_scores", "pred_labels", "pred_masks"
(one (T, H, W) bool tensor per prediction)}. Each prediction becomes one entry of the
official submission format, {"video_id", "category_id" (the dataset's id), "score",
"segmentations": T compressed RLEs with str counts}, written to `results.json`. When the
dataset's json has annotations, AP/AR are computed here (`ytvis_metrics`); the published
validation splits have none (they are scored by the challenge server), so only the file
is written.
"""

import itertools
import logging
import os
from collections import OrderedDict
from typing import Dict, List, Optional

import numpy as np
import pycocotools.mask as mask_util
import torch

from detectron2.data import MetadataCatalog
from detectron2.evaluation import DatasetEvaluator
from detectron2.utils import comm

from mask2former.data.datasets.panoptic_json import read_json
from mask2former.utils.file_io import atomic_write_json

from .ytvis_metrics import METRIC_NAMES, evaluate_tracks, track_area, track_rles

__all__ = ["YTVISEvaluator", "video_predictions_to_results", "ytvis_ground_truth"]

logger = logging.getLogger(__name__)


def video_predictions_to_results(
    video_id, output: dict, contiguous_id_to_dataset_id: Dict[int, int]
) -> List[dict]:
    """One video's model output -> its submission entries (see the module docstring)."""
    results = []
    predictions = zip(output["pred_scores"], output["pred_labels"], output["pred_masks"])
    for score, label, masks in predictions:
        label = int(label)
        if label not in contiguous_id_to_dataset_id:
            raise ValueError(
                f"Video {video_id}: predicted class {label} is not one of the dataset's "
                f"{len(contiguous_id_to_dataset_id)} classes."
            )
        masks = torch.as_tensor(masks).to("cpu", torch.uint8).numpy()  # (T, H, W)
        rles = mask_util.encode(np.asfortranarray(masks.transpose(1, 2, 0)))
        for rle in rles:
            rle["counts"] = rle["counts"].decode("ascii")
        results.append(
            {
                "video_id": video_id,
                "category_id": contiguous_id_to_dataset_id[label],
                "score": float(score),
                "segmentations": rles,
            }
        )
    return results


def ytvis_ground_truth(data: dict) -> List[dict]:
    """The tracks of a YouTube-VIS json (parsed) in the form `evaluate_tracks` takes."""
    videos = {v["id"]: v for v in data["videos"]}
    tracks = []
    for anno in data.get("annotations", []):
        video = videos[anno["video_id"]]
        rles = track_rles(anno["segmentations"], video["height"], video["width"])
        areas = [a for a in anno.get("areas") or [] if a]
        tracks.append(
            {
                "video_id": anno["video_id"],
                "category_id": anno["category_id"],
                "rles": rles,
                "area": float(np.mean(areas)) if areas else track_area(rles),
                "iscrowd": anno.get("iscrowd", 0),
            }
        )
    return tracks


def _prediction_rles(prediction: dict, videos: Dict[int, dict]) -> List[dict]:
    """A submission entry's RLEs, checked against its video's frame count and size."""
    video = videos.get(prediction["video_id"])
    if video is None:
        raise ValueError(
            f"YTVISEvaluator: video_id {prediction['video_id']} is not in the dataset's json."
        )
    size = [video["height"], video["width"]]
    segmentations = prediction["segmentations"]
    length = video.get("length", len(video["file_names"]))
    if len(segmentations) != length or any(list(s["size"]) != size for s in segmentations):
        raise ValueError(
            f"YTVISEvaluator: the prediction for video {video['id']} has {len(segmentations)} "
            f"masks of size {segmentations[0]['size'] if segmentations else None}, but the "
            f"video has {length} frames of {size} (H, W); the model must return masks at the "
            "input's 'height'/'width' for every frame."
        )
    return track_rles(segmentations, *size)


class YTVISEvaluator(DatasetEvaluator):
    """Video instance segmentation AP/AR on a registered YouTube-VIS-format dataset.

    Its metadata needs "json_file" and "thing_dataset_id_to_contiguous_id" (as
    `register_ytvis_dataset` sets). `process` takes one video per call (the video model
    evaluates one video at a time); `evaluate` returns {"segm": {metric: value}}.
    """

    def __init__(
        self, dataset_name: str, output_dir: Optional[str] = None, distributed: bool = True
    ):
        self._metadata = MetadataCatalog.get(dataset_name)
        for field in ("json_file", "thing_dataset_id_to_contiguous_id"):
            if not hasattr(self._metadata, field):
                raise ValueError(
                    f"YTVISEvaluator: dataset '{dataset_name}' has no '{field}' in its metadata; "
                    "register it with register_ytvis_dataset."
                )
        self._dataset_name = dataset_name
        self._output_dir = output_dir
        self._distributed = distributed
        self._contiguous_id_to_dataset_id = {
            v: k for k, v in self._metadata.thing_dataset_id_to_contiguous_id.items()
        }
        self._predictions = []

    def reset(self):
        self._predictions = []

    def process(self, inputs, outputs):
        if isinstance(outputs, dict):  # the video model returns one video's output
            outputs = [outputs]
        if len(inputs) != len(outputs):
            raise ValueError(
                f"YTVISEvaluator.process got {len(inputs)} videos but {len(outputs)} outputs."
            )
        for video, output in zip(inputs, outputs):
            self._predictions.extend(
                video_predictions_to_results(
                    video["video_id"], output, self._contiguous_id_to_dataset_id
                )
            )

    def evaluate(self):
        if self._distributed:
            comm.synchronize()
            predictions = comm.gather(self._predictions, dst=0)
            if not comm.is_main_process():
                return {}
            predictions = list(itertools.chain(*predictions))
        else:
            predictions = self._predictions

        if self._output_dir:
            path = os.path.join(self._output_dir, "results.json")
            logger.info(f"Saving {len(predictions)} video predictions to {path}")
            atomic_write_json(path, predictions)

        data = read_json(self._metadata.json_file, "json_file")
        if not data.get("annotations"):
            logger.warning(
                f"'{self._metadata.json_file}' has no annotations (a challenge split?); "
                "wrote results.json for the evaluation server and computed no metrics."
            )
            return OrderedDict()
        videos = {v["id"]: v for v in data["videos"]}
        tracks = [dict(p, rles=_prediction_rles(p, videos)) for p in predictions]
        metrics = evaluate_tracks(ytvis_ground_truth(data), tracks)
        names = {c["id"]: c["name"] for c in data.get("categories", [])}
        segm = OrderedDict((name, metrics[name]) for name in METRIC_NAMES)
        for key, value in metrics.items():
            if key.startswith("AP-"):
                category = int(key[3:])
                segm[f"AP-{names.get(category, category)}"] = value
        logger.info(
            "Video instance segmentation: "
            + ", ".join(f"{name} {segm[name]:.2f}" for name in METRIC_NAMES)
        )
        return OrderedDict(segm=segm)
