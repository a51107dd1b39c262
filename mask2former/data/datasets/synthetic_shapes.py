"""A built-in synthetic panoptic dataset: coloured shapes on textured backgrounds.

Every image holds 1-3 "stuff" regions (sky, grass, water textures separated by wavy
horizons) and 1-5 "things" (circle, rectangle, triangle, star) of random size, colour,
texture and rotation, which may overlap; a later shape occludes an earlier one. Each thing
class has a typical hue family (most of its instances, not all), as real classes have
typical looks. All label formats are derived from one per-pixel segment map, so the COCO
instance json, the COCO panoptic PNG/json and the semantic PNG always agree.

The data are generated on first use into ``$MASK2FORMER_CACHE/synthetic_shapes/v<N>/<split>``
(default cache ``~/.cache/mask2former``). Generation is deterministic (one seeded generator
per image) and atomic: a split is written into a temporary folder beside its final place
and renamed into place, under a lock file, so concurrent processes never see half a split.

Registered datasets (metadata complete at registration, no disk access until
``DatasetCatalog.get``):

- ``synthetic_shapes_<split>_panoptic``  evaluator_type ``coco_panoptic_seg``
- ``synthetic_shapes_<split>_instance``  evaluator_type ``coco``
- ``synthetic_shapes_<split>_sem_seg``   evaluator_type ``sem_seg``

for the splits ``train`` (400 images), ``val`` (60) at 256 x 256 and ``mini_train`` (16),
``mini_val`` (8) at 128 x 128. ``register_synthetic_split`` registers other sizes.
"""
import colorsys
import contextlib
import functools
import json
import logging
import math
import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import pycocotools.mask as mask_util
from PIL import Image
from tqdm import tqdm

from detectron2.data import DatasetCatalog, MetadataCatalog

from ...utils.file_io import atomic_directory, atomic_write_json

__all__ = [
    "SYNTHETIC_SHAPES_VERSION",
    "SYNTHETIC_SHAPES_CATEGORIES",
    "SPLITS",
    "cache_root",
    "build_directory_once",
    "generate_synthetic_shapes",
    "ensure_synthetic_shapes",
    "ensure_dataset_files",
    "synthetic_shapes_metadata",
    "load_synthetic_panoptic",
    "load_synthetic_instances",
    "load_synthetic_sem_seg",
    "register_synthetic_shapes",
    "register_synthetic_split",
    "ensure_split_dir",
    # drawing helpers, shared with the synthetic video dataset
    "render_sample",
    "stuff_layout",
    "stuff_texture",
    "thing_painter",
    "random_shape_form",
    "draw_shape",
    "soften",
    "uniform_noise",
    "encode_rle",
    "bbox_xywh",
]

logger = logging.getLogger(__name__)

# Bump whenever the generator's output changes: a new version lands in a new folder.
SYNTHETIC_SHAPES_VERSION = 5

# Dataset ids are deliberately not contiguous (stuff starts at 10), so code that mixes up
# dataset ids and contiguous training ids fails loudly on this dataset.
SYNTHETIC_SHAPES_CATEGORIES = [
    {"id": 1, "name": "circle", "isthing": 1, "color": [220, 20, 60]},
    {"id": 2, "name": "rectangle", "isthing": 1, "color": [255, 165, 0]},
    {"id": 3, "name": "triangle", "isthing": 1, "color": [148, 0, 211]},
    {"id": 4, "name": "star", "isthing": 1, "color": [255, 215, 0]},
    {"id": 10, "name": "sky", "isthing": 0, "color": [135, 206, 235]},
    {"id": 11, "name": "grass", "isthing": 0, "color": [34, 139, 34]},
    {"id": 12, "name": "water", "isthing": 0, "color": [0, 105, 148]},
]
_THINGS = [c for c in SYNTHETIC_SHAPES_CATEGORIES if c["isthing"]]
_STUFF = [c for c in SYNTHETIC_SHAPES_CATEGORIES if not c["isthing"]]

DEFAULT_IMAGE_SIZE = (256, 256)
# split -> (number of images, seed, (height, width)). The "mini" splits are small and
# quick to generate, for smoke tests and demos.
SPLITS = {
    "train": (400, 0, DEFAULT_IMAGE_SIZE),
    "val": (60, 1, DEFAULT_IMAGE_SIZE),
    "mini_train": (16, 2, (128, 128)),
    "mini_val": (8, 3, (128, 128)),
}
IGNORE_LABEL = 255


