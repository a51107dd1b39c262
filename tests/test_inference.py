"""Inference post-processing: hand-made predictions with known answers, and the
query-selective upsampling against the plain all-queries path."""

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.nn import functional as F

from detectron2.data import MetadataCatalog
from detectron2.modeling import build_model
from detectron2.modeling.postprocessing import sem_seg_postprocess
from detectron2.structures import BitMasks

from mask2former.config import build_config
from mask2former.modeling.postprocessing import as_detectron2_results, to_instances
from mask2former.postprocessing import (
    PostprocessOptions,
    QueryMaskUpsampler,
    instance_inference,
    mask_bounding_boxes,
    panoptic_inference,
    postprocess_all_queries,
    postprocess_image,
    select_instance_queries,
    select_panoptic_queries,
    semantic_inference,
)
from maskformer_standins import tiny_maskformer

ON, OFF = 10.0, -10.0
ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "configs" / "quickstart"


def class_logits_from_probs(probs):
    """Logits whose softmax is exactly `probs` (up to float rounding)."""
    return torch.log(torch.tensor(probs, dtype=torch.float32))


def box_mask(height, width, rows, cols):
    """Logits: ON inside rows x cols (python ranges), OFF elsewhere."""
    m = torch.full((height, width), OFF)
    m[rows.start : rows.stop, cols.start : cols.stop] = ON
    return m


def overlapping_scene():
    """K=2 (0 = stuff, 1 = thing), 10x10 image.

    q0 thing, score .95, cols 0-5 (60 px); q1 thing, score .90, rows 0-4 cols 3-7
    (25 px, only 10 visible past q0); q2 stuff, .90, cols 8-9; q3 stuff, .85, rows 5-9
    cols 6-7; q4 is "no object"; q5 is a thing below the 0.8 score threshold.
    """
    probs = [
        [0.02, 0.95, 0.03],
        [0.05, 0.90, 0.05],
        [0.90, 0.05, 0.05],
        [0.85, 0.10, 0.05],
        [0.01, 0.01, 0.98],
        [0.20, 0.70, 0.10],
    ]
    masks = torch.stack(
        [
            box_mask(10, 10, range(0, 10), range(0, 6)),
            box_mask(10, 10, range(0, 5), range(3, 8)),
            box_mask(10, 10, range(0, 10), range(8, 10)),
            box_mask(10, 10, range(5, 10), range(6, 8)),
            box_mask(10, 10, range(0, 10), range(0, 10)),
            box_mask(10, 10, range(0, 10), range(0, 10)),
        ]
    )
    return class_logits_from_probs(probs), masks


def test_panoptic_query_selection():
    class_logits, _ = overlapping_scene()
    queries, scores, labels = select_panoptic_queries(class_logits, num_classes=2, object_mask_threshold=0.8)
    assert queries.tolist() == [0, 1, 2, 3]
    assert labels.tolist() == [1, 1, 0, 0]
    assert torch.allclose(scores, torch.tensor([0.95, 0.90, 0.90, 0.85]))


def test_panoptic_overlap_threshold_drops_hidden_segment_and_merges_stuff():
    class_logits, masks = overlapping_scene()
    queries, scores, labels = select_panoptic_queries(class_logits, 2, 0.8)
    seg, info = panoptic_inference(scores, labels, masks[queries].clone(), 0.8, frozenset({1}))
    assert seg.dtype == torch.int32
    expected = torch.zeros(10, 10, dtype=torch.int32)
    expected[:, 0:6] = 1
    expected[:, 8:10] = 2
    expected[5:10, 6:8] = 2  # q3 is the same stuff class as q2: merged into segment 2
    assert torch.equal(seg, expected)
    assert info == [
        {"id": 1, "isthing": True, "category_id": 1},
        {"id": 2, "isthing": False, "category_id": 0},
    ]


def test_panoptic_lower_overlap_threshold_keeps_partly_hidden_segment():
    class_logits, masks = overlapping_scene()
    queries, scores, labels = select_panoptic_queries(class_logits, 2, 0.8)
    # q1 shows 10 of its 25 pixels: 0.4 >= 0.3
    seg, info = panoptic_inference(scores, labels, masks[queries].clone(), 0.3, frozenset({1}))
    assert [s["id"] for s in info] == [1, 2, 3]
    assert [(s["category_id"], s["isthing"]) for s in info] == [(1, True), (1, True), (0, False)]
    assert (seg == 2).sum().item() == 10
    assert torch.all(seg[0:5, 6:8] == 2)


