"""Linear layers, attention and convolutions with their bias, ReLU and residual sum fused,
for CPU inference.

PyTorch runs `relu(linear(x))` or `relu(conv(x) + y)` as separate passes over the output.
oneDNN, which PyTorch's CPU builds include (`torch.ops.mkldnn`), applies them inside the
matrix-multiply kernel, and its bfloat16 kernels use the CPU's bf16 instructions (the
encoder FFN at 800x1088 took 1.8x as long through PyTorch's own bf16 `linear`). The
helpers here take that path where it applies (`fused_kernels_apply`: CPU, no autograd, not
traced, not switched off by `standard_operators`) and are the plain operators everywhere
else, with the same results up to float rounding. Two training paths: float32 linear
layers run as oneDNN convolutions (`linear_for_training`), and under CPU bfloat16
autocast attention runs its core in float32 (`multihead_attention`).
"""
import contextlib
import weakref
from typing import Dict, Optional, Tuple

import torch
from torch import Tensor, nn
from torch.nn import functional as F

__all__ = [
    "standard_operators",
    "rewrites_apply",
    "inference_rewrites_apply",
    "fused_kernels_apply",
    "compute_dtype",
    "cast_parameter",
    "has_forward_hooks",
    "convolution_linear_pays",
    "linear_for_training",
    "linear",
    "feed_forward",
    "multihead_attention",
    "mask_logits",
    "clip_mask_logits",
    "conv2d",
    "pointwise_conv_contiguous",
]


def _onednn_available() -> bool:
    ops = torch.ops.mkldnn
    return torch.backends.mkldnn.is_available() and all(
        hasattr(ops, name) for name in ("_linear_pointwise", "_convolution_pointwise")
    )


_AVAILABLE = _onednn_available()
_ENABLED = True  # switched off inside `standard_operators()`


@contextlib.contextmanager
def standard_operators():
    """Inside, inference runs the modules' standard PyTorch operators (no folded batch norm,
    no fused kernels): the computation an exported program holds, for comparisons and
    debugging."""
    global _ENABLED
    previous, _ENABLED = _ENABLED, False
    try:
        yield
    finally:
        _ENABLED = previous


def _traced() -> bool:
    """Inside torch.export / torch.compile or a jit trace (fvcore's FLOP counts): these keep the
    standard operators, which every runtime and counter knows."""
    return torch.compiler.is_compiling() or torch.jit.is_tracing()


def rewrites_apply() -> bool:
    """Not traced, and not switched off by `standard_operators`."""
    return _ENABLED and not _traced()


def inference_rewrites_apply() -> bool:
    """No gradient to record, and `rewrites_apply`."""
    return not torch.is_grad_enabled() and rewrites_apply()


def fused_kernels_apply(x: Tensor) -> bool:
    """Whether `x` can go through the fused kernels: on CPU and `inference_rewrites_apply`."""
    return _AVAILABLE and x.device.type == "cpu" and inference_rewrites_apply()


def compute_dtype(x: Tensor) -> torch.dtype:
    """The dtype autocast would run a matrix product of `x` in: oneDNN ops are not on
    autocast's lists, so the callers cast themselves."""
    if torch.is_autocast_enabled(x.device.type) and x.is_floating_point():
        return torch.get_autocast_dtype(x.device.type)
    return x.dtype


_CASTS: Dict[Tuple[int, torch.dtype], Tuple[Tuple[int, int], Tensor]] = {}


def cast_parameter(t: Optional[Tensor], dtype: torch.dtype) -> Optional[Tensor]:
    """`t.to(dtype)`, cached until `t` changes (its version counter) or is freed: the
    weights of a bfloat16 inference are cast once, not at every call (autocast caches only
    tensors that require grad)."""
    if t is None or t.dtype == dtype:
        return t
    key, version = (id(t), dtype), (t.data_ptr(), t._version)
    entry = _CASTS.get(key)
    if entry is not None and entry[0] == version:
        return entry[1]
    if entry is None:
        weakref.finalize(t, _CASTS.pop, key, None)
    cast = t.detach().to(dtype)
    _CASTS[key] = (version, cast)
    return cast


def _fused_linear(x: Tensor, weight: Tensor, bias: Optional[Tensor], relu: bool = False) -> Tensor:
    dtype = compute_dtype(x)
    weight, bias = cast_parameter(weight, dtype), cast_parameter(bias, dtype)
    return torch.ops.mkldnn._linear_pointwise(x.to(dtype), weight, bias, "relu" if relu else "none", [], "")


