"""Learning-rate schedules: detectron2's (WarmupMultiStepLR, WarmupCosineLR) and the
poly schedule of the semantic-segmentation recipes (`WarmupPolyLR`)."""
import logging
import math
from typing import List

import torch
from detectron2.solver import build_lr_scheduler as build_detectron2_lr_scheduler
from detectron2.solver.lr_scheduler import _get_warmup_factor_at_iter

__all__ = ["WarmupPolyLR", "build_lr_scheduler"]

logger = logging.getLogger(__name__)


class WarmupPolyLR(torch.optim.lr_scheduler._LRScheduler):
    """lr(it) = base_lr * warmup(it) * (1 - it / max_iter) ** power.

    `warmup(it)` is detectron2's warm-up factor ("linear" or "constant", from
    `warmup_factor` to 1 over `warmup_iters`). When `constant_ending > 0`, once warm-up
    is over the poly factor never drops below `constant_ending` (the lr stays at
    `base_lr * constant_ending` for the tail of training).

    A copy of `detectron2.projects.deeplab.WarmupPolyLR` that also checks `max_iters` and
    stays at 0 past `max_iters`, where detectron2's raises (fractional power of a negative).
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        max_iters: int,
        warmup_factor: float = 0.001,
        warmup_iters: int = 1000,
        warmup_method: str = "linear",
        last_epoch: int = -1,
        power: float = 0.9,
        constant_ending: float = 0.0,
    ):
        if max_iters <= 0:
            raise ValueError(f"WarmupPolyLR needs max_iters > 0, got {max_iters}")
        self.max_iters = max_iters
        self.warmup_factor = warmup_factor
        self.warmup_iters = warmup_iters
        self.warmup_method = warmup_method
        self.power = power
        self.constant_ending = constant_ending
        super().__init__(optimizer, last_epoch)

    def _factor(self, it: int) -> float:
        warmup = _get_warmup_factor_at_iter(
            self.warmup_method, it, self.warmup_iters, self.warmup_factor
        )
        # Clamp so that stepping past max_iters (e.g. a final extra step) cannot make
        # the base of a fractional power negative.
        poly = math.pow(max(0.0, 1.0 - it / self.max_iters), self.power)
        if self.constant_ending > 0 and warmup == 1.0 and poly < self.constant_ending:
            return self.constant_ending
        return warmup * poly

    def get_lr(self) -> List[float]:
        factor = self._factor(self.last_epoch)
        return [base_lr * factor for base_lr in self.base_lrs]

    def _compute_values(self) -> List[float]:
        # The new interface of torch's schedulers.
        return self.get_lr()


def build_lr_scheduler(cfg, optimizer: torch.optim.Optimizer):
    """`SOLVER.LR_SCHEDULER_NAME`: "WarmupPolyLR" here, the rest by detectron2."""
    name = cfg.SOLVER.LR_SCHEDULER_NAME
    if name == "WarmupPolyLR":
        return WarmupPolyLR(
            optimizer,
            cfg.SOLVER.MAX_ITER,
            warmup_factor=cfg.SOLVER.WARMUP_FACTOR,
            warmup_iters=cfg.SOLVER.WARMUP_ITERS,
            warmup_method=cfg.SOLVER.WARMUP_METHOD,
            power=cfg.SOLVER.POLY_LR_POWER,
            constant_ending=cfg.SOLVER.POLY_LR_CONSTANT_ENDING,
        )
    if name in ("WarmupMultiStepLR", "WarmupCosineLR"):
        return build_detectron2_lr_scheduler(cfg, optimizer)
    raise ValueError(
        "SOLVER.LR_SCHEDULER_NAME must be WarmupPolyLR, WarmupMultiStepLR or WarmupCosineLR, "
        f"got {name!r}"
    )
