"""fvcore FLOP counting with this project's op handles: the deformable-attention op, the
attention and matrix-product forms fvcore does not count, and the element-wise ops it would
warn about. Imports nothing from `mask2former`, so it counts any revision's model.
"""
import numpy as np
from fvcore.nn import FlopCountAnalysis
from fvcore.nn.jit_handles import addmm_flop_jit, elementwise_flop_counter, get_shape

# Element-wise and bookkeeping ops fvcore would otherwise warn about; they are cheap
# next to convolutions and matrix products and not counted (as in detectron2's analysis).
_IGNORED_OPS = (
    "aten::add", "aten::add_", "aten::sub", "aten::rsub", "aten::mul", "aten::mul_",
    "aten::div", "aten::div_", "aten::neg", "aten::exp", "aten::sqrt", "aten::reciprocal",
    "aten::sigmoid", "aten::sigmoid_", "aten::softmax", "aten::log_softmax", "aten::relu",
    "aten::relu_", "aten::gelu", "aten::argmax", "aten::max", "aten::sort", "aten::topk",
    "aten::batch_norm", "aten::constant_pad_nd", "aten::max_pool2d", "aten::cumsum",
    "aten::sum", "aten::mean", "aten::gt", "aten::lt", "aten::ge", "aten::eq", "aten::ne",
    "aten::meshgrid", "aten::linspace", "aten::arange", "aten::nonzero", "aten::fill_",
    "aten::zeros_like", "aten::ones_like", "aten::repeat", "aten::expand_as", "aten::where",
    "aten::masked_fill", "aten::masked_fill_", "aten::clamp", "aten::floor_divide",
    "aten::remainder", "aten::scatter_", "aten::index_put_", "aten::unique_dim",
    "aten::_unique2", "aten::cos", "aten::sin", "aten::pow", "aten::floor", "aten::ceil",
    "aten::logical_and", "aten::logical_not", "aten::bitwise_not", "aten::all", "aten::any",
    "aten::min", "aten::stack", "aten::cat", "aten::copy_", "aten::flip", "aten::clone",
    "aten::pad", "aten::numpy_T", "aten::resolve_conj", "aten::resolve_neg", "aten::numel",
    "aten::prod", "aten::eye",
)


def ms_deform_attn_flop_handle(inputs, outputs) -> int:
    """mask2former::ms_deform_attn(value (N,S,M,D), shapes, starts,
    sampling_locations (N,Lq,M,L,P,2), attention_weights (N,Lq,M,L,P), ...)."""
    n, _, m, d = get_shape(inputs[0])
    _, lq, _, levels, points, _ = get_shape(inputs[3])
    return 5 * n * lq * m * levels * points * d


def baddbmm_flop_handle(inputs, outputs) -> int:
    """aten::baddbmm(bias, batch1 (B,N,K), batch2 (B,K,M)): B*N*K*M multiply-adds
    (attention with an additive mask goes through it)."""
    b, n, k = get_shape(inputs[1])
    return b * n * k * get_shape(inputs[2])[-1]


def mm_flop_handle(inputs, outputs) -> int:
    """aten::mm(a (N,K), b (K,M)[, out]): N*K*M multiply-adds (fvcore's own handle rejects
    the `out=` form that banded post-processing uses)."""
    n, k = get_shape(inputs[0])
    return n * k * get_shape(inputs[1])[-1]


def scaled_dot_product_attention_flop_handle(inputs, outputs) -> int:
    """aten::scaled_dot_product_attention(q (..., L, E), k (..., S, E), v (..., S, Ev)):
    the two matrix products, L*S*E + L*S*Ev multiply-adds per batch and head."""
    q_shape, k_shape, v_shape = (get_shape(x) for x in inputs[:3])
    batch = int(np.prod(q_shape[:-2]))
    length, source = q_shape[-2], k_shape[-2]
    return batch * length * source * (q_shape[-1] + v_shape[-1])


def grid_sampler_flop_handle(inputs, outputs) -> int:
    """aten::grid_sampler: bilinear sampling, 4 multiply-adds per output value."""
    return 4 * int(np.prod(get_shape(outputs[0])))


def flop_analysis(module, inputs) -> FlopCountAnalysis:
    """fvcore's count for `module(*inputs)` with this project's op handles, warnings off."""
    analysis = FlopCountAnalysis(module, inputs)
    analysis.set_op_handle(**{name: None for name in _IGNORED_OPS})
    analysis.set_op_handle(
        **{
            "mask2former::ms_deform_attn": ms_deform_attn_flop_handle,
            "aten::grid_sampler": grid_sampler_flop_handle,
            "aten::baddbmm": baddbmm_flop_handle,
            "aten::addmm_": addmm_flop_jit,
            "aten::mm": mm_flop_handle,
            "aten::scaled_dot_product_attention": scaled_dot_product_attention_flop_handle,
            # separable resizing (one axis at a time): 2 taps per output value
            "aten::upsample_linear1d": elementwise_flop_counter(0, 2),
        }
    )
    analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    analysis.tracer_warnings("none")
    return analysis