# ---------------------------------------------------------------------------------------
# Cache folder and atomic writes
# ---------------------------------------------------------------------------------------
def cache_root():
    """The project's cache folder: ``$MASK2FORMER_CACHE`` or ``~/.cache/mask2former``."""
    return Path(os.environ.get("MASK2FORMER_CACHE", "~/.cache/mask2former")).expanduser()


@contextlib.contextmanager
def _file_lock(lock_path):
    """Exclusive inter-process lock (POSIX flock). Yields True while held, or False where
    flock is unavailable (the atomic rename alone then keeps readers safe)."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # Windows
        yield False
        return
    with open(lock_path, "a") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield True
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def build_directory_once(target, fill):
    """Create the folder ``target`` by calling ``fill(temporary_folder)``, unless it exists.

    Safe when several processes ask at once: one builds (under a lock file beside
    ``target``) while the others wait, and the folder appears by an atomic rename, so a
    half-built folder is never visible. Temporary folders left by a crashed build are
    removed. Returns ``target``."""
    target = Path(target)
    if target.is_dir():
        return target
    with _file_lock(target.parent / f".{target.name}.lock") as locked:
        if not target.is_dir():
            if locked:  # nobody else is building: leftovers are from a crashed run
                for stale in target.parent.glob(f".{target.name}.tmp-*"):
                    shutil.rmtree(stale, ignore_errors=True)
            with atomic_directory(target) as tmp:
                fill(tmp)
    return target


# ---------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------
# The same bytes on every machine: pixel values come from float64 elementwise arithmetic
# and uniform random numbers (exact on every platform), rounded to uint8 once at the end;
# no SIMD-dependent float32 kernels (OpenCV resize/blur, float32 transcendental functions)
# touch an image, and labels depend only on float64 comparisons and integer polygon fills.
@functools.lru_cache(maxsize=4)
def _pixel_grid(height, width):
    """Read-only (yy, xx) float64 pixel coordinate grids of an image size."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    yy.setflags(write=False)
    xx.setflags(write=False)
    return yy, xx


def uniform_noise(rng, shape, amplitude):
    """Noise in [-amplitude, amplitude] (triangular: the sum of two uniforms)."""
    return amplitude * (rng.random(shape) - rng.random(shape))


