"""Transformer decoders and their shared pieces: sine positions, the masked-attention mask,
the round-robin wiring of MultiScaleMaskedTransformerDecoder, StandardTransformerDecoder."""
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mask2former.modeling.transformer_decoder import (
    MultiScaleMaskedTransformerDecoder,
    PositionEmbeddingSine,
    StandardTransformerDecoder,
)
from mask2former.modeling.transformer_decoder.layers import MLP, CrossAttentionLayer, FFNLayer, SelfAttentionLayer
from mask2former.modeling.transformer_decoder.masked_transformer_decoder import attention_mask_from_mask_logits, resize_planes


def _expected_sine(mask, num_pos_feats, temperature, normalize, scale, eps):
    """Element by element, in plain Python: channel c < F encodes y, c >= F encodes x;
    within each, pair k = c // 2 has frequency temperature ** (2k / F), even c sin, odd c cos."""
    B, H, W = mask.shape
    out = torch.zeros(B, 2 * num_pos_feats, H, W, dtype=torch.float64)
    for b in range(B):
        for i in range(H):
            for j in range(W):
                y = sum(1 for r in range(i + 1) if not mask[b, r, j])
                x = sum(1 for c in range(j + 1) if not mask[b, i, c])
                if normalize:
                    y_total = sum(1 for r in range(H) if not mask[b, r, j])
                    x_total = sum(1 for c in range(W) if not mask[b, i, c])
                    y = y / (y_total + eps) * scale
                    x = x / (x_total + eps) * scale
                for axis, value in ((0, y), (1, x)):
                    for c in range(num_pos_feats):
                        angle = value / temperature ** (2 * (c // 2) / num_pos_feats)
                        out[b, axis * num_pos_feats + c, i, j] = math.sin(angle) if c % 2 == 0 else math.cos(angle)
    return out


@pytest.mark.parametrize("normalize", [True, False])
def test_sine_position_encoding_values(normalize):
    pe = PositionEmbeddingSine(num_pos_feats=6, temperature=10000, normalize=normalize)
    x = torch.zeros(2, 5, 3, 4)
    mask = torch.zeros(2, 3, 4, dtype=torch.bool)
    mask[1, :, 3] = True  # a padded column in the second image
    mask[1, 2, :] = True  # and a padded row
    for m in (None, mask):
        got = pe(x, m)
        assert got.dtype == torch.float32 and tuple(got.shape) == (2, 12, 3, 4)
        ref_mask = torch.zeros(2, 3, 4, dtype=torch.bool) if m is None else m
        expected = _expected_sine(ref_mask, 6, 10000, normalize, 2 * math.pi, 1e-6)
        torch.testing.assert_close(got.double(), expected, atol=1e-5, rtol=1e-5)
    # Without a mask the encoding is computed on one row and column and broadcast: the same values.
    assert torch.equal(pe(x, None), pe(x, torch.zeros(2, 3, 4, dtype=torch.bool)))


def test_sine_position_encoding_normalised_range_and_custom_temperature():
    pe = PositionEmbeddingSine(num_pos_feats=4, temperature=100, normalize=True)
    got = pe(torch.zeros(1, 1, 2, 3))
    # Channel 0 is sin(y_norm): last row reaches 2*pi / (1 + eps) -> sin ~ 0 from below.
    y_last = 2 / (2 + 1e-6) * 2 * math.pi
    assert got[0, 0, 1, 0].item() == pytest.approx(math.sin(y_last), abs=1e-6)
    # Channel 2 (pair k=1) uses frequency 100 ** (2 / 4) = 10.
    assert got[0, 2, 0, 0].item() == pytest.approx(math.sin(0.5 * 2 * math.pi / 10), abs=1e-6)
    with pytest.raises(ValueError, match="scale"):
        PositionEmbeddingSine(4, scale=1.0, normalize=False)


def test_attention_mask_blocks_low_probability_pixels_and_unblocks_full_rows():
    logits = torch.full((2, 3, 4, 4), 5.0)
    logits[0, 0] = -5.0  # query 0 of image 0: everything below 0.5 -> would attend to nothing
    logits[0, 1, :2] = -5.0  # query 1 of image 0: top half blocked
    logits[1, 2, :, 1:] = -5.0  # query 2 of image 1: all but the first column blocked
    mask = attention_mask_from_mask_logits(logits, (4, 4), num_heads=3)
    assert mask.dtype == torch.bool and tuple(mask.shape) == (6, 3, 16)
    assert not mask.requires_grad
    per_image = mask.view(2, 3, 3, 16)
    for h in range(3):  # every head of an image gets the same mask
        assert torch.equal(per_image[:, h], per_image[:, 0])
    assert not per_image[0, 0, 0].any(), "a fully blocked row must be unblocked"
    assert per_image[0, 0, 1].view(4, 4)[:2].all() and not per_image[0, 0, 1].view(4, 4)[2:].any()
    assert not per_image[0, 0, 2].any()
    expected = torch.ones(4, 4, dtype=torch.bool)
    expected[:, 0] = False
    assert torch.equal(per_image[1, 0, 2].view(4, 4), expected)
    assert not per_image[1, 0, :2].any()


def test_attention_mask_resizes_bilinearly_and_thresholds_the_sigmoid():
    logits = torch.tensor([[[[-1.0, 3.0], [-3.0, 1.0]]]])  # (1, 1, 2, 2)
    mask = attention_mask_from_mask_logits(logits, (4, 4), num_heads=1)
    resized = torch.nn.functional.interpolate(logits, size=(4, 4), mode="bilinear", align_corners=False)
    assert torch.equal(mask.view(4, 4), resized[0, 0].sigmoid() < 0.5)
    assert mask.any() and not mask.all()
    # Logits produced with grad: the mask is detached.
    logits = logits.clone().requires_grad_()
    assert not attention_mask_from_mask_logits(logits * 2, (4, 4), 1).requires_grad


def _small_masked_decoder(**overrides):
    kwargs = dict(
        in_channels=16,
        mask_classification=True,
        num_classes=5,
        hidden_dim=16,
        num_queries=7,
        nheads=4,
        dim_feedforward=32,
        dec_layers=5,
        pre_norm=False,
        mask_dim=16,
        enforce_input_project=False,
    )
    kwargs.update(overrides)
    return MultiScaleMaskedTransformerDecoder(**kwargs)


def _multi_scale_inputs(B=2, C=16, sizes=((3, 4), (6, 8), (12, 16)), mask_hw=(24, 32)):
    x = [torch.randn(B, C, h, w) for h, w in sizes]
    return x, torch.randn(B, C, *mask_hw)


def _run_recording_cross_attention(decoder, x, mask_features):
    """The decoder's outputs and, per cross-attention layer, (memory shape, memory mask, whether
    memory and positions are contiguous)."""
    seen = []

    def hook(_module, args, kwargs):
        seen.append((args[1].shape, kwargs["memory_mask"], args[1].is_contiguous() and kwargs["pos"].is_contiguous()))

    handles = [layer.register_forward_pre_hook(hook, with_kwargs=True) for layer in decoder.transformer_cross_attention_layers]
    try:
        with torch.no_grad():
            out = decoder(x, mask_features)
    finally:
        for h in handles:
            h.remove()
    return out, seen


def test_masked_decoder_round_robin_and_masks_come_from_previous_prediction():
    torch.manual_seed(0)
    decoder = _small_masked_decoder().train()  # training returns every prediction
    x, mask_features = _multi_scale_inputs()
    out, seen = _run_recording_cross_attention(decoder, x, mask_features)

    predictions = out["aux_outputs"] + [{"pred_logits": out["pred_logits"], "pred_masks": out["pred_masks"]}]
    assert len(predictions) == 6 and len(out["aux_outputs"]) == 5
    for p in predictions:
        assert tuple(p["pred_logits"].shape) == (2, 7, 6)
        assert tuple(p["pred_masks"].shape) == (2, 7, 24, 32)
    sizes = [(3, 4), (6, 8), (12, 16)]
    for i, (memory_shape, memory_mask, contiguous) in enumerate(seen):
        h, w = sizes[i % 3]
        assert tuple(memory_shape) == (h * w, 2, 16)
        # a linear on a permuted memory is a product batched over tokens once exported
        assert contiguous, f"layer {i}: memory and positions should be contiguous"
        expected = attention_mask_from_mask_logits(predictions[i]["pred_masks"], (h, w), num_heads=4)
        assert torch.equal(memory_mask, expected), f"layer {i} must use prediction {i} resized to {h}x{w}"


@pytest.mark.parametrize("mask_hw", [(24, 32), (20, 30)])  # even shrink factors, and not
def test_masked_decoder_inference_masks_attention_as_training_does(mask_hw):
    """Eval mode predicts the earlier masks at the attended size only (mask features resized
    first): the same attention masks and outputs as training mode, without aux outputs."""
    torch.manual_seed(0)
    decoder = _small_masked_decoder()  # no dropout: both modes compute the same function
    x, mask_features = _multi_scale_inputs(mask_hw=mask_hw)
    trained, seen_training = _run_recording_cross_attention(decoder.train(), x, mask_features)
    inferred, seen_inference = _run_recording_cross_attention(decoder.eval(), x, mask_features)
    assert set(inferred) == {"pred_logits", "pred_masks"}
    torch.testing.assert_close(inferred["pred_logits"], trained["pred_logits"], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(inferred["pred_masks"], trained["pred_masks"], rtol=1e-5, atol=1e-5)
    assert len(seen_inference) == len(seen_training) == 5
    for i, (training_call, inference_call) in enumerate(zip(seen_training, seen_inference)):
        assert torch.equal(training_call[1], inference_call[1]), f"layer {i}: attention masks differ"


@pytest.mark.parametrize("size", [(3, 4), (6, 8), (12, 16), (5, 7)])
def test_resize_planes_is_bilinear_resizing(size):
    planes = torch.randn(2, 3, 4, 24, 32)  # e.g. (B, T, C, H, W) frames of clips
    expected = F.interpolate(planes.flatten(1, 2), size=size, mode="bilinear", align_corners=False).view(2, 3, 4, *size)
    torch.testing.assert_close(resize_planes(planes, size), expected, rtol=0, atol=1e-6)


def test_masked_cross_attention_ignores_blocked_pixels():
    """Changing memory at blocked positions does not change a query's cross-attention output."""
    torch.manual_seed(0)
    layer = CrossAttentionLayer(8, 2).eval()
    tgt = torch.randn(3, 1, 8)
    memory = torch.randn(10, 1, 8)
    blocked = torch.zeros(2, 3, 10, dtype=torch.bool)
    blocked[:, :, 5:] = True
    changed = memory.clone()
    changed[5:] = torch.randn(5, 1, 8)
    with torch.no_grad():
        a = layer(tgt, memory, memory_mask=blocked)
        b = layer(tgt, changed, memory_mask=blocked)
        c = layer(tgt, changed)
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, c)


def test_post_norm_and_pre_norm_residual_blocks():
    torch.manual_seed(0)
    tgt, pos = torch.randn(4, 2, 8), torch.randn(4, 2, 8)
    for normalize_before in (False, True):
        layer = SelfAttentionLayer(8, 2, normalize_before=normalize_before).eval()
        nn.init.normal_(layer.norm.weight)
        nn.init.normal_(layer.norm.bias)
        with torch.no_grad():
            x = layer.norm(tgt) if normalize_before else tgt
            q = x + pos
            attended = layer.self_attn(q, q, value=x)[0]
            expected = tgt + attended if normalize_before else layer.norm(tgt + attended)
            torch.testing.assert_close(layer(tgt, query_pos=pos), expected)

        ffn = FFNLayer(8, 16, normalize_before=normalize_before).eval()
        with torch.no_grad():
            x = ffn.norm(tgt) if normalize_before else tgt
            y = ffn.linear2(torch.relu(ffn.linear1(x)))
            expected = tgt + y if normalize_before else ffn.norm(tgt + y)
            torch.testing.assert_close(ffn(tgt), expected)


def test_mlp_relu_between_layers_only():
    mlp = MLP(4, 8, 3, 3)
    assert [tuple(l.weight.shape) for l in mlp.layers] == [(8, 4), (8, 8), (3, 8)]
    x = torch.randn(5, 4)
    with torch.no_grad():
        expected = mlp.layers[2](torch.relu(mlp.layers[1](torch.relu(mlp.layers[0](x)))))
        torch.testing.assert_close(mlp(x), expected)
        assert (mlp(x) < 0).any(), "no activation after the last layer"


def test_masked_decoder_input_projection_and_level_count_checks():
    assert all(isinstance(p, nn.Sequential) and len(p) == 0 for p in _small_masked_decoder().input_proj)
    projected = _small_masked_decoder(in_channels=12)
    assert all(tuple(p.weight.shape) == (16, 12, 1, 1) for p in projected.input_proj)
    enforced = _small_masked_decoder(enforce_input_project=True)
    assert all(isinstance(p, nn.Conv2d) for p in enforced.input_proj)
    x, mask_features = _multi_scale_inputs()
    with pytest.raises(ValueError, match="3 feature maps"):
        _small_masked_decoder()(x[:2], mask_features)
    with pytest.raises(ValueError, match="mask_features"):
        _small_masked_decoder()(x, mask_features[:, :8])
    with pytest.raises(ValueError, match="at least one layer"):
        _small_masked_decoder(dec_layers=0)


def test_masked_decoder_without_classification_and_pre_norm():
    torch.manual_seed(0)
    decoder = _small_masked_decoder(mask_classification=False, pre_norm=True).train()
    assert not hasattr(decoder, "class_embed")
    x, mask_features = _multi_scale_inputs(B=1)
    with torch.no_grad():
        out = decoder(x, mask_features)
        inferred = decoder.eval()(x, mask_features)
    assert out["pred_logits"] is None and inferred["pred_logits"] is None
    assert all(set(a) == {"pred_masks"} for a in out["aux_outputs"])
    torch.testing.assert_close(inferred["pred_masks"], out["pred_masks"], rtol=1e-5, atol=1e-5)


def _small_standard_decoder(**overrides):
    kwargs = dict(
        in_channels=24,
        mask_classification=True,
        num_classes=4,
        hidden_dim=16,
        num_queries=6,
        nheads=2,
        dropout=0.0,
        dim_feedforward=32,
        enc_layers=1,
        dec_layers=3,
        pre_norm=False,
        deep_supervision=True,
        mask_dim=8,
        enforce_input_project=False,
    )
    kwargs.update(overrides)
    return StandardTransformerDecoder(**kwargs)


def test_standard_decoder_outputs_and_deep_supervision():
    torch.manual_seed(0)
    decoder = _small_standard_decoder().eval()
    x, mask_features = torch.randn(2, 24, 4, 5), torch.randn(2, 8, 16, 20)
    with torch.no_grad():
        out = decoder(x, mask_features)
    assert tuple(out["pred_logits"].shape) == (2, 6, 5)
    assert tuple(out["pred_masks"].shape) == (2, 6, 16, 20)
    assert len(out["aux_outputs"]) == 2
    # The last decoder output equals what a decoder without deep supervision returns.
    shallow = _small_standard_decoder(deep_supervision=False).eval()
    shallow.load_state_dict(decoder.state_dict())
    with torch.no_grad():
        single = shallow(x, mask_features)
    assert "aux_outputs" not in single
    torch.testing.assert_close(single["pred_masks"], out["pred_masks"])
    torch.testing.assert_close(single["pred_logits"], out["pred_logits"])


def test_standard_decoder_padding_mask_hides_padded_pixels():
    torch.manual_seed(0)
    decoder = _small_standard_decoder(enc_layers=0).eval()
    x, mask_features = torch.randn(1, 24, 4, 4), torch.randn(1, 8, 8, 8)
    padding = torch.zeros(1, 8, 8, dtype=torch.bool)
    padding[:, :, 4:] = True  # right half of the image is padding -> columns 2, 3 of x
    changed = x.clone()
    changed[..., 2:] = torch.randn(1, 24, 4, 2)
    with torch.no_grad():
        a = decoder(x, mask_features, padding)
        b = decoder(changed, mask_features, padding)
    torch.testing.assert_close(a["pred_logits"], b["pred_logits"])
    with pytest.raises(ValueError, match="one \\(B, C, H, W\\) map"):
        decoder([x], mask_features)


def test_legacy_static_query_is_renamed_only_when_present():
    decoder = _small_masked_decoder()
    state = {k: v.clone() for k, v in decoder.state_dict().items()}
    fresh = _small_masked_decoder()
    fresh.load_state_dict(state)  # current names, no metadata: unchanged
    torch.testing.assert_close(fresh.query_feat.weight, decoder.query_feat.weight)

    old = dict(state)
    old["static_query.weight"] = old.pop("query_feat.weight")
    fresh = _small_masked_decoder()
    fresh.load_state_dict(old)
    torch.testing.assert_close(fresh.query_feat.weight, decoder.query_feat.weight)

    standard = _small_standard_decoder()
    old = {k: v.clone() for k, v in standard.state_dict().items()}
    old["static_query.weight"] = old.pop("query_embed.weight")
    fresh = _small_standard_decoder()
    fresh.load_state_dict(old)
    torch.testing.assert_close(fresh.query_embed.weight, standard.query_embed.weight)
