#!/usr/bin/env python
"""Video Mask2Former demo: segment and track the instances of a video and draw them.

    python demo/demo_video.py --config-file CFG --video-input v.mp4 --output out/ \\
        [--save-json] --opts MODEL.WEIGHTS model_final.pth
    python demo/demo_video.py --config-file CFG --input 'frames/*.jpg' --output out/ --opts MODEL.WEIGHTS W

An instance is one object through the whole video: it keeps its colour and its id (its
rank by score, shown as "#id class score") in every frame. A video input gives
`out/<name>.mp4`; frames give one PNG per frame in `out/`, or a video when --output
names a video file (e.g. out/clip.mp4). --save-json adds `<video>.json` with every shown
instance and its per-frame boxes. Inputs and weights are checked before the model runs;
outputs are written atomically.
"""
import argparse
import contextlib
import itertools
import logging
import os
import sys
from typing import Dict, List, Optional

import cv2
import numpy as np
import tqdm
from detectron2.utils.colormap import colormap
from detectron2.utils.logger import setup_logger
from detectron2.utils.visualizer import Visualizer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from demo import (  # noqa: E402  (the image demo's input/output helpers)
    IMAGE_EXTENSIONS,
    VIDEO_EXTENSIONS,
    DemoError,
    expand_inputs,
    plan_image_outputs,
    read_image_bgr,
    setup_cfg,
    write_image,
    write_json,
)

from mask2former.utils.errors import run_reporting_errors  # noqa: E402
from mask2former.utils.file_io import atomic_path  # noqa: E402
from mask2former.utils.visualizer import all_class_names, display_metadata  # noqa: E402
from mask2former.video import add_maskformer2_video_config  # noqa: E402
from mask2former.video import data as _video_data  # noqa: E402, F401  (registers the video datasets)
from mask2former.video.predictor import VideoPredictor  # noqa: E402

logger = logging.getLogger("mask2former.demo")

DEFAULT_FPS = 10.0  # for videos written from frame files
_PALETTE = colormap(rgb=True, maximum=1)


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Video Mask2Former demo")
    parser.add_argument("--config-file", required=True, metavar="FILE", help="path to config file")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--video-input", help="path to a video file (any OpenCV-readable format)")
    source.add_argument("--input", nargs="+", help="the frames of one video: files or glob patterns, in order")
    parser.add_argument(
        "--output", required=True,
        help="a folder for the results, or a video file name (.mp4, .avi, ...) to write a video",
    )
    parser.add_argument(
        "--confidence-threshold", type=float, default=0.5, help="minimum score of instances to be shown"
    )
    parser.add_argument("--fps", type=float, default=None,
                        help=f"frame rate of a written video (default: the input's, {DEFAULT_FPS} for frames)")
    parser.add_argument("--scale", type=float, default=1.0,
                        help="draw on frames enlarged this many times (labels stay legible on small videos)")
    parser.add_argument("--save-json", action="store_true",
                        help="also write the shown instances (class, score, per-frame boxes) as JSON")
    parser.add_argument("--allow-partial-weights", action="store_true",
                        help="load weights even if some keys are missing, unexpected or of another shape")
    parser.add_argument("--opts", default=[], nargs=argparse.REMAINDER,
                        help="config overrides as KEY VALUE pairs, e.g. MODEL.WEIGHTS model.pth")
    return parser


def read_video(path: str):
    """All frames (BGR) of a video file and its frame rate (None if it reports none)."""
    capture = cv2.VideoCapture(path)
    if not capture.isOpened():
        raise DemoError(f"Cannot open video '{path}' with OpenCV.")
    fps = capture.get(cv2.CAP_PROP_FPS) or None
    total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) or None
    frames = []
    with tqdm.tqdm(total=total, desc=f"reading {os.path.basename(path)}", unit="frame") as progress:
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            frames.append(frame)
            progress.update(1)
    capture.release()
    if not frames:
        raise DemoError(f"Video '{path}' has no readable frame.")
    return frames, fps


def read_frames(files: List[str]) -> List[np.ndarray]:
    frames = [read_image_bgr(f) for f in tqdm.tqdm(files, desc="reading frames", unit="frame")]
    sizes = {frame.shape[:2] for frame in frames}
    if len(sizes) > 1:
        raise DemoError(f"The input frames have different sizes {sorted(sizes)}; a video has one size.")
    return frames


def shown_instances(predictions: Dict, class_names: List[str], confidence_threshold: float) -> List[Dict]:
    """The instances to draw, best score first: {"id", "category_id", "category", "score",
    "masks" (T, H, W) bool numpy}. The id and the colour (``color_of(id)``) are fixed for
    the whole video."""
    order = np.argsort(-np.asarray(predictions["pred_scores"], dtype=np.float64), kind="stable")
    shown = []
    for i in order.tolist():
        score = float(predictions["pred_scores"][i])
        if score < confidence_threshold:
            continue
        category_id = int(predictions["pred_labels"][i])
        name = class_names[category_id] if 0 <= category_id < len(class_names) else f"class {category_id}"
        masks = predictions["pred_masks"][i]
        masks = masks.cpu().numpy() if hasattr(masks, "cpu") else np.asarray(masks)
        shown.append({"id": len(shown) + 1, "category_id": category_id, "category": name,
                      "score": score, "masks": masks.astype(bool)})
    return shown


def color_of(instance_id: int) -> np.ndarray:
    return _PALETTE[instance_id % len(_PALETTE)]