def _value_noise(rng, height, width, cell_y, cell_x, amplitude):
    """Smooth noise (H, W) in [-amplitude, amplitude]: random values on a coarse grid
    (``cell_y`` x ``cell_x`` pixels per step) blended with smoothstep weights."""
    grid = rng.uniform(-amplitude, amplitude, size=(height // cell_y + 2, width // cell_x + 2))
    fy, fx = np.arange(height) / cell_y, np.arange(width) / cell_x
    iy, ix = fy.astype(np.int64), fx.astype(np.int64)
    ty, tx = fy - iy, fx - ix
    ty, tx = (ty * ty * (3 - 2 * ty))[:, None], (tx * tx * (3 - 2 * tx))[None, :]
    top = grid[iy][:, ix] * (1 - tx) + grid[iy][:, ix + 1] * tx
    bottom = grid[iy + 1][:, ix] * (1 - tx) + grid[iy + 1][:, ix + 1] * tx
    return top * (1 - ty) + bottom * ty


def soften(image):
    """A 3x3 binomial blur (edge pixels repeated) of an (H, W, C) image, so that shape
    borders are not perfectly crisp."""
    padded = np.pad(image, ((1, 1), (1, 1), (0, 0)), mode="edge")
    rows = 0.25 * padded[:-2] + 0.5 * padded[1:-1] + 0.25 * padded[2:]
    return 0.25 * rows[:, :-2] + 0.5 * rows[:, 1:-1] + 0.25 * rows[:, 2:]


def stuff_texture(name, rng, height, width):
    """(H, W, 3) float64 texture in [0, 1] for one stuff class."""
    yy, xx = _pixel_grid(height, width)
    jitter = rng.uniform(-0.06, 0.06, size=3)
    if name == "sky":
        base = np.array([0.45, 0.65, 0.95]) + jitter
        gradient = (yy / height)[..., None] * np.array([0.25, 0.2, 0.05])
        clouds = np.clip(_value_noise(rng, height, width, 32, 32, 0.5), 0, None)[..., None]
        texture = base + gradient + clouds
    elif name == "grass":
        base = np.array([0.25, 0.55, 0.18]) + jitter
        # noise stretched vertically reads as blades
        blades = _value_noise(rng, height, width, 12, 2, 0.12) + uniform_noise(rng, (height, width), 0.06)
        texture = base + blades[..., None] * np.array([0.6, 1.0, 0.5])
    elif name == "water":
        base = np.array([0.10, 0.35, 0.60]) + jitter
        period = rng.uniform(6.0, 14.0)
        phase = rng.uniform(0, 2 * np.pi)
        sway = 1.5 * np.sin(2 * np.pi * xx[0] / rng.uniform(40, 90))
        waves = np.sin(2 * np.pi * yy / period + sway[None, :] + phase)
        texture = base + (0.07 * waves + _value_noise(rng, height, width, 16, 16, 0.05))[..., None]
    else:
        raise ValueError(f"unknown stuff class {name!r}")
    return np.clip(texture, 0.0, 1.0)


# Like real object classes, each thing class has a typical colour: a hue family, kept
# away from the greens and blues of the stuff classes. A few things of every class take
# any hue, so that shape matters as well.
_THING_HUES = {"circle": 0.0, "rectangle": 0.14, "triangle": 0.72, "star": 0.86}
_THING_HUE_SPREAD = 0.03
_ANY_HUE_RATE = 0.15


def thing_painter(rng, name):
    """A random look for a thing of class ``name``: a colour of its hue family (or, rarely,
    any colour), solid, striped or graded. Returns ``paint(ys, xs, grain) -> (N, 3)``
    giving the colours of pixels at (ys, xs), with ``grain`` (N,) a per-pixel noise sample."""
    if rng.random() < _ANY_HUE_RATE:
        hue = rng.uniform(0, 1)
    else:
        hue = (_THING_HUES[name] + rng.uniform(-_THING_HUE_SPREAD, _THING_HUE_SPREAD)) % 1.0
    color = np.array(colorsys.hsv_to_rgb(hue, rng.uniform(0.55, 1.0), rng.uniform(0.55, 1.0)))
    kind = int(rng.integers(0, 3))
    angle = rng.uniform(0, np.pi)
    period = rng.uniform(3.0, 7.0)

    def paint(ys, xs, grain):
        coord = xs * math.cos(angle) + ys * math.sin(angle)
        if kind == 0:  # solid
            shade = np.ones_like(coord)
        elif kind == 1:  # stripes
            shade = 1.0 - 0.4 * (np.floor(coord / period) % 2)
        else:  # gradient across the shape
            shade = 0.6 + 0.6 * (coord - coord.min()) / max(float(np.ptp(coord)), 1.0)
        return np.clip(color * shade[:, None] + grain[:, None], 0.0, 1.0)

    return paint


def _polygon_mask(points, height, width):
    """Fill a float polygon (K, 2) of (x, y) points into a (H, W) bool mask, with 1/16
    pixel precision so the result does not depend on rounding conventions."""
    mask = np.zeros((height, width), np.uint8)
    pts = np.round(np.asarray(points) * 16).astype(np.int32)
    cv2.fillPoly(mask, [pts], 1, lineType=cv2.LINE_8, shift=4)
    return mask.astype(bool)


def random_shape_form(name, rng):
    """The random proportions of a shape of class ``name``, independent of its size, place
    and rotation: the aspect ratio of a rectangle, the corner jitter of a triangle, None
    for a circle or a star."""
    if name == "rectangle":
        return rng.uniform(0.5, 1.6)
    if name == "triangle":
        return rng.uniform(-0.25, 0.25, size=3)
    if name in ("circle", "star"):
        return None
    raise ValueError(f"unknown thing class {name!r}")


def draw_shape(name, form, center, radius, rotation, height, width):
    """A shape of class ``name`` with proportions ``form`` (from ``random_shape_form``),
    centred at ``center`` (x, y) with size ``radius`` (pixels) and ``rotation`` (radians),
    as a (H, W) bool mask. The shape may lie partly or wholly outside the image."""
    cx, cy = center
    if name == "circle":
        yy, xx = _pixel_grid(height, width)
        return (xx + 0.5 - cx) ** 2 + (yy + 0.5 - cy) ** 2 <= radius**2
    if name == "rectangle":
        half = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], np.float64)
        local = half * np.array([radius * form, radius / form]) * 0.85
    elif name == "triangle":
        angles = np.array([0.0, 2 * np.pi / 3, 4 * np.pi / 3]) + form
        local = np.stack([np.cos(angles), np.sin(angles)], 1) * radius * 1.15
    elif name == "star":
        angles = np.arange(10) * np.pi / 5
        radii = np.where(np.arange(10) % 2 == 0, radius * 1.1, radius * 0.47)
        local = np.stack([np.cos(angles) * radii, np.sin(angles) * radii], 1)
    else:
        raise ValueError(f"unknown thing class {name!r}")
    turn = np.array([[math.cos(rotation), -math.sin(rotation)], [math.sin(rotation), math.cos(rotation)]])
    return _polygon_mask(local @ turn.T + np.array([cx, cy]), height, width)


