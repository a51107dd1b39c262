"""Fused CPU inference paths against the plain modules: ResNets with batch norm folded into
their convolutions (`FoldedResNet`), the oneDNN linear / convolution helpers, and the
model-level switch (`MaskFormer.inference_features`)."""
import pytest
import torch
from demo_test_utils import REPO_ROOT
from detectron2.layers import FrozenBatchNorm2d
from detectron2.modeling import BACKBONE_REGISTRY, build_backbone
from torch import nn

import mask2former  # noqa: F401  (registers the backbones)
from mask2former.config import build_config
from mask2former.modeling.backbone.folded_resnet import FoldedResNet
from mask2former.ops import onednn


def _randomise_norms(module, seed=0):
    """Batch norm statistics and affine parameters away from the identity, so that folding them matters."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, (FrozenBatchNorm2d, nn.BatchNorm2d)):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.2)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.2)
    return module


def _resnet(depth=50, norm="FrozenBN", name="build_resnet_backbone", **resnets):
    cfg = build_config()
    cfg.MODEL.BACKBONE.NAME = name
    cfg.MODEL.BACKBONE.FREEZE_AT = 0
    cfg.MODEL.RESNETS.DEPTH = depth
    cfg.MODEL.RESNETS.NORM = norm
    cfg.MODEL.RESNETS.OUT_FEATURES = ["res2", "res3", "res4", "res5"]
    if depth < 50:
        cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 64
    for key, value in resnets.items():
        cfg.MODEL.RESNETS[key] = value
    torch.manual_seed(0)
    return _randomise_norms(build_backbone(cfg)).eval()


def _max_relative_error(actual, expected):
    return max(((actual[k].float() - v.float()).abs().max() / v.float().abs().max()).item() for k, v in expected.items())


@pytest.fixture(params=[True, False], ids=["onednn", "plain-ops"])
def fused(request, monkeypatch):
    """Run each test with the oneDNN kernels and with the standard-operator fallback."""
    if request.param and not onednn._AVAILABLE:
        pytest.skip("this PyTorch build has no oneDNN (mkldnn) CPU kernels")
    monkeypatch.setattr(onednn, "_AVAILABLE", request.param)
    return request.param


@pytest.mark.parametrize(
    "depth, norm, extra",
    [
        (50, "FrozenBN", {}),
        (18, "BN", {}),  # BasicBlock, eval-mode BatchNorm2d
        (50, "FrozenBN", {"STRIDE_IN_1X1": False, "NUM_GROUPS": 2, "WIDTH_PER_GROUP": 32}),
    ],
)
def test_folded_resnet_equals_the_backbone(fused, depth, norm, extra):
    backbone = _resnet(depth, norm, **extra)
    assert FoldedResNet.supports(backbone)
    images = torch.randn(2, 3, 96, 64)
    with torch.no_grad():
        expected = backbone(images)
        actual = FoldedResNet(backbone)(images)
    assert actual.keys() == expected.keys()
    assert all(actual[k].shape == v.shape for k, v in expected.items())
    assert _max_relative_error(actual, expected) < 1e-5
    if fused:
        assert actual["res2"].is_contiguous(memory_format=torch.channels_last)


def test_folded_deeplab_resnet_with_dilation(fused):
    if "build_resnet_deeplab_backbone" not in BACKBONE_REGISTRY:
        pytest.skip("detectron2 was installed without its DeepLab project")
    backbone = _resnet(
        50, name="build_resnet_deeplab_backbone", STEM_TYPE="deeplab", STEM_OUT_CHANNELS=128,
        RES5_DILATION=2, RES5_MULTI_GRID=[1, 2, 4],
    )
    assert FoldedResNet.supports(backbone)
    images = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        assert _max_relative_error(FoldedResNet(backbone)(images), backbone(images)) < 1e-5


def test_folded_resnet_under_bfloat16_autocast(fused):
    backbone = _resnet(18, "BN")
    images = torch.randn(1, 3, 64, 64)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        expected = backbone(images)
        actual = FoldedResNet(backbone)(images)
    assert all(v.dtype == torch.bfloat16 for v in actual.values())
    assert _max_relative_error(actual, expected) < 5e-2  # bf16 rounding of differently ordered sums


def test_folded_weights_follow_changed_parameters():
    """The cache of folded weights is refreshed when a parameter or statistic changes in place."""
    backbone = _resnet(18, "BN")
    folded = FoldedResNet(backbone)
    images = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        before = folded(images)
        backbone.res3[0].conv1.norm.running_var.mul_(4.0)  # as a checkpoint load or a training step would
        backbone.stem.conv1.weight.mul_(0.5)
        expected = backbone(images)
        after = folded(images)
    assert _max_relative_error(after, expected) < 1e-5
    assert (after["res3"] - before["res3"]).abs().max() > 1e-3


def test_unsupported_backbones_are_not_folded():
    backbone = _resnet(50, DEFORM_ON_PER_STAGE=[False, True, False, False])  # deformable blocks
    assert not FoldedResNet.supports(backbone)
    assert not FoldedResNet.supports(nn.Conv2d(3, 3, 1))
    with pytest.raises(RuntimeError, match="eval mode"):
        FoldedResNet(_resnet(18, "BN").train())(torch.randn(1, 3, 32, 32))


def test_onednn_linear_equals_the_layer(fused):
    layer = nn.Linear(48, 80)
    x = torch.randn(3, 7, 48)
    with torch.no_grad():
        assert torch.allclose(onednn.linear(x, layer), layer(x), atol=1e-5, rtol=1e-5)
        assert torch.allclose(onednn.linear(x, layer, relu=True), layer(x).relu(), atol=1e-5, rtol=1e-5)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = onednn.linear(x, layer)
            expected = layer(x)
    assert y.dtype == expected.dtype == torch.bfloat16
    assert torch.allclose(y.float(), expected.float(), atol=3e-2, rtol=3e-2)


def test_fused_kernels_stay_out_of_autograd_and_export():
    x = torch.randn(2, 8)
    if onednn._AVAILABLE:
        with torch.no_grad():
            assert onednn.fused_kernels_apply(x)
    assert not onednn.fused_kernels_apply(x)  # gradients are recorded: plain operators
    seen = []

    def record(t):
        seen.append(onednn.fused_kernels_apply(t))
        return t * 2

    with torch.no_grad():
        torch.jit.trace(record, (x,), check_trace=False)  # as fvcore's FLOP counter traces
    assert seen == [False]
    layer = nn.Linear(8, 4)
    y = onednn.linear(x, layer)
    y.sum().backward()
    assert layer.weight.grad is not None


def test_maskformer_uses_the_folded_backbone_only_at_inference():
    cfg = build_config(str(REPO_ROOT / "configs/quickstart/panoptic_R18_synthetic_test.yaml"))
    cfg.MODEL.DEVICE = "cpu"
    from detectron2.modeling import build_model

    model = build_model(cfg)
    assert model._folded_backbone is not None
    _randomise_norms(model.backbone)
    images = torch.randn(1, 3, 64, 64)
    model.eval()
    with torch.no_grad():
        expected = model.backbone(images)
        actual = model.inference_features(images)
        outputs = model.network_outputs(images)
    assert _max_relative_error(actual, expected) < 1e-5
    assert outputs["pred_masks"].shape[-2:] == (16, 16)
    calls = []
    model._folded_backbone = lambda x: calls.append(x) or expected
    model.train()
    with torch.no_grad():
        model.inference_features(images)
    model.eval()
    model.inference_features(images)  # gradients on: the plain backbone
    assert not calls
    with torch.no_grad():
        model.inference_features(images)
        with onednn.standard_operators():  # as exported graphs compute
            assert not onednn.fused_kernels_apply(images)
            model.inference_features(images)
    assert len(calls) == 1


@pytest.mark.parametrize("source_length", [100, 37])  # self-attention sized, cross-attention sized
def test_onednn_multihead_attention_equals_the_module(fused, source_length):
    torch.manual_seed(0)
    attention = nn.MultiheadAttention(32, 4).eval()
    query = torch.randn(10, 2, 32)
    key, value = torch.randn(source_length, 2, 32), torch.randn(source_length, 2, 32)
    blocked = torch.rand(2 * 4, 10, source_length) < 0.6
    blocked[:, :, 0] = False  # no row blocked entirely
    with torch.no_grad():
        for mask in (None, blocked):
            expected = attention(query, key, value, attn_mask=mask, need_weights=False)[0]
            actual = onednn.multihead_attention(attention, query, key, value, attn_mask=mask)
            assert actual.shape == expected.shape
            assert torch.allclose(actual, expected, atol=1e-5, rtol=1e-4)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            expected = attention(query, key, value, attn_mask=blocked, need_weights=False)[0]
            actual = onednn.multihead_attention(attention, query, key, value, attn_mask=blocked)
    assert torch.allclose(actual.float(), expected.float(), atol=5e-2, rtol=5e-2)


def test_attention_trains_in_float32_under_bfloat16_autocast(monkeypatch):
    """Training under CPU bfloat16 autocast: projections in bfloat16, the attention between
    them in float32; outputs and gradients as nn.MultiheadAttention's, within bfloat16 rounding."""
    torch.manual_seed(0)
    attention = nn.MultiheadAttention(32, 4).train()
    query, memory = torch.randn(10, 2, 32, requires_grad=True), torch.randn(24, 2, 32)
    blocked = torch.rand(2, 1, 10, 24) < 0.6
    blocked[..., 0] = False
    blocked = blocked.expand(-1, 4, -1, -1).flatten(0, 1)
    core_dtypes = []
    sdpa = torch.nn.functional.scaled_dot_product_attention

    def recording_sdpa(q, *args, **kwargs):
        core_dtypes.append(q.dtype)
        return sdpa(q, *args, **kwargs)

    def run(fn, autocast):
        attention.zero_grad()
        query.grad = None
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            out = fn()
        out.float().square().sum().backward()
        return out.float().detach(), query.grad.clone(), attention.in_proj_weight.grad.clone()

    def standard():
        return attention(query, memory, memory, attn_mask=blocked, need_weights=False)[0]

    reference = run(standard, autocast=False)  # float32
    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", recording_sdpa)
    ours = run(lambda: onednn.multihead_attention(attention, query, memory, memory, attn_mask=blocked), autocast=True)
    assert core_dtypes == [torch.float32]
    bf16_module = run(standard, autocast=True)
    for actual, module, expected in zip(ours, bf16_module, reference):
        scale = expected.abs().max()
        assert (actual - expected).abs().max() <= max(2 * (module - expected).abs().max(), 1e-3 * scale)


