"""The Mask2Former trainer: detectron2's `DefaultTrainer` with this project's optimizer,
schedules, data, evaluators, mixed precision on CPU or CUDA, atomic and exactly
resumable checkpoints, and multi-process CPU (gloo) support."""
import logging
import os
import weakref
from collections import OrderedDict
from typing import Dict

import torch
from detectron2.data import (
    DatasetFromList,
    build_detection_test_loader,
    build_detection_train_loader,
    get_detection_dataset_dicts,
)
from detectron2.engine import DefaultTrainer, HookBase, TrainerBase, default_setup
from detectron2.modeling import build_model
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger
from torch.nn.parallel import DistributedDataParallel

from tabulate import tabulate

from ..config import build_config, use_cpu_if_no_cuda
from ..data import build_dataset_mapper
from ..data.config_checks import check_config_against_datasets
from ..evaluation import build_evaluator
from ..modeling.test_time_augmentation import MaskFormerWithTTA
from ..utils.errors import KNOWN_ERRORS, error_line
from ..utils.file_io import check_writable_folder
from .amp import build_step_trainer
from .checkpoint import AtomicDetectionCheckpointer
from .data_loader import IterationBatchDataset, ResumableTrainLoader, derive_seed
from .lr_scheduler import build_lr_scheduler
from .optimizer import build_optimizer
from .sync_batchnorm import adapt_sync_batchnorm

__all__ = ["Trainer", "IterationSeed", "setup_cfg", "run_seed", "create_ddp_model"]

logger = logging.getLogger(__name__)


def run_seed(cfg) -> int:
    """`cfg.SEED` if set (>= 0), else a random seed shared by all processes."""
    return int(cfg.SEED) if cfg.SEED >= 0 else int(comm.shared_random_seed()) & 0x7FFFFFFF


def create_ddp_model(model: torch.nn.Module, device) -> torch.nn.Module:
    """Wrap `model` in DistributedDataParallel when there are several processes; CPU
    modules take no `device_ids` (detectron2 0.6 always passes a GPU index)."""
    if comm.get_world_size() == 1:
        return model
    kwargs = {"broadcast_buffers": False}
    if torch.device(device).type == "cuda":
        kwargs["device_ids"] = [comm.get_local_rank()]
    return DistributedDataParallel(model, **kwargs)


class IterationSeed(HookBase):
    """Before each step, seed the global generators (dropout, point sampling, ...) from
    (run seed, iteration, rank), so that iteration `i` draws the same random numbers
    whether or not the run was interrupted and resumed before it."""

    def before_step(self):
        seed = derive_seed(self.trainer.seed, self.trainer.iter, comm.get_rank(), 1)
        torch.manual_seed(seed)  # also seeds every CUDA device


