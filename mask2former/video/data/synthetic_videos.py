"""A built-in synthetic video instance segmentation dataset in YouTube-VIS 2019 format.

Every clip shows 1-4 shapes (circle, rectangle, triangle, star: the thing classes and
drawing of the ``synthetic_shapes`` image dataset, each class with its typical hue
family) on a still textured background. Each shape moves along a straight line while it
rotates and grows or shrinks; some enter or leave the frame, and shapes drawn later
pass in front of earlier ones, so an instance can be partly or wholly hidden for a few
frames. A frame where an instance has no visible pixel has ``null`` annotations, as in
YouTube-VIS.

The data are generated on first use into
``$MASK2FORMER_CACHE/synthetic_videos/v<N>/<split>`` (default cache
``~/.cache/mask2former``): ``instances.json`` (YouTube-VIS 2019: ``videos`` with
``file_names``, ``annotations`` with per-frame RLE ``segmentations``, ``areas`` and
``bboxes``) and ``JPEGImages/<video>/<frame>.jpg``. Generation is deterministic (one
seeded generator per video) and atomic (lock file + rename, as for ``synthetic_shapes``).

Registered datasets (YouTube-VIS type, no disk access until ``DatasetCatalog.get``):
``synthetic_videos_train`` (200 clips of 12 frames), ``synthetic_videos_val`` (30 clips),
both at 96 x 128, and ``synthetic_videos_mini_train`` (4 clips of 6 frames),
``synthetic_videos_mini_val`` (2 clips), at 64 x 80, for smoke tests.
"""
import functools
import logging
import math
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from ...data.datasets.synthetic_shapes import (
    SYNTHETIC_SHAPES_CATEGORIES,
    bbox_xywh,
    build_directory_once,
    cache_root,
    draw_shape,
    encode_rle,
    random_shape_form,
    soften,
    stuff_layout,
    stuff_texture,
    thing_painter,
    uniform_noise,
)
from ...data.datasets.registration import register_once
from ...utils.file_io import atomic_write_json
from .ytvis import load_ytvis_json, ytvis_metadata

__all__ = [
    "SYNTHETIC_VIDEOS_VERSION",
    "SYNTHETIC_VIDEO_CATEGORIES",
    "VIDEO_SPLITS",
    "render_clip",
    "generate_synthetic_videos",
    "ensure_synthetic_videos",
    "ensure_video_split_dir",
    "ensure_dataset_files",
    "register_synthetic_video_split",
    "register_synthetic_videos",
]

logger = logging.getLogger(__name__)

# Bump whenever the generator's output changes: a new version lands in a new folder.
SYNTHETIC_VIDEOS_VERSION = 1

# The thing classes of the image dataset, with its ids and colours.
SYNTHETIC_VIDEO_CATEGORIES = [
    {"id": c["id"], "name": c["name"], "color": c["color"]}
    for c in SYNTHETIC_SHAPES_CATEGORIES
    if c["isthing"]
]

# split -> (number of clips, frames per clip, seed, (height, width))
VIDEO_SPLITS = {
    "train": (200, 12, 0, (96, 128)),
    "val": (30, 12, 1, (96, 128)),
    "mini_train": (4, 6, 2, (64, 80)),
    "mini_val": (2, 6, 3, (64, 80)),
}

# Chance that a shape enters or leaves the frame during the clip.
_CROSSING_RATE = 0.35


def _random_track(rng, num_frames, height, width):
    """Per-frame (center (T, 2), radius (T,), rotation (T,)) of one moving shape."""
    scale = min(height, width)
    size = np.array([width, height], np.float64)
    start = rng.uniform(0.15, 0.85, size=2) * size
    end = rng.uniform(0.15, 0.85, size=2) * size
    if rng.random() < _CROSSING_RATE:
        # one end beyond a border: the shape enters (start outside) or leaves (end outside)
        outside = start if rng.random() < 0.5 else end
        axis = int(rng.integers(0, 2))
        outside[axis] = -0.25 * size[axis] if rng.random() < 0.5 else 1.25 * size[axis]
    t = np.linspace(0.0, 1.0, num_frames)[:, None]
    center = start + (end - start) * t
    radius = rng.uniform(0.09, 0.2) * scale * np.exp(rng.uniform(-0.4, 0.4) * t[:, 0])
    rotation = rng.uniform(0, 2 * np.pi) + rng.uniform(-0.25, 0.25) * np.arange(num_frames)
    return center, radius, rotation


