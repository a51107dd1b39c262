#!/usr/bin/env python
"""Mask2Former demo: segment images, a video file or a webcam stream and draw the result.

    python demo/demo.py --config-file CFG --input a.jpg 'dir/*.png' --output out/ \\
        [--save-json] --opts MODEL.WEIGHTS model.pkl
    python demo/demo.py --config-file CFG --video-input v.mp4 --output out/ --opts MODEL.WEIGHTS W
    python demo/demo.py --config-file CFG --webcam --opts MODEL.WEIGHTS W

Without --output, results are shown in a window. Inputs and weights are checked before
anything is written; every output is written atomically, so an error never leaves a
truncated file and never touches outputs written earlier.
"""
import argparse
import contextlib
import glob
import json
import logging
import os
import sys
import time
from typing import Callable, List, Optional

import cv2
import numpy as np
import tqdm
from detectron2.data import MetadataCatalog
from detectron2.utils.logger import setup_logger
from detectron2.utils.video_visualizer import VideoVisualizer

from mask2former.config import build_config
from mask2former.modeling.postprocessing import as_detectron2_results
from mask2former.predictor import Mask2FormerPredictor
from mask2former.data.dataset_mappers.inputs import check_image_decodes
from mask2former.utils.errors import UserInputError, run_reporting_errors
from mask2former.utils.file_io import (
    atomic_path,
    atomic_write_bytes,
    atomic_write_text,
    check_writable_folder,
)
from mask2former.utils.visualizer import (
    TASKS,
    all_class_names,
    display_metadata,
    draw_predictions,
    draw_video_frame,
    resolve_task,
    summarize_segments,
)

WINDOW_NAME = "Mask2Former"
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv")
_QUIT_KEYS = (27, ord("q"))  # Esc, q

logger = logging.getLogger("mask2former.demo")


class ExportedPredictor:
    """`Mask2FormerPredictor`'s interface over an exported network: BGR images in, results
    in the model's detectron2 format out (one image per network call)."""

    def __init__(self, path: str, metadata):
        from mask2former.deploy.export import metadata_path
        from mask2former.deploy.runtime import load_metadata, load_network

        self.network = load_network(path)
        self.export_metadata = load_metadata(metadata_path(path))
        self.metadata = metadata

    def __call__(self, image_bgr: np.ndarray):
        from mask2former.deploy.runtime import predict

        result = predict(self.network, self.export_metadata, [np.ascontiguousarray(image_bgr[:, :, ::-1])])[0]
        return as_detectron2_results(result)

    def predict_batch(self, images):
        return [self(image) for image in images]


class DemoError(UserInputError):
    """A problem with the demo's inputs or outputs, reported without a traceback."""


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Mask2Former demo for built-in configs")
    parser.add_argument("--config-file", required=True, metavar="FILE", help="path to config file")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--webcam", action="store_true", help="take input from the webcam")
    source.add_argument("--video-input", help="path to a video file (any OpenCV-readable format)")
    source.add_argument(
        "--input", nargs="+", help="image files or glob patterns, e.g. a.jpg 'dir/*.png'"
    )
    parser.add_argument(
        "--output",
        help="a folder for the results, or a file name when there is a single input; "
        "without it, results are shown in a window",
    )
    parser.add_argument(
        "--task",
        choices=("auto",) + TASKS,
        default="auto",
        help="which predictions to draw; auto: panoptic, else instance, else semantic",
    )
    parser.add_argument(
        "--confidence-threshold",
        type=float,
        default=0.5,
        help="minimum score of instance predictions to be shown",
    )
    parser.add_argument(
        "--save-json",
        action="store_true",
        help="for images, also write the segments (category, score, area, bbox) as JSON "
        "beside each output image",
    )
    parser.add_argument(
        "--allow-partial-weights",
        action="store_true",
        help="load weights even if some keys are missing, unexpected or of another shape",
    )
    parser.add_argument(
        "--batch-size", type=int, default=1, help="images or frames per forward pass"
    )
    parser.add_argument(
        "--exported",
        metavar="PATH",
        help="run this exported model (tools/export_model.py; its meta.json beside it) instead "
        "of building the model; the config then only names the dataset's categories",
    )
    parser.add_argument(
        "--opts",
        default=[],
        nargs=argparse.REMAINDER,
        help="config overrides as KEY VALUE pairs, e.g. MODEL.WEIGHTS model.pkl",
    )
    return parser