def _products_run(fn):
    """The matrix-product operators that `fn()` and its backward run."""
    with torch.profiler.profile() as prof:
        fn()
    return {e.name for e in prof.events()} & {"aten::mm", "aten::addmm", "aten::bmm", "aten::mkldnn_convolution"}


@pytest.mark.parametrize("layer_kind", ["linear", "feed_forward", "attention"])
def test_float32_training_linears_equal_the_modules(fused, layer_kind, monkeypatch):
    """Recording gradients in float32: with oneDNN the linear layers run as 1x1 convolutions
    (their products in oneDNN, not MKL); outputs and every gradient as the modules' own."""
    monkeypatch.setattr(onednn, "_CONVOLUTION_LINEAR_MIN_ELEMENTS", 0)  # at this test's small size too
    torch.manual_seed(0)
    x = torch.randn(96, 8, 32, requires_grad=True)  # large enough for PyTorch to pick oneDNN
    linear1, linear2, attention = nn.Linear(32, 64), nn.Linear(64, 32), nn.MultiheadAttention(32, 4)
    memory = torch.randn(120, 8, 32, requires_grad=True)
    ours, standard = {
        "linear": (lambda: onednn.linear(x, linear1, relu=True), lambda: linear1(x).relu()),
        "feed_forward": (
            lambda: onednn.feed_forward(x, linear1, linear2, nn.functional.relu, nn.Dropout(0.0)),
            lambda: linear2(linear1(x).relu()),
        ),
        "attention": (
            lambda: onednn.multihead_attention(attention, x, memory, memory),
            lambda: attention(x, memory, memory, need_weights=False)[0],
        ),
    }[layer_kind]
    tensors = [x, memory, *linear1.parameters(), *linear2.parameters(), *attention.parameters()]

    def run(fn):
        for t in tensors:
            t.grad = None
        out = fn()
        out.square().sum().backward()
        return [out.detach()] + [t.grad.clone() for t in tensors if t.grad is not None]

    expected = run(standard)
    actual = run(ours)
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected):
        assert torch.allclose(a, e, atol=1e-5, rtol=1e-5)
    products = _products_run(lambda: run(ours))
    if fused:
        assert products == {"aten::mkldnn_convolution"}
    else:
        assert "aten::mkldnn_convolution" not in products


