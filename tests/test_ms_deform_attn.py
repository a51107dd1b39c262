"""Multi-scale deformable attention: the compiled op against the grid_sample reference,
gradients, tracing (torch.compile / torch.export), the MSDeformAttn layer and the fallback."""
import json
import math
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from mask2former.ops import MSDeformAttn, _extension, functional, ms_deform_attn, ms_deform_attn_reference

REFERENCE = Path(__file__).resolve().parent / "reference"

needs_kernel = pytest.mark.skipif(
    not _extension.is_available(),
    reason=f"the C++ extension mask2former._C is not built ({_extension.load_error()!r}); "
    "run `pip install --no-build-isolation -e .`",
)


def _skip_without_cuda_kernel():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    if not _extension.supports(torch.device("cuda")):
        pytest.skip("mask2former._C was built without CUDA (build with a GPU visible or FORCE_CUDA=1)")


def level_layout(shapes):
    """(spatial_shapes (L, 2), level_start_index (L,), S) for a list of (H, W)."""
    spatial_shapes = torch.tensor(shapes, dtype=torch.int64)
    sizes = spatial_shapes.prod(1)
    starts = torch.cat([sizes.new_zeros(1), sizes.cumsum(0)[:-1]])
    return spatial_shapes, starts, int(sizes.sum())


def random_case(batch, shapes, heads, channels, queries, points, dtype=torch.float64, spread=1.6, seed=0):
    """Random inputs; locations cover [-(spread-1)/2, (spread+1)/2], i.e. reach outside the maps."""
    g = torch.Generator().manual_seed(seed)
    spatial_shapes, starts, S = level_layout(shapes)
    L = len(shapes)
    value = torch.randn(batch, S, heads, channels, generator=g, dtype=dtype)
    locations = torch.rand(batch, queries, heads, L, points, 2, generator=g, dtype=dtype) * spread - (spread - 1) / 2
    weights = torch.rand(batch, queries, heads, L, points, generator=g, dtype=dtype)
    return value, spatial_shapes, starts, locations, weights


def special_locations(shapes, batch, queries, heads, points, dtype=torch.float64, seed=0):
    """Locations on map borders (0, 1), on pixel centres and pixel edges, and far outside."""
    g = torch.Generator().manual_seed(seed)
    L = len(shapes)
    size_xy = torch.tensor([[w, h] for h, w in shapes], dtype=dtype)  # (L, 2)
    kind = torch.randint(0, 4, (batch, queries, heads, L, points, 2), generator=g)
    pixel = torch.randint(-1, 12, (batch, queries, heads, L, points, 2), generator=g).to(dtype)
    centre = (pixel + 0.5) / size_xy[:, None, :]  # on a pixel centre (integer pixel position)
    edge = pixel / size_xy[:, None, :]  # between two pixels, including the borders 0 and 1
    border = torch.randint(0, 2, kind.shape, generator=g).to(dtype)  # exactly 0 or 1
    far = torch.randn(kind.shape, generator=g, dtype=dtype) * 50
    return torch.where(kind == 0, centre, torch.where(kind == 1, edge, torch.where(kind == 2, border, far)))


CASES = {
    # name: (batch, level shapes, heads, channels, queries, points)
    "one-level-odd-D32": (1, [(7, 9)], 2, 32, 11, 3),
    "four-levels-batch3-D64": (3, [(9, 11), (5, 6), (3, 3), (1, 2)], 2, 64, 13, 4),
    "four-levels-batch1-D32-odd": (1, [(13, 5), (7, 3), (4, 2), (2, 1)], 4, 32, 9, 2),
    "odd-D": (3, [(6, 6), (3, 3)], 3, 24, 5, 4),
}


# ----------------------------------------------------------------------------- reference


def test_reference_reads_pixel_centres_exactly_and_zero_outside():
    spatial_shapes, starts, S = level_layout([(3, 4), (2, 2)])
    value = torch.arange(S * 2, dtype=torch.float64).view(1, S, 1, 2)
    # query 0 at the centre of pixel (row 1, col 2) of level 0, with weight 2; query 1 far outside.
    locations = torch.zeros(1, 2, 1, 2, 1, 2, dtype=torch.float64)
    locations[0, 0, 0, 0, 0] = torch.tensor([(2 + 0.5) / 4, (1 + 0.5) / 3])
    locations[0, 0, 0, 1, 0] = torch.tensor([-5.0, -5.0])
    locations[0, 1] = 7.0
    weights = torch.full((1, 2, 1, 2, 1), 2.0, dtype=torch.float64)
    out = ms_deform_attn_reference(value, spatial_shapes, starts, locations, weights)
    assert out.shape == (1, 2, 2)
    torch.testing.assert_close(out[0, 0], 2 * value[0, 1 * 4 + 2, 0], rtol=0, atol=1e-12)
    assert torch.all(out[0, 1] == 0)


