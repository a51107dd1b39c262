"""``mask2former::ms_deform_attn`` in standard ONNX ops, for ``torch.onnx.export``.

The same computation as the pure-PyTorch reference (`mask2former.ops.reference`): one
``GridSample`` per level (bilinear, zeros outside, align_corners=0) and a weighted sum over
the sampled points. Level sizes are read from the ``spatial_shapes`` input at run time, so
the ONNX graph keeps the batch and image size dynamic; only the number of levels, heads,
points and channels are fixed, as they are in the model.
"""
from onnxscript import opset20 as op

__all__ = ["ONNX_OPSET", "ms_deform_attn_onnx", "translation_table"]

ONNX_OPSET = 20  # GridSample's "linear" mode (opset 20) and what onnxruntime runs on CPU


def _int64(*values):
    return op.Constant(value_ints=list(values))


def ms_deform_attn_onnx(value, spatial_shapes, level_start_index, sampling_locations, attention_weights):
    """Traced by the exporter with symbolic inputs (plain Python, so the level loop unrolls).

    value (N, S, M, D), spatial_shapes (L, 2), level_start_index (L,),
    sampling_locations (N, Lq, M, L, P, 2), attention_weights (N, Lq, M, L, P) -> (N, Lq, M*D)"""
    num_heads, head_dim = value.shape[2], value.shape[3]
    num_levels, num_points = sampling_locations.shape[3], sampling_locations.shape[4]
    # (N, S, M, D) -> (N*M, D, S)
    values = op.Reshape(op.Flatten(op.Transpose(value, perm=[0, 2, 3, 1]), axis=2), _int64(0, head_dim, -1))
    grids = op.Sub(op.Mul(sampling_locations, op.CastLike(2.0, sampling_locations)), op.CastLike(1.0, sampling_locations))
    output = None
    for level in range(num_levels):
        index = _int64(level)
        height_width = op.Gather(spatial_shapes, op.Constant(value_int=level), axis=0)  # (2,)
        start = op.Gather(level_start_index, index, axis=0)  # (1,)
        end = op.Add(start, op.ReduceProd(height_width, keepdims=1))
        value_l = op.Slice(values, start, end, _int64(2))  # (N*M, D, H_l*W_l)
        value_l = op.Reshape(value_l, op.Concat(_int64(0, head_dim), height_width, axis=0))
        # (N, Lq, M, P, 2) -> (N*M, Lq, P, 2)
        grid_l = op.Transpose(op.Gather(grids, op.Constant(value_int=level), axis=3), perm=[0, 2, 1, 3, 4])
        grid_l = op.Reshape(op.Flatten(grid_l, axis=2), _int64(0, -1, num_points, 2))
        sampled = op.GridSample(value_l, grid_l, mode="linear", padding_mode="zeros", align_corners=0)
        # (N, Lq, M, P) -> (N*M, 1, Lq, P)
        weights_l = op.Transpose(op.Gather(attention_weights, op.Constant(value_int=level), axis=3), perm=[0, 2, 1, 3])
        weights_l = op.Reshape(op.Flatten(weights_l, axis=2), _int64(0, 1, -1, num_points))
        level_sum = op.ReduceSum(op.Mul(sampled, weights_l), _int64(-1), keepdims=0)  # (N*M, D, Lq)
        output = level_sum if output is None else op.Add(output, level_sum)
    # (N*M, D, Lq) -> (N, M*D, Lq) -> (N, Lq, M*D)
    return op.Transpose(op.Reshape(output, _int64(-1, num_heads * head_dim, 0)), perm=[0, 2, 1])


def translation_table():
    """`custom_translation_table` for `torch.onnx.export`: the compiled op as ONNX ops."""
    import torch

    import mask2former.ops  # noqa: F401  (registers torch.ops.mask2former)

    return {torch.ops.mask2former.ms_deform_attn.default: ms_deform_attn_onnx}