@pytest.mark.parametrize("batch", [1, 2])
def test_mask_logits_equal_the_einsum(fused, batch):
    torch.manual_seed(0)
    embed, features = torch.randn(batch, 10, 16), torch.randn(batch, 16, 6, 9)
    expected = torch.einsum("bqc,bchw->bqhw", embed, features)
    with torch.no_grad():
        actual = onednn.mask_logits(embed, features)
    assert actual.shape == expected.shape
    assert torch.allclose(actual, expected, atol=1e-5, rtol=1e-5)
    embed.requires_grad_(True)  # with autograd: PyTorch's product, gradients flow
    onednn.mask_logits(embed, features).sum().backward()
    assert torch.allclose(embed.grad, features.sum((2, 3))[:, None].expand_as(embed), atol=1e-5)


@pytest.mark.parametrize("batch", [1, 2])
def test_clip_mask_logits_equal_the_einsum(fused, batch):
    torch.manual_seed(0)
    embed, features = torch.randn(batch, 10, 16), torch.randn(batch, 3, 16, 6, 9)
    expected = torch.einsum("bqc,btchw->bqthw", embed, features)
    with torch.no_grad():
        actual = onednn.clip_mask_logits(embed, features)
    assert actual.shape == expected.shape == (batch, 10, 3, 6, 9)
    assert torch.allclose(actual, expected, atol=1e-5, rtol=1e-5)
    embed.requires_grad_(True)  # with autograd: PyTorch's product, gradients flow
    onednn.clip_mask_logits(embed, features).sum().backward()
    assert torch.allclose(embed.grad, features.sum((1, 3, 4))[:, None].expand_as(embed), atol=1e-4)