def test_reference_interpolates_linearly_between_pixel_centres():
    spatial_shapes, starts, S = level_layout([(1, 3)])
    value = torch.tensor([1.0, 5.0, 9.0], dtype=torch.float64).view(1, 3, 1, 1)
    # x = 1.25 pixels -> a quarter of the way from the centre of pixel 0 to pixel 1
    locations = torch.tensor([(0.5 + 0.25) / 3, 0.5], dtype=torch.float64).view(1, 1, 1, 1, 1, 2)
    weights = torch.ones(1, 1, 1, 1, 1, dtype=torch.float64)
    out = ms_deform_attn_reference(value, spatial_shapes, starts, locations, weights)
    assert out.item() == pytest.approx(2.0)
    # half a pixel left of the first centre is the map border: half of pixel 0, half zero padding
    locations[..., 0] = 0.0
    assert ms_deform_attn_reference(value, spatial_shapes, starts, locations, weights).item() == pytest.approx(0.5)


# ----------------------------------------------------------------------------- compiled op


def run_op(fn, case, needs_grad=False):
    value, spatial_shapes, starts, locations, weights = case
    if needs_grad:
        value, locations, weights = (t.detach().clone().requires_grad_() for t in (value, locations, weights))
    return fn(value, spatial_shapes, starts, locations, weights), (value, locations, weights)


@needs_kernel
@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("dtype,atol", [(torch.float32, 1e-5), (torch.float64, 1e-12)])
@pytest.mark.parametrize("special", [False, True], ids=["random", "borders-pixels-far"])
def test_kernel_forward_matches_reference(name, dtype, atol, special):
    batch, shapes, heads, channels, queries, points = CASES[name]
    case = random_case(batch, shapes, heads, channels, queries, points, dtype=dtype)
    if special:
        case = case[:3] + (special_locations(shapes, batch, queries, heads, points, dtype=dtype),) + case[4:]
    expected, _ = run_op(ms_deform_attn_reference, case)
    out, _ = run_op(torch.ops.mask2former.ms_deform_attn, case)
    assert out.dtype == dtype and out.shape == (batch, queries, heads * channels)
    torch.testing.assert_close(out, expected, rtol=0, atol=atol)


@needs_kernel
@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("special", [False, True], ids=["random", "borders-pixels-far"])
def test_kernel_gradients_match_reference(name, special):
    batch, shapes, heads, channels, queries, points = CASES[name]
    case = random_case(batch, shapes, heads, channels, queries, points, seed=1)
    if special:
        case = case[:3] + (special_locations(shapes, batch, queries, heads, points, seed=1),) + case[4:]
    grad_output = torch.randn(batch, queries, heads * channels, dtype=torch.float64)
    out_ref, inputs_ref = run_op(ms_deform_attn_reference, case, needs_grad=True)
    out, inputs = run_op(ms_deform_attn, case, needs_grad=True)
    grads_ref = torch.autograd.grad(out_ref, inputs_ref, grad_output)
    grads = torch.autograd.grad(out, inputs, grad_output)
    # Bilinear interpolation has kinks where a pixel coordinate is an integer: there the two
    # implementations may round onto different sides and take different one-sided derivatives
    # for the location (values and weights get the same gradient either way).
    size_xy = torch.tensor([[w, h] for h, w in shapes], dtype=torch.float64)
    pixel = case[3] * size_xy[:, None, :] - 0.5
    smooth = (pixel - pixel.round()).abs() > 1e-9
    if special:
        assert (~smooth).sum() > 10, "the special locations should include pixel edges"
    grads = (grads[0], torch.where(smooth, grads[1], 0), grads[2])
    grads_ref = (grads_ref[0], torch.where(smooth, grads_ref[1], 0), grads_ref[2])
    for got, want, what in zip(grads, grads_ref, ("value", "sampling_locations", "attention_weights")):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9, msg=lambda m: f"grad of {what}: {m}")


