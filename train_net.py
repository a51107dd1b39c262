#!/usr/bin/env python
"""Train or evaluate Mask2Former.

    python train_net.py --config-file configs/quickstart/panoptic_R18_synthetic.yaml
    python train_net.py --config-file CFG --num-gpus 2            # 2 processes (GPUs, else CPU/gloo)
    python train_net.py --config-file CFG --resume                # continue from OUTPUT_DIR
    python train_net.py --config-file CFG --eval-only MODEL.WEIGHTS model_final.pth

See docs/TRAINING.md. Mistakes in the config, data, weights or output folder end with one
`error: ...` line naming the file or config key, and exit status 1.
"""
import logging
import sys

from detectron2.engine import default_argument_parser
from detectron2.evaluation import verify_results
from detectron2.utils import comm
from torch.multiprocessing import ProcessExitedException

import mask2former  # noqa: F401  (registers the model, datasets and mappers)
from mask2former.data.config_checks import check_config_against_datasets
from mask2former.engine import AtomicDetectionCheckpointer, Trainer, format_results_table, launch, setup_cfg
from mask2former.utils.checkpoint import CheckpointMismatchError
from mask2former.utils.errors import UserInputError, run_reporting_errors


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


def main(args):
    cfg = setup_cfg(args)
    logger = logging.getLogger("mask2former")
    if args.eval_only:
        check_config_against_datasets(cfg, cfg.DATASETS.TEST, "DATASETS.TEST")
        model = Trainer.build_model(cfg)
        # getattr: callers may build `args` with detectron2's own parser
        load_eval_weights(cfg, model, args.resume, getattr(args, "allow_partial_weights", False))
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


def get_parser():
    parser = default_argument_parser()
    parser.add_argument(
        "--allow-partial-weights",
        action="store_true",
        help="with --eval-only: evaluate even if some model parameters are not in the weights "
        "or have another shape (they keep their random initialisation)",
    )
    return parser


def main_reporting_errors(args) -> None:
    """`main` in each process, with known failures as one error line and exit status 1."""
    status = run_reporting_errors(main, args)
    if status:
        sys.exit(status)


def invoke_main() -> None:
    args = get_parser().parse_args()
    print("Command Line Args:", args)
    try:
        launch(
            main_reporting_errors,
            args.num_gpus,
            num_machines=args.num_machines,
            machine_rank=args.machine_rank,
            dist_url=args.dist_url,
            args=(args,),
        )
    except ProcessExitedException as e:  # a worker process has printed its error line
        sys.exit(e.exit_code or 1)


if __name__ == "__main__":
    invoke_main()
