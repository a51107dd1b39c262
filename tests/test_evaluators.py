"""Evaluators end to end on a tiny synthetic split, with predictions built from the
ground truth: perfect predictions score 100, known perturbations lose what an independent
computation in the test says, and stored per-image predictions stay compact."""
import copy
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
from PIL import Image

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.evaluation import (
    CityscapesInstanceEvaluator,
    CityscapesSemSegEvaluator,
    COCOEvaluator,
    DatasetEvaluators,
)
from detectron2.structures import Boxes, Instances

from mask2former.config import build_config
from mask2former.data.datasets.synthetic_shapes import register_synthetic_split
from mask2former.evaluation import (
    InstanceSegEvaluator,
    ValidatedCOCOEvaluator,
    PanopticEvaluator,
    SemSegEvaluator,
    build_dataset_evaluator,
    build_evaluator,
    detectron2_ops_built,
)

PREFIX = "test_evaluators_tiny"
NUM_IMAGES, SIZE, SEED = 5, (96, 112), 4


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A registered 5-image split; yields its panoptic records."""
    register_synthetic_split(PREFIX, tmp_path_factory.mktemp("tiny") / "split", NUM_IMAGES, SIZE, SEED)
    yield DatasetCatalog.get(f"{PREFIX}_panoptic")
    for view in ("panoptic", "instance", "sem_seg"):
        DatasetCatalog.remove(f"{PREFIX}_{view}")
        MetadataCatalog.remove(f"{PREFIX}_{view}")


def _rgb2id(rgb):
    rgb = rgb.astype(np.int64)
    return rgb[..., 0] + 256 * rgb[..., 1] + 256 * 256 * rgb[..., 2]


def _panoptic_gt(record):
    """(segment id map (H, W) int64, segments_info with contiguous ids)."""
    return _rgb2id(np.array(Image.open(record["pan_seg_file_name"]))), copy.deepcopy(record["segments_info"])


def _semantic_gt(record):
    return np.array(Image.open(record["sem_seg_file_name"]), dtype=np.int64)


def _inputs(record):
    return [{k: record[k] for k in ("file_name", "image_id", "height", "width")}]


def _panoptic_output(ids, segments):
    info = [{"id": s["id"], "category_id": s["category_id"], "isthing": s["isthing"]} for s in segments]
    return [{"panoptic_seg": (torch.from_numpy(ids.astype(np.int32)), info)}]


def _semantic_output(labels, num_classes):
    scores = torch.zeros((num_classes,) + labels.shape)
    scores.scatter_(0, torch.from_numpy(labels)[None], 1.0)
    return [{"sem_seg": scores}]


def _instances_output(masks, classes, height, width):
    """Instances with score 1 from (N, H, W) bool masks and (N,) contiguous classes."""
    inst = Instances((height, width))
    masks = torch.as_tensor(np.asarray(masks, dtype=bool).reshape(-1, height, width))
    boxes = torch.zeros(len(masks), 4)
    for i, m in enumerate(masks):
        ys, xs = torch.nonzero(m, as_tuple=True)
        boxes[i] = torch.tensor([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
    inst.pred_masks = masks.float()
    inst.pred_boxes = Boxes(boxes)
    inst.scores = torch.ones(len(masks))
    inst.pred_classes = torch.as_tensor(np.asarray(classes), dtype=torch.int64)
    return [{"instances": inst}]


def _thing_masks(record):
    ids, segments = _panoptic_gt(record)
    things = [s for s in segments if s["isthing"]]
    return np.stack([ids == s["id"] for s in things]) if things else np.zeros((0,) + ids.shape, bool), [
        s["category_id"] for s in things
    ]


def _run(evaluator, records, make_outputs):
    evaluator.reset()
    for record in records:
        evaluator.process(_inputs(record), make_outputs(record))
    return evaluator.evaluate()


def _cfg(semantic=False, instance=False, panoptic=False):
    cfg = build_config()
    cfg.MODEL.MASK_FORMER.TEST.SEMANTIC_ON = semantic
    cfg.MODEL.MASK_FORMER.TEST.INSTANCE_ON = instance
    cfg.MODEL.MASK_FORMER.TEST.PANOPTIC_ON = panoptic
    return cfg


# ---------------------------------------------------------------------------------------
# Evaluator choice
# ---------------------------------------------------------------------------------------
def test_build_evaluator_follows_evaluator_type_and_outputs(tiny):
    all_on = build_evaluator(_cfg(True, True, True), f"{PREFIX}_panoptic")
    assert isinstance(all_on, DatasetEvaluators)
    kinds = [type(e) for e in all_on._evaluators]
    assert kinds == [SemSegEvaluator, PanopticEvaluator, ValidatedCOCOEvaluator]
    assert all_on._evaluators[2]._use_fast_impl == detectron2_ops_built()
    assert type(build_evaluator(_cfg(panoptic=True), f"{PREFIX}_panoptic")) is PanopticEvaluator
    assert type(build_evaluator(_cfg(semantic=True), f"{PREFIX}_sem_seg")) is SemSegEvaluator
    assert type(build_evaluator(_cfg(), f"{PREFIX}_instance")) is ValidatedCOCOEvaluator
    with pytest.raises(NotImplementedError, match=f"{PREFIX}_panoptic"):
        build_evaluator(_cfg(), f"{PREFIX}_panoptic")


def test_detectron2_ops_detection_reads_placeholder():
    from detectron2 import _C

    assert detectron2_ops_built() == bool(getattr(_C, "BUILT", True))


@pytest.mark.parametrize(
    "evaluator_type, flags, expected",
    [
        ("cityscapes_sem_seg", {}, [CityscapesSemSegEvaluator]),
        ("cityscapes_instance", {}, [CityscapesInstanceEvaluator]),
        ("cityscapes_panoptic_seg", dict(semantic_on=True, instance_on=True),
         [CityscapesSemSegEvaluator, CityscapesInstanceEvaluator]),
    ],
)
def test_build_evaluator_cityscapes(evaluator_type, flags, expected):
    name = f"test_evaluators_{evaluator_type}"
    MetadataCatalog.get(name).set(evaluator_type=evaluator_type)
    try:
        flags = dict(dict(semantic_on=False, instance_on=False, panoptic_on=False), **flags)
        built = build_dataset_evaluator(name, **flags)
        evaluators = built._evaluators if isinstance(built, DatasetEvaluators) else [built]
        assert [type(e) for e in evaluators] == expected
    finally:
        MetadataCatalog.remove(name)


# ---------------------------------------------------------------------------------------
# Perfect predictions
# ---------------------------------------------------------------------------------------
def test_perfect_predictions_score_100(tiny):
    pq = _run(PanopticEvaluator(f"{PREFIX}_panoptic"), tiny, lambda r: _panoptic_output(*_panoptic_gt(r)))
    for key in ("PQ", "SQ", "RQ", "PQ_th", "PQ_st"):
        assert pq["panoptic_seg"][key] == pytest.approx(100.0)

    num_classes = len(MetadataCatalog.get(f"{PREFIX}_panoptic").stuff_classes)
    sem = _run(SemSegEvaluator(f"{PREFIX}_panoptic"), tiny, lambda r: _semantic_output(_semantic_gt(r), num_classes))
    for key in ("mIoU", "fwIoU", "mACC", "pACC"):
        assert sem["sem_seg"][key] == pytest.approx(100.0)

    def instances(record):
        masks, classes = _thing_masks(record)
        return _instances_output(masks, classes, record["height"], record["width"])

    ap = _run(COCOEvaluator(f"{PREFIX}_instance", tasks=("segm",), use_fast_impl=False), tiny, instances)
    assert ap["segm"]["AP"] == pytest.approx(100.0)
    assert ap["segm"]["AP50"] == pytest.approx(100.0)


# ---------------------------------------------------------------------------------------
# Perturbations against an independent computation
# ---------------------------------------------------------------------------------------
def _expected_pq(tp, fp, fn):
    """PQ (IoU of matches is 1 here) averaged over the categories with any segment."""
    cats = set(tp) | set(fp) | set(fn)
    return 100 * np.mean([tp[c] / (tp[c] + 0.5 * fp[c] + 0.5 * fn[c]) for c in cats])


def _first_thing(records):
    for i, r in enumerate(records):
        for s in r["segments_info"]:
            if s["isthing"]:
                return i, s
    raise AssertionError("no thing in the split")


def test_panoptic_drop_and_relabel(tiny):
    gt_counts = Counter(s["category_id"] for r in tiny for s in r["segments_info"])
    target_index, target = _first_thing(tiny)
    num_things = len(MetadataCatalog.get(f"{PREFIX}_panoptic").thing_classes)
    new_class = (target["category_id"] + 1) % num_things

    def dropped(record):
        ids, segments = _panoptic_gt(record)
        if record["image_id"] == tiny[target_index]["image_id"]:
            ids[ids == target["id"]] = 0  # VOID
            segments = [s for s in segments if s["id"] != target["id"]]
        return _panoptic_output(ids, segments)

    def relabelled(record):
        ids, segments = _panoptic_gt(record)
        if record["image_id"] == tiny[target_index]["image_id"]:
            for s in segments:
                if s["id"] == target["id"]:
                    s["category_id"] = new_class
        return _panoptic_output(ids, segments)

    evaluator = PanopticEvaluator(f"{PREFIX}_panoptic")
    c = target["category_id"]
    tp, fp, fn = Counter(gt_counts), Counter(), Counter()
    tp[c] -= 1
    fn[c] += 1
    assert _run(evaluator, tiny, dropped)["panoptic_seg"]["PQ"] == pytest.approx(_expected_pq(tp, fp, fn))
    fp[new_class] += 1
    assert _run(evaluator, tiny, relabelled)["panoptic_seg"]["PQ"] == pytest.approx(_expected_pq(tp, fp, fn))


def test_semantic_relabel_matches_direct_iou(tiny):
    num_classes = len(MetadataCatalog.get(f"{PREFIX}_panoptic").stuff_classes)
    target_index, target = _first_thing(tiny)
    new_class = num_classes - 1 if target["category_id"] != num_classes - 1 else 0

    predictions = []
    for i, record in enumerate(tiny):
        labels = _semantic_gt(record)
        if i == target_index:
            ids, _ = _panoptic_gt(record)
            labels = labels.copy()
            labels[ids == target["id"]] = new_class
        predictions.append(labels)

    gts = np.concatenate([_semantic_gt(r).ravel() for r in tiny])
    preds = np.concatenate([p.ravel() for p in predictions])
    valid = gts != 255
    ious = []
    for k in range(num_classes):
        union = ((gts == k) | (preds == k)) & valid
        if union.any():
            ious.append(((gts == k) & (preds == k) & valid).sum() / union.sum())
    expected_miou = 100 * np.mean(ious)
    expected_pacc = 100 * (gts == preds)[valid].mean()

    lookup = {r["file_name"]: p for r, p in zip(tiny, predictions)}
    res = _run(SemSegEvaluator(f"{PREFIX}_sem_seg"), tiny,
               lambda r: _semantic_output(lookup[r["file_name"]], num_classes))["sem_seg"]
    assert res["mIoU"] == pytest.approx(expected_miou)
    assert res["pACC"] == pytest.approx(expected_pacc)
    assert res["mIoU"] < 100


def test_instance_drop_matches_coco_interpolation(tiny):
    target_index, target = _first_thing(tiny)
    gt_counts = Counter(s["category_id"] for r in tiny for s in r["segments_info"] if s["isthing"])

    def dropped(record):
        ids, segments = _panoptic_gt(record)
        keep = [s for s in segments if s["isthing"] and not (
            record["image_id"] == tiny[target_index]["image_id"] and s["id"] == target["id"])]
        masks = np.stack([ids == s["id"] for s in keep]) if keep else np.zeros((0,) + ids.shape, bool)
        return _instances_output(masks, [s["category_id"] for s in keep], record["height"], record["width"])

    # COCO interpolates precision at 101 recall thresholds; precision is 1 up to the
    # reached recall (n - 1) / n of the dropped class and 0 beyond it.
    thresholds = np.linspace(0.0, 1.00, int(np.round((1.00 - 0.0) / 0.01)) + 1)
    n = gt_counts[target["category_id"]]
    ap_dropped_class = (thresholds <= (n - 1) / n).sum() / len(thresholds)
    expected = 100 * (ap_dropped_class + len(gt_counts) - 1) / len(gt_counts)

    res = _run(COCOEvaluator(f"{PREFIX}_instance", tasks=("segm",), use_fast_impl=False), tiny, dropped)
    assert res["segm"]["AP"] == pytest.approx(expected)


def test_instance_seg_evaluator_maps_scattered_thing_ids(tiny, tmp_path):
    """ADE20K-style metadata: thing contiguous ids are a scattered subset."""
    name = "test_evaluators_scattered"
    base = MetadataCatalog.get(f"{PREFIX}_instance")
    scattered = {1: 0, 2: 2, 3: 4, 4: 5}  # dataset id -> contiguous id among all classes
    to_scattered = {base.thing_dataset_id_to_contiguous_id[d]: c for d, c in scattered.items()}
    DatasetCatalog.register(name, lambda: DatasetCatalog.get(f"{PREFIX}_instance"))
    MetadataCatalog.get(name).set(
        evaluator_type="ade20k_panoptic_seg", json_file=base.json_file, thing_classes=base.thing_classes,
        thing_dataset_id_to_contiguous_id=scattered,
    )
    try:
        evaluator = build_dataset_evaluator(
            name, semantic_on=False, instance_on=True, panoptic_on=False, output_folder=str(tmp_path)
        )
        assert type(evaluator) is InstanceSegEvaluator

        def instances(record):
            masks, classes = _thing_masks(record)
            return _instances_output(masks, [to_scattered[c] for c in classes], record["height"], record["width"])

        res = _run(evaluator, tiny, instances)
        assert res["segm"]["AP"] == pytest.approx(100.0)
        assert evaluator.evaluate()["segm"]["AP"] == pytest.approx(100.0), "evaluate() can be called again"
        saved = json.loads((tmp_path / "coco_instances_results.json").read_text())
        assert {r["category_id"] for r in saved} <= set(scattered), "results use dataset ids"

        def bad(record):
            masks, classes = _thing_masks(record)
            return _instances_output(masks, [1 for _ in classes], record["height"], record["width"])

        with pytest.raises(ValueError, match="not thing classes"):
            _run(evaluator, tiny, bad)
    finally:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


def test_instance_seg_evaluator_with_newer_detectron2_coco_api(tiny, monkeypatch):
    """detectron2 after v0.6 picks the COCOeval class with `cocoeval_fn` instead of
    `use_fast_impl`: the evaluator passes whichever the installed version takes."""
    from detectron2.evaluation import coco_evaluation
    from pycocotools.cocoeval import COCOeval

    from mask2former.evaluation import instance_evaluation

    v06 = coco_evaluation._evaluate_predictions_on_coco
    chosen = []

    def newer(coco_gt, coco_results, iou_type, kpt_oks_sigmas=None, cocoeval_fn=None, img_ids=None,
              max_dets_per_image=None):
        chosen.append(cocoeval_fn)
        return v06(coco_gt, coco_results, iou_type, kpt_oks_sigmas, use_fast_impl=cocoeval_fn is not COCOeval,
                   img_ids=img_ids, max_dets_per_image=max_dets_per_image)

    monkeypatch.setattr(instance_evaluation, "_evaluate_predictions_on_coco", newer)
    evaluator = InstanceSegEvaluator(f"{PREFIX}_instance", distributed=False, use_fast_impl=False)
    res = _run(evaluator, tiny, lambda r: _instances_output(*_thing_masks(r), r["height"], r["width"]))
    assert res["segm"]["AP"] == pytest.approx(100.0)
    assert chosen and all(fn is COCOeval for fn in chosen)


# ---------------------------------------------------------------------------------------
# Bounded memory and clear errors
# ---------------------------------------------------------------------------------------
def _assert_compact(obj, path="predictions"):
    """No arrays or tensors anywhere: per-image results must be RLE strings / bytes."""
    if isinstance(obj, (np.ndarray, torch.Tensor)):
        raise AssertionError(f"{path} holds a {type(obj).__name__} of shape {tuple(obj.shape)}")
    if isinstance(obj, dict):
        for k, v in obj.items():
            _assert_compact(v, f"{path}[{k!r}]")
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            _assert_compact(v, f"{path}[{i}]")


def test_stored_predictions_are_compact(tiny):
    record = tiny[0]
    h, w = record["height"], record["width"]
    rng = np.random.default_rng(0)
    masks = rng.random((100, h, w)) > 0.5  # 100 full-resolution masks, as the model emits

    coco = COCOEvaluator(f"{PREFIX}_instance", use_fast_impl=False)
    coco.reset()
    coco.process(_inputs(record), _instances_output(masks, rng.integers(0, 4, 100), h, w))
    _assert_compact(coco._predictions)
    stored = coco._predictions[0]["instances"]
    assert len(stored) == 100 and isinstance(stored[0]["segmentation"]["counts"], str)
    np.testing.assert_array_equal(mask_util.decode(stored[7]["segmentation"]), masks[7])

    panoptic = PanopticEvaluator(f"{PREFIX}_panoptic")
    panoptic.reset()
    panoptic.process(_inputs(record), _panoptic_output(*_panoptic_gt(record)))
    assert isinstance(panoptic._predictions[0]["png_string"], bytes)
    _assert_compact(panoptic._predictions)

    num_classes = len(MetadataCatalog.get(f"{PREFIX}_panoptic").stuff_classes)
    sem = SemSegEvaluator(f"{PREFIX}_sem_seg")
    sem.reset()
    sem.process(_inputs(record), _semantic_output(_semantic_gt(record), num_classes))
    _assert_compact(sem._predictions)
    assert all(isinstance(p["segmentation"]["counts"], str) for p in sem._predictions)


def test_sem_seg_evaluator_errors_name_the_problem(tiny):
    with pytest.raises(ValueError, match=f"sem_seg_file_name.*{PREFIX}_instance"):
        SemSegEvaluator(f"{PREFIX}_instance")
    evaluator = SemSegEvaluator(f"{PREFIX}_sem_seg")
    evaluator.reset()
    num_classes = len(MetadataCatalog.get(f"{PREFIX}_sem_seg").stuff_classes)
    wrong_size = np.zeros((10, 10), np.int64)
    with pytest.raises(ValueError, match=Path(tiny[0]["file_name"]).name):
        evaluator.process(_inputs(tiny[0]), _semantic_output(wrong_size, num_classes))


def test_panoptic_evaluator_requires_every_image(tiny, tmp_path):
    evaluator = PanopticEvaluator(f"{PREFIX}_panoptic", output_dir=str(tmp_path))
    with pytest.raises(ValueError, match="no prediction"):
        _run(evaluator, tiny[:2], lambda r: _panoptic_output(*_panoptic_gt(r)))
    res = _run(evaluator, tiny, lambda r: _panoptic_output(*_panoptic_gt(r)))
    assert res["panoptic_seg"]["PQ"] == pytest.approx(100.0)
    assert evaluator.evaluate() == res, "evaluate() can be called again"
    written = json.loads((tmp_path / "predictions.json").read_text())
    assert len(written["annotations"]) == NUM_IMAGES


def test_built_coco_evaluator_reports_segm_without_detections(tiny):
    """An early checkpoint may detect nothing: the result still has both tasks (NaN)."""
    evaluator = build_evaluator(_cfg(), f"{PREFIX}_instance")
    res = _run(evaluator, tiny, lambda r: _instances_output(
        np.zeros((0, r["height"], r["width"]), bool), [], r["height"], r["width"]))
    assert set(res) == {"bbox", "segm"}
    assert np.isnan(res["segm"]["AP"])


def test_cityscapes_evaluators_end_to_end(tmp_path, monkeypatch):
    """Cityscapes-format ground truth (labelIds / instanceIds PNGs) for two small images;
    instance predictions are perfect, the semantic one calls the sky road."""
    from cityscapesscripts.helpers.labels import name2label

    monkeypatch.chdir(tmp_path)  # cityscapesscripts writes matches.json into the working directory

    height, width = 64, 128
    gt_dir = tmp_path / "gtFine" / "val"
    (gt_dir / "frankfurt").mkdir(parents=True)
    things = ["person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle"]
    road, sky, car = (name2label[n].id for n in ("road", "sky", "car"))
    samples = []
    for i in range(2):
        stem = f"frankfurt_000000_{i:06d}"
        label = np.full((height, width), road, np.uint8)
        label[:20] = sky
        instance_ids = label.astype(np.uint16)  # Cityscapes instanceIds are 16-bit PNGs
        cars = []
        for k, (y, x) in enumerate([(30, 10 + 30 * i), (40, 80)]):
            mask = np.zeros((height, width), bool)
            mask[y:y + 15, x:x + 25] = True
            label[mask], instance_ids[mask] = car, car * 1000 + k
            cars.append(mask)
        Image.fromarray(label).save(gt_dir / "frankfurt" / f"{stem}_gtFine_labelIds.png")
        Image.fromarray(instance_ids).save(gt_dir / "frankfurt" / f"{stem}_gtFine_instanceIds.png")
        inputs = {"file_name": f"leftImg8bit/val/frankfurt/{stem}_leftImg8bit.png", "image_id": stem,
                  "height": height, "width": width}
        samples.append((inputs, label, np.stack(cars)))

    name = "test_evaluators_cityscapes_fake"
    MetadataCatalog.get(name).set(evaluator_type="cityscapes_panoptic_seg", gt_dir=str(gt_dir), thing_classes=things)
    try:
        evaluator = build_dataset_evaluator(name, semantic_on=True, instance_on=True, panoptic_on=False)
        evaluator.reset()
        to_train_id = {label.id: label.trainId for label in name2label.values()}
        for inputs, label, cars in samples:
            predicted = np.where(label == sky, road, label)
            train_ids = torch.from_numpy(np.vectorize(to_train_id.get)(predicted)).long()
            scores = torch.nn.functional.one_hot(train_ids, 19).permute(2, 0, 1).float()
            outputs = _instances_output(cars, [things.index("car")] * len(cars), height, width)
            outputs[0]["sem_seg"] = scores
            evaluator.process([inputs], outputs)
        res = evaluator.evaluate()
    finally:
        MetadataCatalog.remove(name)

    labels = np.stack([s[1] for s in samples])
    road_iou = (labels == road).sum() / ((labels == road) | (labels == sky)).sum()
    assert res["sem_seg"]["IoU"] == pytest.approx(100 * (road_iou + 0.0 + 1.0) / 3)
    assert res["segm"]["AP"] == pytest.approx(100.0)


def test_sem_seg_ignores_ignore_label_pixels(tmp_path):
    """Pixels labelled ignore_label in the ground truth do not count, whatever is predicted
    there; a wrong pixel elsewhere does (one image, mIoU computed by hand)."""
    gt = np.zeros((8, 10), np.uint8)
    gt[:, 5:] = 1
    gt[:2] = 255
    Image.fromarray(gt).save(tmp_path / "gt.png")
    name = "test_evaluators_ignore"
    record = {"file_name": "img.jpg", "image_id": 0, "height": 8, "width": 10}
    DatasetCatalog.register(name, lambda: [dict(record, sem_seg_file_name=str(tmp_path / "gt.png"))])
    MetadataCatalog.get(name).set(stuff_classes=["a", "b"], ignore_label=255)
    try:
        evaluator = SemSegEvaluator(name, distributed=False)
        prediction = np.where(gt == 255, 1 - (np.arange(10) >= 5), gt).astype(np.int64)  # wrong on ignore
        assert _run(evaluator, [record], lambda r: _semantic_output(prediction, 2))[
            "sem_seg"]["mIoU"] == pytest.approx(100.0)
        prediction[4, 0] = 1  # one class-a pixel called b
        res = _run(evaluator, [record], lambda r: _semantic_output(prediction, 2))["sem_seg"]
        a_pixels, b_pixels = 6 * 5, 6 * 5
        expected = 100 * ((a_pixels - 1) / a_pixels + b_pixels / (b_pixels + 1)) / 2
        assert res["mIoU"] == pytest.approx(expected)
    finally:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


def test_panoptic_evaluator_equals_detectron2s(tiny):
    """Same PQ/SQ/RQ as detectron2's COCOPanopticEvaluator (panopticapi's process pool) on
    imperfect predictions: every other image loses its first thing, which is also
    relabelled in the others."""
    from detectron2.evaluation import COCOPanopticEvaluator

    def imperfect(record):
        ids, segments = _panoptic_gt(record)
        things = [s for s in segments if s["isthing"]]
        if things and record["image_id"] % 2 == 0:
            ids[ids == things[0]["id"]] = 0
            segments.remove(things[0])
        elif things:
            things[0]["category_id"] = (things[0]["category_id"] + 1) % 4
        return _panoptic_output(ids, segments)

    ours = _run(PanopticEvaluator(f"{PREFIX}_panoptic"), tiny, imperfect)["panoptic_seg"]
    reference = _run(COCOPanopticEvaluator(f"{PREFIX}_panoptic"), tiny, imperfect)["panoptic_seg"]
    assert ours["PQ"] < 100
    assert ours == pytest.approx(reference, abs=1e-9)