@needs_kernel
def test_kernel_gradients_float32_and_query_blocks():
    # One (batch, head) pair with two threads: the value gradient is split in query blocks.
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        case = random_case(1, [(9, 7), (4, 4)], 1, 32, 40, 4, dtype=torch.float32, seed=2)
        grad_output = torch.randn(1, 40, 32)
        out_ref, inputs_ref = run_op(ms_deform_attn_reference, case, needs_grad=True)
        out, inputs = run_op(ms_deform_attn, case, needs_grad=True)
        grads_ref = torch.autograd.grad(out_ref, inputs_ref, grad_output)
        grads = torch.autograd.grad(out, inputs, grad_output)
    finally:
        torch.set_num_threads(threads)
    for got, want in zip(grads, grads_ref):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


@needs_kernel
def test_kernel_gradcheck_float64():
    case = random_case(2, [(3, 4), (2, 1)], 2, 3, 4, 2, seed=3)
    value, spatial_shapes, starts, locations, weights = case
    # keep locations away from pixel edges, where bilinear interpolation has kinks
    locations = (locations * torch.tensor([4.0, 3.0], dtype=torch.float64)).round() / torch.tensor(
        [4.0, 3.0], dtype=torch.float64
    ) + 0.07
    inputs = [t.detach().requires_grad_() for t in (value, locations, weights)]
    assert torch.autograd.gradcheck(
        lambda v, loc, w: torch.ops.mask2former.ms_deform_attn(v, spatial_shapes, starts, loc, w), inputs
    )


@needs_kernel
def test_kernel_bfloat16_close_to_float32():
    case = random_case(2, [(8, 8), (4, 4)], 2, 32, 10, 4, dtype=torch.float32, spread=1.0, seed=4)
    bf16_case = tuple(t.bfloat16() if t.is_floating_point() else t for t in case)
    # same (rounded) inputs in float32: only accumulation and the output rounding differ
    expected, _ = run_op(torch.ops.mask2former.ms_deform_attn, [t.float() if t.is_floating_point() else t for t in bf16_case])
    out, inputs = run_op(torch.ops.mask2former.ms_deform_attn, bf16_case, needs_grad=True)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), expected, rtol=1e-2, atol=1e-2)
    grads = torch.autograd.grad(out.float().sum(), inputs)
    assert all(g.dtype == torch.bfloat16 and torch.isfinite(g.float()).all() for g in grads)


_ISA_CHECK = """
import torch
from mask2former.ops import ms_deform_attn_reference
torch.manual_seed(0)
shapes = torch.tensor([[7, 9], [3, 4]]); starts = torch.tensor([0, 63])
for D in (32, 12):
    value = torch.randn(2, 75, 2, D, dtype=torch.float64, requires_grad=True)
    loc = (torch.rand(2, 5, 2, 2, 3, 2, dtype=torch.float64) * 1.4 - 0.2).requires_grad_()
    w = torch.rand(2, 5, 2, 2, 3, dtype=torch.float64, requires_grad=True)
    g = torch.randn(2, 5, 2 * D, dtype=torch.float64)
    out = torch.ops.mask2former.ms_deform_attn(value, shapes, starts, loc, w)
    ref = ms_deform_attn_reference(value, shapes, starts, loc, w)
    assert torch.allclose(out, ref, atol=1e-12), (out - ref).abs().max()
    for a, b in zip(torch.autograd.grad(out, (value, loc, w), g), torch.autograd.grad(ref, (value, loc, w), g)):
        assert torch.allclose(a, b, atol=1e-9), (a - b).abs().max()
print("ok")
"""


