"""Mixed-precision training steps on CPU, and the choice of step for a config.

The published configs enable `SOLVER.AMP`; detectron2's `AMPTrainer` (fp16 autocast +
GradScaler) requires CUDA. On CPU, autocast to bfloat16 keeps float32's exponent range,
so gradients cannot underflow and no loss scaling is needed; float16 on CPU is also
offered, with a GradScaler.
"""
import logging
import time

import torch
from detectron2.engine import AMPTrainer, SimpleTrainer

__all__ = ["CPUAMPTrainer", "build_step_trainer", "CPU_AMP_DTYPES"]

logger = logging.getLogger(__name__)

CPU_AMP_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16}


class CPUAMPTrainer(SimpleTrainer):
    """`SimpleTrainer` whose forward pass runs under CPU autocast.

    Args:
        dtype: torch.bfloat16 (no loss scaling) or torch.float16 (uses `grad_scaler`, a
            `torch.amp.GradScaler("cpu")` by default).
    """

    def __init__(self, model, data_loader, optimizer, dtype=torch.bfloat16, grad_scaler=None):
        super().__init__(model, data_loader, optimizer)
        if dtype not in (torch.bfloat16, torch.float16):
            raise ValueError(f"CPU autocast dtype must be bfloat16 or float16, got {dtype}")
        self.dtype = dtype
        if grad_scaler is None and dtype == torch.float16:
            grad_scaler = torch.amp.GradScaler("cpu")
        self.grad_scaler = grad_scaler

    def run_step(self):
        assert self.model.training, "[CPUAMPTrainer] model was changed to eval mode!"
        start = time.perf_counter()
        data = next(self._data_loader_iter)
        data_time = time.perf_counter() - start

        with torch.autocast(device_type="cpu", dtype=self.dtype):
            loss_dict = self.model(data)
        if isinstance(loss_dict, torch.Tensor):
            loss_dict = {"total_loss": loss_dict}
        # Sum in float32: the terms may come out of autocast in reduced precision.
        losses = sum(loss.float() for loss in loss_dict.values())

        self.optimizer.zero_grad()
        if self.grad_scaler is None:
            losses.backward()
        else:
            self.grad_scaler.scale(losses).backward()
        self._write_metrics(loss_dict, data_time)
        if self.grad_scaler is None:
            self.optimizer.step()
        else:
            self.grad_scaler.step(self.optimizer)
            self.grad_scaler.update()

    def state_dict(self):
        ret = super().state_dict()
        if self.grad_scaler is not None:
            ret["grad_scaler"] = self.grad_scaler.state_dict()
        return ret

    def load_state_dict(self, state_dict):
        super().load_state_dict(state_dict)
        if self.grad_scaler is not None and "grad_scaler" in state_dict:
            self.grad_scaler.load_state_dict(state_dict["grad_scaler"])


def build_step_trainer(
    model, data_loader, optimizer, amp_enabled: bool, device: str, cpu_amp_dtype: str = "bfloat16"
) -> SimpleTrainer:
    """The object that runs one training iteration: plain float32, CUDA fp16 AMP
    (detectron2's `AMPTrainer`) or CPU autocast (`CPUAMPTrainer`)."""
    if not amp_enabled:
        return SimpleTrainer(model, data_loader, optimizer)
    if torch.device(device).type == "cuda":
        return AMPTrainer(model, data_loader, optimizer)
    if cpu_amp_dtype not in CPU_AMP_DTYPES:
        raise ValueError(
            f"MASK2FORMER.CPU_AMP_DTYPE must be one of {sorted(CPU_AMP_DTYPES)}, "
            f"got {cpu_amp_dtype!r}"
        )
    logger.info("SOLVER.AMP.ENABLED on CPU: training under %s autocast", cpu_amp_dtype)
    return CPUAMPTrainer(model, data_loader, optimizer, dtype=CPU_AMP_DTYPES[cpu_amp_dtype])
