"""Segment an image with an exported Mask2Former, without detectron2 or the model code.

    python -m mask2former.deploy.run --model model.pt2 --input a.jpg --output out.png \\
        --task panoptic|instance|semantic [--metadata meta.json] [--confidence-threshold 0.5]

`--model` is any of the three export formats (told from the file); `--metadata` defaults
to the meta.json beside it. `out.png` is the image with the result drawn over it in the
classes' colours, and `out.json` beside it holds the result itself: the segments (id,
class, area) of a panoptic result, the detections (class, score, box) of an instance
result, or the pixel count of each class of a semantic one. Both are written atomically.
"""
import argparse
import os
import sys
from typing import Dict, List, Tuple

import numpy as np

TASKS = ("panoptic", "instance", "semantic")


def _segments_drawing(image: np.ndarray, segments: List[Tuple[np.ndarray, List[int]]]) -> np.ndarray:
    """`image` with each (mask, colour) blended in at half opacity, later ones on top."""
    out = image.astype(np.float32)
    for mask, color in segments:
        out[mask] = 0.5 * out[mask] + 0.5 * np.asarray(color, dtype=np.float32)
    return out.round().clip(0, 255).astype(np.uint8)


def describe(result: Dict, task: str, meta: Dict, confidence_threshold: float):
    """(list of (mask, colour) to draw, JSON-able description) of one image's result."""
    names, colors = meta["class_names"], meta["class_colors"]
    if task == "semantic":
        labels = result["sem_seg"].argmax(0).numpy()
        classes, counts = np.unique(labels, return_counts=True)
        drawn = [(labels == c, colors[c]) for c in classes]
        info = [{"category_id": int(c), "name": names[c], "area": int(n)} for c, n in zip(classes, counts)]
        return drawn, {"task": task, "classes": info}
    if task == "panoptic":
        segment_map, segments_info = result["panoptic_seg"]
        segment_map = segment_map.numpy()
        drawn, info = [], []
        for segment in segments_info:
            mask = segment_map == segment["id"]
            drawn.append((mask, colors[segment["category_id"]]))
            info.append(dict(segment, name=names[segment["category_id"]], area=int(mask.sum())))
        return drawn, {"task": task, "segments": info}
    instances = result["instances"]
    keep = (instances.scores >= confidence_threshold).nonzero().flatten().tolist()
    keep.sort(key=lambda i: float(instances.scores[i]))  # most confident drawn last, on top
    drawn = [(instances.masks[i].numpy(), colors[int(instances.classes[i])]) for i in keep]
    info = [
        {"category_id": int(instances.classes[i]), "name": names[int(instances.classes[i])],
         "score": float(instances.scores[i]), "box_xyxy": [float(v) for v in instances.boxes[i]]}
        for i in reversed(keep)
    ]
    return drawn, {"task": task, "instances": info}


def get_parser():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help="exported model (.pt2 or .onnx)")
    parser.add_argument("--input", required=True, help="image file")
    parser.add_argument("--output", required=True, help="PNG to write; the result goes to the .json beside it")
    parser.add_argument("--task", required=True, choices=TASKS)
    parser.add_argument("--metadata", default=None, help="meta.json (default: beside --model)")
    parser.add_argument("--confidence-threshold", type=float, default=0.5, help="instances shown and listed")
    return parser


def main(argv=None) -> int:
    from PIL import Image

    from mask2former.utils.file_io import atomic_path, atomic_write_json

    from .export import metadata_path
    from .runtime import load_metadata, load_network, predict

    args = get_parser().parse_args(argv)
    try:
        meta = load_metadata(args.metadata or metadata_path(args.model))
        try:
            image = np.asarray(Image.open(args.input).convert("RGB"))
        except OSError as e:
            raise ValueError(f"cannot read the image {args.input}: {e}") from e
        network = load_network(args.model)
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    task_on = {f"{task}_on": task == args.task for task in TASKS}
    result = predict(network, meta, [image], **task_on)[0]
    drawn, description = describe(result, args.task, meta, args.confidence_threshold)
    with atomic_path(args.output) as tmp_path:
        Image.fromarray(_segments_drawing(image, drawn)).save(tmp_path, format="PNG")
    atomic_write_json(os.path.splitext(args.output)[0] + ".json", description, indent=2)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
