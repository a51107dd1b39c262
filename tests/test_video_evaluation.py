"""YouTube-VIS AP/AR on hand-made cases with known answers, a cross-check against
pycocotools on one-frame videos, and the evaluator's results file."""

import contextlib
import io
import json

import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from detectron2.data import DatasetCatalog, MetadataCatalog

from mask2former.video.data import register_ytvis_dataset
from mask2former.video.evaluation import (
    YTVISEvaluator,
    evaluate_tracks,
    track_iou,
    track_rles,
    video_predictions_to_results,
    ytvis_ground_truth,
)

H, W = 40, 40


def _box(x0, y0, w, h, height=H, width=W):
    mask = np.zeros((height, width), dtype=np.uint8)
    mask[y0 : y0 + h, x0 : x0 + w] = 1
    return mask


def _rles(frames):
    """Per-frame masks (None where absent) -> track RLEs."""
    return [None if m is None else mask_util.encode(np.asfortranarray(m)) for m in frames]


def _gt(video_id, category_id, frames):
    rles = _rles(frames)
    areas = [float(mask_util.area(r)) for r in rles if r is not None]
    return {"video_id": video_id, "category_id": category_id, "rles": rles,
            "area": float(np.mean(areas)), "iscrowd": 0}  # fmt: skip


def _dt(video_id, category_id, frames, score):
    empty = np.zeros((H, W), dtype=np.uint8)
    frames = [empty if m is None else m for m in frames]
    return {"video_id": video_id, "category_id": category_id, "rles": _rles(frames), "score": score}


A = [_box(2, 2, 8, 8), _box(4, 2, 8, 8), _box(6, 2, 8, 8)]  # 64-pixel square moving right
B = [_box(20, 20, 10, 10), _box(20, 22, 10, 10), _box(20, 24, 10, 10)]


def test_track_iou_sums_over_frames():
    # Frame 0: equal; frame 1: only the gt; frame 2: disjoint masks of 64 pixels each.
    gt = _rles([A[0], A[1], A[2]])
    dt = _rles([A[0], None, _box(30, 30, 8, 8)])
    assert track_iou(dt, gt) == pytest.approx(64 / (64 + 64 + 128))


def test_perfect_prediction_is_100():
    gt = [_gt(1, 1, A), _gt(1, 2, B), _gt(2, 1, B)]
    dt = [_dt(1, 1, A, 0.9), _dt(1, 2, B, 0.8), _dt(2, 1, B, 0.7)]
    metrics = evaluate_tracks(gt, dt)
    for name in ("AP", "AP50", "AP75", "APs", "AR1", "AR10", "AR100"):
        assert metrics[name] == pytest.approx(100.0), name
    assert metrics["APm"] == metrics["APl"] == -1.0  # no medium or large object
    # A lower-scored false positive after the true positive leaves AP at 100.
    assert evaluate_tracks(gt, dt + [_dt(2, 1, A, 0.1)])["AP"] == pytest.approx(100.0)
    # The right masks with the wrong class score nothing.
    assert evaluate_tracks(gt[:1], [_dt(1, 2, A, 0.9)])["AP"] == 0.0


def test_one_frame_wrong():
    # Two of three frames right, the third missed: IoU 2/3 passes 0.50..0.65 only.
    metrics = evaluate_tracks([_gt(1, 1, A)], [_dt(1, 1, [A[0], A[1], None], 0.9)])
    assert metrics["AP"] == pytest.approx(40.0)
    assert metrics["AP50"] == pytest.approx(100.0) and metrics["AP75"] == 0.0
    assert metrics["AR100"] == pytest.approx(40.0)


def test_swapped_identities_score_zero():
    b = [_box(20, 20, 8, 8), _box(22, 20, 8, 8), _box(24, 20, 8, 8)]  # same size as A
    # Two frames; each predicted track follows one object, then the other: IoU 1/3.
    gt = [_gt(1, 1, A[:2]), _gt(1, 1, b[:2])]
    swapped = [_dt(1, 1, [A[0], b[1]], 0.9), _dt(1, 1, [b[0], A[1]], 0.8)]
    assert track_iou(swapped[0]["rles"], gt[0]["rles"]) == pytest.approx(1 / 3)
    metrics = evaluate_tracks(gt, swapped)
    assert metrics["AP"] == metrics["AP50"] == metrics["AR100"] == 0.0
    assert evaluate_tracks(gt, [_dt(1, 1, A[:2], 0.9), _dt(1, 1, b[:2], 0.8)])["AP"] == 100.0
    # Three frames, swapped in the last one only: IoU 2/4 passes 0.50 alone.
    gt = [_gt(1, 1, A), _gt(1, 1, b)]
    swapped = [_dt(1, 1, [A[0], A[1], b[2]], 0.9), _dt(1, 1, [b[0], b[1], A[2]], 0.8)]
    metrics = evaluate_tracks(gt, swapped)
    assert metrics["AP50"] == pytest.approx(100.0)
    assert metrics["AP"] == pytest.approx(10.0) and metrics["AP75"] == 0.0


def test_missing_object():
    gt = [_gt(1, 1, A), _gt(1, 1, B)]
    metrics = evaluate_tracks(gt, [_dt(1, 1, A, 0.9)])
    # Precision 1 up to recall 1/2: 51 of the 101 recall points.
    assert metrics["AP"] == pytest.approx(100 * 51 / 101)
    assert metrics["AR100"] == pytest.approx(50.0)