def _fused_mask_products_apply(mask_embed: Tensor, mask_features: Tensor) -> bool:
    float32 = mask_embed.dtype == mask_features.dtype == torch.float32
    return float32 and fused_kernels_apply(mask_embed) and not torch.is_autocast_enabled("cpu")


def _plane_logits(embed: Tensor, features: Tensor) -> Tensor:
    """(Q, C) embeddings and (C, H, W) features -> (Q, H * W), in oneDNN."""
    return torch.ops.mkldnn._linear_pointwise(embed, features.reshape(features.shape[0], -1).T, None, "none", [], "")


def mask_logits(mask_embed: Tensor, mask_features: Tensor) -> Tensor:
    """`einsum("bqc,bchw->bqhw", mask_embed, mask_features)`. At float32 inference on the CPU
    one oneDNN product per image: PyTorch's batched product runs on MKL, at a quarter of
    oneDNN's speed on an AMD EPYC (100 queries by 256 x 54400 features: 36 ms against 9 ms).
    In bfloat16 PyTorch's product is the faster one."""
    if not _fused_mask_products_apply(mask_embed, mask_features):
        return torch.einsum("bqc,bchw->bqhw", mask_embed, mask_features)
    batch, _, height, width = mask_features.shape
    logits = [_plane_logits(embed, features) for embed, features in zip(mask_embed, mask_features)]
    logits = logits[0].unsqueeze(0) if batch == 1 else torch.stack(logits)
    return logits.view(batch, -1, height, width)


def clip_mask_logits(mask_embed: Tensor, mask_features: Tensor) -> Tensor:
    """`einsum("bqc,btchw->bqthw", mask_embed, mask_features)`, the video decoder's masks of
    clips of T frames; at float32 inference on the CPU one oneDNN product per frame, as in
    `mask_logits` (the einsum also copies the features into (B, C, T, H, W) order first;
    `benchmarks/bench_mask_products.py` on an Intel Xeon, 10 frames of 90x160: 61 ms against
    45 ms)."""
    if not _fused_mask_products_apply(mask_embed, mask_features):
        return torch.einsum("bqc,btchw->bqthw", mask_embed, mask_features)
    batch, frames, _, height, width = mask_features.shape
    logits = mask_embed.new_empty(batch, mask_embed.shape[1], frames, height * width)
    for b in range(batch):
        for t in range(frames):
            logits[b, :, t] = _plane_logits(mask_embed[b], mask_features[b, t])
    return logits.view(batch, -1, frames, height, width)


def has_forward_hooks(module: nn.Module) -> bool:
    """Whether `module` or a submodule has forward (pre-)hooks, or global ones are set: then
    the module's own forward must run, so that the hooks see its calls."""
    from torch.nn.modules import module as module_globals

    if module_globals._global_forward_hooks or module_globals._global_forward_pre_hooks:
        return True
    return any(m._forward_hooks or m._forward_pre_hooks for m in module.modules())


# Below this many input elements the convolution's overhead outweighs the gain (forward and
# backward of 400 tokens x 128 channels: 0.71 ms as a convolution, 0.48 ms as a linear).
_CONVOLUTION_LINEAR_MIN_ELEMENTS = 2**17


def convolution_linear_pays(x: Tensor) -> bool:
    """Recording gradients of a large float32 input on the CPU (no autocast), not traced:
    PyTorch's float32 `linear` runs on MKL, whose float32 products ran at half of oneDNN's
    speed on an AMD EPYC (150 against 290-340 GFLOP/s); as 1x1 convolutions the forward and
    both backward products run in oneDNN (forward and backward of the encoder FFN's two
    layers over 10752 tokens: 69 ms against 176 ms)."""
    return (
        _AVAILABLE
        and _ENABLED
        and x.device.type == "cpu"
        and x.dtype == torch.float32
        and torch.is_grad_enabled()
        and not torch.is_autocast_enabled("cpu")
        and not _traced()  # before the size test: that would put a guard on a traced size
        and x.numel() >= _CONVOLUTION_LINEAR_MIN_ELEMENTS
    )


def linear_for_training(x: Tensor, weight: Tensor, bias: Optional[Tensor]) -> Tensor:
    """`F.linear(x, weight, bias)`, as a 1x1 convolution over a channels-last view of `x`
    where `convolution_linear_pays`: the (tokens, channels) rows of `x` are the memory of a
    (1, channels, tokens, 1) channels-last image, and so are the output's."""
    if not convolution_linear_pays(x):
        return F.linear(x, weight, bias)
    channels = x.shape[-1]
    image = x.reshape(1, -1, 1, channels).permute(0, 3, 1, 2)
    out = F.conv2d(image, weight[:, :, None, None], bias)
    return out.permute(0, 2, 3, 1).reshape(*x.shape[:-1], weight.shape[0])


