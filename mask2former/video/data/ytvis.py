"""YouTube-VIS datasets: loading the json into video records, the published names, and
`register_ytvis_dataset` for data in the same format.

A YouTube-VIS json holds "videos" ({"id", "file_names", "height", "width", "length"}),
"categories" and (for annotated splits) "annotations": one per object track, with
per-frame lists "segmentations" (polygons, compressed or uncompressed RLE, or null where
the object is absent), "bboxes" and "areas". A record here is one video:

    {"video_id", "file_names": [T paths], "height", "width", "length",
     "annotations": [T lists of {"id" (track id), "category_id" (contiguous), "iscrowd",
                                 "segmentation", "bbox" (XYWH), "bbox_mode"}]}

so that frame t lists exactly the objects visible in it. Splits without "annotations"
(the published validation jsons) give records without that key.
"""

import logging
import os
from typing import Dict, List, Optional, Sequence

import pycocotools.mask as mask_util

from detectron2.structures import BoxMode

from mask2former.data.datasets.panoptic_json import read_json
from mask2former.data.datasets.paths import dataset_root, require_paths
from mask2former.data.datasets.register_custom import (
    _check_exists,
    _check_new_name,
    _default_color,
)
from mask2former.data.datasets.registration import register_once

from .ytvis_categories import YTVIS_2019_CATEGORIES, YTVIS_2021_CATEGORIES

__all__ = [
    "load_ytvis_json",
    "filter_videos_without_objects",
    "ytvis_metadata",
    "register_ytvis",
    "register_ytvis_dataset",
    "register_published_ytvis",
]

logger = logging.getLogger(__name__)


def ytvis_metadata(categories: Sequence[dict]) -> dict:
    """Class metadata from categories {"id", "name"[, "color"]}: contiguous ids in id order."""
    categories = sorted(categories, key=lambda c: c["id"])
    return {
        "thing_classes": [c["name"] for c in categories],
        "thing_colors": [list(c.get("color", _default_color(i))) for i, c in enumerate(categories)],
        "thing_dataset_id_to_contiguous_id": {c["id"]: i for i, c in enumerate(categories)},
    }


def _frame_segmentation(segm):
    """One frame's "segmentation" as stored in a record: compressed RLE or the polygons
    with at least 3 points; None when the object is absent (null, or no valid polygon)."""
    if not segm:
        return None
    if isinstance(segm, dict):
        if isinstance(segm.get("counts"), list):  # uncompressed RLE
            segm = mask_util.frPyObjects(segm, *segm["size"])
        return segm
    polygons = [p for p in segm if len(p) % 2 == 0 and len(p) >= 6]
    return polygons or None


def load_ytvis_json(
    json_file: str, image_root: str, dataset_id_to_contiguous_id: Dict[int, int]
) -> List[dict]:
    """Video records (see the module docstring) of a YouTube-VIS json, sorted by video id.

    Raises a ValueError naming the file for a json without "videos", an annotation of an
    unknown video or category, or per-frame lists whose length is not the video's.
    """
    data = read_json(json_file, "json_file")
    if not isinstance(data, dict) or not data.get("videos"):
        raise ValueError(f"json_file '{json_file}' has no 'videos'.")
    videos = sorted(data["videos"], key=lambda v: v["id"])
    tracks_of_video = {v["id"]: [] for v in videos}
    for anno in data.get("annotations", []):
        if anno["video_id"] not in tracks_of_video:
            raise ValueError(
                f"json_file '{json_file}': annotation {anno.get('id')} has video_id "
                f"{anno['video_id']}, which is not in 'videos'."
            )
        if anno["category_id"] not in dataset_id_to_contiguous_id:
            raise ValueError(
                f"json_file '{json_file}': annotation {anno.get('id')} has category_id "
                f"{anno['category_id']}, which is not in the dataset's categories "
                f"{sorted(dataset_id_to_contiguous_id)[:20]}."
            )
        tracks_of_video[anno["video_id"]].append(anno)

    has_annotations = "annotations" in data
    records = []
    for video in videos:
        length = video.get("length", len(video["file_names"]))
        if len(video["file_names"]) != length:
            raise ValueError(
                f"json_file '{json_file}': video {video['id']} has {len(video['file_names'])} "
                f"file_names but length {length}."
            )
        record = {
            "video_id": video["id"],
            "file_names": [os.path.join(image_root, f) for f in video["file_names"]],
            "height": video["height"],
            "width": video["width"],
            "length": length,
        }
        if has_annotations:
            record["annotations"] = _frame_annotations(
                tracks_of_video[video["id"]], record, dataset_id_to_contiguous_id, json_file
            )
        records.append(record)
    logger.info(f"Loaded {len(records)} videos in YouTube-VIS format from {json_file}")
    return records