def test_panoptic_things_of_same_class_stay_separate_and_unknown_metadata_means_things():
    class_logits, masks = overlapping_scene()
    queries, scores, labels = select_panoptic_queries(class_logits, 2, 0.8)
    # Without thing metadata every class counts as a thing: the two class-0 regions
    # are not merged.
    seg, info = panoptic_inference(scores, labels, masks[queries].clone(), 0.8, None)
    assert [(s["id"], s["category_id"], s["isthing"]) for s in info] == [(1, 1, True), (2, 0, True), (3, 0, True)]
    assert torch.all(seg[5:10, 6:8] == 3)


def test_panoptic_ties_go_to_the_first_query():
    # equal scores and equal masks: every pixel goes to the first of the two queries
    box = box_mask(6, 7, range(1, 5), range(2, 6))
    masks = torch.stack([box, box])
    seg, info = panoptic_inference(torch.tensor([0.9, 0.9]), torch.tensor([1, 0]), masks, 0.8, frozenset({0, 1}))
    assert info == [{"id": 1, "isthing": True, "category_id": 1}]
    assert torch.equal(seg, (box > 0).int())


def test_panoptic_nothing_kept_gives_void():
    class_logits, masks = overlapping_scene()
    queries, scores, labels = select_panoptic_queries(class_logits, 2, 0.99)
    assert queries.numel() == 0
    seg, info = panoptic_inference(scores, labels, masks[queries].clone(), 0.8, frozenset({1}))
    assert info == [] and seg.shape == (10, 10) and not seg.any()


def test_instance_topk_over_queries_and_classes():
    probs = [
        [0.50, 0.30, 0.10, 0.10],
        [0.05, 0.05, 0.60, 0.30],
        [0.01, 0.01, 0.01, 0.97],
    ]
    class_logits = class_logits_from_probs(probs)
    queries, scores, labels = select_instance_queries(class_logits, topk=3)
    assert queries.tolist() == [1, 0, 0]
    assert labels.tolist() == [2, 0, 1]
    assert torch.allclose(scores, torch.tensor([0.60, 0.50, 0.30]))
    # only thing classes (0 and 2) survive the filter, applied after the top-k
    queries, scores, labels = select_instance_queries(class_logits, topk=3, thing_classes=frozenset({0, 2}))
    assert queries.tolist() == [1, 0] and labels.tolist() == [2, 0]
    # top-k larger than Q*K is clamped
    assert select_instance_queries(class_logits, topk=100)[0].numel() == 9


def test_instance_masks_scores_and_boxes():
    mask_logits = torch.full((2, 6, 8), -3.0)
    mask_logits[0, 1:4, 2:5] = 2.0
    mask_logits[0, 1, 2] = 4.0
    scores = torch.tensor([0.9, 0.5, 0.4])
    labels = torch.tensor([1, 0, 2])
    rows = torch.tensor([0, 0, 1])  # query 0 chosen with two classes, stored once
    inst = to_instances(instance_inference(scores, labels, mask_logits, (6, 8), mask_rows=rows))
    assert inst.image_size == (6, 8)
    assert inst.pred_masks.shape == (3, 6, 8) and inst.pred_masks.dtype == torch.bool
    assert inst.pred_masks[0].sum() == 9 and not inst.pred_masks[2].any()
    mean_prob = (8 * torch.sigmoid(torch.tensor(2.0)) + torch.sigmoid(torch.tensor(4.0))) / 9
    assert torch.allclose(inst.scores[:2], torch.tensor([0.9, 0.5]) * mean_prob, atol=1e-6)
    assert inst.scores[2].abs() < 1e-6  # empty mask: score 0
    assert inst.pred_boxes.tensor.tolist() == [[2, 1, 5, 4], [2, 1, 5, 4], [0, 0, 0, 0]]
    assert inst.pred_classes.tolist() == [1, 0, 2]