def setup_cfg(args, extra_configs=()):
    """The frozen config of the arguments; `extra_configs` are further `add_*_config`
    functions (a video model's keys)."""
    cfg = build_config(args.config_file, args.opts, extra_configs=extra_configs)
    if cfg.MODEL.WEIGHTS and "://" not in cfg.MODEL.WEIGHTS and not os.path.isfile(cfg.MODEL.WEIGHTS):
        raise DemoError(f"Weights file '{cfg.MODEL.WEIGHTS}' (MODEL.WEIGHTS) does not exist.")
    cfg.freeze()
    return cfg


def expand_inputs(patterns: List[str]) -> List[str]:
    """Expand globs and check every file before any work starts.

    Raises DemoError for a missing file, a glob that matches nothing, or a file OpenCV
    cannot decode (judged from its header)."""
    files = []
    for pattern in patterns:
        pattern = os.path.expanduser(pattern)
        if glob.has_magic(pattern):
            matches = sorted(p for p in glob.glob(pattern) if os.path.isfile(p))
            if not matches:
                raise DemoError(f"Input pattern '{pattern}' matches no files.")
            files.extend(matches)
        elif os.path.isfile(pattern):
            files.append(pattern)
        elif os.path.isdir(pattern):
            raise DemoError(f"Input '{pattern}' is a folder; pass a glob such as '{pattern}/*.jpg'.")
        else:
            raise DemoError(f"Input file '{pattern}' does not exist.")
    for path in files:
        if not cv2.haveImageReader(path):
            raise DemoError(f"Input file '{path}' is not an image OpenCV can read.")
    return files


def read_image_bgr(path: str) -> np.ndarray:
    check_image_decodes(path, "Input image")
    image = cv2.imread(path, cv2.IMREAD_COLOR)
    if image is None:
        raise DemoError(f"Cannot read image '{path}' (unreadable or corrupt file).")
    return image


def plan_image_outputs(files: List[str], output: str) -> List[str]:
    """Output image path for each input: `output` itself for one input with an image
    extension (that is not an existing folder), else `output/<input stem>.png`
    (stems repeated across folders get a numeric suffix)."""
    if (
        len(files) == 1
        and not os.path.isdir(output)
        and os.path.splitext(output)[1].lower() in IMAGE_EXTENSIONS
    ):
        return [output]
    looks_like_file = os.path.splitext(output)[1].lower() in IMAGE_EXTENSIONS
    if (os.path.exists(output) or looks_like_file) and not os.path.isdir(output):
        raise DemoError(
            f"--output '{output}' names a file, but {len(files)} inputs need a folder."
        )
    paths, used = [], set()
    for path in files:
        stem = os.path.splitext(os.path.basename(path))[0]
        name, n = f"{stem}.png", 1
        while name in used:
            name, n = f"{stem}_{n}.png", n + 1
        used.add(name)
        paths.append(os.path.join(output, name))
    return paths


def write_image(path: str, image_bgr: np.ndarray) -> None:
    ext = os.path.splitext(path)[1].lower() or ".png"
    ok, encoded = cv2.imencode(ext, image_bgr)
    if not ok:
        raise DemoError(f"Cannot encode output image '{path}' as {ext}.")
    atomic_write_bytes(path, encoded.tobytes())


def write_json(path: str, payload) -> None:
    atomic_write_text(path, json.dumps(payload, indent=2) + "\n")


class DemoRunner:
    """Couples a predictor with the drawing options; frames in, RGB overlays out."""

    def __init__(self, predictor: Mask2FormerPredictor, task: str, confidence_threshold: float,
                 num_classes: int = 0):
        self.predictor = predictor
        self.task = task
        self.confidence_threshold = confidence_threshold
        self.metadata = display_metadata(predictor.metadata, num_classes)
        self.class_names = all_class_names(predictor.metadata, num_classes)

    def draw(self, image_bgr: np.ndarray, predictions) -> np.ndarray:
        """(H, W, 3) BGR in, (H, W, 3) BGR overlay out."""
        rgb = draw_predictions(
            image_bgr[:, :, ::-1], predictions, self.metadata, self.task, self.confidence_threshold
        )
        return np.ascontiguousarray(rgb[:, :, ::-1])

    def segments(self, predictions):
        return summarize_segments(
            predictions, self.class_names, self.task, self.confidence_threshold
        )