def _shape_mask(name, rng, height, width):
    """A random shape of the given class as a (H, W) bool mask."""
    scale = min(height, width)
    radius = rng.uniform(0.07, 0.17) * scale
    cx = rng.uniform(0.08, 0.92) * width
    cy = rng.uniform(0.08, 0.92) * height
    rot = rng.uniform(0, 2 * np.pi)
    form = random_shape_form(name, rng)
    return draw_shape(name, form, (cx, cy), radius, rot, height, width)


def stuff_layout(rng, height, width):
    """Split the image into 1-3 horizontal bands with wavy borders.

    Returns (band_index (H, W) int64, list of stuff category dicts, one per band)."""
    num_bands = int(rng.integers(1, 4))
    order = rng.permutation(len(_STUFF))[:num_bands]
    # border positions at least 15% of the height apart
    while True:
        borders = np.sort(rng.uniform(0.15, 0.85, size=num_bands - 1)) * height
        gaps = np.diff(np.concatenate([[0.0], borders, [float(height)]]))
        if num_bands == 1 or gaps.min() >= 0.15 * height:
            break
    yy, xx = _pixel_grid(height, width)
    band = np.zeros((height, width), np.int64)
    for border in borders:
        amplitude = rng.uniform(0.0, 0.06) * height
        wavelength = rng.uniform(0.3, 1.2) * width
        phase = rng.uniform(0, 2 * np.pi)
        curve = border + amplitude * np.sin(2 * np.pi * xx[0] / wavelength + phase)  # (W,)
        band += (yy >= curve[None, :]).astype(np.int64)
    return band, [_STUFF[i] for i in order]


def render_sample(rng, height, width, max_things=5):
    """Render one image and its segment map.

    Returns (image, segment_map, segments, drawn_areas):
        image: (H, W, 3) uint8 RGB.
        segment_map: (H, W) int64, index into ``segments`` for every pixel.
        segments: list of category dicts (from ``SYNTHETIC_SHAPES_CATEGORIES``), one per
            segment; stuff segments first, then things in drawing order.
        drawn_areas: {segment index: pixels of the whole drawn shape} for things; their
            visible area (in ``segment_map``) is smaller where later things occlude them.
    """
    band, band_categories = stuff_layout(rng, height, width)
    image = np.zeros((height, width, 3), np.float64)
    for i, category in enumerate(band_categories):
        region = band == i
        image[region] = stuff_texture(category["name"], rng, height, width)[region]
    segment_map = band.copy()
    segments = list(band_categories)

    min_area = 0.0015 * height * width  # ~100 px at 256 x 256
    grain = uniform_noise(rng, (height, width), 0.05)
    full_areas, visible_areas = {}, {}
    for _ in range(int(rng.integers(1, max_things + 1))):
        category = _THINGS[int(rng.integers(0, len(_THINGS)))]
        paint = thing_painter(rng, category["name"])
        for _attempt in range(20):
            mask = _shape_mask(category["name"], rng, height, width)
            area = int(mask.sum())
            if area < min_area:
                continue
            # keep every earlier thing at least half visible, so occlusion is partial
            covered = np.bincount(segment_map[mask], minlength=len(segments))
            if all(
                visible_areas[k] - covered[k] >= max(0.5 * full_areas[k], min_area) for k in full_areas
            ):
                break
        else:
            continue
        for k in visible_areas:
            visible_areas[k] -= int(covered[k])
        full_areas[len(segments)] = visible_areas[len(segments)] = area
        segment_map[mask] = len(segments)
        segments.append(category)
        ys, xs = np.nonzero(mask)
        image[ys, xs] = paint(ys.astype(np.float64), xs.astype(np.float64), grain[ys, xs])

    image = soften(image) + uniform_noise(rng, image.shape, 0.025)
    image = np.clip(np.round(image * 255.0), 0, 255).astype(np.uint8)
    return image, segment_map, segments, full_areas


