"""Loads the compiled ``mask2former._C`` extension, if it was built, and registers the Python
side of its operators: autograd (through ``ms_deform_attn_backward``) and fake (meta)
implementations so that ``torch.compile`` and ``torch.export`` can trace them.

Importing ``mask2former._C`` registers ``mask2former::ms_deform_attn`` and
``mask2former::ms_deform_attn_backward`` (CPU kernels, and CUDA ones when compiled with CUDA).
"""
import torch

from .checks import check_ms_deform_attn_args

try:
    from mask2former import _C  # noqa: F401  (the import registers the operators)

    _load_error = None
except (ImportError, OSError) as e:  # not built, or built against another torch
    _load_error = e


def is_available() -> bool:
    """Whether the compiled operators are registered."""
    return _load_error is None


def load_error():
    """The exception raised while loading the extension, or None."""
    return _load_error


# Device types with a compiled kernel, looked up once (a plain set is also cheap for
# torch.compile to trace through).
_kernel_device_types = frozenset(
    device_type
    for device_type, dispatch_key in (("cpu", torch.DispatchKey.CPU), ("cuda", torch.DispatchKey.CUDA))
    if is_available() and torch.ops.mask2former.ms_deform_attn.default.has_kernel_for_dispatch_key(dispatch_key)
)


def supports(device: torch.device) -> bool:
    """Whether the compiled op has a kernel for tensors on ``device``."""
    return device.type in _kernel_device_types


def unsupported_reason(device: torch.device) -> str:
    if not is_available():
        return f"the C++ extension mask2former._C could not be loaded: {_load_error!r}"
    return f"the C++ extension mask2former._C has no {device.type} kernel"


def _setup_context(ctx, inputs, output):
    ctx.save_for_backward(*inputs)


def _backward(ctx, grad_output):
    value, spatial_shapes, level_start_index, sampling_locations, attention_weights = ctx.saved_tensors
    grad_value, grad_locations, grad_weights = torch.ops.mask2former.ms_deform_attn_backward(
        grad_output.contiguous(), value, spatial_shapes, level_start_index, sampling_locations, attention_weights
    )
    return grad_value, None, None, grad_locations, grad_weights


def _forward_fake(value, spatial_shapes, level_start_index, sampling_locations, attention_weights):
    check_ms_deform_attn_args(value, spatial_shapes, level_start_index, sampling_locations, attention_weights)
    N, _, M, D = value.shape
    return value.new_empty((N, sampling_locations.shape[1], M * D))


def _backward_fake(grad_output, value, spatial_shapes, level_start_index, sampling_locations, attention_weights):
    check_ms_deform_attn_args(value, spatial_shapes, level_start_index, sampling_locations, attention_weights)
    N, _, M, D = value.shape
    torch._check(
        tuple(grad_output.shape) == (N, sampling_locations.shape[1], M * D) and grad_output.dtype == value.dtype,
        lambda: f"ms_deform_attn_backward: grad_output must be a {value.dtype} tensor of shape "
        f"{(N, sampling_locations.shape[1], M * D)}, got {grad_output.dtype} {tuple(grad_output.shape)}",
    )
    return torch.empty_like(value), torch.empty_like(sampling_locations), torch.empty_like(attention_weights)


if is_available():
    torch.library.register_autograd("mask2former::ms_deform_attn", _backward, setup_context=_setup_context)
    torch.library.register_fake("mask2former::ms_deform_attn")(_forward_fake)
    torch.library.register_fake("mask2former::ms_deform_attn_backward")(_backward_fake)