def run_images(runner: DemoRunner, files: List[str], output: Optional[str], save_json: bool,
               batch_size: int = 1) -> List[str]:
    """Segment and draw each file; returns the written image paths (empty when shown)."""
    out_paths = plan_image_outputs(files, output) if output else [None] * len(files)
    written = []
    # closed on errors too, so that an error line does not continue the progress bar
    with tqdm.tqdm(total=len(files), desc="images", unit="image") as progress:
        for start in range(0, len(files), batch_size):
            chunk = list(range(start, min(start + batch_size, len(files))))
            images = [read_image_bgr(files[i]) for i in chunk]
            t0 = time.perf_counter()
            all_predictions = runner.predictor.predict_batch(images)
            logger.info(
                f"{', '.join(files[i] for i in chunk)}: done in {time.perf_counter() - t0:.2f}s"
            )
            progress.update(len(chunk))
            for i, image, predictions in zip(chunk, images, all_predictions):
                drawn = runner.draw(image, predictions)
                out_path = out_paths[i]
                if out_path is None:
                    cv2.namedWindow(WINDOW_NAME, cv2.WINDOW_NORMAL)
                    cv2.imshow(WINDOW_NAME, drawn)
                    if (cv2.waitKey(0) & 0xFF) in _QUIT_KEYS:
                        cv2.destroyAllWindows()
                        return written
                    continue
                write_image(out_path, drawn)
                written.append(out_path)
                if save_json:
                    height, width = image.shape[:2]
                    write_json(
                        os.path.splitext(out_path)[0] + ".json",
                        {
                            "file_name": files[i],
                            "height": height,
                            "width": width,
                            "task": resolve_task(predictions, runner.task),
                            "segments": runner.segments(predictions),
                        },
                    )
    if output is None:
        cv2.destroyAllWindows()
    return written


def _frames(capture, batch_size: int):
    """Yield lists of up to `batch_size` consecutive BGR frames until the capture ends."""
    batch = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        batch.append(frame)
        if len(batch) == batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


def run_video(runner: DemoRunner, video_path: str, output: Optional[str], batch_size: int = 1):
    """Draw every frame of `video_path`; write an mp4v video of the same size and fps to
    `output` (a folder or a file name), or show it in a window. Returns the written path."""
    capture = cv2.VideoCapture(video_path)
    if not capture.isOpened():
        raise DemoError(f"Cannot open video '{video_path}' with OpenCV.")
    width = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH))
    height = int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
    fps = capture.get(cv2.CAP_PROP_FPS) or 0.0
    if not fps > 0:
        logger.warning(f"Video '{video_path}' reports no frame rate; writing at 30 fps.")
        fps = 30.0
    num_frames = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) or None
    video_visualizer = VideoVisualizer(runner.metadata)

    out_path = None
    if output:
        out_path = output
        if os.path.isdir(output) or os.path.splitext(output)[1].lower() not in VIDEO_EXTENSIONS:
            stem = os.path.splitext(os.path.basename(video_path))[0]
            out_path = os.path.join(output, stem + ".mp4")
    with contextlib.ExitStack() as written_atomically:
        writer = None
        try:
            if out_path:
                tmp_path = written_atomically.enter_context(atomic_path(out_path))
                writer = cv2.VideoWriter(
                    tmp_path, cv2.VideoWriter_fourcc(*"mp4v"), float(fps), (width, height), True
                )
                if not writer.isOpened():
                    raise DemoError(f"Cannot open a video writer for '{out_path}'.")
            with tqdm.tqdm(total=num_frames, desc=os.path.basename(video_path), unit="frame") as progress:
                for frames in _frames(capture, batch_size):
                    for frame, predictions in zip(frames, runner.predictor.predict_batch(frames)):
                        drawn_rgb = draw_video_frame(
                            video_visualizer, frame[:, :, ::-1], predictions, runner.task,
                            runner.confidence_threshold,
                        )
                        drawn = np.ascontiguousarray(drawn_rgb[:, :, ::-1])
                        if writer is not None:
                            writer.write(drawn)
                        else:
                            cv2.namedWindow(WINDOW_NAME, cv2.WINDOW_NORMAL)
                            cv2.imshow(WINDOW_NAME, drawn)
                            if (cv2.waitKey(1) & 0xFF) in _QUIT_KEYS:
                                return None
                        progress.update(1)
            return out_path
        finally:
            capture.release()
            if writer is not None:
                writer.release()  # before the temporary file is renamed or removed
            if output is None:
                cv2.destroyAllWindows()


