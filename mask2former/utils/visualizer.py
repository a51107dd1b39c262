"""Draw Mask2Former predictions with detectron2's `Visualizer` / `VideoVisualizer`, and
summarise them as plain segment records (for JSON).

Mask2Former numbers categories contiguously over *all* classes (things and stuff
together) in every output: sem_seg channels, panoptic `category_id`, instance
`pred_classes`. `display_metadata` therefore builds one name/colour list over all classes
and gives it to detectron2's visualiser as both its thing and stuff lists.
"""
from typing import Dict, List, Optional

import numpy as np
import torch
from detectron2.data.catalog import Metadata
from detectron2.utils.colormap import colormap
from detectron2.utils.video_visualizer import VideoVisualizer
from detectron2.utils.visualizer import ColorMode, Visualizer

__all__ = [
    "TASKS",
    "all_class_names",
    "display_metadata",
    "resolve_task",
    "draw_predictions",
    "draw_video_frame",
    "summarize_segments",
]

# Preference order of "auto": the richest output first, as detectron2's demo does.
TASKS = ("panoptic", "instance", "semantic")
_OUTPUT_KEY = {"panoptic": "panoptic_seg", "instance": "instances", "semantic": "sem_seg"}
_TEST_FLAG = {"panoptic": "PANOPTIC_ON", "instance": "INSTANCE_ON", "semantic": "SEMANTIC_ON"}


def all_class_names(metadata, num_classes: int = 0) -> List[str]:
    """Names of all categories, indexed by the model's contiguous class id.

    A model with as many classes as the dataset has thing classes (instance
    segmentation) is named by thing_classes. Otherwise both metadata conventions are
    accepted: stuff_classes listing every category (thing classes included), or separate
    thing/stuff lists whose contiguous-id maps say where each goes. Ids without a name
    get "class <id>".
    """
    things = list(metadata.get("thing_classes", None) or []) if metadata is not None else []
    stuff = list(metadata.get("stuff_classes", None) or []) if metadata is not None else []
    if things and len(things) == num_classes:
        names = things
    elif stuff and set(things) <= set(stuff):
        names = stuff
    else:
        names = {}
        for kind, classes in (("thing", things), ("stuff", stuff)):
            id_map = metadata.get(f"{kind}_dataset_id_to_contiguous_id", None) if metadata else None
            if id_map and len(id_map) == len(classes):
                for i, contiguous in enumerate(sorted(id_map.values())):
                    names[contiguous] = classes[i]
        if names:
            names = [names.get(i, f"class {i}") for i in range(max(names) + 1)]
        else:
            names = things + stuff
    names = list(names)
    names += [f"class {i}" for i in range(len(names), num_classes)]
    return names


def display_metadata(metadata, num_classes: int = 0) -> Metadata:
    """An unregistered Metadata whose thing and stuff lists both hold every category,
    with colours from the dataset where it gives one per category, else a fixed palette."""
    names = all_class_names(metadata, num_classes)
    palette = colormap(rgb=True, maximum=255).astype(int).tolist()
    colors = [palette[i % len(palette)] for i in range(len(names))]
    if metadata is not None:
        for key in ("stuff_colors", "thing_colors"):
            given = metadata.get(key, None)
            if given and len(given) == len(names):
                colors = [list(c) for c in given]
                break
    shown = Metadata()
    shown.set(
        thing_classes=names, stuff_classes=names, thing_colors=colors, stuff_colors=colors
    )
    return shown


def resolve_task(predictions: Dict, task: str = "auto") -> str:
    """The task to show: `task` itself, or for "auto" the first available of
    panoptic, instance, semantic. Raises ValueError if it is not in `predictions`."""
    if task == "auto":
        for candidate in TASKS:
            if _OUTPUT_KEY[candidate] in predictions:
                return candidate
        raise ValueError(
            f"The model returned none of {sorted(_OUTPUT_KEY.values())} "
            f"(got keys {sorted(predictions)})."
        )
    if task not in _OUTPUT_KEY:
        raise ValueError(f"Unknown task {task!r}; choose one of {('auto',) + TASKS}.")
    if _OUTPUT_KEY[task] not in predictions:
        raise ValueError(
            f"The model did not return {task} predictions ('{_OUTPUT_KEY[task]}'); "
            f"enable them with MODEL.MASK_FORMER.TEST.{_TEST_FLAG[task]} True."
        )
    return task


def _confident_instances(instances, confidence_threshold: float):
    instances = instances.to("cpu")
    instances = instances[instances.scores >= confidence_threshold]
    if instances.has("pred_masks") and instances.pred_masks.dtype != torch.bool:
        # Masks may come as 0/1 floats or probabilities; the drawing wants binary masks.
        instances.pred_masks = instances.pred_masks > 0.5
    return instances


def _semantic_labels(sem_seg: torch.Tensor) -> torch.Tensor:
    """(K, H, W) class scores -> (H, W) int64 labels."""
    return sem_seg.argmax(dim=0).cpu()


