"""The part of Mask2Former that is exported: a normalised, padded image batch in, the last
layer's class and mask logits out.

    images (N, 3, H, W) float32 -> pred_logits (N, Q, K+1), pred_masks (N, Q, H/4, W/4)

H and W are multiples of the model's size divisibility. Everything around it (reading and
resizing the image, normalising, padding, and turning logits into results) runs in
`mask2former.deploy.runtime` and `mask2former.postprocessing`, outside the exported graph.
"""
from typing import Tuple

import torch
from torch import Tensor, nn

__all__ = ["ExportableNetwork", "ExportError", "export_program", "dynamic_shapes"]

MIN_SIDE = 32
MAX_SIDE = 1536


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


def dynamic_shapes(size_divisibility: int):
    """torch.export's `dynamic_shapes` of the `images` input: any batch size, H and W any
    multiple of `size_divisibility` from MIN_SIDE (at least one multiple) to MAX_SIDE."""
    step = max(int(size_divisibility), 1)
    batch = torch.export.Dim("batch", min=1, max=64)
    min_steps = max(-(-MIN_SIDE // step), 1)
    height = torch.export.Dim("height_steps", min=min_steps, max=MAX_SIDE // step)
    width = torch.export.Dim("width_steps", min=min_steps, max=MAX_SIDE // step)
    return {"images": {0: batch, 2: step * height, 3: step * width}}


def example_images(size_divisibility: int, batch: int = 2, device="cpu") -> Tensor:
    """A traceable example input: two images, non-square, a few multiples of the divisibility
    (sizes that are not 0/1-specialised by the tracer)."""
    step = max(int(size_divisibility), MIN_SIDE)
    return torch.randn(batch, 3, 3 * step, 2 * step, device=device)


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
    """`torch.export.export` of `network` with dynamic batch, height and width.

    Raises:
        ExportError naming the innermost module whose code could not be traced, and why.
    """
    if example is None:
        device = next(network.parameters()).device
        example = example_images(size_divisibility, device=device)
    network.eval()
    try:
        with torch.no_grad():
            return torch.export.export(network, (example,), dynamic_shapes=dynamic_shapes(size_divisibility))
    except Exception as e:  # noqa: BLE001  (re-raised with the module that failed)
        where = _innermost_module(network, e)
        module = f"module '{where[0]}' ({type(where[1]).__name__})" if where else type(network).__name__
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ExportError(f"{module} cannot be exported with torch.export: {type(e).__name__}: {reason}") from e
