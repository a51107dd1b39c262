"""The data-flow shape table of the model spec, at a small non-square input (2x3x128x192)
with the formulas written for any size, for the R50 panoptic config and a Swin config."""
from pathlib import Path

import pytest
import torch
from detectron2.modeling import build_backbone, build_sem_seg_head

import mask2former  # noqa: F401  (registers the model components)
from mask2former.config import build_config

ROOT = Path(__file__).resolve().parents[1]
B, H, W = 2, 128, 192

CASES = {
    # config: (channels of res2..res5, number of classes)
    "coco/panoptic-segmentation/maskformer2_R50_bs16_50ep.yaml": ((256, 512, 1024, 2048), 133),
    "ade20k/semantic-segmentation/swin/maskformer2_swin_tiny_bs16_160k.yaml": ((96, 192, 384, 768), 150),
}


def _cfg(relative_yaml):
    cfg = build_config(ROOT / "configs" / relative_yaml)
    cfg.MODEL.WEIGHTS = ""
    cfg.MODEL.DEVICE = "cpu"
    return cfg


@pytest.fixture(scope="module", params=sorted(CASES))
def run(request):
    """Backbone + head forward with hooks recording the intermediate shapes."""
    torch.manual_seed(0)
    cfg = _cfg(request.param)
    backbone = build_backbone(cfg).eval()
    head = build_sem_seg_head(cfg, backbone.output_shape()).eval()
    record = {}

    def encoder_hook(_module, _inputs, output):
        memory, spatial_shapes, level_start_index = output
        record["memory"], record["spatial_shapes"], record["level_start_index"] = memory, spatial_shapes, level_start_index

    def offsets_hook(_module, _inputs, output):
        record.setdefault("sampling_offsets", output)

    def weights_hook(_module, _inputs, output):
        record.setdefault("attention_weights", output)

    def cross_attention_hook(_module, args, kwargs):
        record.setdefault("memory_masks", []).append(kwargs["memory_mask"])
        record.setdefault("memories", []).append(args[1])

    pixel_decoder = head.pixel_decoder
    handles = [
        pixel_decoder.transformer.register_forward_hook(encoder_hook),
        pixel_decoder.transformer.encoder.layers[0].self_attn.sampling_offsets.register_forward_hook(offsets_hook),
        pixel_decoder.transformer.encoder.layers[0].self_attn.attention_weights.register_forward_hook(weights_hook),
    ]
    for layer in head.predictor.transformer_cross_attention_layers:
        handles.append(layer.register_forward_pre_hook(cross_attention_hook, with_kwargs=True))

    forward_features = pixel_decoder.forward_features

    def recording_forward_features(features):
        result = forward_features(features)
        record["pixel_decoder_outputs"] = result
        return result

    pixel_decoder.forward_features = recording_forward_features
    images = torch.randn(B, 3, H, W)
    with torch.no_grad():
        features = backbone(images)
        outputs = head(features)
    mask_features, _, multi_scale = record["pixel_decoder_outputs"]
    for h in handles:
        h.remove()
    with torch.no_grad():  # training mode also returns the earlier layers' predictions
        training_outputs = head.predictor.train()(multi_scale, mask_features, None)
    head.predictor.eval()
    record.update(
        features=features, mask_features=mask_features, multi_scale=multi_scale, outputs=outputs,
        training_outputs=training_outputs,
    )
    return request.param, cfg, record


def test_backbone_features(run):
    name, _, record = run
    channels, _ = CASES[name]
    for (feature, stride), c in zip({"res2": 4, "res3": 8, "res4": 16, "res5": 32}.items(), channels):
        assert tuple(record["features"][feature].shape) == (B, c, H // stride, W // stride), feature


def test_deformable_encoder_tokens_and_projections(run):
    _, cfg, record = run
    strides = (32, 16, 8)  # encoder levels, lowest resolution first
    sizes = [(H // s, W // s) for s in strides]
    tokens = sum(h * w for h, w in sizes)
    assert tokens == 4 * 6 + 8 * 12 + 16 * 24
    assert tuple(record["memory"].shape) == (B, tokens, 256)
    assert record["spatial_shapes"].tolist() == [list(s) for s in sizes]
    assert record["level_start_index"].tolist() == [0, sizes[0][0] * sizes[0][1], sizes[0][0] * sizes[0][1] + sizes[1][0] * sizes[1][1]]
    heads, levels, points = 8, 3, 4
    assert tuple(record["sampling_offsets"].shape) == (B, tokens, heads * levels * points * 2) == (B, tokens, 192)
    assert tuple(record["attention_weights"].shape) == (B, tokens, heads * levels * points) == (B, tokens, 96)
    assert [tuple(f.shape) for f in record["multi_scale"]] == [(B, 256, h, w) for h, w in sizes]


def test_mask_features_predictions_and_attention_masks(run):
    name, cfg, record = run
    _, num_classes = CASES[name]
    Q = cfg.MODEL.MASK_FORMER.NUM_OBJECT_QUERIES
    assert tuple(record["mask_features"].shape) == (B, 256, H // 4, W // 4)

    outputs, training_outputs = record["outputs"], record["training_outputs"]
    assert set(outputs) == {"pred_logits", "pred_masks"}
    predictions = [training_outputs] + training_outputs["aux_outputs"]
    assert len(predictions) == cfg.MODEL.MASK_FORMER.DEC_LAYERS == 10
    for p in [outputs] + predictions:
        assert tuple(p["pred_logits"].shape) == (B, Q, num_classes + 1)
        assert tuple(p["pred_masks"].shape) == (B, Q, H // 4, W // 4)

    # Layer i attends to level i % 3 (strides 32, 16, 8): mask (B * heads, Q, h * w).
    masks, memories = record["memory_masks"], record["memories"]
    assert len(masks) == 9
    for i, (mask, memory) in enumerate(zip(masks, memories)):
        stride = (32, 16, 8)[i % 3]
        hw = (H // stride) * (W // stride)
        assert mask.dtype == torch.bool and tuple(mask.shape) == (B * 8, Q, hw)
        assert tuple(memory.shape) == (hw, B, 256)
    assert tuple(masks[0].shape) == (16, Q, 24)
