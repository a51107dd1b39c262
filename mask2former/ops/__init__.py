"""Multi-scale deformable attention: compiled op (``mask2former._C``) with a pure-PyTorch fallback;
and ``onednn``, the fused CPU linear / convolution kernels the inference paths use."""
from .functional import ms_deform_attn
from .ms_deform_attn_layer import MSDeformAttn
from .reference import ms_deform_attn_reference

__all__ = ["MSDeformAttn", "ms_deform_attn", "ms_deform_attn_reference"]
