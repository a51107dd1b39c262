"""Make `SyncBN` configs trainable where torch's `nn.SyncBatchNorm` cannot run.

`nn.SyncBatchNorm` only synchronizes CUDA tensors: in a multi-process CPU (gloo) job its
forward raises. Such layers are replaced, keeping their parameters and statistics (and
so their state-dict keys):
- CPU, several processes: detectron2's `NaiveSyncBatchNorm`, which averages the batch
  statistics with a differentiable all-reduce that gloo supports (stats weighted by each
  process's batch size, `stats_mode="N"`);
- a single process: plain `BatchNorm2d` (there is nothing to synchronize with).
"""
import logging

import torch
from detectron2.layers import NaiveSyncBatchNorm
from torch import nn

__all__ = ["adapt_sync_batchnorm"]

logger = logging.getLogger(__name__)


def _replacement(sync_bn: nn.SyncBatchNorm, world_size: int) -> nn.Module:
    kwargs = dict(
        eps=sync_bn.eps,
        momentum=sync_bn.momentum,
        affine=sync_bn.affine,
        track_running_stats=sync_bn.track_running_stats,
    )
    if world_size > 1:
        new = NaiveSyncBatchNorm(sync_bn.num_features, stats_mode="N", **kwargs)
    else:
        new = nn.BatchNorm2d(sync_bn.num_features, **kwargs)
    new.load_state_dict(sync_bn.state_dict())
    new.train(sync_bn.training)
    param = next(sync_bn.parameters(), None)
    if param is not None:
        new.to(param.device)
    for p_new, p_old in zip(new.parameters(), sync_bn.parameters()):
        p_new.requires_grad_(p_old.requires_grad)
    return new


def adapt_sync_batchnorm(model: nn.Module, world_size: int, device) -> nn.Module:
    """Replace `nn.SyncBatchNorm` layers of `model` (in place) when they cannot sync on
    `device` with `world_size` processes; returns `model`. On CUDA with several processes
    the layers are left as they are."""
    if torch.device(device).type == "cuda" and world_size > 1:
        return model
    replaced = []

    def convert(module: nn.Module, prefix: str):
        for name, child in module.named_children():
            full_name = f"{prefix}.{name}" if prefix else name
            if isinstance(child, nn.SyncBatchNorm):
                setattr(module, name, _replacement(child, world_size))
                replaced.append(full_name)
            else:
                convert(child, full_name)

    convert(model, "")
    if replaced:
        target = "NaiveSyncBatchNorm (gloo all-reduce)" if world_size > 1 else "BatchNorm2d"
        logger.warning(
            "SyncBatchNorm cannot synchronize on %s with %d process(es): %d layers converted "
            "to %s (e.g. %s)",
            torch.device(device).type,
            world_size,
            len(replaced),
            target,
            replaced[0],
        )
    return model