def bbox_xywh(mask):
    ys, xs = np.nonzero(mask)
    x0, y0 = int(xs.min()), int(ys.min())
    return [x0, y0, int(xs.max()) - x0 + 1, int(ys.max()) - y0 + 1]


def encode_rle(mask):
    rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def _id2rgb(ids):
    """COCO panoptic colour encoding: id = R + 256 G + 256^2 B."""
    rgb = np.zeros(ids.shape + (3,), np.uint8)
    for c in range(3):
        rgb[..., c] = (ids >> (8 * c)) & 255
    return rgb


def _write_png(path, array):
    Image.fromarray(array).save(path, format="PNG", optimize=False, compress_level=6)


def generate_synthetic_shapes(output_dir, num_images, image_size=DEFAULT_IMAGE_SIZE, seed=0):
    """Generate one split into ``output_dir`` (which must exist and be empty).

    Writes ``images/*.jpg``, ``panoptic/*.png`` + ``panoptic.json`` (COCO panoptic),
    ``instances.json`` (COCO instances, RLE masks) and ``semantic/*.png`` (contiguous train
    ids, things first; 255 = ignore). The same arguments give the same bytes.

    Args:
        output_dir: destination folder.
        num_images: number of images.
        image_size: (height, width).
        seed: seed of this split; image ``i`` uses the generator seeded by ``(seed, i)``.
    """
    output_dir = Path(output_dir)
    height, width = int(image_size[0]), int(image_size[1])
    if height < 32 or width < 32:
        raise ValueError(f"image_size must be at least 32 x 32, got {image_size}")
    for sub in ("images", "panoptic", "semantic"):
        (output_dir / sub).mkdir(parents=True, exist_ok=True)
    contiguous = {c["id"]: i for i, c in enumerate(SYNTHETIC_SHAPES_CATEGORIES)}

    images, instance_annotations, panoptic_annotations = [], [], []
    for image_id in tqdm(range(num_images), desc=f"synthetic shapes -> {output_dir.name}",
                         unit="img", mininterval=1.0):
        rng = np.random.default_rng([seed, image_id])
        image, segment_map, segments, _ = render_sample(rng, height, width)
        stem = f"{image_id:06d}"
        Image.fromarray(image).save(output_dir / "images" / f"{stem}.jpg", format="JPEG", quality=92)
        images.append({"id": image_id, "file_name": f"{stem}.jpg", "height": height, "width": width})

        # Panoptic segment ids are 1..N (0 stays VOID), in the order of ``segments``.
        panoptic_ids = np.zeros((height, width), np.uint32)
        semantic = np.full((height, width), IGNORE_LABEL, np.uint8)
        segments_info = []
        for k, category in enumerate(segments):
            mask = segment_map == k
            area = int(mask.sum())
            if area == 0:
                continue
            panoptic_ids[mask] = k + 1
            semantic[mask] = contiguous[category["id"]]
            bbox = bbox_xywh(mask)
            segments_info.append(
                {"id": k + 1, "category_id": category["id"], "area": area, "bbox": bbox, "iscrowd": 0}
            )
            if category["isthing"]:
                instance_annotations.append(
                    {
                        "id": len(instance_annotations) + 1,
                        "image_id": image_id,
                        "category_id": category["id"],
                        "segmentation": encode_rle(mask),
                        "area": area,
                        "bbox": bbox,
                        "iscrowd": 0,
                    }
                )
        _write_png(output_dir / "panoptic" / f"{stem}.png", _id2rgb(panoptic_ids))
        _write_png(output_dir / "semantic" / f"{stem}.png", semantic)
        panoptic_annotations.append(
            {"image_id": image_id, "file_name": f"{stem}.png", "segments_info": segments_info}
        )

    info = {"description": "mask2former synthetic shapes", "version": SYNTHETIC_SHAPES_VERSION,
            "seed": seed, "image_size": [height, width]}
    categories = [dict(c, supercategory="thing" if c["isthing"] else "stuff")
                  for c in SYNTHETIC_SHAPES_CATEGORIES]
    atomic_write_json(
        output_dir / "instances.json",
        {"info": info, "images": images, "annotations": instance_annotations,
         "categories": [{k: c[k] for k in ("id", "name", "supercategory")} for c in categories
                        if c["isthing"]]},
    )
    atomic_write_json(
        output_dir / "panoptic.json",
        {"info": info, "images": images, "annotations": panoptic_annotations, "categories": categories},
    )