class _KnownErrorsWithoutTraceback(logging.Filter):
    """detectron2's training loop logs every exception with its traceback before raising it
    again; a known failure (full disk, unreadable image) is logged as one line instead, and
    the entry point reports it as its error line."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, KNOWN_ERRORS):
            record.msg, record.args = f"{record.getMessage()} {error_line(error)}", ()
            record.exc_info = record.exc_text = None
        return True


class Trainer(DefaultTrainer):
    """`DefaultTrainer` for Mask2Former. Usage as detectron2's:
    `trainer = Trainer(cfg); trainer.resume_or_load(resume=...); trainer.train()`."""

    def __init__(self, cfg):
        # DefaultTrainer.__init__ with three of its parts replaced, which detectron2 0.6 builds
        # inline with no hook to override: DDP without `device_ids` on CPU, the step trainer
        # with CPU autocast, and the atomic checkpointer. Hence TrainerBase.__init__, not super().
        TrainerBase.__init__(self)
        if not logging.getLogger("detectron2").isEnabledFor(logging.INFO):
            setup_logger()
        check_config_against_datasets(cfg, cfg.DATASETS.TRAIN, "DATASETS.TRAIN")
        check_config_against_datasets(cfg, cfg.DATASETS.TEST, "DATASETS.TEST")
        cfg = DefaultTrainer.auto_scale_workers(cfg, comm.get_world_size())

        model = self.build_model(cfg)
        optimizer = self.build_optimizer(cfg, model)
        data_loader = self.build_train_loader(cfg)
        model = create_ddp_model(model, cfg.MODEL.DEVICE)
        self._trainer = build_step_trainer(
            model,
            data_loader,
            optimizer,
            amp_enabled=cfg.SOLVER.AMP.ENABLED,
            device=cfg.MODEL.DEVICE,
            cpu_amp_dtype=cfg.MASK2FORMER.CPU_AMP_DTYPE,
        )
        self.scheduler = self.build_lr_scheduler(cfg, optimizer)
        self.checkpointer = AtomicDetectionCheckpointer(
            model, cfg.OUTPUT_DIR, trainer=weakref.proxy(self)
        )
        self.start_iter = 0
        self.max_iter = cfg.SOLVER.MAX_ITER
        self.cfg = cfg
        self.seed = (
            data_loader.seed if isinstance(data_loader, ResumableTrainLoader) else run_seed(cfg)
        )
        self.register_hooks(self.build_hooks())

    # ---- state: iteration, hooks (scheduler), optimizer, AMP scaler, seed ----
    def state_dict(self):
        ret = super().state_dict()
        ret["_trainer"] = self._trainer.state_dict()
        ret["seed"] = self.seed
        return ret

    def load_state_dict(self, state_dict):
        super().load_state_dict(state_dict)
        self._trainer.load_state_dict(state_dict["_trainer"])
        if "seed" in state_dict:
            self.seed = int(state_dict["seed"])

    def resume_or_load(self, resume=True):
        super().resume_or_load(resume=resume)
        loader = self._trainer.data_loader
        if isinstance(loader, ResumableTrainLoader):
            loader.seed = self.seed
            loader.start_iter = self.start_iter

    def build_hooks(self):
        ret = super().build_hooks()
        if self.cfg.MASK2FORMER.RESUMABLE_TRAIN_LOADER:
            ret.insert(0, IterationSeed())
        return ret

    # ---- components ----
    @classmethod
    def build_model(cls, cfg):
        model = build_model(cfg)
        adapt_sync_batchnorm(model, comm.get_world_size(), cfg.MODEL.DEVICE)
        logger.info("Model:\n{}".format(model))
        return model

    @classmethod
    def build_optimizer(cls, cfg, model):
        return build_optimizer(cfg, model)

    @classmethod
    def build_lr_scheduler(cls, cfg, optimizer):
        return build_lr_scheduler(cfg, optimizer)

    @classmethod
    def build_train_loader(cls, cfg, mapper=None):
        """The training batches; `mapper` defaults to the one named by
        `INPUT.DATASET_MAPPER_NAME`."""
        if mapper is None:
            mapper = build_dataset_mapper(cfg, is_train=True)
        resumable = cfg.MASK2FORMER.RESUMABLE_TRAIN_LOADER
        if resumable and cfg.DATALOADER.SAMPLER_TRAIN != "TrainingSampler":
            logger.warning(
                "DATALOADER.SAMPLER_TRAIN=%s is not supported by the resumable loader; "
                "using detectron2's loader (resuming will not replay the same batches)",
                cfg.DATALOADER.SAMPLER_TRAIN,
            )
            resumable = False
        dicts = cls.train_dataset_dicts(cfg)
        if not resumable:
            return build_detection_train_loader(cfg, mapper=mapper, dataset=dicts)
        dataset = IterationBatchDataset(
            DatasetFromList(dicts, copy=False, serialize=True),
            mapper,
            total_batch_size=cfg.SOLVER.IMS_PER_BATCH,
            rank=comm.get_rank(),
            world_size=comm.get_world_size(),
            seed=run_seed(cfg),
        )
        return ResumableTrainLoader(dataset, num_workers=cfg.DATALOADER.NUM_WORKERS)

    @classmethod
    def train_dataset_dicts(cls, cfg):
        """The records of `DATASETS.TRAIN`, without images that have no annotation when
        `DATALOADER.FILTER_EMPTY_ANNOTATIONS` is set."""
        return get_detection_dataset_dicts(
            cfg.DATASETS.TRAIN, filter_empty=cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS
        )

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        return build_detection_test_loader(cfg, dataset_name, mapper=build_dataset_mapper(cfg, is_train=False))

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        if output_folder is None:
            output_folder = os.path.join(cfg.OUTPUT_DIR, "inference")
        return build_evaluator(cfg, dataset_name, output_folder)

    @classmethod
    def test_with_TTA(cls, cfg, model):
        """Evaluate `model` with multi-scale + flip test-time augmentation (`MaskFormerWithTTA`);
        metric names get "_TTA"."""
        logger.info("Running inference with test-time augmentation ...")
        model = MaskFormerWithTTA(cfg, model)
        evaluators = [
            cls.build_evaluator(cfg, name, output_folder=os.path.join(cfg.OUTPUT_DIR, "inference_TTA"))
            for name in cfg.DATASETS.TEST
        ]
        res = cls.test(cfg, model, evaluators)
        return OrderedDict((k + "_TTA", v) for k, v in res.items())

    def train(self):
        """Run training; returns the last evaluation's results (None when there was none)."""
        train_loop_logger = logging.getLogger(TrainerBase.__module__)
        if not any(isinstance(f, _KnownErrorsWithoutTraceback) for f in train_loop_logger.filters):
            train_loop_logger.addFilter(_KnownErrorsWithoutTraceback())
        super().train()
        # DefaultTrainer keeps the last evaluation only in `_last_eval_results` (its train()
        # returns it only when TEST.EXPECTED_RESULTS is set); detectron2 has no public accessor.
        results = getattr(self, "_last_eval_results", None)
        if comm.is_main_process() and results:
            logger.info("Final evaluation:\n%s", format_results_table(results))
        return results


