"""The part of Mask2Former that is exported: a normalised, padded image batch in, the last
layer's class and mask logits out.

    images (N, 3, H, W) float32 -> pred_logits (N, Q, K+1), pred_masks (N, Q, H/4, W/4)

H and W are multiples of the model's size divisibility, at least `smallest_side`. Everything
around it (reading and resizing the image, normalising, padding, and turning logits into
results) runs in `mask2former.deploy.runtime` and `mask2former.postprocessing`, outside the
exported graph.
"""
import types
from typing import Optional, Tuple

import numpy as np
import torch
from torch import Tensor, nn

__all__ = ["ExportableNetwork", "ExportError", "export_program", "dynamic_shapes", "smallest_side"]

MIN_SIDE = 64
MAX_SIDE = 1536
MAX_BATCH = 64


class ExportError(RuntimeError):
    """The network could not be exported; the message names the module and why."""


class ExportableNetwork(nn.Module):
    """The network of a `MaskFormer` at inference (`MaskFormer.network_outputs`: backbone and
    head in the model's `inference_dtype`, float32 logits), without pre- and post-processing.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model.eval()

    def forward(self, images: Tensor) -> Tuple[Tensor, Tensor]:
        outputs = self.model.network_outputs(images)
        return outputs["pred_logits"], outputs["pred_masks"]


def dynamic_shapes(size_divisibility: int, min_side: int = MIN_SIDE):
    """torch.export's `dynamic_shapes` of the `images` input: any batch size, H and W any
    multiple of `size_divisibility` from `min_side` (at least one multiple) to MAX_SIDE."""
    step = max(int(size_divisibility), 1)
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    min_steps = max(-(-min_side // step), 1)
    height = torch.export.Dim("height_steps", min=min_steps, max=MAX_SIDE // step)
    width = torch.export.Dim("width_steps", min=min_steps, max=MAX_SIDE // step)
    return {"images": {0: batch, 2: step * height, 3: step * width}}


def smallest_side(model: nn.Module, size_divisibility: int) -> int:
    """The smallest H and W the exported network accepts: MIN_SIDE, raised by any submodule
    that declares a `min_export_side` (a Swin backbone: its last stage must have two
    windows per axis), rounded up to a multiple of the size divisibility."""
    side = max([MIN_SIDE] + [int(m.min_export_side) for m in model.modules() if hasattr(m, "min_export_side")])
    step = max(int(size_divisibility), 1)
    return -(-side // step) * step


def example_images(size_divisibility: int, min_side: int = MIN_SIDE, batch: int = 2, device="cpu") -> Tensor:
    """A traceable example input: two images, non-square, one and two multiples of the
    divisibility above the smallest side (sizes that are not 0/1-specialised by the tracer)."""
    step = max(int(size_divisibility), 32)
    base = -(-min_side // step) * step
    return torch.randn(batch, 3, base + 2 * step, base + step, device=device)


def _guard_namespace(sizes):
    """Names a guard of `ExportedProgram._guards_code` refers to, for input sizes `sizes`
    (a tuple of ints or of broadcastable numpy arrays)."""
    shape = types.SimpleNamespace(size=lambda: sizes)
    vectorised = isinstance(sizes[0], np.ndarray)
    ops = types.SimpleNamespace(sym_max=np.maximum, sym_min=np.minimum) if vectorised else torch
    return {"L": {"images": shape}, "torch": ops}


def _guard_holds(guard: str, batches: np.ndarray, sides: np.ndarray) -> np.ndarray:
    """(batches, sides, sides) bool: whether `guard` holds for images of shape (n, 3, h, w)."""
    code = compile(guard, "<guard>", "eval")
    n, h, w = batches[:, None, None], sides[None, :, None], sides[None, None, :]
    try:
        with np.errstate(all="ignore"):
            return np.broadcast_to(eval(code, _guard_namespace((n, 3, h, w))), (len(batches), len(sides), len(sides)))
    except (TypeError, ValueError):  # not elementwise (`and`, `or`): one size at a time
        return np.array([[[bool(eval(code, _guard_namespace((int(b), 3, int(y), int(x))))) for x in sides]
                          for y in sides] for b in batches])


def _violated_guard(program, size_divisibility: int, min_side: int) -> Optional[str]:
    """The first input-size guard of `program` that fails for some size of the declared
    range, with that size, or None. torch.export keeps a guard it cannot prove for the whole
    range (e.g. that a derived size is not 1), and the program then refuses those sizes."""
    step = max(int(size_divisibility), 1)
    sides = np.arange(max(-(-min_side // step), 1), MAX_SIDE // step + 1) * step
    batches = np.arange(1, MAX_BATCH + 1)
    for guard in getattr(program, "_guards_code", None) or []:  # absent in other torch versions
        holds = _guard_holds(guard, batches, sides)
        if not holds.all():
            n, h, w = np.argwhere(~holds)[0]
            return f"guard `{guard}` fails for images of shape {(int(batches[n]), 3, int(sides[h]), int(sides[w]))}"
    return None


def _innermost_module(network: nn.Module, error: BaseException):
    """(qualified name, module) of the deepest submodule of `network` whose forward appears
    in the traceback of `error`, or None."""
    names = {id(m): name for name, m in network.named_modules()}
    found, seen = None, set()
    while error is not None and id(error) not in seen:  # the error and what it was raised from
        seen.add(id(error))
        tb = error.__traceback__
        while tb is not None:
            owner = tb.tb_frame.f_locals.get("self")
            if isinstance(owner, nn.Module) and id(owner) in names and names[id(owner)]:
                found = (names[id(owner)], owner)
            tb = tb.tb_next
        error = error.__cause__ or error.__context__
    return found


def export_program(network: ExportableNetwork, size_divisibility: int, example: Tensor = None):
    """`torch.export.export` of `network` with dynamic batch, height and width (H, W from
    `smallest_side` to MAX_SIDE).

    torch.export keeps, as a guard checked at run time, every condition on the input size
    that the traced code relied on and that it cannot prove for the whole range (e.g. that
    a derived size is not 1). A guard that fails for some size of the range is an
    ExportError: the program would refuse those sizes.

    Raises:
        ExportError naming the innermost module whose code could not be traced, and why.
    """
    smallest = smallest_side(network.model, size_divisibility)
    if example is None:
        device = next(network.parameters()).device
        example = example_images(size_divisibility, smallest, device=device)
    network.eval()
    try:
        with torch.no_grad():
            program = torch.export.export(
                network, (example,), dynamic_shapes=dynamic_shapes(size_divisibility, smallest)
            )
    except Exception as e:  # noqa: BLE001  (re-raised with the module that failed)
        where = _innermost_module(network, e)
        module = f"module '{where[0]}' ({type(where[1]).__name__})" if where else type(network).__name__
        reason = " ".join(l.strip() for l in str(e).strip().splitlines()[:2]) if str(e).strip() else type(e).__name__
        raise ExportError(f"{module} cannot be exported with torch.export: {type(e).__name__}: {reason}") from e
    violated = _violated_guard(program, size_divisibility, smallest)
    if violated:
        raise ExportError(
            f"{type(network.model).__name__} exported only for some input sizes of the range "
            f"{smallest}..{MAX_SIDE}: {violated}"
        )
    return program
