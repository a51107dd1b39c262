"""Shared pieces of the predictor/demo/tools/checkpoint tests: a tiny real-model config,
a small stand-in segmenter with the MaskFormer input/output convention (fast, and usable
before the full model can be built), and generated images/videos."""
import importlib.util
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from detectron2.modeling import META_ARCH_REGISTRY, build_model
from detectron2.structures import BitMasks, Instances
from torch import nn

from mask2former.config import build_config

REPO_ROOT = Path(__file__).resolve().parents[1]
PANOPTIC_R50 = REPO_ROOT / "configs/coco/panoptic-segmentation/maskformer2_R50_bs16_50ep.yaml"
TEST_DATASET = "synthetic_shapes_val_panoptic"  # 4 thing + 3 stuff classes
NUM_CLASSES = 7
NUM_THINGS = 4

# A published config shrunk to a few seconds per forward pass on CPU.
TINY_OVERRIDES = [
    "MODEL.WEIGHTS", "",
    "MODEL.RESNETS.DEPTH", "18",
    "MODEL.RESNETS.RES2_OUT_CHANNELS", "64",
    "MODEL.SEM_SEG_HEAD.NUM_CLASSES", str(NUM_CLASSES),
    "MODEL.SEM_SEG_HEAD.CONVS_DIM", "32",
    "MODEL.SEM_SEG_HEAD.MASK_DIM", "32",
    "MODEL.SEM_SEG_HEAD.TRANSFORMER_ENC_LAYERS", "1",
    "MODEL.MASK_FORMER.HIDDEN_DIM", "32",
    "MODEL.MASK_FORMER.DIM_FEEDFORWARD", "64",
    "MODEL.MASK_FORMER.NUM_OBJECT_QUERIES", "10",
    "MODEL.MASK_FORMER.DEC_LAYERS", "3",
    "MODEL.MASK_FORMER.TEST.SEMANTIC_ON", "True",
    "MODEL.MASK_FORMER.TEST.OBJECT_MASK_THRESHOLD", "0.0",
    "INPUT.MIN_SIZE_TEST", "64",
    "INPUT.MAX_SIZE_TEST", "96",
    "DATASETS.TEST", f"('{TEST_DATASET}',)",
    "MODEL.DEVICE", "cpu",
]


def base_cfg(config_file=PANOPTIC_R50, overrides=()):
    cfg = build_config(config_file, list(overrides))
    return cfg


def tiny_cfg(extra=()):
    return base_cfg(overrides=TINY_OVERRIDES + list(extra))


def real_model():
    """The MaskFormer model of the tiny config, seeded, in eval mode. A failure to build it
    is a failure of the test, never a skip."""
    torch.manual_seed(0)
    return build_model(tiny_cfg()).eval()


@META_ARCH_REGISTRY.register()
class StandInSegmenter(nn.Module):
    """Per-pixel 1x1-conv classifier producing MaskFormer's three eval outputs.

    Its output depends on its weights and on the image content, so weight loading,
    resizing and colour order all show in the predictions.
    """

    def __init__(self, cfg):
        super().__init__()
        self.num_classes = cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES
        self.num_things = min(NUM_THINGS, self.num_classes)
        self.size_divisibility = cfg.MODEL.MASK_FORMER.SIZE_DIVISIBILITY
        self.classifier = nn.Conv2d(3, self.num_classes, kernel_size=1)
        self.register_buffer("pixel_mean", torch.tensor(cfg.MODEL.PIXEL_MEAN).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(cfg.MODEL.PIXEL_STD).view(-1, 1, 1), False)
        self.images_seen = []  # (H, W) of each image given to forward, for tests

    def forward(self, batched_inputs):
        outputs = []
        for item in batched_inputs:
            image = (item["image"].float() - self.pixel_mean) / self.pixel_std
            self.images_seen.append(tuple(image.shape[-2:]))
            height = item.get("height", image.shape[-2])
            width = item.get("width", image.shape[-1])
            logits = self.classifier(image[None])
            logits = F.interpolate(logits, size=(height, width), mode="bilinear", align_corners=False)
            probs = logits[0].softmax(dim=0)
            labels = probs.argmax(dim=0)
            panoptic = torch.zeros((height, width), dtype=torch.int32)
            segments, masks, classes, scores = [], [], [], []
            for segment_id, category in enumerate(labels.unique().tolist(), start=1):
                mask = labels == category
                panoptic[mask] = segment_id
                isthing = category < self.num_things
                segments.append({"id": segment_id, "category_id": category, "isthing": isthing})
                if isthing:
                    masks.append(mask)
                    classes.append(category)
                    scores.append(float(probs[category][mask].mean()))
            instances = Instances((height, width))
            instances.pred_masks = (
                torch.stack(masks).float() if masks else torch.zeros((0, height, width))
            )
            instances.pred_boxes = BitMasks(instances.pred_masks > 0).get_bounding_boxes()
            instances.pred_classes = torch.tensor(classes, dtype=torch.int64)
            instances.scores = torch.tensor(scores, dtype=torch.float32)
            outputs.append(
                {"sem_seg": probs, "panoptic_seg": (panoptic, segments), "instances": instances}
            )
        return outputs


def stand_in_cfg(extra=()):
    return tiny_cfg(["MODEL.META_ARCHITECTURE", "StandInSegmenter"] + list(extra))


def make_image(height=48, width=64, seed=0):
    """(H, W, 3) uint8 BGR image with a few coloured shapes on a gradient."""
    rng = np.random.default_rng(seed)
    image = np.zeros((height, width, 3), np.uint8)
    image[:] = np.linspace(0, 255, width, dtype=np.uint8)[None, :, None]
    for _ in range(3):
        color = tuple(int(c) for c in rng.integers(0, 256, 3))
        center = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        cv2.circle(image, center, int(rng.integers(4, max(5, min(height, width) // 3))), color, -1)
    return image


def write_video(path, num_frames=5, height=48, width=64, fps=10.0):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    assert writer.isOpened()
    for i in range(num_frames):
        writer.write(make_image(height, width, seed=i))
    writer.release()


def write_config(path, cfg):
    """Dump `cfg` as a yaml that the demo and tools can read with --config-file."""
    Path(path).write_text(cfg.dump())
    return str(path)


def load_script(relative_path, module_name):
    """Import a script of the repository (e.g. "demo/demo.py") as a module."""
    spec = importlib.util.spec_from_file_location(module_name, REPO_ROOT / relative_path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