def format_results_table(results: Dict) -> str:
    """One row per (dataset/task, metric group) with its headline numbers."""
    headline = ("PQ", "SQ", "RQ", "PQ_th", "PQ_st", "AP", "AP50", "AP75", "mIoU", "fwIoU", "mACC", "pACC")
    rows = []

    def visit(name, value):
        if isinstance(value, dict) and value and all(not isinstance(v, dict) for v in value.values()):
            cells = [(k, v) for k, v in value.items() if k in headline]
            if cells:
                rows.append([name] + [f"{k}={v:.2f}" for k, v in cells])
        elif isinstance(value, dict):
            for k, v in value.items():
                visit(f"{name}/{k}" if name else k, v)

    visit("", results)
    return tabulate(rows, tablefmt="pipe") if rows else str(dict(results))


def setup_cfg(args, freeze: bool = True, extra_configs=()):
    """Config from `args.config_file` + `args.opts` (see `build_config`, which also takes
    `extra_configs`), on CPU when no GPU is available, and detectron2's default setup
    (logger, config dump, seeding)."""
    cfg = build_config(args.config_file, args.opts or [], extra_configs=extra_configs)
    moved_to_cpu = use_cpu_if_no_cuda(cfg)
    if freeze:
        cfg.freeze()
    if comm.is_main_process() and cfg.OUTPUT_DIR:
        check_writable_folder(cfg.OUTPUT_DIR, "OUTPUT_DIR")  # before default_setup writes there
    default_setup(cfg, args)
    setup_logger(output=cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="mask2former")
    if moved_to_cpu:
        logging.getLogger("mask2former").info("CUDA is not available: MODEL.DEVICE set to cpu")
    return cfg