def run_webcam(
    runner: DemoRunner,
    open_capture: Callable = lambda: cv2.VideoCapture(0),
    show: Callable = cv2.imshow,
    wait_key: Callable = cv2.waitKey,
) -> int:
    """Show the webcam with overlays until q/Esc, Ctrl-C or the end of the stream;
    always releases the capture and closes the windows. Returns the frames shown."""
    capture = open_capture()
    if not capture.isOpened():
        raise DemoError("Cannot open the webcam (device 0).")
    video_visualizer = VideoVisualizer(runner.metadata)
    shown = 0
    try:
        with tqdm.tqdm(desc="webcam", unit="frame") as progress:
            while True:
                ok, frame = capture.read()
                if not ok:
                    break
                predictions = runner.predictor(frame)
                drawn_rgb = draw_video_frame(
                    video_visualizer, frame[:, :, ::-1], predictions, runner.task,
                    runner.confidence_threshold,
                )
                show(WINDOW_NAME, np.ascontiguousarray(drawn_rgb[:, :, ::-1]))
                shown += 1
                progress.update(1)
                if (wait_key(1) & 0xFF) in _QUIT_KEYS:
                    break
    except KeyboardInterrupt:
        logger.info("Interrupted.")
    finally:
        capture.release()
        cv2.destroyAllWindows()
    return shown


def output_folder(output: str, num_files: int) -> str:
    """The folder the outputs go to: `output` itself, or its parent for a file name."""
    names_file = os.path.splitext(output)[1].lower() in IMAGE_EXTENSIONS + VIDEO_EXTENSIONS
    if num_files <= 1 and names_file and not os.path.isdir(output):
        return os.path.dirname(os.path.abspath(output))
    return output


def run(args) -> None:
    cfg = setup_cfg(args)
    files = expand_inputs(args.input) if args.input else None
    if args.video_input and not os.path.isfile(args.video_input):
        raise DemoError(f"Video file '{args.video_input}' does not exist.")
    # fail before loading the model
    if files and args.output:
        plan_image_outputs(files, args.output)
    if args.output and not args.webcam:
        check_writable_folder(output_folder(args.output, len(files or [])), "--output")
    if args.exported:
        if not os.path.isfile(args.exported):
            raise DemoError(f"Exported model '{args.exported}' (--exported) does not exist.")
        metadata = MetadataCatalog.get(cfg.DATASETS.TEST[0]) if len(cfg.DATASETS.TEST) else None
        predictor = ExportedPredictor(args.exported, metadata)
    else:
        predictor = Mask2FormerPredictor(cfg, allow_partial_weights=args.allow_partial_weights)
    runner = DemoRunner(
        predictor, args.task, args.confidence_threshold, cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES
    )
    if files:
        run_images(runner, files, args.output, args.save_json, args.batch_size)
    elif args.video_input:
        run_video(runner, args.video_input, args.output, args.batch_size)
    else:
        if args.output:
            logger.warning("--output is ignored with --webcam: frames are only shown.")
        run_webcam(runner)


def main(argv: Optional[List[str]] = None) -> int:
    args = get_parser().parse_args(argv)
    setup_logger(name="fvcore")
    setup_logger(name="mask2former")
    logger.info("Arguments: " + str(args))
    if args.batch_size < 1:
        print("error: --batch-size must be at least 1", file=sys.stderr)
        return 2
    return run_reporting_errors(run, args)


if __name__ == "__main__":
    sys.exit(main())
