"""Loads the compiled ``mask2former._C`` extension, if it was built.

Importing ``mask2former._C`` registers the ``mask2former::ms_deform_attn`` and
``mask2former::ms_deform_attn_backward`` operators (CPU, and CUDA when compiled with it).
"""
import torch

try:
    from mask2former import _C  # noqa: F401  (import registers the operators)

    _load_error = None
except (ImportError, OSError) as e:  # not built, or built against another torch
    _C = None
    _load_error = e


def is_available() -> bool:
    """Whether the compiled operators are registered."""
    return _load_error is None


def load_error():
    """The exception raised while loading the extension, or None."""
    return _load_error


def _has_kernel(device_type: str) -> bool:
    dispatch_key = {"cpu": "CPU", "cuda": "CUDA"}.get(device_type)
    if dispatch_key is None:
        return False
    return torch._C._dispatch_has_kernel_for_dispatch_key("mask2former::ms_deform_attn", dispatch_key)


def supports(device: torch.device) -> bool:
    """Whether the compiled op has a kernel for tensors on ``device``."""
    return is_available() and _has_kernel(device.type)


def unsupported_reason(device: torch.device) -> str:
    if not is_available():
        return f"the C++ extension mask2former._C could not be loaded: {_load_error!r}"
    return f"the C++ extension mask2former._C was built without {device.type} support"
