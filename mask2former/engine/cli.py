"""The command line of the training scripts (train_net.py, train_net_video.py): train,
`--resume` or `--eval-only`, in one or several processes, with any `Trainer` subclass."""
import logging

from detectron2.engine import default_argument_parser
from detectron2.evaluation import verify_results
from detectron2.utils import comm

from .checkpoint import AtomicDetectionCheckpointer
from .launch import launch
from .trainer import Trainer, format_results_table, setup_cfg

__all__ = ["train_or_evaluate", "launch_from_command_line"]


def train_or_evaluate(args, trainer_cls=Trainer, extra_configs=()):
    """Train (from scratch, MODEL.WEIGHTS or, with `args.resume`, the last checkpoint of
    OUTPUT_DIR) or, with `args.eval_only`, evaluate MODEL.WEIGHTS on DATASETS.TEST.

    `extra_configs` are `add_*_config(cfg)` functions applied before the config file is
    merged. Returns the evaluation results (None after training without evaluation)."""
    cfg = setup_cfg(args, extra_configs=extra_configs)
    logger = logging.getLogger("mask2former")
    if args.eval_only:
        model = trainer_cls.build_model(cfg)
        AtomicDetectionCheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(
            cfg.MODEL.WEIGHTS, resume=args.resume
        )
        res = trainer_cls.test(cfg, model)
        if cfg.TEST.AUG.ENABLED:
            res.update(trainer_cls.test_with_TTA(cfg, model))
        if comm.is_main_process():
            verify_results(cfg, res)
            logger.info("Evaluation results:\n%s", format_results_table(res))
        return res

    trainer = trainer_cls(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


def launch_from_command_line(main, argv=None):
    """Parse detectron2's training arguments and run `main(args)` in `--num-gpus`
    processes per machine (CPU processes with gloo when there are not as many GPUs).
    `main` must be a module-level function, so that worker processes can import it."""
    args = default_argument_parser().parse_args(argv)
    print("Command Line Args:", args)
    launch(
        main,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args,),
    )
