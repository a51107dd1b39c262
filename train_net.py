#!/usr/bin/env python
"""Train or evaluate Mask2Former.

    python train_net.py --config-file configs/quickstart/panoptic_R18_synthetic.yaml
    python train_net.py --config-file CFG --num-gpus 2            # 2 processes (GPUs, else CPU/gloo)
    python train_net.py --config-file CFG --resume                # continue from OUTPUT_DIR
    python train_net.py --config-file CFG --eval-only MODEL.WEIGHTS model_final.pth

See docs/TRAINING.md; train_net_video.py is the same for video instance segmentation.
"""
import mask2former  # noqa: F401  (registers the model, datasets and mappers)
from mask2former.engine import Trainer, setup_cfg  # noqa: F401  (setup_cfg: for callers of this script)
from mask2former.engine.cli import launch_from_command_line, train_or_evaluate


def main(args):
    return train_or_evaluate(args, Trainer)


def invoke_main() -> None:
    launch_from_command_line(main)


if __name__ == "__main__":
    invoke_main()
