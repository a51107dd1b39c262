"""Video Mask2Former: the 3-D position embedding, the decoder over clips, the video matcher
and criterion, inference top-k, clip-wise inference with query linking, and the
meta-architecture's training targets and interface."""
import math
from pathlib import Path

import pytest
import torch
from torch.nn import functional as F

from detectron2.modeling import build_model
from detectron2.structures import BitMasks, Instances

import mask2former  # noqa: F401  (registers the model components)
from mask2former import add_maskformer2_video_config, build_config
from mask2former.modeling.criterion import SetCriterion
from mask2former.modeling.transformer_decoder import PositionEmbeddingSine
from mask2former.video.modeling import PositionEmbeddingSine3D, VideoHungarianMatcher, VideoSetCriterion
from mask2former.video.modeling.clip_linking import ClipLinker, clip_ranges
from mask2former.video.modeling.inference import video_instance_results

ROOT = Path(__file__).resolve().parents[1]
VIDEO_CONFIG = ROOT / "configs/youtubevis_2019/video_maskformer2_R50_bs16_8ep.yaml"


# ---------------------------------------------------------------- 3-D position embedding
def test_position_embedding_3d_shape_and_value_at_a_known_point():
    num_pos_feats, temperature = 4, 10000
    pe = PositionEmbeddingSine3D(num_pos_feats, temperature=temperature, normalize=True)
    batch, frames, height, width = 2, 3, 4, 5
    pos = pe(torch.zeros(batch, frames, 7, height, width))
    assert pos.shape == (batch, frames, 2 * num_pos_feats, height, width)

    # Frame t=1, row y=2, column x=3 (0-based): positions are 1-based, divided by the last one.
    t, y, x = 1, 2, 3
    eps, scale = 1e-6, 2 * math.pi
    t_pos, y_pos, x_pos = ((i + 1) / (n + eps) * scale for i, n in ((t, frames), (y, height), (x, width)))

    def sine_cosine(value, channel, num_feats):
        angle = value / temperature ** (2 * (channel // 2) / num_feats)
        return math.sin(angle) if channel % 2 == 0 else math.cos(angle)

    expected = []
    for c in range(2 * num_pos_feats):
        spatial = sine_cosine(y_pos, c, num_pos_feats) if c < num_pos_feats else sine_cosine(x_pos, c - num_pos_feats, num_pos_feats)
        expected.append(spatial + sine_cosine(t_pos, c, 2 * num_pos_feats))
    assert pos[1, t, :, y, x].tolist() == pytest.approx(expected, abs=1e-5)


def test_position_embedding_3d_is_the_image_embedding_plus_one_vector_per_frame():
    pe3d, pe2d = PositionEmbeddingSine3D(8, normalize=True), PositionEmbeddingSine(8, normalize=True)
    pos = pe3d(torch.zeros(1, 4, 3, 6, 7))
    temporal = pos - pe2d(torch.zeros(1, 3, 6, 7))[:, None]  # (1, T, C, H, W)
    assert torch.allclose(temporal, temporal[..., :1, :1].expand_as(temporal), atol=1e-6)
    assert not torch.allclose(temporal[:, 0], temporal[:, 1])


# ---------------------------------------------------------------- matcher and criterion
def _block_masks(size, boxes):
    """(T, size, size) float masks, one box (r0, r1, c0, c1) or None (absent) per frame."""
    masks = torch.zeros(len(boxes), size, size)
    for f, box in enumerate(boxes):
        if box is not None:
            masks[f, box[0] : box[1], box[2] : box[3]] = 1
    return masks


def test_criterion_mask_losses_vanish_for_a_query_perfect_in_every_frame():
    torch.manual_seed(0)
    size, logit = 512, 20.0
    target = _block_masks(size, [(80, 336, 120, 376), (160, 416, 40, 296), None])  # absent in the last frame
    # Query 1 is perfect in every frame; query 0 only in the first (the matcher must look at
    # all frames), query 2 predicts nothing.
    perfect = (2 * target - 1) * logit
    first_only = torch.stack([perfect[0], perfect[0], perfect[0]])
    pred_masks = torch.stack([first_only, perfect, torch.full_like(perfect, -logit)])[None]  # (1, Q=3, T=3, H, W)
    pred_logits = torch.zeros(1, 3, 3)  # K=2 classes + no object: the class cost does not decide
    targets = [{"labels": torch.tensor([1]), "masks": target[None]}]

    num_points = 4096
    matcher = VideoHungarianMatcher(cost_class=2.0, cost_mask=5.0, cost_dice=5.0, num_points=num_points)
    (queries, target_indices), = matcher({"pred_logits": pred_logits, "pred_masks": pred_masks}, targets)
    assert queries.tolist() == [1] and target_indices.tolist() == [0]

    # Uniform points (no importance sampling, which would seek the block edges where even a
    # perfect prediction reads interpolated values).
    criterion = VideoSetCriterion(
        2, matcher=matcher, weight_dict={}, eos_coef=0.1, num_points=num_points, oversample_ratio=1.0, importance_sample_ratio=0.0
    )
    losses = criterion({"pred_logits": pred_logits, "pred_masks": pred_masks}, targets)
    assert losses["loss_mask"] < 0.02 and losses["loss_dice"] < 0.02

    # The same query wrong in one frame: each frame counts as its own mask.
    pred_masks[0, 1, 1] = -pred_masks[0, 1, 1]
    wrong = criterion.loss_masks({"pred_masks": pred_masks}, targets, [(torch.tensor([1]), torch.tensor([0]))], 1.0)
    assert wrong["loss_mask"] > 1.0 and wrong["loss_dice"] > 0.5


def test_criterion_normalises_frame_losses_by_instances_not_frames():
    torch.manual_seed(0)
    pred_masks = torch.randn(1, 2, 4, 16, 16)
    targets = [{"labels": torch.tensor([0]), "masks": (torch.rand(1, 4, 16, 16) > 0.5).float()}]
    criterion = VideoSetCriterion(2, matcher=None, weight_dict={}, eos_coef=0.1, num_points=64)
    indices = [(torch.tensor([1]), torch.tensor([0]))]
    torch.manual_seed(1)
    video = criterion.loss_masks({"pred_masks": pred_masks}, targets, indices, 1.0)
    # The same (query, frame) masks as 4 separate image masks, normalised by 1 instance.
    image_targets = [{"labels": torch.zeros(4, dtype=torch.int64), "masks": targets[0]["masks"][0]}]
    torch.manual_seed(1)
    image_criterion = SetCriterion(2, matcher=None, weight_dict={}, eos_coef=0.1, num_points=64)
    image = image_criterion.loss_masks(
        {"pred_masks": pred_masks[:, 1]}, image_targets, [(torch.arange(4), torch.arange(4))], 1.0
    )
    assert torch.allclose(video["loss_mask"], image["loss_mask"]) and torch.allclose(video["loss_dice"], image["loss_dice"])


# ---------------------------------------------------------------- inference top-k
def test_inference_keeps_topk_query_class_pairs_scored_by_class_probability():
    class_scores = torch.tensor([[0.10, 0.70], [0.60, 0.05], [0.30, 0.20]])  # (Q=3, K=2)
    torch.manual_seed(0)
    mask_logits = torch.randn(3, 2, 4, 4)  # (Q, T, h, w)
    padded, image, output = (16, 16), (16, 12), (24, 18)
    results = video_instance_results(class_scores, mask_logits, padded, image, output, topk=3)
    assert results["image_size"] == output
    assert results["pred_scores"] == pytest.approx([0.70, 0.60, 0.30])
    assert results["pred_labels"] == [1, 0, 0]
    # Masks: every query upsampled to the padded size, cropped, resized, thresholded at 0.
    everything = F.interpolate(mask_logits, size=padded, mode="bilinear", align_corners=False)[..., :16, :12]
    everything = F.interpolate(everything, size=output, mode="bilinear", align_corners=False) > 0
    for mask, query in zip(results["pred_masks"], [0, 1, 2]):
        assert mask.dtype == torch.bool and mask.shape == (2, *output)
        assert torch.equal(mask, everything[query])


def test_inference_topk_is_capped_by_the_number_of_pairs():
    results = video_instance_results(torch.rand(2, 3), torch.randn(2, 1, 4, 4), (16, 16), (16, 16), (16, 16), topk=10)
    assert len(results["pred_scores"]) == len(results["pred_labels"]) == len(results["pred_masks"]) == 6


# ---------------------------------------------------------------- clips and linking
def test_clip_ranges_cover_the_video_with_the_overlap():
    assert clip_ranges(10, 4, 1) == [(0, 4), (3, 7), (6, 10)]
    assert clip_ranges(5, 4, 2) == [(0, 4), (2, 5)]
    assert clip_ranges(4, 4, 1) == [(0, 4)]
    assert clip_ranges(300, 0, 1) == [(0, 300)]
    with pytest.raises(ValueError, match="overlap"):
        clip_ranges(10, 4, 4)


def test_linker_follows_queries_whose_order_changes_between_clips():
    torch.manual_seed(0)
    num_queries, num_frames = 4, 7
    whole = torch.randn(num_queries, num_frames, 6, 6) * 4
    class_logits = torch.randn(num_queries, 3)
    linker = ClipLinker(num_frames)
    orders = [torch.arange(num_queries), torch.tensor([2, 0, 3, 1]), torch.tensor([1, 3, 0, 2])]
    for (start, end), order in zip(clip_ranges(num_frames, 3, 1), orders):
        # Each clip's decoder numbers the same objects differently.
        linker.add(start, class_logits[order], whole[order, start:end])
    assert torch.equal(linker.mask_logits, whole)
    assert torch.allclose(linker.class_scores(), F.softmax(class_logits, -1)[:, :-1])


def test_linker_rejects_clips_that_do_not_overlap():
    linker = ClipLinker(6)
    linker.add(0, torch.zeros(2, 3), torch.zeros(2, 3, 4, 4))
    with pytest.raises(ValueError, match="starts at frame 3"):
        linker.add(3, torch.zeros(2, 3), torch.zeros(2, 3, 4, 4))


# ---------------------------------------------------------------- the model
def tiny_video_cfg():
    """The published YouTube-VIS R50 config shrunk: Swin of width 32, 1 encoder layer, 2 decoder
    layers, 6 queries, 3 classes."""
    return build_config(
        str(VIDEO_CONFIG),
        [
            "MODEL.WEIGHTS", "", "MODEL.DEVICE", "cpu", "DATASETS.TEST", "[]",
            "MODEL.BACKBONE.NAME", "D2SwinTransformer", "MODEL.SWIN.EMBED_DIM", 32,
            "MODEL.SWIN.DEPTHS", [1, 1, 1, 1], "MODEL.SWIN.NUM_HEADS", [1, 2, 2, 4],
            "MODEL.SWIN.WINDOW_SIZE", 4, "MODEL.SWIN.DROP_PATH_RATE", 0.0,
            "MODEL.SEM_SEG_HEAD.NUM_CLASSES", 3, "MODEL.SEM_SEG_HEAD.CONVS_DIM", 32,
            "MODEL.SEM_SEG_HEAD.MASK_DIM", 32, "MODEL.SEM_SEG_HEAD.TRANSFORMER_ENC_LAYERS", 1,
            "MODEL.MASK_FORMER.HIDDEN_DIM", 32, "MODEL.MASK_FORMER.NUM_OBJECT_QUERIES", 6,
            "MODEL.MASK_FORMER.NHEADS", 4, "MODEL.MASK_FORMER.DIM_FEEDFORWARD", 64,
            "MODEL.MASK_FORMER.DEC_LAYERS", 3, "MODEL.MASK_FORMER.TRAIN_NUM_POINTS", 256,
            "TEST.DETECTIONS_PER_IMAGE", 3,  # not used by video inference
        ],
        extra_configs=[add_maskformer2_video_config],
    )


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    return build_model(tiny_video_cfg()).eval()


def _video(num_frames, size=(32, 64), seed=0):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randint(0, 256, (3, *size), generator=generator, dtype=torch.uint8) for _ in range(num_frames)]


def test_decoder_predicts_one_mask_per_frame_from_queries_shared_by_the_clip(tiny_model):
    frames = torch.stack(_video(3)).float()
    with torch.no_grad():
        features = tiny_model.backbone((frames - tiny_model.pixel_mean) / tiny_model.pixel_std)
        outputs = tiny_model.sem_seg_head(features)
        assert outputs["pred_logits"].shape == (1, 6, 4)
        assert outputs["pred_masks"].shape == (1, 6, 3, 8, 16)
        assert "aux_outputs" not in outputs  # inference: earlier masks only at the attended sizes
        # The decoder attends over all frames: changing the last frame changes the first one's masks.
        features_changed = {k: v.clone() for k, v in features.items()}
        for v in features_changed.values():
            v[-1] = torch.randn_like(v[-1])
        changed = tiny_model.sem_seg_head(features_changed)
    assert not torch.allclose(changed["pred_masks"][:, :, 0], outputs["pred_masks"][:, :, 0])


def test_decoder_inference_equals_training_mode_on_a_clip(tiny_model):
    """Eval mode masks attention from mask features resized per frame; training mode from
    each layer's resized full-size masks: the same outputs."""
    frames = torch.stack(_video(tiny_model.sem_seg_head.predictor.num_frames)).float()
    predictor = tiny_model.sem_seg_head.predictor
    with torch.no_grad():
        features = tiny_model.backbone((frames - tiny_model.pixel_mean) / tiny_model.pixel_std)
        mask_features, _, multi_scale = tiny_model.sem_seg_head.pixel_decoder.forward_features(features)
        inferred = predictor(multi_scale, mask_features)
        try:
            trained = predictor.train()(multi_scale, mask_features)
        finally:
            predictor.eval()
    assert len(trained["aux_outputs"]) == 2
    assert trained["aux_outputs"][0]["pred_masks"].shape == inferred["pred_masks"].shape
    torch.testing.assert_close(inferred["pred_logits"], trained["pred_logits"], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(inferred["pred_masks"], trained["pred_masks"], rtol=1e-5, atol=1e-5)


def test_eval_interface_and_top10_per_video(tiny_model):
    with torch.no_grad():
        result = tiny_model([{"image": _video(3), "height": 32, "width": 48}])
    assert set(result) == {"image_size", "pred_scores", "pred_labels", "pred_masks"}
    assert result["image_size"] == (32, 48)
    assert len(result["pred_scores"]) == 10  # TEST.DETECTIONS_PER_IMAGE (3) is not used
    assert all(0 <= label < 3 for label in result["pred_labels"])
    assert all(m.shape == (3, 32, 48) and m.dtype == torch.bool for m in result["pred_masks"])
    assert result["pred_scores"] == sorted(result["pred_scores"], reverse=True)


def test_clip_inference_equals_whole_video_inference_on_a_short_video(tiny_model):
    video = [{"image": _video(3), "height": 32, "width": 64}]
    with torch.no_grad():
        tiny_model.clip_length = 0
        whole = tiny_model(video)
        for clip_length in (3, 5):
            tiny_model.clip_length = clip_length
            clipped = tiny_model(video)
            assert clipped["pred_scores"] == whole["pred_scores"] and clipped["pred_labels"] == whole["pred_labels"]
            assert all(torch.equal(a, b) for a, b in zip(clipped["pred_masks"], whole["pred_masks"]))
        # A longer video runs clip by clip and still gives one mask per frame.
        tiny_model.clip_length, tiny_model.clip_overlap = 2, 1
        long = tiny_model([{"image": _video(4), "height": 32, "width": 64}])
    tiny_model.clip_length = 0
    assert all(m.shape == (4, 32, 64) for m in long["pred_masks"])


def _instances(size, classes, ids, boxes):
    instances = Instances(size)
    instances.gt_classes = torch.tensor(classes)
    instances.gt_ids = torch.tensor(ids)
    masks = torch.zeros(len(classes), *size, dtype=torch.bool)
    for i, box in enumerate(boxes):
        if box is not None:
            masks[i, box[0] : box[1], box[2] : box[3]] = True
    instances.gt_masks = BitMasks(masks)
    return instances


def test_training_targets_stack_frames_and_drop_instances_absent_everywhere(tiny_model):
    size = (32, 64)
    # Instance 0 in both frames, 1 only in the second, 2 in none of the sampled frames.
    frames = [
        _instances(size, [0, 1, 2], [5, -1, -1], [(0, 10, 0, 10), None, None]),
        _instances(size, [0, 1, 2], [5, 7, -1], [(5, 15, 0, 10), (20, 30, 30, 40), None]),
    ]
    video = {"image": _video(2, size), "instances": frames}
    images = tiny_model.preprocess_images([{"image": f} for f in video["image"]])
    (target,) = tiny_model.prepare_targets([video], images)
    assert target["labels"].tolist() == [0, 1]
    assert target["ids"].tolist() == [[5, 5], [-1, 7]]  # (N, T)
    assert target["masks"].shape == (2, 2, 32, 64)
    assert target["masks"][0, 0, :10, :10].all() and not target["masks"][1, 0].any()
    assert target["masks"][1, 1, 20:30, 30:40].all()

    tiny_model.train()
    try:
        losses = tiny_model([video, video])
    finally:
        tiny_model.eval()
    assert {"loss_ce", "loss_mask", "loss_dice", "loss_ce_1"} <= set(losses)
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    assert tiny_model.sem_seg_head.predictor.query_feat.weight.grad is not None


def test_training_rejects_clips_of_the_wrong_length(tiny_model):
    tiny_model.train()
    try:
        with pytest.raises(ValueError, match="SAMPLING_FRAME_NUM"):
            tiny_model([{"image": _video(3), "instances": [_instances((32, 64), [], [], [])] * 3}])
    finally:
        tiny_model.eval()