def test_forward_hooks_see_the_modules_run():
    """Hooks (feature extraction, FLOP counters) keep working: hooked modules run their own forward."""
    layer = nn.Linear(8, 4).eval()
    outputs = []
    handle = layer.register_forward_hook(lambda m, args, out: outputs.append(out))
    with torch.no_grad():
        onednn.linear(torch.randn(3, 8), layer, relu=True)
    handle.remove()
    assert len(outputs) == 1 and (outputs[0] < 0).any()  # the hook saw the output before the ReLU

    cfg = build_config(str(REPO_ROOT / "configs/quickstart/panoptic_R18_synthetic_test.yaml"))
    cfg.MODEL.DEVICE = "cpu"
    from detectron2.modeling import build_model

    model = build_model(cfg).eval()
    seen = []
    model.backbone.res4.register_forward_hook(lambda m, args, out: seen.append(out.shape))
    with torch.no_grad():
        model.inference_features(torch.randn(1, 3, 64, 64))
    assert seen == [(1, 256, 4, 4)]


def test_onednn_multihead_attention_with_a_mask_shared_by_the_heads(fused):
    """The masked decoder's mask for one image is a broadcast view over the heads."""
    from mask2former.modeling.transformer_decoder.masked_transformer_decoder import attention_mask_from_mask_logits

    torch.manual_seed(0)
    attention = nn.MultiheadAttention(32, 4).eval()
    mask_logits = torch.randn(1, 10, 12, 16)
    shared = attention_mask_from_mask_logits(mask_logits, (6, 8), num_heads=4)
    assert shared.shape == (4, 10, 48) and shared.stride(0) == 0
    copied = shared.clone()
    query, memory = torch.randn(10, 1, 32), torch.randn(48, 1, 32)
    with torch.no_grad():
        expected = attention(query, memory, memory, attn_mask=copied, need_weights=False)[0]
        actual = onednn.multihead_attention(attention, query, memory, memory, attn_mask=shared)
    assert torch.allclose(actual, expected, atol=1e-5, rtol=1e-4)
    # two images: a mask of its own per image and head (a copy)
    two = attention_mask_from_mask_logits(torch.randn(2, 10, 12, 16), (6, 8), num_heads=4)
    assert two.shape == (8, 10, 48) and two.is_contiguous()
    assert torch.equal(two.view(2, 4, 10, 48)[:, 0], two.view(2, 4, 10, 48)[:, 3])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_pointwise_conv_contiguous_equals_the_conv(fused, dtype):
    from detectron2.layers import Conv2d

    torch.manual_seed(0)
    conv = Conv2d(16, 24, kernel_size=1).eval()
    x = torch.randn(2, 16, 9, 13).contiguous(memory_format=torch.channels_last)
    with torch.no_grad(), torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32):
        expected = conv(x)
        actual = onednn.pointwise_conv_contiguous(x, conv)
    assert actual.is_contiguous() and actual.dtype == expected.dtype and actual.shape == expected.shape
    tolerance = 1e-5 if dtype == torch.float32 else 2e-2
    assert torch.allclose(actual.float(), expected.float(), atol=tolerance, rtol=tolerance)
    # a convolution it does not cover runs as itself
    wide = Conv2d(16, 24, kernel_size=3, padding=1).eval()
    with torch.no_grad():
        assert torch.equal(onednn.pointwise_conv_contiguous(x, wide), wide(x).contiguous())