def render_clip(rng, num_frames, height, width, max_things=4):
    """Render one clip.

    Returns (frames, segment_maps, categories):
        frames: (T, H, W, 3) uint8 RGB.
        segment_maps: (T, H, W) int64; 0 is background, k + 1 the visible pixels of
            shape k (shapes in drawing order: a later one hides an earlier one).
        categories: the category dict (from ``SYNTHETIC_VIDEO_CATEGORIES``) of each shape.
    """
    band, band_categories = stuff_layout(rng, height, width)
    background = np.zeros((height, width, 3), np.float64)
    for i, category in enumerate(band_categories):
        region = band == i
        background[region] = stuff_texture(category["name"], rng, height, width)[region]

    shapes = []
    for _ in range(int(rng.integers(1, max_things + 1))):
        category = SYNTHETIC_VIDEO_CATEGORIES[int(rng.integers(0, len(SYNTHETIC_VIDEO_CATEGORIES)))]
        paint = thing_painter(rng, category["name"])
        form = random_shape_form(category["name"], rng)
        shapes.append((category, paint, form) + _random_track(rng, num_frames, height, width))

    frames = np.zeros((num_frames, height, width, 3), np.uint8)
    segment_maps = np.zeros((num_frames, height, width), np.int64)
    for t in range(num_frames):
        image = background.copy()
        grain = uniform_noise(rng, (height, width), 0.05)
        for k, (category, paint, form, center, radius, rotation) in enumerate(shapes):
            mask = draw_shape(category["name"], form, center[t], radius[t], rotation[t], height, width)
            segment_maps[t][mask] = k + 1
            ys, xs = np.nonzero(mask)
            if not len(ys):
                continue  # wholly outside the frame
            # the pattern moves, turns and scales with the shape: paint in its own frame
            dx, dy = xs - center[t][0], ys - center[t][1]
            cos, sin, zoom = math.cos(rotation[t]), math.sin(rotation[t]), radius[0] / radius[t]
            local_x, local_y = (cos * dx + sin * dy) * zoom, (cos * dy - sin * dx) * zoom
            image[ys, xs] = paint(local_y, local_x, grain[ys, xs])
        image = soften(image) + uniform_noise(rng, image.shape, 0.025)
        frames[t] = np.clip(np.round(image * 255.0), 0, 255).astype(np.uint8)
    return frames, segment_maps, [s[0] for s in shapes]


def _frame_annotations(masks):
    """Per-frame (segmentations, areas, bboxes) of one instance, None where it is absent."""
    segmentations, areas, bboxes = [], [], []
    for mask in masks:
        area = int(mask.sum())
        segmentations.append(encode_rle(mask) if area else None)
        areas.append(area if area else None)
        bboxes.append(bbox_xywh(mask) if area else None)
    return segmentations, areas, bboxes


def generate_synthetic_videos(output_dir, num_videos, num_frames, image_size, seed=0):
    """Generate one split into ``output_dir``: ``JPEGImages/<video>/<frame>.jpg`` and
    ``instances.json`` in YouTube-VIS 2019 format. Clip ``i`` uses the generator seeded by
    ``(seed, i)``; the same arguments give the same bytes."""
    output_dir = Path(output_dir)
    height, width = int(image_size[0]), int(image_size[1])
    if height < 32 or width < 32 or num_frames < 1:
        raise ValueError(f"need frames of at least 32 x 32 and 1 frame, got {image_size}, {num_frames}")
    videos, annotations = [], []
    for video_id in tqdm(range(1, num_videos + 1), desc=f"synthetic videos -> {output_dir.name}",
                         unit="clip", mininterval=1.0):
        rng = np.random.default_rng([seed, video_id])
        frames, segment_maps, categories = render_clip(rng, num_frames, height, width)
        folder = f"{video_id:05d}"
        (output_dir / "JPEGImages" / folder).mkdir(parents=True, exist_ok=True)
        file_names = []
        for t, frame in enumerate(frames):
            file_names.append(f"{folder}/{t:05d}.jpg")
            Image.fromarray(frame).save(output_dir / "JPEGImages" / file_names[-1], format="JPEG", quality=92)
        videos.append({"id": video_id, "file_names": file_names, "height": height, "width": width,
                       "length": num_frames})
        for k, category in enumerate(categories):
            segmentations, areas, bboxes = _frame_annotations(segment_maps == k + 1)
            if not any(areas):
                continue  # hidden or outside the frame throughout
            annotations.append({
                "id": len(annotations) + 1, "video_id": video_id, "category_id": category["id"],
                "segmentations": segmentations, "areas": areas, "bboxes": bboxes, "iscrowd": 0,
                "height": height, "width": width, "length": num_frames,
            })
    info = {"description": "mask2former synthetic videos", "version": SYNTHETIC_VIDEOS_VERSION,
            "seed": seed, "image_size": [height, width]}
    categories = [{"id": c["id"], "name": c["name"], "supercategory": "shape"}
                  for c in SYNTHETIC_VIDEO_CATEGORIES]
    atomic_write_json(output_dir / "instances.json",
                      {"info": info, "videos": videos, "annotations": annotations, "categories": categories})