def linear(x: Tensor, layer: nn.Linear, relu: bool = False) -> Tensor:
    """`layer(x)`, then ReLU if `relu`."""
    hooked = has_forward_hooks(layer)
    if not hooked and fused_kernels_apply(x):
        return _fused_linear(x, layer.weight, layer.bias, relu)
    if not hooked and convolution_linear_pays(x):
        y = linear_for_training(x, layer.weight, layer.bias)
    else:
        y = layer(x)
    return F.relu(y) if relu else y


def feed_forward(x: Tensor, linear1: nn.Linear, linear2: nn.Linear, activation, dropout: nn.Module) -> Tensor:
    """`linear2(dropout(activation(linear1(x))))`; at inference with a ReLU, the ReLU runs
    inside linear1's kernel."""
    if activation is F.relu and not linear1.training and fused_kernels_apply(x):
        return linear(linear(x, linear1, relu=True), linear2)
    return linear(dropout(activation(linear(x, linear1))), linear2)


def multihead_attention(
    attention: nn.MultiheadAttention,
    query: Tensor,
    key: Tensor,
    value: Tensor,
    attn_mask: Optional[Tensor] = None,
    key_padding_mask: Optional[Tensor] = None,
) -> Tensor:
    """`attention(query, key, value, attn_mask=..., key_padding_mask=..., need_weights=False)[0]`
    for a sequence-first `nn.MultiheadAttention` ((L, B, E) inputs). Without a key padding
    mask, at inference: the four projections through the fused linear kernel, the attention
    through `scaled_dot_product_attention`; in training under CPU bfloat16 autocast: the
    attention itself in float32 (`_attention_in_float32`).

    Args:
        attn_mask: None or (B * num_heads, L, S) bool, True where attention is blocked.
    """
    standard = (
        key_padding_mask is not None
        or has_forward_hooks(attention)
        or attention.batch_first
        or not attention._qkv_same_embed_dim
        or attention.in_proj_bias is None
        or attention.bias_k is not None
        or (attn_mask is not None and (attn_mask.dtype != torch.bool or attn_mask.dim() != 3))
    )
    if not standard and not attention.training and fused_kernels_apply(query):
        return _fused_attention(attention, query, key, value, attn_mask)
    if not standard and (_float32_attention_pays(query) or convolution_linear_pays(query)):
        return _attention_in_float32(attention, query, key, value, attn_mask)
    return attention(query, key, value, attn_mask=attn_mask, key_padding_mask=key_padding_mask, need_weights=False)[0]


def _split_heads(projected: Tensor, heads: int) -> Tensor:
    """(T, B, E) -> (B, heads, T, E / heads), as nn.MultiheadAttention splits."""
    return projected.view(*projected.shape[:2], heads, -1).permute(1, 2, 0, 3)


def _allowed_positions(attn_mask: Optional[Tensor], batch: int, heads: int) -> Optional[Tensor]:
    """(B * heads, L, S) blocked positions -> the (B, heads or 1, L, S) allowed ones for
    `scaled_dot_product_attention`; a mask shared by the heads is broadcast, not copied."""
    if attn_mask is None:
        return None
    blocked = attn_mask.view(batch, heads, *attn_mask.shape[1:])
    if blocked.stride(1) == 0:  # one mask for all heads
        blocked = blocked[:, :1]
    return ~blocked


def _merge_heads(out: Tensor) -> Tensor:
    """(B, heads, L, E / heads) -> (L, B, E)."""
    batch, heads, length, channels = out.shape
    return out.permute(2, 0, 1, 3).reshape(length, batch, heads * channels)


def _fused_attention(attention, query, key, value, attn_mask) -> Tensor:
    batch, heads = query.shape[1], attention.num_heads
    dtype = compute_dtype(query)  # cast the packed projections whole: their chunks are new tensors every call
    w_q, w_k, w_v = cast_parameter(attention.in_proj_weight, dtype).chunk(3)
    b_q, b_k, b_v = cast_parameter(attention.in_proj_bias, dtype).chunk(3)
    q, k, v = (
        _split_heads(_fused_linear(x, w, b), heads)
        for x, w, b in ((query, w_q, b_q), (key, w_k, b_k), (value, w_v, b_v))
    )
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=_allowed_positions(attn_mask, batch, heads))
    return _fused_linear(_merge_heads(out), attention.out_proj.weight, attention.out_proj.bias)