def test_mask_bounding_boxes_matches_bitmasks():
    g = torch.Generator().manual_seed(0)
    masks = torch.zeros(6, 23, 31, dtype=torch.bool)
    for i in range(5):
        y0, x0 = torch.randint(0, 20, (2,), generator=g).tolist()
        h, w = torch.randint(1, 12, (2,), generator=g).tolist()
        masks[i, y0 : y0 + h, x0 : x0 + w] = True
    masks[2] |= torch.rand(23, 31, generator=g) > 0.97  # scattered pixels
    expected = BitMasks(masks).get_bounding_boxes().tensor
    assert torch.equal(mask_bounding_boxes(masks), expected)
    assert mask_bounding_boxes(masks[:0]).shape == (0, 4)


def test_semantic_argmax():
    class_logits = class_logits_from_probs([[0.8, 0.1, 0.1], [0.1, 0.7, 0.2], [0.05, 0.05, 0.9]])
    masks = torch.stack(
        [
            box_mask(4, 6, range(0, 4), range(0, 3)),
            box_mask(4, 6, range(0, 4), range(3, 6)),
            box_mask(4, 6, range(0, 4), range(0, 6)),  # "no object" query: low class probs
        ]
    )
    semantic = semantic_inference(class_logits, masks)
    assert semantic.shape == (2, 4, 6)
    expected = torch.zeros(4, 6, dtype=torch.int64)
    expected[:, 3:] = 1
    assert torch.equal(semantic.argmax(0), expected)
    # value check: class 0 at a left pixel = 0.8 * s(10) + 0.1 * s(-10) + 0.05 * s(10)
    s = torch.sigmoid
    value = 0.8 * s(torch.tensor(ON)) + 0.1 * s(torch.tensor(OFF)) + 0.05 * s(torch.tensor(ON))
    assert torch.allclose(semantic[0, 0, 0], value, atol=1e-6)