# ---------------------------------------------------------------------------------------
# Cache management and registration
# ---------------------------------------------------------------------------------------
def _split_dir(split, root=None):
    if split not in SPLITS:
        raise KeyError(f"unknown synthetic_shapes split {split!r}; expected one of {sorted(SPLITS)}")
    root = Path(root) if root is not None else cache_root()
    return root / "synthetic_shapes" / f"v{SYNTHETIC_SHAPES_VERSION}" / split


def ensure_split_dir(split_dir, num_images, image_size=DEFAULT_IMAGE_SIZE, seed=0):
    """Make sure ``split_dir`` holds a generated split, generating it if absent (safe when
    several processes call this at once: lock file + atomic rename). Returns the folder."""
    def fill(tmp):
        logger.info(f"Generating synthetic shapes ({num_images} images) into {split_dir}")
        generate_synthetic_shapes(tmp, num_images, image_size, seed)

    return build_directory_once(split_dir, fill)


def ensure_synthetic_shapes(split, root=None):
    """Make sure the built-in ``split`` (a key of ``SPLITS``: "train", "val", "mini_train",
    "mini_val") exists in the cache (``root``, default ``cache_root()``), generating it on
    first use. Returns its folder."""
    split_dir = _split_dir(split, root)
    num_images, seed, image_size = SPLITS[split]
    return ensure_split_dir(split_dir, num_images, image_size, seed)


def synthetic_shapes_metadata(split_dir):
    """Metadata shared by the three views of a split; only computes paths."""
    split_dir = Path(split_dir)
    things = [c for c in SYNTHETIC_SHAPES_CATEGORIES if c["isthing"]]
    return {
        "thing_classes": [c["name"] for c in things],
        "thing_colors": [c["color"] for c in things],
        # detectron2's panoptic convention: stuff_classes lists every class, things first
        "stuff_classes": [c["name"] for c in SYNTHETIC_SHAPES_CATEGORIES],
        "stuff_colors": [c["color"] for c in SYNTHETIC_SHAPES_CATEGORIES],
        "thing_dataset_id_to_contiguous_id": {c["id"]: i for i, c in enumerate(things)},
        # covers every class so SemSegEvaluator can map all contiguous ids back
        "stuff_dataset_id_to_contiguous_id": {
            c["id"]: i for i, c in enumerate(SYNTHETIC_SHAPES_CATEGORIES)
        },
        "image_root": str(split_dir / "images"),
        "panoptic_root": str(split_dir / "panoptic"),
        "panoptic_json": str(split_dir / "panoptic.json"),
        "json_file": str(split_dir / "instances.json"),
        "sem_seg_root": str(split_dir / "semantic"),
        "ignore_label": IGNORE_LABEL,
        "label_divisor": 1000,
    }


def _read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise RuntimeError(f"cannot read synthetic shapes annotation file {path}: {e}") from e


def load_synthetic_panoptic(split_dir):
    """Dataset dicts in detectron2's COCO panoptic form (``segments_info`` category ids are
    contiguous, with ``isthing``) plus ``sem_seg_file_name``."""
    split_dir = Path(split_dir)
    data = _read_json(split_dir / "panoptic.json")
    contiguous = {c["id"]: i for i, c in enumerate(SYNTHETIC_SHAPES_CATEGORIES)}
    isthing = {c["id"]: bool(c["isthing"]) for c in SYNTHETIC_SHAPES_CATEGORIES}
    images = {im["id"]: im for im in data["images"]}
    dicts = []
    for ann in data["annotations"]:
        im = images[ann["image_id"]]
        stem = os.path.splitext(ann["file_name"])[0]
        dicts.append(
            {
                "file_name": str(split_dir / "images" / im["file_name"]),
                "image_id": im["id"],
                "height": im["height"],
                "width": im["width"],
                "pan_seg_file_name": str(split_dir / "panoptic" / ann["file_name"]),
                "sem_seg_file_name": str(split_dir / "semantic" / f"{stem}.png"),
                "segments_info": [
                    dict(s, category_id=contiguous[s["category_id"]], isthing=isthing[s["category_id"]])
                    for s in ann["segments_info"]
                ],
            }
        )
    return dicts