@needs_kernel
@pytest.mark.parametrize("capability", ["default", "avx2"])
def test_kernel_variants_for_other_instruction_sets(capability):
    # The kernel is compiled per instruction set and picked from ATen's CPU capability; the
    # test process uses the best one, a subprocess with a lowered capability the others.
    env = dict(os.environ, ATEN_CPU_CAPABILITY=capability, OMP_NUM_THREADS="1")
    result = subprocess.run([sys.executable, "-c", _ISA_CHECK], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stderr[-2000:]


@needs_kernel
def test_kernel_uses_openmp():
    # ATen's parallel_for runs inline in the extension: without -fopenmp it would be serial.
    library = Path(_extension._C.__file__).read_bytes()
    assert b"GOMP_parallel" in library


@needs_kernel
def test_kernel_rejects_levels_outside_value():
    value, spatial_shapes, starts, locations, weights = random_case(1, [(4, 4), (2, 2)], 1, 4, 3, 1)
    with pytest.raises(RuntimeError, match="level 1"):
        torch.ops.mask2former.ms_deform_attn(value, spatial_shapes, starts + 3, locations, weights)


@needs_kernel
@pytest.mark.parametrize(
    "dtype,atol", [(torch.float64, 1e-10), (torch.float32, 1e-4), (torch.float16, 2e-2), (torch.bfloat16, 5e-2)]
)
def test_cuda_kernel_matches_cpu_kernel(dtype, atol):
    _skip_without_cuda_kernel()
    case = random_case(2, [(9, 11), (5, 6), (3, 3)], 4, 32, 50, 4, dtype=torch.float64, seed=6)
    case = tuple(t.to(dtype) if t.is_floating_point() else t for t in case)
    grad_output = torch.randn(2, 50, 4 * 32, dtype=torch.float64).to(dtype)
    # the CPU kernel in float64 on the same (rounded) inputs is the reference
    cpu_case = tuple(t.double() if t.is_floating_point() else t for t in case)
    expected, cpu_inputs = run_op(torch.ops.mask2former.ms_deform_attn, cpu_case, needs_grad=True)
    expected_grads = torch.autograd.grad(expected, cpu_inputs, grad_output.double())
    cuda_case = tuple(t.cuda() for t in case)
    out, cuda_inputs = run_op(ms_deform_attn, cuda_case, needs_grad=True)
    grads = torch.autograd.grad(out, cuda_inputs, grad_output.cuda())
    assert out.dtype == dtype
    torch.testing.assert_close(out.double().cpu(), expected, rtol=atol, atol=atol)
    for got, want in zip(grads, expected_grads):
        assert got.dtype == dtype
        scale = max(1.0, want.abs().max().item())
        torch.testing.assert_close(got.double().cpu() / scale, want / scale, rtol=atol, atol=atol)


@needs_kernel
def test_cuda_kernel_gradcheck_float64():
    _skip_without_cuda_kernel()
    value, spatial_shapes, starts, locations, weights = random_case(2, [(3, 4), (2, 1)], 2, 3, 4, 2, seed=3)
    # keep locations away from pixel edges, where bilinear interpolation has kinks
    locations = (locations * torch.tensor([4.0, 3.0], dtype=torch.float64)).round() / torch.tensor(
        [4.0, 3.0], dtype=torch.float64
    ) + 0.07
    shapes, starts = spatial_shapes.cuda(), starts.cuda()
    inputs = [t.cuda().detach().requires_grad_() for t in (value, locations, weights)]
    assert torch.autograd.gradcheck(
        lambda v, loc, w: torch.ops.mask2former.ms_deform_attn(v, shapes, starts, loc, w), inputs
    )


@needs_kernel
def test_cuda_layer_under_float16_autocast():
    _skip_without_cuda_kernel()
    torch.manual_seed(0)
    layer = MSDeformAttn(d_model=64, n_levels=2, n_heads=4, n_points=4).cuda()
    spatial_shapes, starts, S = level_layout([(12, 16), (6, 8)])
    spatial_shapes, starts = spatial_shapes.cuda(), starts.cuda()
    query = torch.randn(2, 30, 64, device="cuda")
    reference_points = torch.rand(2, 30, 2, 2, device="cuda")
    source = torch.randn(2, S, 64, device="cuda")
    expected = layer(query, reference_points, source, spatial_shapes, starts)
    with torch.autocast("cuda", dtype=torch.float16):
        out = layer(query, reference_points, source, spatial_shapes, starts)
    out.float().sum().backward()
    assert torch.isfinite(out).all()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in layer.parameters())
    torch.testing.assert_close(out.float(), expected, rtol=2e-2, atol=2e-2)


# ----------------------------------------------------------------------------- tracing


class _CoreAttention(torch.nn.Module):
    def forward(self, value, spatial_shapes, starts, locations, weights):
        return ms_deform_attn(value, spatial_shapes, starts, locations, weights)