def test_msdeformattn_inference_path_equals_the_standard_operators(fused):
    """At inference the layer runs its softmax as separate passes and the fused linears."""
    from mask2former.ops import MSDeformAttn
    from mask2former.ops.ms_deform_attn_layer import _softmax_of_short_rows

    torch.manual_seed(0)
    layer = MSDeformAttn(d_model=32, n_levels=2, n_heads=4, n_points=3).eval()
    with torch.no_grad():
        for p in (layer.sampling_offsets.weight, layer.attention_weights.weight):
            p.normal_(std=0.3)  # the published initialisation zeroes them
    shapes = torch.tensor([[6, 8], [3, 4]])
    starts = torch.tensor([0, 48])
    query, value = torch.randn(2, 60, 32), torch.randn(2, 60, 32)
    reference = torch.rand(2, 60, 2, 2)
    with torch.no_grad():
        actual = layer(query, reference, value, shapes, starts)
        with onednn.standard_operators():
            expected = layer(query, reference, value, shapes, starts)
        rows = torch.randn(50, 12) * 4
        assert torch.allclose(_softmax_of_short_rows(rows), rows.softmax(-1), atol=1e-7, rtol=1e-6)
    assert torch.allclose(actual, expected, atol=1e-6, rtol=1e-5)
    # with autograd, the same passes with their backward written out: PyTorch's gradient
    weights = torch.randn(50, 12)
    for dtype, tolerance in ((torch.float32, {"atol": 1e-7, "rtol": 1e-5}), (torch.bfloat16, {"atol": 1e-2, "rtol": 1e-2})):
        x = rows.detach().to(dtype).requires_grad_()
        (_softmax_of_short_rows(x).float() * weights).sum().backward()
        x_reference = rows.detach().to(dtype).requires_grad_()
        (x_reference.float().softmax(-1) * weights).sum().backward()
        assert x.grad.dtype == dtype
        torch.testing.assert_close(x.grad.float(), x_reference.grad.float(), **tolerance)