def random_predictions(num_queries=20, num_classes=7, size=(13, 17), seed=0):
    """Random class logits (every other query confident) and smooth random mask logits."""
    g = torch.Generator().manual_seed(seed)
    class_logits = torch.randn(num_queries, num_classes + 1, generator=g)
    confident = torch.arange(0, num_queries, 2)
    class_logits[confident, torch.randint(0, num_classes, (len(confident),), generator=g)] += 6.0
    base = torch.randn(num_queries, 1, size[0] // 3 + 1, size[1] // 3 + 1, generator=g) * 4 - 3  # sparse masks
    mask_logits = F.interpolate(base, size=size, mode="bilinear", align_corners=False)[:, 0]
    mask_logits += 0.3 * torch.randn(num_queries, *size, generator=g)
    return class_logits, mask_logits


# Sizes large enough for PyTorch's CPU bilinear kernel to resize mask by mask even when the
# masks are stacked as channels (below ~8k output pixels it vectorises across channels,
# which changes the last bit of a mask depending on its neighbours in the stack).
PADDED, IMAGE, OUTPUT = (104, 136), (97, 130), (150, 201)


def test_upsampling_selected_queries_equals_upsampling_all():
    _, mask_logits = random_predictions(size=(26, 34))
    up = QueryMaskUpsampler(mask_logits, PADDED, IMAGE, OUTPUT)
    everything = up(slice(None))
    chosen = torch.tensor([3, 0, 17, 3])
    assert torch.equal(up(chosen), everything[chosen])
    assert torch.equal(up(chosen, resize_to_output=False), up(slice(None), resize_to_output=False)[chosen])
    # the plain detectron2 way on the whole stack gives the same pixels
    padded = F.interpolate(mask_logits[None], size=PADDED, mode="bilinear", align_corners=False)[0]
    assert torch.equal(everything, sem_seg_postprocess(padded, IMAGE, *OUTPUT))


def test_selected_query_pixels_do_not_depend_on_the_selection_at_small_sizes():
    _, mask_logits = random_predictions()
    up = QueryMaskUpsampler(mask_logits, (52, 68), (45, 60), (40, 50))
    everything = up(torch.arange(20))
    for chosen in ([3], [3, 0, 17, 3], list(range(9))):
        assert torch.equal(up(torch.tensor(chosen)), everything[chosen])


@pytest.mark.parametrize("band_columns", [1, 37, 1000])
@pytest.mark.parametrize("output", [OUTPUT, IMAGE])
def test_postprocess_image_equals_all_queries_path(band_columns, output):
    class_logits, mask_logits = random_predictions(size=(26, 34))
    options = PostprocessOptions(  # semantic on, thresholds 0.8 by default
        num_classes=7, panoptic_on=True, instance_on=True, detections_per_image=25, thing_classes=frozenset({0, 1, 2, 3})
    )
    sizes = (PADDED, IMAGE, output)
    # band_bytes: one band holds the kept queries' masks for `band_columns` columns
    band_bytes = 4 * 20 * output[0] * band_columns
    ours = postprocess_image(class_logits, mask_logits, *sizes, dataclasses.replace(options, band_bytes=band_bytes))
    ours = as_detectron2_results(ours)
    plain = as_detectron2_results(postprocess_all_queries(class_logits, mask_logits, *sizes, options))

    assert ours["sem_seg"].shape == (7, *output)
    # the semantic sum runs over chunks of queries: same terms, other summation order
    assert torch.allclose(ours["sem_seg"], plain["sem_seg"], rtol=1e-5, atol=1e-5)

    seg, info = ours["panoptic_seg"]
    plain_seg, plain_info = plain["panoptic_seg"]
    kept = select_panoptic_queries(class_logits, 7, 0.8)[0].numel()
    assert 1 < len(info) < kept, "the scene should keep several segments and drop some"
    assert torch.equal(seg, plain_seg) and info == plain_info

    inst, plain_inst = ours["instances"], plain["instances"]
    assert len(inst) > 1 and len(inst) == len(plain_inst)
    assert set(inst.pred_classes.tolist()) <= {0, 1, 2, 3}
    for field in ("pred_masks", "pred_classes"):
        assert torch.equal(inst.get(field), plain_inst.get(field)), field
    assert torch.equal(inst.pred_boxes.tensor, plain_inst.pred_boxes.tensor)
    if band_columns >= output[1]:
        assert torch.equal(inst.scores, plain_inst.scores)
    else:  # each band adds its part of the mean mask probability: other summation order
        assert torch.allclose(inst.scores, plain_inst.scores, rtol=1e-6, atol=0)


@pytest.mark.parametrize("resize_before", [False, True])
@pytest.mark.parametrize("output", [(90, 111), (30, 41)])
@pytest.mark.parametrize("intel_cpu", [False, True], ids=["onednn-product", "mkl-product"])
def test_semantic_only_equals_all_queries_path(resize_before, output, intel_cpu, monkeypatch):
    import mask2former.postprocessing

    monkeypatch.setattr(mask2former.postprocessing, "_intel_cpu", lambda: intel_cpu)  # which product runs
    class_logits, mask_logits = random_predictions(seed=1)
    options = PostprocessOptions(num_classes=7, resize_before_semantic=resize_before)
    sizes = ((52, 68), (45, 60), output)
    ours = postprocess_image(class_logits, mask_logits, *sizes, options)
    plain = postprocess_all_queries(class_logits, mask_logits, *sizes, options)
    assert set(ours) == {"sem_seg"}
    assert torch.allclose(ours["sem_seg"], plain["sem_seg"], rtol=1e-5, atol=1e-5)
    # detectron2's way: resize the masks or the K-channel map to the output
    padded = F.interpolate(mask_logits[None], size=(52, 68), mode="bilinear", align_corners=False)[0]
    if resize_before:
        reference = semantic_inference(class_logits, sem_seg_postprocess(padded, (45, 60), *output))
    else:
        reference = sem_seg_postprocess(semantic_inference(class_logits, padded), (45, 60), *output)
    assert ours["sem_seg"].shape == (7, *output)
    assert torch.allclose(ours["sem_seg"], reference, rtol=1e-5, atol=1e-5)


def test_model_inference_outputs_and_metadata():
    name = "test_inference_tiny_panoptic"
    MetadataCatalog.get(name).set(thing_dataset_id_to_contiguous_id={5: 0, 9: 2})
    torch.manual_seed(0)
    model = tiny_maskformer(num_queries=6, num_classes=3, metadata=MetadataCatalog.get(name)).eval()
    assert model.thing_classes() == frozenset({0, 2})
    image = torch.randint(0, 256, (3, 50, 70), dtype=torch.uint8)
    with torch.no_grad():
        (out,) = model([{"image": image, "height": 100, "width": 140}])
    assert out["sem_seg"].shape == (3, 100, 140)
    seg, info = out["panoptic_seg"]
    assert seg.shape == (100, 140) and seg.dtype == torch.int32
    for s in info:
        assert s["isthing"] == (s["category_id"] in (0, 2))
    inst = out["instances"]
    assert inst.image_size == (100, 140) and inst.pred_masks.shape[1:] == (100, 140)
    assert set(inst.pred_classes.tolist()) <= {0, 2}


def test_model_without_thing_metadata():
    torch.manual_seed(0)
    model = tiny_maskformer(num_queries=4, num_classes=3, panoptic_on=False).eval()
    assert model.thing_classes() is None
    with torch.no_grad():
        (out,) = model([{"image": torch.zeros(3, 33, 40, dtype=torch.uint8)}])
    assert out["sem_seg"].shape == (3, 33, 40)
    assert len(out["instances"]) == 10 and "panoptic_seg" not in out


def test_model_rejects_bad_image():
    model = tiny_maskformer().eval()
    with pytest.raises(ValueError, match=r"batched_inputs\[1\]\['image'\]"):
        model([{"image": torch.zeros(3, 8, 8, dtype=torch.uint8)}, {"image": torch.zeros(8, 8)}])


def test_bfloat16_inference_of_the_quickstart_model_stays_close_to_float32():
    config = QUICKSTART / "panoptic_R18_synthetic.yaml"
    cfg = build_config(str(config), ["MODEL.DEVICE", "cpu", "DATASETS.TEST", "[]"])
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    assert model.inference_dtype == torch.float32
    image = torch.randint(0, 256, (3, 128, 160), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        (fp32,) = model([{"image": image}])
        model.inference_dtype = torch.bfloat16  # as MASK2FORMER.INFERENCE_DTYPE "bfloat16" sets it
        (bf16,) = model([{"image": image}])
    assert bf16["sem_seg"].dtype == torch.float32  # post-processing stays in float32
    # stated tolerance: semantic scores (sums of probabilities, here up to ~3) within 0.1,
    # and the per-pixel argmax agreeing on >= 95% of the pixels
    assert (bf16["sem_seg"] - fp32["sem_seg"]).abs().max() < 0.1
    assert (bf16["sem_seg"].argmax(0) == fp32["sem_seg"].argmax(0)).float().mean() > 0.95
    assert bf16["instances"].pred_masks.shape == fp32["instances"].pred_masks.shape


def test_inference_dtype_key_is_checked():
    config = QUICKSTART / "panoptic_R18_synthetic_test.yaml"
    cfg = build_config(str(config), ["MODEL.DEVICE", "cpu", "MASK2FORMER.INFERENCE_DTYPE", "float16"])
    with pytest.raises(ValueError, match="MASK2FORMER.INFERENCE_DTYPE"):
        build_model(cfg)
    cfg.MASK2FORMER.INFERENCE_DTYPE = "bfloat16"
    assert build_model(cfg).inference_dtype == torch.bfloat16


def test_postprocessing_core_needs_only_torch():
    # The exported-model runner loads the module on its own, without detectron2 or the
    # rest of the package (whose __init__ registers detectron2 components).
    script = f"""
import importlib.util, sys
sys.modules["detectron2"] = None  # any import of detectron2 now fails
spec = importlib.util.spec_from_file_location("postprocessing", {str(ROOT / "mask2former" / "postprocessing.py")!r})
core = importlib.util.module_from_spec(spec)
spec.loader.exec_module(core)
import torch
options = core.PostprocessOptions(num_classes=2, panoptic_on=True, instance_on=True, detections_per_image=3)
result = core.postprocess_image(torch.randn(4, 3), torch.randn(4, 8, 8), (32, 32), (30, 29), (30, 29), options)
assert set(result) == {{"sem_seg", "panoptic_seg", "instances"}}
assert not any(name.startswith(("detectron2", "mask2former")) for name in sys.modules if sys.modules[name])
"""
    subprocess.run([sys.executable, "-c", script], check=True, timeout=120)