@needs_kernel
def test_torch_compile_forward_and_backward():
    compiled = torch.compile(_CoreAttention(), fullgraph=True, backend="inductor")
    case = random_case(2, [(4, 5), (2, 3)], 2, 8, 7, 3, dtype=torch.float32, seed=5)
    out, inputs = run_op(compiled, case, needs_grad=True)
    expected, inputs_ref = run_op(ms_deform_attn_reference, case, needs_grad=True)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-5)
    grads = torch.autograd.grad(out.sum(), inputs)
    grads_ref = torch.autograd.grad(expected.sum(), inputs_ref)
    for got, want in zip(grads, grads_ref):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


@needs_kernel
def test_torch_export_traces_the_layer():
    layer = MSDeformAttn(d_model=32, n_levels=2, n_heads=2, n_points=2).eval()
    spatial_shapes, starts, S = level_layout([(4, 5), (2, 3)])
    x = torch.randn(2, S, 32)
    reference_points = torch.rand(2, S, 2, 2)
    args = (x, reference_points, x, spatial_shapes, starts)
    exported = torch.export.export(layer, args)
    targets = {str(node.target) for node in exported.graph.nodes if node.op == "call_function"}
    assert "mask2former.ms_deform_attn.default" in targets
    torch.testing.assert_close(exported.module()(*args), layer(*args))


# ----------------------------------------------------------------------------- layer


def test_layer_parameters_and_published_initialisation():
    layer = MSDeformAttn(d_model=256, n_levels=3, n_heads=8, n_points=4)
    shapes = [(name, tuple(p.shape)) for name, p in layer.named_parameters()]
    assert shapes == [
        ("sampling_offsets.weight", (192, 256)),
        ("sampling_offsets.bias", (192,)),
        ("attention_weights.weight", (96, 256)),
        ("attention_weights.bias", (96,)),
        ("value_proj.weight", (256, 256)),
        ("value_proj.bias", (256,)),
        ("output_proj.weight", (256, 256)),
        ("output_proj.bias", (256,)),
    ]
    assert torch.all(layer.sampling_offsets.weight == 0)
    bias = layer.sampling_offsets.bias.view(8, 3, 4, 2)
    for h in range(8):
        direction = torch.tensor([math.cos(2 * math.pi * h / 8), math.sin(2 * math.pi * h / 8)])
        direction = direction / direction.abs().max()
        for p in range(4):
            for level in range(3):
                torch.testing.assert_close(bias[h, level, p], direction * (p + 1), rtol=0, atol=1e-6)
    assert torch.all(layer.attention_weights.weight == 0) and torch.all(layer.attention_weights.bias == 0)
    for proj in (layer.value_proj, layer.output_proj):
        assert torch.all(proj.bias == 0)
        bound = math.sqrt(6.0 / (256 + 256))  # xavier-uniform
        assert proj.weight.abs().max() <= bound and proj.weight.std() > bound / 3


def test_layer_matches_published_checkpoint_keys():
    path = REFERENCE / "state_dict/configs/coco/panoptic-segmentation/maskformer2_R50_bs16_50ep.json"
    entries = json.loads(path.read_text())["entries"]
    prefix = "sem_seg_head.pixel_decoder.transformer.encoder.layers.0.self_attn."
    # entries: [key, shape, "param" | "buffer"] in state-dict order
    published = [(key[len(prefix):], tuple(shape)) for key, shape, _ in entries if key.startswith(prefix)]
    layer = MSDeformAttn(d_model=256, n_levels=3, n_heads=8, n_points=4)
    assert published == [(k, tuple(v.shape)) for k, v in layer.state_dict().items()]


def _layer_inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    spatial_shapes, starts, S = level_layout([(6, 5), (3, 3)])
    query = torch.randn(2, 7, 32, generator=g)
    reference_points = torch.rand(2, 7, 2, 2, generator=g)
    x = torch.randn(2, S, 32, generator=g)
    return query, reference_points, x, spatial_shapes, starts