# ---------------------------------------------------------------------------------------
# Cache management and registration
# ---------------------------------------------------------------------------------------
def _split_dir(split, root=None):
    if split not in VIDEO_SPLITS:
        raise KeyError(f"unknown synthetic_videos split {split!r}; expected one of {sorted(VIDEO_SPLITS)}")
    root = Path(root) if root is not None else cache_root()
    return root / "synthetic_videos" / f"v{SYNTHETIC_VIDEOS_VERSION}" / split


def ensure_video_split_dir(split_dir, num_videos, num_frames, image_size, seed=0):
    """Make sure ``split_dir`` holds a generated split, generating it if absent (safe when
    several processes call this at once: lock file + atomic rename). Returns the folder."""
    def fill(tmp):
        logger.info(f"Generating synthetic videos ({num_videos} clips) into {split_dir}")
        generate_synthetic_videos(tmp, num_videos, num_frames, image_size, seed)

    return build_directory_once(split_dir, fill)


def ensure_synthetic_videos(split, root=None):
    """Make sure the built-in ``split`` (a key of ``VIDEO_SPLITS``) exists in the cache
    (``root``, default ``cache_root()``), generating it on first use. Returns its folder."""
    num_videos, num_frames, seed, image_size = VIDEO_SPLITS[split]
    return ensure_video_split_dir(_split_dir(split, root), num_videos, num_frames, image_size, seed)


# dataset name -> zero-argument function that makes its files exist
_ENSURE_FILES = {}


def ensure_dataset_files(dataset_name):
    """Generate the files behind a synthetic video dataset if ``dataset_name`` is one
    (evaluators read ``json_file`` directly). Returns True if it is."""
    ensure = _ENSURE_FILES.get(dataset_name)
    if ensure is None:
        return False
    ensure()
    return True


def register_synthetic_video_split(name, split_dir, num_videos, num_frames, image_size, seed=0):
    """Register ``name`` as a YouTube-VIS dataset (evaluator_type "ytvis") of a split
    generated into ``split_dir`` with these generator arguments when it is first loaded
    (or, through ``ensure_dataset_files``, evaluated). Touches no disk."""
    split_dir = Path(split_dir)
    json_file, image_root = str(split_dir / "instances.json"), str(split_dir / "JPEGImages")
    metadata = ytvis_metadata(SYNTHETIC_VIDEO_CATEGORIES)
    ensure = functools.partial(ensure_video_split_dir, split_dir, num_videos, num_frames, image_size, seed)

    def load():
        ensure()
        return load_ytvis_json(json_file, image_root, metadata["thing_dataset_id_to_contiguous_id"])

    if register_once(name, load, dict(json_file=json_file, image_root=image_root,
                                      evaluator_type="ytvis", **metadata)):
        _ENSURE_FILES[name] = ensure


def register_synthetic_videos(root=None):
    """Register ``synthetic_videos_<split>`` for every split of ``VIDEO_SPLITS`` in the
    cache folder ``root`` (default ``cache_root()``, resolved now). Touches no disk."""
    for split, (num_videos, num_frames, seed, image_size) in VIDEO_SPLITS.items():
        register_synthetic_video_split(
            f"synthetic_videos_{split}", _split_dir(split, root), num_videos, num_frames, image_size, seed
        )


register_synthetic_videos()