def _frame_annotations(
    tracks: List[dict], record: dict, dataset_id_to_contiguous_id: Dict[int, int], json_file
) -> List[List[dict]]:
    """Per frame, the objects of `tracks` visible in it (see the module docstring)."""
    length = record["length"]
    frames = [[] for _ in range(length)]
    for track in tracks:
        segmentations = track.get("segmentations") or [None] * length
        bboxes = track.get("bboxes") or [None] * length
        if len(segmentations) != length or len(bboxes) != length:
            raise ValueError(
                f"json_file '{json_file}': annotation {track.get('id')} of video "
                f"{record['video_id']} has {len(segmentations)} segmentations and "
                f"{len(bboxes)} bboxes for a video of {length} frames."
            )
        for t, (segm, bbox) in enumerate(zip(segmentations, bboxes)):
            segm = _frame_segmentation(segm)
            if segm is None:
                continue
            frames[t].append(
                {
                    "id": track["id"],
                    "category_id": dataset_id_to_contiguous_id[track["category_id"]],
                    "iscrowd": track.get("iscrowd", 0),
                    "segmentation": segm,
                    "bbox": bbox,
                    "bbox_mode": BoxMode.XYWH_ABS,
                }
            )
    return frames


def filter_videos_without_objects(records: List[dict]) -> List[dict]:
    """The records with at least one non-crowd object in some frame (the video version of
    DATALOADER.FILTER_EMPTY_ANNOTATIONS; detectron2's filter expects image records)."""
    kept = [
        r
        for r in records
        if any(not a.get("iscrowd", 0) for frame in r.get("annotations", []) for a in frame)
    ]
    if len(kept) < len(records):
        logger.info(f"Removed {len(records) - len(kept)} videos without annotated objects.")
    return kept


def register_ytvis(
    name: str, json_file: str, image_root: str, metadata: dict, how_to_get: str = ""
) -> bool:
    """Register a YouTube-VIS json with known class `metadata` (`ytvis_metadata`); files
    are checked when the dataset is first loaded. Returns whether it registered."""

    def load():
        require_paths(name, {"image_root": image_root, "json_file": json_file}, how_to_get)
        return load_ytvis_json(
            json_file, image_root, metadata["thing_dataset_id_to_contiguous_id"]
        )

    return register_once(
        name,
        load,
        dict(json_file=json_file, image_root=image_root, evaluator_type="ytvis", **metadata),
    )


def register_ytvis_dataset(name: str, json_file: str, image_root: str) -> None:
    """Register a YouTube-VIS-format json and its frame folder under `name`.

    Categories come from the json (contiguous ids in id order); paths are checked now so
    that a typo fails here. Evaluated with YTVISEvaluator (evaluator_type "ytvis").
    """
    _check_new_name(name)
    _check_exists(json_file=json_file, image_root=image_root)
    data = read_json(json_file, "json_file")
    categories = data.get("categories") if isinstance(data, dict) else None
    if not categories:
        raise ValueError(f"json_file '{json_file}' has no 'categories'.")
    register_ytvis(
        name,
        json_file,
        image_root,
        ytvis_metadata(categories),
        how_to_get="Check the paths given to register_ytvis_dataset.",
    )


_HOW_TO_GET = (
    "Download the YouTube-VIS {year} train and valid archives from "
    "https://youtube-vos.org/dataset/vis/ and unpack them into ytvis_{year}/ as "
    "train/JPEGImages, train.json, valid/JPEGImages and valid.json."
)
_SPLIT_FOLDERS = {"train": "train", "val": "valid"}


def register_published_ytvis(root: Optional[str] = None):
    """ytvis_{2019,2021}_{train,val} under `root` ($DETECTRON2_DATASETS by default)."""
    root = dataset_root() if root is None else root
    for year, categories in (("2019", YTVIS_2019_CATEGORIES), ("2021", YTVIS_2021_CATEGORIES)):
        for split, folder in _SPLIT_FOLDERS.items():
            base = os.path.join(root, f"ytvis_{year}")
            register_ytvis(
                f"ytvis_{year}_{split}",
                json_file=os.path.join(base, f"{folder}.json"),
                image_root=os.path.join(base, folder, "JPEGImages"),
                metadata=ytvis_metadata(categories),
                how_to_get=_HOW_TO_GET.format(year=year),
            )