def test_layer_computes_locations_in_pixels_of_each_level():
    torch.manual_seed(0)
    layer = MSDeformAttn(d_model=32, n_levels=2, n_heads=4, n_points=3)
    with torch.no_grad():
        layer.sampling_offsets.weight.normal_(std=0.1)
        layer.attention_weights.weight.normal_(std=0.1)
    query, reference_points, x, spatial_shapes, starts = _layer_inputs()
    # the same computation written out with the reference op
    N, Lq, _ = query.shape
    offsets = layer.sampling_offsets(query).view(N, Lq, 4, 2, 3, 2)
    weights = layer.attention_weights(query).view(N, Lq, 4, 6).softmax(-1).view(N, Lq, 4, 2, 3)
    sizes_xy = torch.tensor([[5.0, 6.0], [3.0, 3.0]])
    locations = reference_points[:, :, None, :, None, :] + offsets / sizes_xy[None, None, None, :, None, :]
    value = layer.value_proj(x).view(N, -1, 4, 8)
    expected = layer.output_proj(ms_deform_attn_reference(value, spatial_shapes, starts, locations, weights))
    torch.testing.assert_close(layer(query, reference_points, x, spatial_shapes, starts), expected, rtol=1e-5, atol=1e-5)


def test_layer_padding_mask_hides_padded_positions():
    layer = MSDeformAttn(d_model=32, n_levels=2, n_heads=4, n_points=3)
    query, reference_points, x, spatial_shapes, starts = _layer_inputs()
    padding = torch.zeros(x.shape[:2], dtype=torch.bool)
    padding[0, 10:20] = True
    padding[1, 30:] = True
    out = layer(query, reference_points, x, spatial_shapes, starts, padding)
    changed = x.clone()
    changed[padding] = torch.randn(int(padding.sum()), 32) * 100
    torch.testing.assert_close(layer(query, reference_points, changed, spatial_shapes, starts, padding), out)
    assert not torch.allclose(layer(query, reference_points, changed, spatial_shapes, starts), out)


def test_layer_rejects_bad_inputs():
    layer = MSDeformAttn(d_model=32, n_levels=2, n_heads=4, n_points=3)
    query, reference_points, x, spatial_shapes, starts = _layer_inputs()
    with pytest.raises(ValueError, match="reference_points"):
        layer(query, reference_points[:, :, :1], x, spatial_shapes, starts)
    with pytest.raises(ValueError, match="input_spatial_shapes"):
        layer(query, reference_points, x[:, :-1], spatial_shapes, starts)
    with pytest.raises(ValueError, match="d_model"):
        layer(query[..., :16], reference_points, x, spatial_shapes, starts)
    with pytest.raises(ValueError, match="divisible"):
        MSDeformAttn(d_model=30, n_levels=2, n_heads=4, n_points=3)


@needs_kernel
def test_kernel_ignores_empty_levels_and_nan_locations():
    # Points on an empty level or at NaN locations add nothing (the kernel must not read a row for them).
    value, spatial_shapes, starts, locations, weights = random_case(1, [(6, 5), (0, 4), (3, 3)], 2, 32, 20, 3, dtype=torch.float32)
    locations[0, :5, 0, 2, 1] = float("nan")
    out = torch.ops.mask2former.ms_deform_attn(value, spatial_shapes, starts, locations, weights)
    ignored = weights.clone()
    ignored[0, :5, 0, 2, 1] = 0
    kept = [0, 2]  # the empty level holds no positions: the same values without it
    kept_shapes, kept_starts, _ = level_layout([(6, 5), (3, 3)])
    expected = ms_deform_attn_reference(
        value, kept_shapes, kept_starts, locations.nan_to_num(0.5)[:, :, :, kept], ignored[:, :, :, kept]
    )
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