def _float32_attention_pays(x: Tensor) -> bool:
    """Recording gradients on the CPU under bfloat16 autocast, not traced: PyTorch's CPU
    flash attention runs its backward several times slower in bfloat16 than in float32 for
    heads of 16-32 channels (forward and backward, 100 queries over 1024 keys: 8.1 ms against
    5.7 ms; 50 over 64 with heads of 16: 4.9 ms against 0.8 ms)."""
    return (
        _ENABLED
        and x.device.type == "cpu"
        and torch.is_grad_enabled()
        and torch.is_autocast_enabled("cpu")
        and torch.get_autocast_dtype("cpu") == torch.bfloat16
        and not _traced()
    )


def _attention_in_float32(attention, query, key, value, attn_mask) -> Tensor:
    """nn.MultiheadAttention's computation with the projections under autocast (bfloat16)
    or through `linear_for_training` (float32), and the attention between them in float32."""
    batch, heads = query.shape[1], attention.num_heads
    w_q, w_k, w_v = attention.in_proj_weight.chunk(3)
    b_q, b_k, b_v = attention.in_proj_bias.chunk(3)
    q, k, v = (
        _split_heads(linear_for_training(x, w, b), heads).float()
        for x, w, b in ((query, w_q, b_q), (key, w_k, b_k), (value, w_v, b_v))
    )
    with torch.autocast("cpu", enabled=False):
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=_allowed_positions(attn_mask, batch, heads),
            dropout_p=attention.dropout if attention.training else 0.0,
        )
    return linear_for_training(_merge_heads(out), attention.out_proj.weight, attention.out_proj.bias)


def conv2d(
    x: Tensor,
    weight: Tensor,
    bias: Optional[Tensor],
    conv: nn.Conv2d,
    relu: bool = False,
    residual: Optional[Tensor] = None,
) -> Tensor:
    """`conv2d(x, weight, bias)` with `conv`'s stride, padding, dilation and groups,
    plus `residual` if given, then ReLU if `relu`. With the fused kernels, `x` and `weight`
    should be channels-last, in the same dtype."""
    if fused_kernels_apply(x):
        args = (weight, bias, conv.padding, conv.stride, conv.dilation, conv.groups)
        unary = "relu" if relu else "none"
        if residual is None:
            return torch.ops.mkldnn._convolution_pointwise(x, *args, unary, [], "")
        return torch.ops.mkldnn._convolution_pointwise.binary(x, residual, *args, "add", None, unary, [], "")
    y = F.conv2d(x, weight, bias, conv.stride, conv.padding, conv.dilation, conv.groups)
    if residual is not None:
        y = y + residual
    return F.relu_(y) if relu else y


def pointwise_conv_contiguous(x: Tensor, conv: nn.Conv2d) -> Tensor:
    """`conv(x)` for a plain 1x1 convolution (stride 1, no groups, dilation, norm or
    activation), returned contiguous. For a channels-last `x` with the fused kernels, the
    product runs as weight @ pixels^T, which writes the contiguous layout directly: at
    800x1088 the convolution plus the transposing copy took 2x (fp32) to 9x (bf16) as long.
    """
    plain_conv = (
        tuple(conv.kernel_size) == (1, 1)
        and tuple(conv.stride) == (1, 1)
        and tuple(conv.padding) == (0, 0)
        and conv.groups == 1
        and getattr(conv, "norm", None) is None
        and getattr(conv, "activation", None) is None
    )
    channels_last = x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    if not (plain_conv and channels_last and fused_kernels_apply(x)) or has_forward_hooks(conv):
        return conv(x).contiguous()
    dtype = compute_dtype(x)
    weight = cast_parameter(conv.weight, dtype).flatten(1)  # (C_out, C_in)
    bias = cast_parameter(conv.bias, dtype)
    batch, _, height, width = x.shape
    pixels = x.to(dtype).permute(0, 2, 3, 1).reshape(batch, height * width, -1)  # a view
    out = x.new_empty((batch, weight.shape[0], height * width), dtype=dtype)
    for image, image_pixels in zip(out, pixels):
        if bias is None:
            torch.mm(weight, image_pixels.T, out=image)
        else:
            torch.addmm(bias[:, None], weight, image_pixels.T, out=image)
    return out.view(batch, -1, height, width)
