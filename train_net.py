#!/usr/bin/env python
"""Train or evaluate Mask2Former.

    python train_net.py --config-file configs/quickstart/panoptic_R18_synthetic.yaml
    python train_net.py --config-file CFG --num-gpus 2            # 2 processes (GPUs, else CPU/gloo)
    python train_net.py --config-file CFG --resume                # continue from OUTPUT_DIR
    python train_net.py --config-file CFG --eval-only MODEL.WEIGHTS model_final.pth

See docs/TRAINING.md.
"""
import logging

from detectron2.engine import default_argument_parser
from detectron2.evaluation import verify_results
from detectron2.utils import comm

import mask2former  # noqa: F401  (registers the model, datasets and mappers)
from mask2former.engine import AtomicDetectionCheckpointer, Trainer, format_results_table, launch, setup_cfg


def main(args):
    cfg = setup_cfg(args)
    logger = logging.getLogger("mask2former")
    if args.eval_only:
        model = Trainer.build_model(cfg)
        AtomicDetectionCheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(
            cfg.MODEL.WEIGHTS, resume=args.resume
        )
        res = Trainer.test(cfg, model)
        if cfg.TEST.AUG.ENABLED:
            res.update(Trainer.test_with_TTA(cfg, model))
        if comm.is_main_process():
            verify_results(cfg, res)
            logger.info("Evaluation results:\n%s", format_results_table(res))
        return res

    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


def invoke_main() -> None:
    args = default_argument_parser().parse_args()
    print("Command Line Args:", args)
    launch(
        main,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args,),
    )


if __name__ == "__main__":
    invoke_main()
