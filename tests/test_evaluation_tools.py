"""Boundary IoU / Boundary AP and the PQ of semantic predictions: hand-made cases with
known answers, and both command-line tools on a briefly trained quickstart model's outputs."""
import copy
import importlib.util
import json
import sys
from pathlib import Path

import cv2
import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from PIL import Image
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from mask2former.data.datasets.synthetic_shapes import register_synthetic_split
from mask2former.evaluation import (
    BoundaryAPEvaluator,
    SemanticPQEvaluator,
    boundary_iou,
    build_dataset_evaluator,
    mask_boundary,
    semantic_pq,
)
from mask2former.evaluation.boundary_iou import boundary_dilation, evaluate_boundary_ap

REPO = Path(__file__).resolve().parents[1]


def _load_tool(name):
    spec = importlib.util.spec_from_file_location(name, REPO / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _square(size=100, top=40, left=40, side=20):
    mask = np.zeros((size, size), dtype=bool)
    mask[top : top + side, left : left + side] = True
    return mask


def _rle(mask):
    rle = mask_util.encode(np.asfortranarray(mask, dtype=np.uint8))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


# ----------------------------------------------------------------------- Boundary IoU
def test_boundary_of_a_square_is_its_ring_of_width_d():
    # 100 x 100 image: d = round(0.02 * 141.42) = 3
    assert boundary_dilation(100, 100, 0.02) == 3
    ring = _square()
    ring[43:57, 43:57] = False  # the 14 x 14 inside lies farther than 3 px from the contour
    np.testing.assert_array_equal(mask_boundary(_square(), 3), ring)
    # the image border is a contour too
    full = np.ones((10, 10), dtype=bool)
    assert mask_boundary(full, 2).sum() == 100 - 6 * 6


def test_boundary_is_what_d_erosions_remove():
    """The distance-transform boundary equals mask minus its d-fold 3x3 erosion (with
    background beyond the image border), for blobs that touch the border or not."""
    rng = np.random.default_rng(1)
    kernel = np.ones((3, 3), np.uint8)
    for _ in range(20):
        mask = (cv2.GaussianBlur(rng.random((50, 60)), (0, 0), rng.uniform(1, 5)) > 0.5).astype(np.uint8)
        d = int(rng.integers(1, 6))
        framed = cv2.copyMakeBorder(mask, 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0)
        eroded = cv2.erode(framed, kernel, iterations=d, borderType=cv2.BORDER_CONSTANT, borderValue=0)
        np.testing.assert_array_equal(mask_boundary(mask, d), (mask - eroded[1:-1, 1:-1]) > 0)


def test_square_shifted_by_one_pixel():
    square, shifted = _square(), _square(left=41)
    # rings of 400 - 14^2 = 204 px each; both squares cover rows 40..59, columns 41..59
    # (380 px), minus the union of the insides, rows 43..56 x columns 43..57 (210 px)
    intersection = 380 - 210
    assert boundary_iou(square, shifted) == pytest.approx(intersection / (2 * 204 - intersection))  # 5/7
    assert boundary_iou(square, shifted) < (380 / 420)  # far below the mask IoU


def test_thin_structure_is_all_boundary():
    # a 4 px wide bar is within d = 3 of its contour everywhere: boundary IoU = mask IoU
    bar, shifted = np.zeros((100, 100), bool), np.zeros((100, 100), bool)
    bar[30:70, 50:54] = True
    shifted[30:70, 51:55] = True
    np.testing.assert_array_equal(mask_boundary(bar, 3), bar)
    assert boundary_iou(bar, shifted) == pytest.approx(3 * 40 / (5 * 40))


def test_identical_masks_score_one():
    rng = np.random.default_rng(0)
    blob = cv2.GaussianBlur(rng.random((64, 80)), (0, 0), 4) > 0.5
    for mask in (_square(), blob, np.ones((8, 8), bool)):
        assert boundary_iou(mask, mask.copy()) == 1.0


# ----------------------------------------------------------------------- Boundary AP
def _one_image_coco(masks):
    h, w = masks[0].shape
    coco = COCO()
    coco.dataset = {
        "images": [{"id": 1, "height": h, "width": w}],
        "categories": [{"id": 7, "name": "thing"}],
        "annotations": [
            {"id": i + 1, "image_id": 1, "category_id": 7, "segmentation": _rle(m), "area": int(m.sum()),
             "bbox": list(mask_util.toBbox(_rle(m))), "iscrowd": 0}
            for i, m in enumerate(masks)
        ],
    }
    coco.createIndex()
    return coco


def test_boundary_ap_of_a_shifted_square_by_hand():
    """Boundary IoU 5/7 clears the thresholds 0.50..0.70 (5 of 10), mask IoU 19/21 clears
    0.50..0.90 (9 of 10): Boundary AP 50, mask AP 90."""
    coco_gt = _one_image_coco([_square()])
    results = [{"image_id": 1, "category_id": 7, "segmentation": _rle(_square(left=41)), "score": 0.9}]
    boundary = evaluate_boundary_ap(coco_gt, copy.deepcopy(results))
    assert boundary.stats[0] == pytest.approx(0.5)
    assert boundary.stats[3] == pytest.approx(0.5)  # 400 px: a small object
    mask = COCOeval(coco_gt, coco_gt.loadRes(copy.deepcopy(results)), "segm")
    mask.evaluate()
    mask.accumulate()
    mask.summarize()
    assert mask.stats[0] == pytest.approx(0.9)


@pytest.fixture(scope="module")
def tiny_instances(tmp_path_factory):
    prefix = "test_evaluation_tools_tiny"
    register_synthetic_split(prefix, tmp_path_factory.mktemp("tiny") / "split", 4, (96, 112), 3)
    DatasetCatalog.get(f"{prefix}_instance")  # writes the files
    yield f"{prefix}_instance", MetadataCatalog.get(f"{prefix}_instance").json_file
    for view in ("panoptic", "instance", "sem_seg"):
        DatasetCatalog.remove(f"{prefix}_{view}")
        MetadataCatalog.remove(f"{prefix}_{view}")


def _results_from_gt(coco_gt, transform):
    results = []
    for ann in coco_gt.dataset["annotations"]:
        mask = transform(coco_gt.annToMask(ann))
        results.append({"image_id": ann["image_id"], "category_id": ann["category_id"],
                        "segmentation": _rle(mask), "score": 1.0})
    return results


def test_boundary_ap_is_100_for_ground_truth_and_lower_for_eroded_masks(tiny_instances):
    _, gt_json = tiny_instances
    coco_gt = COCO(gt_json)
    perfect = evaluate_boundary_ap(coco_gt, _results_from_gt(coco_gt, lambda m: m))
    assert perfect.stats[0] == pytest.approx(1.0)

    eroded_results = _results_from_gt(coco_gt, lambda m: cv2.erode(m, np.ones((3, 3), np.uint8)))
    eroded = evaluate_boundary_ap(coco_gt, copy.deepcopy(eroded_results)).stats[0]
    mask = COCOeval(coco_gt, coco_gt.loadRes(eroded_results), "segm")
    mask.evaluate()
    mask.accumulate()
    mask.summarize()
    assert eroded < mask.stats[0] <= 1.0  # the boundary sees the lost pixel ring more than the mask does


def test_boundary_ap_evaluator_on_model_style_outputs(tiny_instances):
    from detectron2.structures import Boxes, Instances

    name, gt_json = tiny_instances
    coco_gt = COCO(gt_json)
    to_contiguous = MetadataCatalog.get(name).thing_dataset_id_to_contiguous_id
    evaluator = BoundaryAPEvaluator(name)
    evaluator.reset()
    for record in DatasetCatalog.get(name):
        anns = coco_gt.imgToAnns[record["image_id"]]
        inst = Instances((record["height"], record["width"]))
        inst.pred_masks = torch.as_tensor(np.stack([coco_gt.annToMask(a) for a in anns]), dtype=torch.float32)
        inst.pred_boxes = Boxes(torch.tensor([[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in anns)]))
        inst.scores = torch.ones(len(anns))
        inst.pred_classes = torch.tensor([to_contiguous[a["category_id"]] for a in anns])
        evaluator.process([{"image_id": record["image_id"]}], [{"instances": inst}])
    assert evaluator.evaluate()["boundary_segm"]["AP"] == pytest.approx(100.0)


# ----------------------------------------------------------------------- semantic PQ
@pytest.fixture
def hand_dataset(tmp_path):
    """Two 4 x 4 images, classes a, b, c, ignore label 255."""
    gt1 = np.zeros((4, 4), np.uint8)
    gt1[:, 2:] = 1  # a | b
    gt2 = np.full((4, 4), 2, np.uint8)
    gt2[0] = 255  # c under a void row
    records = []
    for i, gt in enumerate((gt1, gt2)):
        Image.fromarray(gt).save(tmp_path / f"gt{i}.png")
        records.append({"file_name": f"img{i}.jpg", "sem_seg_file_name": str(tmp_path / f"gt{i}.png"),
                        "height": 4, "width": 4, "image_id": i})
    name = "test_evaluation_tools_hand_sem_seg"
    DatasetCatalog.register(name, lambda: copy.deepcopy(records))
    MetadataCatalog.get(name).set(stuff_classes=["a", "b", "c"], ignore_label=255, evaluator_type="sem_seg")
    pred1 = np.zeros((4, 4), np.int64)
    pred1[:, 3] = 1  # a takes 3 columns, b keeps one
    pred2 = np.full((4, 4), 2, np.int64)
    pred2[0] = 1  # b only on the void row
    yield name, {"img0.jpg": pred1, "img1.jpg": pred2}
    DatasetCatalog.remove(name)
    MetadataCatalog.remove(name)


# a: IoU 8/12 > 0.5, one TP. b: IoU 4/8 = 0.5 is no match: one FN and one FP in image 0; in
# image 1 it lies on void only (no FP). c: 12 px predicted on 12 + 4 void px, IoU 1, one TP.
# PQ = mean(2/3, 0, 1), SQ = mean(2/3, 0, 1), RQ = mean(1, 0, 1).
HAND_PQ = {"PQ": 100 * 5 / 9, "SQ": 100 * 5 / 9, "RQ": 100 * 2 / 3}


def test_semantic_pq_by_hand(hand_dataset):
    name, predictions = hand_dataset
    res = semantic_pq(name, predictions.__getitem__)["semantic_pq"]
    for key, value in HAND_PQ.items():
        assert res[key] == pytest.approx(value), key
    assert res["PQ_st"] == pytest.approx(HAND_PQ["PQ"]) and np.isnan(res["PQ_th"])


def test_semantic_pq_evaluator_and_tool_agree_with_hand_result(hand_dataset, tmp_path):
    name, predictions = hand_dataset
    evaluator = build_dataset_evaluator(name, semantic_pq=True, output_folder=str(tmp_path / "eval"))
    evaluator.reset()
    for file_name, labels in predictions.items():
        scores = torch.zeros((3, 4, 4)).scatter_(0, torch.from_numpy(labels)[None], 1.0)
        evaluator.process([{"file_name": file_name}], [{"sem_seg": scores}])
    res = evaluator.evaluate()
    for key, value in HAND_PQ.items():
        assert res["semantic_pq"][key] == pytest.approx(value), key

    tool = _load_tool("evaluate_pq_for_semantic_segmentation")
    out = tmp_path / "pq.json"
    argv = ["--dataset-name", name, "--json-file", str(tmp_path / "eval" / "sem_seg_predictions.json")]
    assert tool.main(argv + ["--output", str(out)]) == 0
    for key, value in HAND_PQ.items():
        assert json.loads(out.read_text())[key] == pytest.approx(value), key


def test_semantic_pq_errors_name_the_image(hand_dataset):
    name, predictions = hand_dataset
    with pytest.raises(ValueError, match="img0.jpg"):
        semantic_pq(name, lambda f: predictions[f][:2])
    evaluator = SemanticPQEvaluator(name, distributed=False)
    with pytest.raises(ValueError, match="no prediction for img0.jpg"):
        evaluator.evaluate()


# ------------------------------------------------ the tools on a quickstart model's outputs
def test_tools_reproduce_the_evaluators_on_quickstart_outputs(tmp_path):
    """One training iteration of the quickstart test config, evaluated with both options on;
    the tools, run on the result files it writes, give the evaluators' numbers."""
    from detectron2.engine import default_argument_parser

    sys.path.insert(0, str(REPO))
    try:
        import train_net
    finally:
        sys.path.remove(str(REPO))
    config = REPO / "configs" / "quickstart" / "panoptic_R18_synthetic_test.yaml"
    opts = ["OUTPUT_DIR", str(tmp_path), "SOLVER.MAX_ITER", "1",
            "MASK2FORMER.EVAL.BOUNDARY_AP", "True", "MASK2FORMER.EVAL.SEMANTIC_PQ", "True"]
    results = train_net.main(default_argument_parser().parse_args(["--config-file", str(config)] + opts))
    assert {"boundary_segm", "semantic_pq", "segm", "sem_seg"} <= set(results)
    inference = tmp_path / "inference"
    dataset = "synthetic_shapes_mini_val_panoptic"

    instance_results = inference / "coco_instances_results.json"
    assert json.loads(instance_results.read_text()), "the model made no detection"
    out = tmp_path / "boundary_ap.json"
    argv = ["--gt-json", MetadataCatalog.get(dataset).json_file, "--dt-json", str(instance_results)]
    assert _load_tool("evaluate_coco_boundary_ap").main(argv + ["--output", str(out)]) == 0
    boundary = json.loads(out.read_text())
    for key in ("AP", "AP50", "AP75", "APs", "APm"):
        assert boundary[key] == pytest.approx(results["boundary_segm"][key], abs=1e-9, nan_ok=True), key

    out = tmp_path / "semantic_pq.json"
    argv = ["--dataset-name", dataset, "--json-file", str(inference / "sem_seg_predictions.json")]
    assert _load_tool("evaluate_pq_for_semantic_segmentation").main(argv + ["--output", str(out)]) == 0
    pq = json.loads(out.read_text())
    assert pq == pytest.approx(results["semantic_pq"], abs=1e-9)
    assert 0.0 <= pq["PQ"] <= 100.0


def test_tools_report_unusable_inputs_in_one_line(tmp_path, hand_dataset):
    name, _ = hand_dataset
    gt = tmp_path / "gt.json"
    gt.write_text(json.dumps({"images": [{"id": 1, "height": 4, "width": 4}], "annotations": [],
                              "categories": [{"id": 1, "name": "x"}]}))
    (tmp_path / "empty.json").write_text("[]")
    (tmp_path / "other_image.json").write_text(json.dumps(
        [{"image_id": 9, "category_id": 1, "score": 1.0, "segmentation": _rle(np.ones((4, 4), bool))}]))
    (tmp_path / "broken.json").write_text("[{")
    boundary_ap, semantic = "evaluate_coco_boundary_ap", "evaluate_pq_for_semantic_segmentation"
    cases = [
        (boundary_ap, ["--gt-json", str(gt), "--dt-json", str(tmp_path / "missing.json")], "missing.json"),
        (boundary_ap, ["--gt-json", str(gt), "--dt-json", str(tmp_path / "empty.json")], "empty.json"),
        (boundary_ap, ["--gt-json", str(gt), "--dt-json", str(tmp_path / "other_image.json")], "image ids not in"),
        (semantic, ["--dataset-name", name, "--json-file", str(tmp_path / "broken.json")], "broken.json is not valid"),
        (semantic, ["--dataset-name", name, "--json-file", str(tmp_path / "empty.json")], "no prediction for img0"),
        (semantic, ["--dataset-name", "no_such_dataset", "--json-file", str(gt)], "no_such_dataset"),
    ]
    for tool, argv, message in cases:
        with pytest.raises((ValueError, OSError), match=message):
            _load_tool(tool).main(argv)
