#!/usr/bin/env python
"""Training on your own data, end to end: a folder of images and mask PNGs.

The example first writes a small semantic dataset in the plain layout a user would have,
``images/X.jpg`` and ``masks/X.png`` (pixel value = class index, 255 = unlabelled), taken
from the built-in synthetic shapes. Then it does what you would do with your own folders:
register them with one call each, point a config at the registered names and train and
evaluate with the project's Trainer.

    python scripts/custom_dataset_example.py                    # 100 iterations: ~1.5 min on 2 cores
    python scripts/custom_dataset_example.py --iters 4 --output /tmp/example
"""
import argparse
import json
import os
import shutil
from pathlib import Path

from detectron2.engine import default_argument_parser

import mask2former  # noqa: F401  (registers the model, mappers and built-in datasets)
from mask2former.data.datasets import register_semantic_folder
from mask2former.data.datasets.synthetic_shapes import SYNTHETIC_SHAPES_CATEGORIES, ensure_synthetic_shapes
from mask2former.engine import Trainer, setup_cfg

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "quickstart" / "panoptic_R18_synthetic.yaml"
CLASS_NAMES = [c["name"] for c in SYNTHETIC_SHAPES_CATEGORIES]


def write_example_folder(split: str, folder: Path) -> Path:
    """Copy a built-in split into ``folder/images`` + ``folder/masks`` (semantic PNGs whose
    values index CLASS_NAMES): the layout `register_semantic_folder` reads."""
    source = ensure_synthetic_shapes(split)
    for sub in ("images", "masks"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    for image in json.loads((source / "panoptic.json").read_text())["images"]:
        stem = os.path.splitext(image["file_name"])[0]
        shutil.copyfile(source / "images" / image["file_name"], folder / "images" / f"{stem}.jpg")
        shutil.copyfile(source / "semantic" / f"{stem}.png", folder / "masks" / f"{stem}.png")
    return folder


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", default="output/custom_example", help="data and training outputs")
    parser.add_argument("--iters", type=int, default=100, help="training iterations")
    args = parser.parse_args()
    root = Path(args.output)
    train_dir = write_example_folder("mini_train", root / "data" / "train")
    val_dir = write_example_folder("mini_val", root / "data" / "val")

    # --- what you write for your own data: one registration per split ---
    register_semantic_folder("example_train", str(train_dir / "images"), str(train_dir / "masks"), CLASS_NAMES)
    register_semantic_folder("example_val", str(val_dir / "images"), str(val_dir / "masks"), CLASS_NAMES)

    # --- and a config that names them (here as overrides of the quickstart config) ---
    opts = [
        "DATASETS.TRAIN", "('example_train',)",
        "DATASETS.TEST", "('example_val',)",
        "MODEL.SEM_SEG_HEAD.NUM_CLASSES", str(len(CLASS_NAMES)),
        "INPUT.DATASET_MAPPER_NAME", "mask_former_semantic",
        "INPUT.MIN_SIZE_TRAIN", "(96, 112, 128, 144, 160)",
        "INPUT.MAX_SIZE_TRAIN", "640",
        "INPUT.CROP.ENABLED", "True",
        "INPUT.CROP.TYPE", "absolute",
        "INPUT.CROP.SIZE", "(128, 128)",
        "INPUT.SIZE_DIVISIBILITY", "128",
        "MODEL.MASK_FORMER.TEST.PANOPTIC_ON", "False",
        "MODEL.MASK_FORMER.TEST.INSTANCE_ON", "False",
        "SOLVER.MAX_ITER", str(args.iters),
        "SOLVER.CHECKPOINT_PERIOD", str(args.iters),
        "OUTPUT_DIR", str(root / "train"),
    ]
    cfg = setup_cfg(default_argument_parser().parse_args(["--config-file", str(CONFIG), *opts]))
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=False)
    return trainer.train()  # logs the final evaluation table


if __name__ == "__main__":
    main()
