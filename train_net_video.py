#!/usr/bin/env python
"""Train or evaluate Mask2Former for video instance segmentation (YouTube-VIS format).

    python train_net_video.py --config-file configs/quickstart/video_R18_synthetic.yaml
    python train_net_video.py --config-file CFG --num-gpus 2      # 2 processes (GPUs, else CPU/gloo)
    python train_net_video.py --config-file CFG --resume          # continue from OUTPUT_DIR
    python train_net_video.py --config-file CFG --eval-only MODEL.WEIGHTS model_final.pth

The same command line, engine and error reporting as train_net.py; see docs/TRAINING.md.
"""
import mask2former  # noqa: F401  (registers the image model components)
import mask2former.video  # noqa: F401  (registers the video model, datasets and evaluator)
from mask2former.engine import cli
from mask2former.engine import setup_cfg as _setup_cfg
from mask2former.engine.cli import get_parser  # noqa: F401  (for callers of this script)
from mask2former.video.trainer import VIDEO_CONFIGS, VideoTrainer


def setup_cfg(args, freeze: bool = True):
    """The video config of `args` (as train_net.py's, with the video keys)."""
    return _setup_cfg(args, freeze=freeze, extra_configs=VIDEO_CONFIGS)


def main(args):
    return cli.train_or_evaluate(args, VideoTrainer, extra_configs=VIDEO_CONFIGS)


def main_reporting_errors(args) -> None:
    cli.main_reporting_errors(main, args)


def invoke_main() -> None:
    cli.launch_from_command_line(main)


if __name__ == "__main__":
    invoke_main()