def test_one_frame_videos_match_pycocotools():
    """A one-frame video is an image: the metrics must equal COCOeval's segm stats."""
    rng = np.random.RandomState(0)
    size = 128
    images, annotations, results, gt, dt = [], [], [], [], []
    for image_id in range(1, 7):
        images.append({"id": image_id, "height": size, "width": size})
        for _ in range(3):
            w, h = rng.randint(4, 110, size=2)
            x, y = rng.randint(0, size - w), rng.randint(0, size - h)
            category = int(rng.randint(1, 3))
            mask = _box(x, y, w, h, size, size)
            rle = mask_util.encode(np.asfortranarray(mask))
            annotations.append({"id": len(annotations) + 1, "image_id": image_id,
                                "category_id": category, "segmentation": rle,
                                "area": float(w * h), "iscrowd": 0,
                                "bbox": [float(x), float(y), float(w), float(h)]})  # fmt: skip
            gt.append({"video_id": image_id, "category_id": category, "rles": [rle],
                       "area": float(w * h), "iscrowd": 0})  # fmt: skip
            for _ in range(2):  # shifted, resized guesses
                dx, dy, dw = rng.randint(-12, 13, size=3)
                guess = _box(max(0, x + dx), max(0, y + dy), max(2, w + dw), h, size, size)
                guess_rle = mask_util.encode(np.asfortranarray(guess))
                score = float(rng.rand())
                guess_category = category if rng.rand() < 0.8 else 3 - category
                results.append({"image_id": image_id, "category_id": guess_category,
                                "segmentation": guess_rle, "score": score})  # fmt: skip
                dt.append({"video_id": image_id, "category_id": guess_category,
                           "rles": [guess_rle], "score": score})  # fmt: skip
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = {"images": images, "annotations": annotations,
                        "categories": [{"id": 1}, {"id": 2}]}  # fmt: skip
        coco.createIndex()
        coco_eval = COCOeval(coco, coco.loadRes(results), "segm")
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    ours = evaluate_tracks(gt, dt)
    names = ["AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"]
    expected = [100 * s if s > -1 else -1.0 for s in coco_eval.stats]
    np.testing.assert_allclose([ours[n] for n in names], expected, atol=1e-9)
    assert 5 < ours["AP"] < 95  # a case with matches and misses


def test_evaluator_results_file_and_metrics(tmp_path):
    """Polygons, RLE and nulls in the json; the model's output format in; the official
    submission format out."""
    polygon_a0 = [[2.0, 2.0, 10.0, 2.0, 10.0, 10.0, 2.0, 10.0]]
    rle_b = [mask_util.encode(np.asfortranarray(m)) for m in B]
    for r in rle_b:
        r["counts"] = r["counts"].decode("ascii")
    data = {
        "videos": [{"id": 7, "height": H, "width": W, "length": 3,
                    "file_names": [f"v/{t}.jpg" for t in range(3)]}],  # fmt: skip
        "categories": [{"id": 4, "name": "cat"}, {"id": 9, "name": "dog"}],
        "annotations": [
            {"id": 1, "video_id": 7, "category_id": 4, "iscrowd": 0,
             "segmentations": [polygon_a0, None, None], "areas": [64, None, None],
             "bboxes": [[2, 2, 8, 8], None, None]},
            {"id": 2, "video_id": 7, "category_id": 9, "iscrowd": 0,
             "segmentations": rle_b, "areas": [100, 100, 100], "bboxes": [[20, 20, 10, 10]] * 3},
        ],  # fmt: skip
    }
    json_file = tmp_path / "valid.json"
    json_file.write_text(json.dumps(data))
    (tmp_path / "frames").mkdir()
    register_ytvis_dataset("tiny_ytvis_eval", str(json_file), str(tmp_path / "frames"))
    try:
        a0 = A[0]  # the polygon's pixels
        empty = np.zeros((H, W), dtype=bool)
        output = {
            "image_size": (H, W),
            "pred_scores": [0.9, 0.8],
            "pred_labels": [0, 1],  # contiguous: cat, dog
            "pred_masks": [
                torch.as_tensor(np.stack([a0, empty, empty])).bool(),
                torch.as_tensor(np.stack(B)).bool(),
            ],
        }
        evaluator = YTVISEvaluator("tiny_ytvis_eval", output_dir=str(tmp_path), distributed=False)
        evaluator.reset()
        evaluator.process([{"video_id": 7, "length": 3}], output)
        segm = evaluator.evaluate()["segm"]
        assert segm["AP"] == pytest.approx(100.0)
        assert segm["AP-cat"] == pytest.approx(100.0) and segm["AP-dog"] == pytest.approx(100.0)

        results = json.loads((tmp_path / "results.json").read_text())
        assert [(r["video_id"], r["category_id"]) for r in results] == [(7, 4), (7, 9)]
        assert results[1]["score"] == pytest.approx(0.8)
        assert len(results[1]["segmentations"]) == 3
        assert isinstance(results[1]["segmentations"][0]["counts"], str)
        decoded = mask_util.decode(track_rles(results[1]["segmentations"], H, W)[2])
        np.testing.assert_array_equal(decoded, B[2])
        evaluator.reset()
        two_frames = dict(output, pred_masks=[m[:2] for m in output["pred_masks"]])
        evaluator.process([{"video_id": 7}], two_frames)
        with pytest.raises(ValueError, match="video 7 has 2 masks.*3 frames"):
            evaluator.evaluate()
        with pytest.raises(ValueError, match="class 5"):
            video_predictions_to_results(7, dict(output, pred_labels=[5, 1]), {0: 4, 1: 9})
        assert [g["area"] for g in ytvis_ground_truth(data)] == [64.0, 100.0]
    finally:
        DatasetCatalog.remove("tiny_ytvis_eval")
        MetadataCatalog.remove("tiny_ytvis_eval")