@needs_kernel
def test_cpu_kernel_reads_float32_locations_under_bfloat16_values():
    # What autocast gives: bf16 values and weights, fp32 locations. The kernel reads them as they
    # are and must compute exactly what the fp32 kernel computes on the widened inputs.
    case = random_case(2, [(16, 20), (8, 10)], 4, 32, 50, 4, dtype=torch.float32, spread=1.2, seed=5)
    value, spatial_shapes, starts, locations, weights = case
    mixed_case = (value.bfloat16(), spatial_shapes, starts, locations, weights.bfloat16())
    widened_case = (mixed_case[0].float(), spatial_shapes, starts, locations, mixed_case[4].float())
    out, inputs = run_op(torch.ops.mask2former.ms_deform_attn, mixed_case, needs_grad=True)
    expected, expected_inputs = run_op(torch.ops.mask2former.ms_deform_attn, widened_case, needs_grad=True)
    assert out.dtype == torch.bfloat16
    assert torch.equal(out, expected.bfloat16())
    with torch.no_grad():  # the dispatching function passes the mix at inference, and widens in training
        assert torch.equal(ms_deform_attn(*mixed_case), out.detach())
    assert run_op(ms_deform_attn, mixed_case, needs_grad=True)[0].dtype == torch.float32
    grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(0)).bfloat16()
    grads = torch.autograd.grad(out, inputs, grad)
    expected_grads = torch.autograd.grad(expected, expected_inputs, grad.float())
    assert [g.dtype for g in grads] == [torch.bfloat16, torch.float32, torch.bfloat16]
    for g, e in zip(grads, expected_grads):  # fp32 sums, in another order
        torch.testing.assert_close(g.float(), e.to(g.dtype).float(), rtol=1e-2, atol=1e-5)
    with pytest.raises(TypeError, match="share a dtype"):  # the reverse loses location precision
        torch.ops.mask2former.ms_deform_attn(value, spatial_shapes, starts, locations.bfloat16(), weights)


@needs_kernel
def test_fake_implementation_takes_float32_locations_on_cpu():
    from torch._subclasses.fake_tensor import FakeTensorMode

    value, spatial_shapes, starts, locations, weights = random_case(1, [(4, 4)], 2, 4, 3, 2, dtype=torch.float32)
    mode = FakeTensorMode()
    fake = [mode.from_tensor(t) for t in (value.bfloat16(), spatial_shapes, starts, locations, weights.bfloat16())]
    with mode:
        assert torch.ops.mask2former.ms_deform_attn(*fake).dtype == torch.bfloat16
    fake[3] = mode.from_tensor(locations.double())
    with mode, pytest.raises(TypeError, match="share a dtype"):
        torch.ops.mask2former.ms_deform_attn(*fake)


def test_op_promotes_mixed_dtypes_and_rejects_bad_shapes():
    value, spatial_shapes, starts, locations, weights = random_case(1, [(4, 4)], 2, 4, 3, 2, dtype=torch.float32)
    out = ms_deform_attn(value.bfloat16(), spatial_shapes, starts, locations, weights)
    assert out.dtype == torch.float32
    with pytest.raises(ValueError, match="attention_weights"):
        ms_deform_attn(value, spatial_shapes, starts, locations, weights[..., :1])
    with pytest.raises(TypeError, match="int64"):
        ms_deform_attn(value, spatial_shapes.int(), starts, locations, weights)


@needs_kernel
def test_fake_implementation_checks_shapes():
    # What torch.compile / torch.export trace must reject what the kernel rejects.
    from torch._subclasses.fake_tensor import FakeTensorMode

    value, spatial_shapes, starts, locations, weights = random_case(1, [(4, 4)], 2, 4, 3, 2, dtype=torch.float32)
    mode = FakeTensorMode()
    fake = [mode.from_tensor(t) for t in (value, spatial_shapes, starts, locations, weights[..., :1])]
    with mode, pytest.raises(ValueError, match="attention_weights"):
        torch.ops.mask2former.ms_deform_attn(*fake)


# ----------------------------------------------------------------------------- fallback


def test_fallback_checks_shapes(monkeypatch):
    monkeypatch.setattr(functional._extension, "supports", lambda device: False)
    value, spatial_shapes, starts, locations, weights = random_case(1, [(4, 4)], 2, 4, 3, 2, dtype=torch.float32)
    with pytest.raises(ValueError, match="attention_weights"):
        ms_deform_attn(value, spatial_shapes, starts, locations, weights[..., :1])


def test_fallback_warns_once_with_the_reason(monkeypatch):
    monkeypatch.setattr(functional._extension, "supports", lambda device: False)
    monkeypatch.setattr(functional._extension, "unsupported_reason", lambda device: "extension missing for test")
    monkeypatch.setattr(functional, "_warned_reasons", set())
    case = random_case(1, [(5, 4), (2, 2)], 2, 8, 6, 2, dtype=torch.float32)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first, _ = run_op(ms_deform_attn, case)
        second, _ = run_op(ms_deform_attn, case)
    messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(messages) == 1 and "extension missing for test" in messages[0]
    expected, _ = run_op(ms_deform_attn_reference, case)
    torch.testing.assert_close(first, expected)
    torch.testing.assert_close(second, expected)
