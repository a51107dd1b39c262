#!/usr/bin/env python
"""Train or evaluate Mask2Former.

    python train_net.py --config-file configs/quickstart/panoptic_R18_synthetic.yaml
    python train_net.py --config-file CFG --num-gpus 2            # 2 processes (GPUs, else CPU/gloo)
    python train_net.py --config-file CFG --resume                # continue from OUTPUT_DIR
    python train_net.py --config-file CFG --eval-only MODEL.WEIGHTS model_final.pth

See docs/TRAINING.md; train_net_video.py is the same for video instance segmentation.
Mistakes in the config, data, weights or output folder end with one `error: ...` line
naming the file or config key, and exit status 1.
"""
import mask2former  # noqa: F401  (registers the model, datasets and mappers)
from mask2former.engine import Trainer, setup_cfg  # noqa: F401  (setup_cfg: for callers of this script)
from mask2former.engine import cli
from mask2former.engine.cli import get_parser  # noqa: F401  (for callers of this script)


def main(args):
    return cli.train_or_evaluate(args, Trainer)


def main_reporting_errors(args) -> None:
    cli.main_reporting_errors(main, args)


def invoke_main() -> None:
    cli.launch_from_command_line(main)


if __name__ == "__main__":
    invoke_main()
