"""Swin backbone: output shapes for any input size, window attention against a direct
computation, relative-position index, shifted-window mask, checkpointing, drop path, APE."""
import math

import pytest
import torch
from detectron2.modeling import build_backbone
from torchvision.ops import StochasticDepth, stochastic_depth

import mask2former  # noqa: F401  (registers D2SwinTransformer)
from mask2former.config import build_config
from mask2former.modeling.backbone.swin import (
    D2SwinTransformer,
    SwinTransformerBlock,
    relative_position_index,
    shifted_window_attention_mask,
)


def _small_swin(**overrides):
    kwargs = dict(embed_dim=16, depths=[2, 2, 2, 2], num_heads=[1, 2, 2, 4], window_size=7, drop_path_rate=0.0)
    kwargs.update(overrides)
    return D2SwinTransformer(**kwargs)


@pytest.mark.parametrize("window_size", [7, 12])
@pytest.mark.parametrize("size", [(97, 131), (64, 64), (33, 250)])
def test_output_shapes_for_any_input_size(window_size, size):
    torch.manual_seed(0)
    model = _small_swin(window_size=window_size).eval()
    H, W = size
    with torch.no_grad():
        out = model(torch.randn(1, 3, H, W))
    assert list(out) == ["res2", "res3", "res4", "res5"]
    h, w = math.ceil(H / 4), math.ceil(W / 4)
    for i, name in enumerate(["res2", "res3", "res4", "res5"]):
        assert tuple(out[name].shape) == (1, 16 * 2**i, h, w), name
        assert torch.isfinite(out[name]).all()
        h, w = math.ceil(h / 2), math.ceil(w / 2)
    shapes = model.output_shape()
    assert {k: (v.channels, v.stride) for k, v in shapes.items()} == {
        "res2": (16, 4), "res3": (32, 8), "res4": (64, 16), "res5": (128, 32)
    }
    assert model.size_divisibility == 32


def test_relative_position_index_layout():
    ws = 3
    index = relative_position_index(ws)
    assert tuple(index.shape) == (9, 9) and index.dtype == torch.int64
    for i in range(9):
        for j in range(9):
            dy, dx = i // ws - j // ws, i % ws - j % ws
            assert index[i, j] == (dy + ws - 1) * (2 * ws - 1) + (dx + ws - 1)
    assert index.min() == 0 and index.max() == (2 * ws - 1) ** 2 - 1


def test_shifted_window_mask_separates_regions():
    ws, shift = 4, 2
    mask = shifted_window_attention_mask(8, 8, ws, shift)
    assert tuple(mask.shape) == (4, 16, 16)
    assert set(mask.unique().tolist()) == {0.0, -100.0}
    assert (mask[0] == 0).all(), "the top-left window holds one region only"
    # Bottom-right window: four regions of 2x2 tokens; tokens 0 (top-left) and 3 (top-right) differ.
    assert mask[3, 0, 3] == -100 and mask[3, 0, 1] == 0 and mask[3, 0, 4] == 0 and mask[3, 0, 15] == -100
    assert torch.equal(mask[3], mask[3].T)


