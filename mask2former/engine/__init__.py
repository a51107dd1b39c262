"""Training engine: optimizer, LR schedules, mixed precision, atomic checkpoints,
resumable data loading, multi-process launch (GPU or CPU/gloo) and the `Trainer` used by
train_net.py."""
from .amp import CPUAMPTrainer, build_step_trainer
from .checkpoint import AtomicDetectionCheckpointer
from .data_loader import IterationBatchDataset, ResumableTrainLoader, derive_seed, seeded_rng
from .launch import launch, uses_gpus
from .lr_scheduler import WarmupPolyLR, build_lr_scheduler
from .optimizer import add_full_model_gradient_clipping, build_optimizer, get_mask2former_param_groups
from .sync_batchnorm import adapt_sync_batchnorm
from .trainer import IterationSeed, Trainer, create_ddp_model, format_results_table, run_seed, setup_cfg