def load_synthetic_instances(split_dir):
    """Dataset dicts in detectron2's COCO instance form (RLE masks, XYWH_ABS boxes,
    contiguous category ids)."""
    from detectron2.structures import BoxMode

    split_dir = Path(split_dir)
    data = _read_json(split_dir / "instances.json")
    contiguous = {c["id"]: i for i, c in enumerate(_THINGS)}
    per_image = {im["id"]: [] for im in data["images"]}
    for ann in data["annotations"]:
        per_image[ann["image_id"]].append(
            {
                "bbox": ann["bbox"],
                "bbox_mode": BoxMode.XYWH_ABS,
                "category_id": contiguous[ann["category_id"]],
                "segmentation": ann["segmentation"],
                "iscrowd": ann["iscrowd"],
            }
        )
    return [
        {
            "file_name": str(split_dir / "images" / im["file_name"]),
            "image_id": im["id"],
            "height": im["height"],
            "width": im["width"],
            "annotations": per_image[im["id"]],
        }
        for im in data["images"]
    ]


def load_synthetic_sem_seg(split_dir):
    """Dataset dicts in detectron2's semantic form (``file_name``, ``sem_seg_file_name``)."""
    split_dir = Path(split_dir)
    data = _read_json(split_dir / "panoptic.json")
    return [
        {
            "file_name": str(split_dir / "images" / im["file_name"]),
            "sem_seg_file_name": str(split_dir / "semantic" / (os.path.splitext(im["file_name"])[0] + ".png")),
            "image_id": im["id"],
            "height": im["height"],
            "width": im["width"],
        }
        for im in data["images"]
    ]


_VIEWS = {
    "panoptic": (load_synthetic_panoptic, "coco_panoptic_seg"),
    "instance": (load_synthetic_instances, "coco"),
    "sem_seg": (load_synthetic_sem_seg, "sem_seg"),
}
# dataset name -> zero-argument function that makes its files exist
_ENSURE_FILES = {}


def register_synthetic_split(name_prefix, split_dir, num_images, image_size=DEFAULT_IMAGE_SIZE, seed=0):
    """Register ``{name_prefix}_panoptic``, ``{name_prefix}_instance`` and
    ``{name_prefix}_sem_seg`` for a split generated lazily into ``split_dir`` with the given
    generator arguments. Touches no disk."""
    split_dir = Path(split_dir)

    def ensure():
        return ensure_split_dir(split_dir, num_images, image_size, seed)

    metadata = synthetic_shapes_metadata(split_dir)
    for view, (loader, evaluator_type) in _VIEWS.items():
        name = f"{name_prefix}_{view}"
        DatasetCatalog.register(name, lambda f=loader: f(ensure()))
        MetadataCatalog.get(name).set(evaluator_type=evaluator_type, **metadata)
        _ENSURE_FILES[name] = ensure


def register_synthetic_shapes(root=None):
    """Register ``synthetic_shapes_{split}_{panoptic,instance,sem_seg}`` for every split of
    ``SPLITS`` in the cache folder ``root`` (default ``cache_root()``, resolved now).
    Touches no disk."""
    for split, (num_images, seed, image_size) in SPLITS.items():
        register_synthetic_split(f"synthetic_shapes_{split}", _split_dir(split, root), num_images, image_size, seed)


def ensure_dataset_files(dataset_name):
    """Generate the files behind a synthetic shapes dataset if ``dataset_name`` is one
    (evaluators read ``panoptic_json``/``json_file`` directly). Returns True if it is."""
    ensure = _ENSURE_FILES.get(dataset_name)
    if ensure is None:
        return False
    ensure()
    return True


register_synthetic_shapes()