def test_unshifted_window_block_equals_direct_attention_with_relative_bias():
    """On a map that is exactly one window, a block is plain multi-head attention with the
    learned bias b[h, dy, dx], computed here directly."""
    torch.manual_seed(0)
    ws, C, heads = 4, 8, 2
    block = SwinTransformerBlock(C, heads, window_size=ws, shift_size=0).eval()
    torch.nn.init.normal_(block.attn.relative_position_bias_table)
    x = torch.randn(1, ws * ws, C)
    with torch.no_grad():
        y = block.norm1(x)
        qkv = block.attn.qkv(y).view(ws * ws, 3, heads, C // heads)
        q, k, v = qkv[:, 0], qkv[:, 1], qkv[:, 2]
        table = block.attn.relative_position_bias_table
        out = torch.zeros(ws * ws, heads, C // heads)
        for h in range(heads):
            for i in range(ws * ws):
                logits = []
                for j in range(ws * ws):
                    dy, dx = i // ws - j // ws, i % ws - j % ws
                    bias = table[(dy + ws - 1) * (2 * ws - 1) + dx + ws - 1, h]
                    logits.append(q[i, h] @ k[j, h] / math.sqrt(C // heads) + bias)
                weights = torch.stack(logits).softmax(0)
                out[i, h] = (weights[:, None] * v[:, h]).sum(0)
        attended = x + block.attn.proj(out.reshape(1, ws * ws, C))
        expected = attended + block.mlp(block.norm2(attended))
        torch.testing.assert_close(block(x, ws, ws, None), expected, atol=1e-5, rtol=1e-5)


def test_shifted_block_on_padded_map_is_translation_consistent():
    """A shifted block only mixes tokens within (shifted) windows: a token far from a change
    in the input keeps its output."""
    torch.manual_seed(0)
    ws = 4
    block = SwinTransformerBlock(8, 2, window_size=ws, shift_size=2).eval()
    H, W = 10, 11  # padded to 12 x 12 internally
    mask = shifted_window_attention_mask(12, 12, ws, 2)
    x = torch.randn(1, H * W, 8)
    changed = x.clone().view(1, H, W, 8)
    changed[0, 0, 0] += 1.0
    changed = changed.view(1, H * W, 8)
    with torch.no_grad():
        a = block(x, H, W, mask).view(H, W, 8)
        b = block(changed, H, W, mask).view(H, W, 8)
    diff = (a - b).abs().amax(-1) > 0
    assert diff[0, 0] and not diff[6:, 6:].any()


def test_activation_checkpointing_gives_same_outputs_and_gradients():
    x = torch.randn(1, 3, 32, 36)
    results = []
    for use_checkpoint in (False, True):
        torch.manual_seed(0)
        model = _small_swin(use_checkpoint=use_checkpoint).train()
        out = model(x)
        loss = sum(v.square().mean() for v in out.values())
        loss.backward()
        results.append((out["res5"].detach(), model.patch_embed.proj.weight.grad.clone()))
    torch.testing.assert_close(results[0][0], results[1][0])
    torch.testing.assert_close(results[0][1], results[1][1])


def drop_path(x, drop_prob, training):
    """The stochastic depth of the Swin blocks."""
    return stochastic_depth(x, drop_prob, "row", training)


def test_drop_path_zeroes_whole_samples_in_training_only():
    torch.manual_seed(0)
    x = torch.ones(1000, 3, 2)
    assert drop_path(x, 0.3, training=False) is x
    y = drop_path(x, 0.3, training=True)
    per_sample = y.view(1000, -1)
    kept = torch.isclose(per_sample, torch.tensor(1 / 0.7)).all(1)
    assert ((per_sample == 0).all(1) | kept).all()
    assert 0.2 < (per_sample == 0).all(1).float().mean() < 0.4


def test_absolute_position_embedding_option():
    torch.manual_seed(0)
    model = _small_swin(ape=True, pretrain_img_size=64).eval()
    assert tuple(model.absolute_pos_embed.shape) == (1, 16, 16, 16)
    with torch.no_grad():
        out = model(torch.randn(1, 3, 72, 100))
    assert tuple(out["res2"].shape) == (1, 16, 18, 25)


def test_built_from_config_with_selected_outputs():
    cfg = build_config()
    cfg.MODEL.BACKBONE.NAME = "D2SwinTransformer"
    cfg.MODEL.SWIN.EMBED_DIM = 16
    cfg.MODEL.SWIN.NUM_HEADS = [1, 2, 2, 4]
    cfg.MODEL.SWIN.DEPTHS = [2, 2, 2, 2]
    cfg.MODEL.SWIN.OUT_FEATURES = ["res3", "res5"]
    model = build_backbone(cfg).eval()
    assert isinstance(model, D2SwinTransformer)
    assert list(model.output_shape()) == ["res3", "res5"]
    # drop-path rates grow linearly to DROP_PATH_RATE over all blocks
    rates = [blk.drop_path.p for layer in model.layers for blk in layer.blocks if isinstance(blk.drop_path, StochasticDepth)]
    assert rates[-1] == pytest.approx(cfg.MODEL.SWIN.DROP_PATH_RATE) and len(rates) == 7
    with torch.no_grad():
        out = model(torch.randn(1, 3, 64, 64))
    assert list(out) == ["res3", "res5"]
    cfg.MODEL.SWIN.OUT_FEATURES = ["res6"]
    with pytest.raises(ValueError, match="OUT_FEATURES"):
        build_backbone(cfg)


def test_init_weights_applies_the_swin_recipe():
    torch.manual_seed(0)
    model = _small_swin()
    fc1 = model.layers[0].blocks[0].mlp.fc1
    nn_default_std = fc1.weight.std().item()
    model.init_weights()
    assert fc1.weight.std().item() == pytest.approx(0.02, rel=0.1) and nn_default_std > 0.05
    assert torch.count_nonzero(fc1.bias) == 0