def draw_predictions(
    image_rgb: np.ndarray,
    predictions: Dict,
    metadata: Metadata,
    task: str = "auto",
    confidence_threshold: float = 0.5,
    instance_mode: ColorMode = ColorMode.IMAGE,
) -> np.ndarray:
    """Overlay one image's predictions; returns an (H, W, 3) uint8 RGB image.

    Args:
        image_rgb: (H, W, 3) uint8, the original image (predictions are at its size).
        metadata: as returned by `display_metadata`.
        confidence_threshold: instances scoring lower are not drawn.
    """
    task = resolve_task(predictions, task)
    visualizer = Visualizer(image_rgb, metadata, instance_mode=instance_mode)
    if task == "panoptic":
        panoptic_seg, segments_info = predictions["panoptic_seg"]
        vis = visualizer.draw_panoptic_seg(panoptic_seg.to("cpu"), segments_info)
    elif task == "instance":
        instances = _confident_instances(predictions["instances"], confidence_threshold)
        vis = visualizer.draw_instance_predictions(instances)
    else:
        vis = visualizer.draw_sem_seg(_semantic_labels(predictions["sem_seg"]))
    return vis.get_image()


def draw_video_frame(
    video_visualizer: VideoVisualizer,
    frame_rgb: np.ndarray,
    predictions: Dict,
    task: str = "auto",
    confidence_threshold: float = 0.5,
) -> np.ndarray:
    """Like `draw_predictions` for a video frame, keeping instance colours stable across
    frames (detectron2's `VideoVisualizer`). Returns (H, W, 3) uint8 RGB."""
    task = resolve_task(predictions, task)
    if task == "panoptic":
        panoptic_seg, segments_info = predictions["panoptic_seg"]
        vis = video_visualizer.draw_panoptic_seg_predictions(
            frame_rgb, panoptic_seg.to("cpu"), segments_info
        )
    elif task == "instance":
        instances = _confident_instances(predictions["instances"], confidence_threshold)
        vis = video_visualizer.draw_instance_predictions(frame_rgb, instances)
    else:
        vis = video_visualizer.draw_sem_seg(frame_rgb, _semantic_labels(predictions["sem_seg"]))
    return vis.get_image()


def _bbox_xyxy(mask: np.ndarray) -> Optional[List[int]]:
    """Tight [x0, y0, x1, y1] box (x1/y1 exclusive) of a boolean mask, None if empty."""
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return None
    return [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]


def summarize_segments(
    predictions: Dict,
    class_names: List[str],
    task: str = "auto",
    confidence_threshold: float = 0.5,
) -> List[Dict]:
    """One record per segment shown by `draw_predictions` for the same arguments:
    {"category", "category_id", "score" (None where the task has none), "area" (pixels),
    "bbox" [x0, y0, x1, y1] in pixels, x1/y1 exclusive}; plus "id" and "isthing" for
    panoptic segments. Semantic scores are the mean winning-class value of "sem_seg" over
    the segment (for Mask2Former a sum over queries of class times mask probability, so it
    may exceed 1)."""
    task = resolve_task(predictions, task)

    def name(category_id):
        return class_names[category_id] if 0 <= category_id < len(class_names) else f"class {category_id}"

    records = []
    if task == "panoptic":
        panoptic_seg, segments_info = predictions["panoptic_seg"]
        ids = panoptic_seg.cpu().numpy()
        for info in segments_info:
            mask = ids == info["id"]
            category_id = int(info["category_id"])
            score = info.get("score")
            records.append(
                {
                    "id": int(info["id"]),
                    "category": name(category_id),
                    "category_id": category_id,
                    "isthing": bool(info.get("isthing", False)),
                    "score": None if score is None else float(score),
                    "area": int(mask.sum()),
                    "bbox": _bbox_xyxy(mask),
                }
            )
    elif task == "instance":
        instances = _confident_instances(predictions["instances"], confidence_threshold)
        masks = instances.pred_masks.numpy() if instances.has("pred_masks") else None
        for i in range(len(instances)):
            category_id = int(instances.pred_classes[i])
            if masks is not None:
                area, bbox = int(masks[i].sum()), _bbox_xyxy(masks[i])
            else:
                x0, y0, x1, y1 = instances.pred_boxes.tensor[i].tolist()
                area, bbox = None, [x0, y0, x1, y1]
            records.append(
                {
                    "category": name(category_id),
                    "category_id": category_id,
                    "score": float(instances.scores[i]),
                    "area": area,
                    "bbox": bbox,
                }
            )
    else:
        sem_seg = predictions["sem_seg"].cpu()
        best_score, labels = sem_seg.max(dim=0)
        labels, best_score = labels.numpy(), best_score.numpy()
        for category_id in np.unique(labels).tolist():
            mask = labels == category_id
            records.append(
                {
                    "category": name(category_id),
                    "category_id": int(category_id),
                    "score": float(best_score[mask].mean()),
                    "area": int(mask.sum()),
                    "bbox": _bbox_xyxy(mask),
                }
            )
    return records
