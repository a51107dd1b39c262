"""Pixel decoders: the deformable encoder (reference points, post-norm layer order, init),
MSDeformAttnPixelDecoder's FPN step and outputs, MaskFormer's FPN decoders, input checks."""
import pytest
import torch
import torch.nn.functional as F
from detectron2.layers import ShapeSpec
from detectron2.modeling import SEM_SEG_HEADS_REGISTRY
from torch import nn

from mask2former.config import build_config
from mask2former.modeling.pixel_decoder import (
    BasePixelDecoder,
    MSDeformAttnPixelDecoder,
    TransformerEncoderPixelDecoder,
    build_pixel_decoder,
)
from mask2former.modeling.pixel_decoder.msdeformattn import (
    MSDeformAttnEncoderLayer,
    MSDeformAttnTransformerEncoderOnly,
    encoder_reference_points,
)

INPUT_SHAPE = {
    "res2": ShapeSpec(channels=8, stride=4),
    "res3": ShapeSpec(channels=16, stride=8),
    "res4": ShapeSpec(channels=24, stride=16),
    "res5": ShapeSpec(channels=40, stride=32),
}


def _features(B=2, H=64, W=96, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(B, s.channels, H // s.stride, W // s.stride, generator=g) for k, s in INPUT_SHAPE.items()}


def _msdeform_decoder(**overrides):
    kwargs = dict(
        input_shape=INPUT_SHAPE,
        transformer_dropout=0.0,
        transformer_nheads=4,
        transformer_dim_feedforward=64,
        transformer_enc_layers=2,
        conv_dim=32,
        mask_dim=16,
        norm="GN",
        transformer_in_features=["res3", "res4", "res5"],
        common_stride=4,
    )
    kwargs.update(overrides)
    return MSDeformAttnPixelDecoder(**kwargs)


def test_reference_points_are_cell_centres():
    ref = encoder_reference_points([(2, 3), (1, 2)], num_levels=2)
    assert tuple(ref.shape) == (1, 8, 2, 2)
    expected = [(1 / 6, 1 / 4), (3 / 6, 1 / 4), (5 / 6, 1 / 4), (1 / 6, 3 / 4), (3 / 6, 3 / 4), (5 / 6, 3 / 4),
                (1 / 4, 1 / 2), (3 / 4, 1 / 2)]  # (x, y), row-major, level by level
    torch.testing.assert_close(ref[0, :, 0], torch.tensor(expected))
    torch.testing.assert_close(ref[0, :, 1], ref[0, :, 0])  # same point on every level


def test_encoder_layer_is_post_norm_with_positions_on_queries_only():
    torch.manual_seed(0)
    layer = MSDeformAttnEncoderLayer(d_model=16, d_ffn=32, dropout=0.0, n_levels=2, n_heads=2, n_points=2).eval()
    for p in layer.parameters():  # non-trivial weights everywhere (norms and offsets included)
        nn.init.normal_(p, std=0.3)
    shapes = [(3, 4), (2, 2)]
    spatial_shapes = torch.tensor(shapes)
    start = torch.tensor([0, 12])
    src, pos = torch.randn(2, 16, 16), torch.randn(2, 16, 16)
    ref = encoder_reference_points(shapes, 2).expand(2, -1, -1, -1)
    with torch.no_grad():
        attended = layer.self_attn(src + pos, ref, src, spatial_shapes, start, None)
        x = layer.norm1(src + attended)
        expected = layer.norm2(x + layer.linear2(torch.relu(layer.linear1(x))))
        torch.testing.assert_close(layer(src, pos, ref, spatial_shapes, start), expected)
        # Positions change the result (they steer the sampling) but are not part of the values.
        wrong = layer.norm1(src + pos + layer.self_attn(src + pos, ref, src + pos, spatial_shapes, start, None))
        assert not torch.allclose(layer(src, pos, ref, spatial_shapes, start), layer.norm2(wrong + layer.linear2(torch.relu(layer.linear1(wrong)))))


def test_deformable_encoder_init_keeps_the_attention_init():
    torch.manual_seed(0)
    encoder = MSDeformAttnTransformerEncoderOnly(d_model=32, nhead=4, num_encoder_layers=2, dim_feedforward=64,
                                                 num_feature_levels=3, enc_n_points=4)
    for layer in encoder.encoder.layers:
        attn = layer.self_attn
        assert torch.count_nonzero(attn.sampling_offsets.weight) == 0
        assert torch.count_nonzero(attn.attention_weights.weight) == 0
        assert torch.count_nonzero(attn.attention_weights.bias) == 0
        offsets = attn.sampling_offsets.bias.view(4, 3, 4, 2)
        # Point p of every head and level sits p + 1 cells away along the head's direction.
        torch.testing.assert_close(offsets.abs().amax(-1), torch.arange(1.0, 5.0).expand(4, 3, 4))
        bound = (6 / (32 + 64)) ** 0.5  # xavier-uniform bound of linear1 (32 -> 64)
        assert layer.linear1.weight.abs().max() <= bound and layer.linear1.weight.abs().max() > 0.5 * bound
    assert encoder.level_embed.shape == (3, 32) and encoder.level_embed.std() > 0.5


def test_msdeformattn_pixel_decoder_outputs_and_fpn_step():
    torch.manual_seed(0)
    decoder = _msdeform_decoder().eval()
    features = _features()
    with torch.no_grad():
        mask_features, encoder_features, multi_scale = decoder.forward_features(features)
    assert tuple(mask_features.shape) == (2, 16, 16, 24)
    assert [tuple(f.shape) for f in multi_scale] == [(2, 32, 2, 3), (2, 32, 4, 6), (2, 32, 8, 12)]
    assert encoder_features is multi_scale[0]
    # The stride-4 map: lateral(res2) + bilinear upsampling of the stride-8 encoder map, 3x3 conv.
    with torch.no_grad():
        y = decoder.adapter_1(features["res2"]) + F.interpolate(
            multi_scale[2], size=(16, 24), mode="bilinear", align_corners=False
        )
        torch.testing.assert_close(mask_features, decoder.mask_features(decoder.layer_1(y)))
    # input_proj.0 projects res5 (encoder inputs run coarsest first).
    assert decoder.input_proj[0][0].in_channels == 40 and decoder.input_proj[2][0].in_channels == 16


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_msdeformattn_pixel_decoder_training_precision_under_autocast(dtype):
    """float16 autocast: the encoder trains in float32 (as published); bfloat16: in bfloat16,
    with gradients that match float32 training."""
    torch.manual_seed(0)
    decoder = _msdeform_decoder(transformer_enc_layers=1).train()
    features = _features(B=1)
    reference = decoder.forward_features(features)[0]
    (reference_grad,) = torch.autograd.grad(reference.square().mean(), decoder.input_proj[0][0].weight)
    with torch.autocast("cpu", dtype=dtype):
        mask_features, _, multi_scale = decoder.forward_features({k: v.to(dtype) for k, v in features.items()})
    expected = torch.float32 if dtype == torch.float16 else torch.bfloat16
    assert mask_features.dtype == expected
    assert all(f.dtype == expected for f in multi_scale)
    (grad,) = torch.autograd.grad(mask_features.float().square().mean(), decoder.input_proj[0][0].weight)
    error = (grad - reference_grad).abs().max() / reference_grad.abs().max()
    # measured: 1.3% (float16 inputs), 4.8% (bfloat16 keeps 8 bits of mantissa)
    assert error < (0.03 if dtype == torch.float16 else 0.1), error


def test_msdeformattn_pixel_decoder_infers_in_the_autocast_dtype():
    torch.manual_seed(0)
    decoder = _msdeform_decoder(transformer_enc_layers=1).eval()
    features = _features(B=1)
    with torch.no_grad():
        reference, _, _ = decoder.forward_features(features)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            mask_features, _, multi_scale = decoder.forward_features(features)
    assert mask_features.dtype == torch.bfloat16
    assert all(f.dtype == torch.bfloat16 for f in multi_scale)
    error = (mask_features.float() - reference).abs().max() / reference.abs().max()
    assert error < 0.03  # bfloat16 keeps 8 bits of mantissa (measured: 0.7%)


def test_pixel_decoder_input_errors_name_the_feature():
    decoder = _msdeform_decoder(transformer_enc_layers=1)
    features = _features(B=1)
    del features["res4"]
    with pytest.raises(KeyError, match="res4"):
        decoder.forward_features(features)
    features = _features(B=1)
    features["res3"] = torch.randn(1, 5, 8, 12)
    with pytest.raises(ValueError, match="res3"):
        decoder.forward_features(features)
    with pytest.raises(ValueError, match="res6"):
        _msdeform_decoder(transformer_in_features=["res4", "res5", "res6"])


def test_base_pixel_decoder_is_a_nearest_fpn():
    torch.manual_seed(0)
    decoder = BasePixelDecoder(INPUT_SHAPE, conv_dim=32, mask_dim=16, norm="GN").eval()
    names = [k for k in decoder.state_dict() if k.endswith("weight") and "norm" not in k]
    assert names == ["adapter_1.weight", "layer_1.weight", "adapter_2.weight", "layer_2.weight",
                     "adapter_3.weight", "layer_3.weight", "layer_4.weight", "mask_features.weight"]
    features = _features()
    with torch.no_grad():
        mask_features, encoder_features, multi_scale = decoder.forward_features(features)
        top = decoder.layer_4(features["res5"])
        level4 = decoder.layer_3(decoder.adapter_3(features["res4"]) + F.interpolate(top, size=(4, 6), mode="nearest"))
    assert encoder_features is None
    assert [tuple(f.shape) for f in multi_scale] == [(2, 32, 2, 3), (2, 32, 4, 6), (2, 32, 8, 12)]
    torch.testing.assert_close(multi_scale[0], top)
    torch.testing.assert_close(multi_scale[1], level4)
    assert tuple(mask_features.shape) == (2, 16, 16, 24)


def test_transformer_encoder_pixel_decoder_encodes_the_coarsest_feature():
    torch.manual_seed(0)
    decoder = TransformerEncoderPixelDecoder(
        INPUT_SHAPE,
        transformer_dropout=0.0,
        transformer_nheads=4,
        transformer_dim_feedforward=64,
        transformer_enc_layers=1,
        transformer_pre_norm=False,
        conv_dim=32,
        mask_dim=16,
        norm="GN",
    ).eval()
    assert decoder.layer_4.in_channels == 32 and decoder.input_proj.in_channels == 40
    assert "transformer.encoder.layers.0.self_attn.in_proj_weight" in decoder.state_dict()
    features = _features()
    with torch.no_grad():
        mask_features, encoder_features, multi_scale = decoder.forward_features(features)
        expected = decoder.transformer(decoder.input_proj(features["res5"]), None, decoder.pe_layer(features["res5"]))
    torch.testing.assert_close(encoder_features, expected)
    torch.testing.assert_close(multi_scale[0], decoder.layer_4(expected))
    assert tuple(mask_features.shape) == (2, 16, 16, 24)


def _cfg(name):
    cfg = build_config()
    cfg.MODEL.SEM_SEG_HEAD.PIXEL_DECODER_NAME = name
    cfg.MODEL.SEM_SEG_HEAD.IN_FEATURES = ["res2", "res3", "res4", "res5"]
    cfg.MODEL.SEM_SEG_HEAD.CONVS_DIM = 32
    cfg.MODEL.SEM_SEG_HEAD.MASK_DIM = 16
    cfg.MODEL.SEM_SEG_HEAD.TRANSFORMER_ENC_LAYERS = 1
    cfg.MODEL.MASK_FORMER.NHEADS = 4
    return cfg


def test_build_pixel_decoder_by_name():
    decoder = build_pixel_decoder(_cfg("MSDeformAttnPixelDecoder"), INPUT_SHAPE)
    assert isinstance(decoder, MSDeformAttnPixelDecoder)
    # The deformable encoder's FFN width is fixed at 1024, as published.
    assert decoder.transformer.encoder.layers[0].linear1.out_features == 1024
    assert isinstance(build_pixel_decoder(_cfg("BasePixelDecoder"), INPUT_SHAPE), BasePixelDecoder)
    with pytest.raises(KeyError, match="NoSuchDecoder"):
        build_pixel_decoder(_cfg("NoSuchDecoder"), INPUT_SHAPE)
    cfg = _cfg("BasePixelDecoder")
    cfg.MODEL.SEM_SEG_HEAD.IN_FEATURES = ["res2", "p6"]
    with pytest.raises(ValueError, match="IN_FEATURES"):
        build_pixel_decoder(cfg, INPUT_SHAPE)


def test_pixel_decoders_registered_the_original_way_are_found():
    name = "_PixelDecoderRegisteredAsSemSegHead"
    if name not in SEM_SEG_HEADS_REGISTRY:

        class _Decoder(BasePixelDecoder):
            pass

        _Decoder.__name__ = name
        SEM_SEG_HEADS_REGISTRY.register(_Decoder)
    assert type(build_pixel_decoder(_cfg(name), INPUT_SHAPE)).__name__ == name