def draw_frame(frame_bgr: np.ndarray, t: int, instances: List[Dict], metadata, scale: float = 1.0) -> np.ndarray:
    """Frame `t` with the instances visible in it, enlarged `scale` times; BGR."""
    visible = [inst for inst in instances if inst["masks"][t].any()]
    visualizer = Visualizer(frame_bgr[:, :, ::-1], metadata, scale=scale)
    if visible:
        visualizer.overlay_instances(
            masks=[inst["masks"][t] for inst in visible],
            labels=[f"#{inst['id']} {inst['category']} {inst['score']:.0%}" for inst in visible],
            assigned_colors=[color_of(inst["id"]) for inst in visible],
        )
    return np.ascontiguousarray(visualizer.output.get_image()[:, :, ::-1])


def instance_records(instances: List[Dict]) -> List[Dict]:
    """JSON records of the shown instances: per frame, the area and [x0, y0, x1, y1] box
    (x1/y1 exclusive), or None where the instance is not visible."""
    records = []
    for inst in instances:
        frames = []
        for mask in inst["masks"]:
            ys, xs = np.nonzero(mask)
            frames.append(None if len(xs) == 0 else {
                "area": int(len(xs)),
                "bbox": [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1],
            })
        records.append({"id": inst["id"], "category": inst["category"], "category_id": inst["category_id"],
                        "score": inst["score"], "color": [round(float(c), 4) for c in color_of(inst["id"])],
                        "frames": frames})
    return records


@contextlib.contextmanager
def atomic_video_writer(path: str, fps: float, size):
    """A cv2.VideoWriter (mp4v) of frames of `size` (H, W), written atomically to `path`."""
    with atomic_path(path) as tmp_path:
        writer = cv2.VideoWriter(tmp_path, cv2.VideoWriter_fourcc(*"mp4v"), float(fps), (size[1], size[0]), True)
        try:
            if not writer.isOpened():
                raise DemoError(f"Cannot open a video writer for '{path}'.")
            yield writer
        finally:
            writer.release()


def plan_outputs(args, files: Optional[List[str]]):
    """(video path or None, frame paths or None, json path or None) for the arguments."""
    output = args.output
    wants_video = os.path.splitext(output)[1].lower() in VIDEO_EXTENSIONS and not os.path.isdir(output)
    if args.video_input or wants_video:
        stem = os.path.splitext(os.path.basename(args.video_input or files[0]))[0]
        video_path = output if wants_video else os.path.join(output, stem + ".mp4")
        return video_path, None, os.path.splitext(video_path)[0] + ".json"
    if os.path.splitext(output)[1].lower() in IMAGE_EXTENSIONS:
        raise DemoError(f"--output '{output}' names an image, but a video needs a folder or a video file.")
    return None, plan_image_outputs(files, output), os.path.join(output, "instances.json")


def run(args) -> Dict:
    """The demo for parsed arguments; returns {"video": path or None, "frames": [paths],
    "json": path or None, "instances": the JSON records}."""
    cfg = setup_cfg(args, extra_configs=[add_maskformer2_video_config])
    files = expand_inputs(args.input) if args.input else None
    if args.video_input and not os.path.isfile(args.video_input):
        raise DemoError(f"Video file '{args.video_input}' does not exist.")
    video_path, frame_paths, json_path = plan_outputs(args, files)  # fail before the model runs
    predictor = VideoPredictor(cfg, allow_partial_weights=args.allow_partial_weights)
    if args.video_input:
        frames, fps = read_video(args.video_input)
    else:
        frames, fps = read_frames(files), None
    fps = args.fps or fps or DEFAULT_FPS

    logger.info(f"Segmenting {len(frames)} frames of {frames[0].shape[1]}x{frames[0].shape[0]} ...")
    predictions = predictor(frames)
    num_classes = cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES
    metadata = display_metadata(predictor.metadata, num_classes)
    instances = shown_instances(predictions, all_class_names(predictor.metadata, num_classes),
                                args.confidence_threshold)
    logger.info(f"{len(instances)} instances scoring at least {args.confidence_threshold}")

    drawn = (draw_frame(frame, t, instances, metadata, args.scale) for t, frame in enumerate(frames))
    progress = dict(total=len(frames), desc="drawing", unit="frame")
    if video_path:
        first = next(drawn)  # its size (the frames' times --scale) is the video's
        with atomic_video_writer(video_path, fps, first.shape[:2]) as writer:
            for image in tqdm.tqdm(itertools.chain([first], drawn), **progress):
                writer.write(image)
    else:
        for path, image in tqdm.tqdm(zip(frame_paths, drawn), **progress):
            write_image(path, image)
    records = instance_records(instances)
    if args.save_json:
        write_json(json_path, {"num_frames": len(frames), "height": frames[0].shape[0],
                               "width": frames[0].shape[1], "instances": records})
    logger.info(f"Wrote {video_path or str(len(frame_paths)) + ' frames'}")
    return {"video": video_path, "frames": frame_paths or [], "json": json_path if args.save_json else None,
            "instances": records}


def main(argv: Optional[List[str]] = None) -> int:
    args = get_parser().parse_args(argv)
    setup_logger(name="fvcore")
    setup_logger(name="mask2former")
    logger.info("Arguments: " + str(args))
    return run_reporting_errors(run, args)


if __name__ == "__main__":
    sys.exit(main())
