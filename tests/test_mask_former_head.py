"""MaskFormerHead: output contract, the TRANSFORMER_IN_FEATURE choices, and checkpoint loading
(published keys with or without version metadata load unchanged; only MaskFormer-era keys
are renamed)."""
from collections import OrderedDict

import pytest
import torch
from detectron2.layers import ShapeSpec
from detectron2.modeling import build_sem_seg_head
from torch import nn

import mask2former  # noqa: F401  (registers the model components)
from mask2former.config import build_config
from mask2former.modeling.meta_arch.mask_former_head import MaskFormerHead

INPUT_SHAPE = {
    "res2": ShapeSpec(channels=8, stride=4),
    "res3": ShapeSpec(channels=16, stride=8),
    "res4": ShapeSpec(channels=24, stride=16),
    "res5": ShapeSpec(channels=40, stride=32),
}


def _cfg(**overrides):
    cfg = build_config()
    head, mf = cfg.MODEL.SEM_SEG_HEAD, cfg.MODEL.MASK_FORMER
    head.NAME = "MaskFormerHead"
    head.IN_FEATURES = ["res2", "res3", "res4", "res5"]
    head.NUM_CLASSES = 5
    head.CONVS_DIM = 32
    head.MASK_DIM = 32
    head.PIXEL_DECODER_NAME = "MSDeformAttnPixelDecoder"
    head.TRANSFORMER_ENC_LAYERS = 1
    mf.TRANSFORMER_IN_FEATURE = "multi_scale_pixel_decoder"
    mf.HIDDEN_DIM = 32
    mf.NHEADS = 4
    mf.DIM_FEEDFORWARD = 64
    mf.DEC_LAYERS = 4
    mf.NUM_OBJECT_QUERIES = 6
    mf.DROPOUT = 0.0
    for key, value in overrides.items():
        node = cfg
        *parents, leaf = key.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = value
    return cfg


def _features(B=2, H=64, W=96):
    g = torch.Generator().manual_seed(1)
    return {k: torch.randn(B, s.channels, H // s.stride, W // s.stride, generator=g) for k, s in INPUT_SHAPE.items()}


class _Model(nn.Module):
    """Holds the head under the name the published checkpoints use."""

    def __init__(self, head):
        super().__init__()
        self.sem_seg_head = head


def _model(cfg=None, seed=0):
    torch.manual_seed(seed)
    return _Model(build_sem_seg_head(cfg or _cfg(), INPUT_SHAPE)).eval()


def test_head_output_contract():
    model = _model()
    head = model.sem_seg_head
    assert isinstance(head, MaskFormerHead)
    assert list(dict(head.named_children())) == ["pixel_decoder", "predictor"]
    with torch.no_grad():
        out = head(_features())
        training_out = head.train()(_features())
    assert tuple(out["pred_logits"].shape) == (2, 6, 6)
    assert tuple(out["pred_masks"].shape) == (2, 6, 16, 24)
    assert "aux_outputs" not in out  # inference makes the earlier masks only at the attended sizes
    assert len(training_out["aux_outputs"]) == 3
    assert all(tuple(a["pred_masks"].shape) == (2, 6, 16, 24) for a in training_out["aux_outputs"])


@pytest.mark.parametrize(
    "pixel_decoder, transformer_in_feature",
    [
        ("TransformerEncoderPixelDecoder", "transformer_encoder"),
        ("BasePixelDecoder", "res5"),
        ("BasePixelDecoder", "pixel_embedding"),
    ],
)
def test_maskformer_style_heads(pixel_decoder, transformer_in_feature):
    cfg = _cfg(
        **{
            "MODEL.SEM_SEG_HEAD.PIXEL_DECODER_NAME": pixel_decoder,
            "MODEL.MASK_FORMER.TRANSFORMER_IN_FEATURE": transformer_in_feature,
            "MODEL.MASK_FORMER.TRANSFORMER_DECODER_NAME": "StandardTransformerDecoder",
            "MODEL.MASK_FORMER.ENC_LAYERS": 0,
            "MODEL.MASK_FORMER.DEC_LAYERS": 3,
        }
    )
    head = _model(cfg).sem_seg_head
    in_channels = 40 if transformer_in_feature == "res5" else 32
    assert (isinstance(head.predictor.input_proj, nn.Conv2d)) == (in_channels != 32)
    with torch.no_grad():
        out = head(_features())
    assert tuple(out["pred_logits"].shape) == (2, 6, 6)
    assert tuple(out["pred_masks"].shape) == (2, 6, 16, 24)
    assert len(out["aux_outputs"]) == 2


def test_bad_transformer_in_feature_is_named():
    with pytest.raises(ValueError, match="TRANSFORMER_IN_FEATURE"):
        _model(_cfg(**{"MODEL.MASK_FORMER.TRANSFORMER_IN_FEATURE": "res7"}))
    head = _model(
        _cfg(
            **{
                "MODEL.SEM_SEG_HEAD.PIXEL_DECODER_NAME": "BasePixelDecoder",
                "MODEL.MASK_FORMER.TRANSFORMER_IN_FEATURE": "transformer_encoder",
                "MODEL.MASK_FORMER.TRANSFORMER_DECODER_NAME": "StandardTransformerDecoder",
            }
        )
    ).sem_seg_head
    with pytest.raises(ValueError, match="transformer encoder"):
        head(_features(B=1))


def _outputs(model):
    with torch.no_grad():
        return model.sem_seg_head(_features(B=1))["pred_masks"]


def _assert_loads_identically(source, state_dict):
    target = _model(seed=1)
    assert not torch.allclose(_outputs(source), _outputs(target))
    result = target.load_state_dict(state_dict, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    torch.testing.assert_close(_outputs(target), _outputs(source))


def test_published_keys_load_with_metadata():
    source = _model()
    state = source.state_dict()
    assert state._metadata["sem_seg_head"]["version"] == 2
    assert state._metadata["sem_seg_head.predictor"]["version"] == 2
    _assert_loads_identically(source, state)


def test_published_keys_load_without_metadata():
    """The published layout is loaded unchanged even with no version information
    (e.g. a checkpoint converted to a plain dict)."""
    source = _model()
    plain = OrderedDict((k, v.clone()) for k, v in source.state_dict().items())
    assert not hasattr(plain, "_metadata")
    _assert_loads_identically(source, plain)


def test_published_keys_with_old_version_metadata_are_not_moved():
    source = _model()
    state = source.state_dict()
    state._metadata["sem_seg_head"]["version"] = 1
    state._metadata["sem_seg_head.predictor"]["version"] = 1
    _assert_loads_identically(source, state)


def test_maskformer_era_keys_are_renamed():
    source = _model()
    old = OrderedDict()
    for key, value in source.state_dict().items():
        key = key.replace("sem_seg_head.pixel_decoder.", "sem_seg_head.")
        key = key.replace("sem_seg_head.predictor.query_feat.", "sem_seg_head.predictor.static_query.")
        old[key] = value.clone()
    assert "sem_seg_head.adapter_1.weight" in old and "sem_seg_head.predictor.static_query.weight" in old
    _assert_loads_identically(source, old)
