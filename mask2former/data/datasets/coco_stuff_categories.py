"""COCO-Stuff classes: the 80 COCO thing classes (ids 1..90) and 91 stuff classes
(ids 92..182), 171 in all. Label value v in the COCO-Stuff PNGs is category id v + 1
(0-based ids), 255 is unlabeled.
"""

from detectron2.data.datasets.builtin_meta import COCO_CATEGORIES

__all__ = ["COCO_STUFF_CATEGORIES"]

# The 91 stuff classes of COCO-Stuff, ids 92..182 in this order.
# fmt: off
_STUFF_NAMES = [
    "banner", "blanket", "branch", "bridge", "building-other", "bush", "cabinet", "cage",
    "cardboard", "carpet", "ceiling-other", "ceiling-tile", "cloth", "clothes", "clouds",
    "counter", "cupboard", "curtain", "desk-stuff", "dirt", "door-stuff", "fence",
    "floor-marble", "floor-other", "floor-stone", "floor-tile", "floor-wood", "flower",
    "fog", "food-other", "fruit", "furniture-other", "grass", "gravel", "ground-other",
    "hill", "house", "leaves", "light", "mat", "metal", "mirror-stuff", "moss", "mountain",
    "mud", "napkin", "net", "paper", "pavement", "pillow", "plant-other", "plastic",
    "platform", "playingfield", "railing", "railroad", "river", "road", "rock", "roof",
    "rug", "salad", "sand", "sea", "shelf", "sky-other", "skyscraper", "snow",
    "solid-other", "stairs", "stone", "straw", "structural-other", "table", "tent",
    "textile-other", "towel", "tree", "vegetable", "wall-brick", "wall-concrete",
    "wall-other", "wall-panel", "wall-stone", "wall-tile", "wall-wood", "water-other",
    "waterdrops", "window-blind", "window-other", "wood",
]
# fmt: on


def _stuff_color(i: int):
    # COCO-Stuff has no official palette; a deterministic spread keeps classes apart.
    return [(37 * i + 80) % 256, (91 * i + 40) % 256, (53 * i + 160) % 256]


COCO_STUFF_CATEGORIES = [
    {"id": c["id"], "name": c["name"], "color": c["color"], "isthing": 1}
    for c in COCO_CATEGORIES
    if c["isthing"]
] + [
    {"id": 92 + i, "name": name, "color": _stuff_color(i), "isthing": 0}
    for i, name in enumerate(_STUFF_NAMES)
]
