"""The command line of the training scripts (train_net.py, train_net_video.py): train,
`--resume` or `--eval-only`, in one or several processes, with any `Trainer` subclass.
Mistakes in the config, data, weights or output folder end with one `error: ...` line
naming the file or config key, and exit status 1."""
import functools
import logging
import sys

from detectron2.engine import default_argument_parser
from detectron2.evaluation import verify_results
from detectron2.utils import comm
from torch.multiprocessing import ProcessExitedException

from ..data.config_checks import check_config_against_datasets
from ..utils.checkpoint import CheckpointMismatchError
from ..utils.errors import UserInputError, run_reporting_errors
from .checkpoint import AtomicDetectionCheckpointer
from .launch import launch
from .trainer import Trainer, format_results_table, setup_cfg

__all__ = ["get_parser", "load_eval_weights", "train_or_evaluate", "main_reporting_errors",
           "launch_from_command_line"]


def get_parser():
    parser = default_argument_parser()
    parser.add_argument(
        "--allow-partial-weights",
        action="store_true",
        help="with --eval-only: evaluate even if some model parameters are not in the weights "
        "or have another shape (they keep their random initialisation)",
    )
    return parser


def load_eval_weights(cfg, model, resume: bool, allow_partial: bool) -> None:
    """Load the weights to evaluate: every parameter must come from them (a partly random
    model would report meaningless metrics), unless `allow_partial`."""
    checkpointer = AtomicDetectionCheckpointer(model, save_dir=cfg.OUTPUT_DIR)
    if not (resume and checkpointer.has_checkpoint()) and not cfg.MODEL.WEIGHTS:
        raise UserInputError(
            "--eval-only needs trained weights but MODEL.WEIGHTS is empty: pass "
            "MODEL.WEIGHTS path/to/model_final.pth (or --resume with a checkpoint in OUTPUT_DIR)"
        )
    checkpointer.resume_or_load(cfg.MODEL.WEIGHTS, resume=resume)
    report = checkpointer.last_report
    if report is not None and not report.is_clean and not allow_partial:
        path = checkpointer.get_checkpoint_file() if resume and checkpointer.has_checkpoint() else cfg.MODEL.WEIGHTS
        raise CheckpointMismatchError(path, report)


def train_or_evaluate(args, trainer_cls=Trainer, extra_configs=()):
    """Train (from scratch, MODEL.WEIGHTS or, with `args.resume`, the last checkpoint of
    OUTPUT_DIR) or, with `args.eval_only`, evaluate the weights on DATASETS.TEST.

    `extra_configs` are `add_*_config(cfg)` functions applied before the config file is
    merged. Returns the evaluation results (None after training without evaluation)."""
    cfg = setup_cfg(args, extra_configs=extra_configs)
    logger = logging.getLogger("mask2former")
    if args.eval_only:
        check_config_against_datasets(cfg, cfg.DATASETS.TEST, "DATASETS.TEST")
        model = trainer_cls.build_model(cfg)
        # getattr: callers may build `args` with detectron2's own parser
        load_eval_weights(cfg, model, args.resume, getattr(args, "allow_partial_weights", False))
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


def main_reporting_errors(main, args) -> None:
    """`main(args)` in each process, with known failures as one error line and exit status 1."""
    status = run_reporting_errors(main, args)
    if status:
        sys.exit(status)


def launch_from_command_line(main, argv=None) -> None:
    """Parse the training arguments (`get_parser`) and run `main(args)` in `--num-gpus`
    processes per machine (CPU processes with gloo when there are not as many GPUs).
    `main` must be a module-level function, so that worker processes can import it."""
    args = get_parser().parse_args(argv)
    print("Command Line Args:", args)
    try:
        launch(
            functools.partial(main_reporting_errors, main),
            args.num_gpus,
            num_machines=args.num_machines,
            machine_rank=args.machine_rank,
            dist_url=args.dist_url,
            args=(args,),
        )
    except ProcessExitedException as e:  # a worker process has printed its error line
        sys.exit(e.exit_code or 1)
