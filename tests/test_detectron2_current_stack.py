"""detectron2's code paths that used names removed from numpy (np.bool, np.int, np.float) and
Pillow (Image.LINEAR) run on the installed numpy and Pillow."""
import numpy as np
import torch
from detectron2.data import MetadataCatalog
from detectron2.data import DatasetCatalog, build
from detectron2.data.transforms import ExtentTransform, ResizeTransform
from detectron2.evaluation import SemSegEvaluator
from detectron2.layers.mask_ops import paste_mask_in_image_old
from detectron2.structures import PolygonMasks, polygons_to_bitmask
from detectron2.utils.visualizer import Visualizer
from PIL import Image


def test_resize_and_extent_transforms_with_pillow_interpolations():
    image = np.zeros((8, 12, 3), np.uint8)
    image[2:6, 3:9] = 200
    for interp in (Image.NEAREST, Image.BILINEAR, Image.BICUBIC):
        out = ResizeTransform(8, 12, 16, 24, interp).apply_image(image)
        assert out.shape == (16, 24, 3) and out.dtype == np.uint8 and out[8, 12, 0] == 200
    # float images go through torch's interpolate, keyed by the Pillow constant
    out = ResizeTransform(8, 12, 4, 6, Image.BILINEAR).apply_image(image.astype(np.float32))
    assert out.shape == (4, 6, 3) and out.dtype == np.float32
    # ExtentTransform's default interpolation was Image.LINEAR
    crop = ExtentTransform(src_rect=(3, 2, 9, 6), output_size=(4, 6)).apply_image(image)
    assert crop.shape == (4, 6, 3) and (crop[1:3, 1:5] == 200).all()
    seg = ExtentTransform(src_rect=(3, 2, 9, 6), output_size=(4, 6)).apply_segmentation(image[..., 0])
    assert set(np.unique(seg)) <= {0, 200}


def test_polygon_masks_decode_to_bool():
    square = [np.array([1, 1, 5, 1, 5, 5, 1, 5], dtype=np.float64)]
    mask = polygons_to_bitmask(square, 8, 8)
    assert mask.dtype == bool and mask[3, 3] and not mask[6, 6]
    assert polygons_to_bitmask([], 4, 4).dtype == bool
    keep = PolygonMasks([square, []]).nonempty()
    assert keep.dtype == torch.bool and keep.tolist() == [True, False]


def test_old_mask_paste_resamples_with_pillow():
    pasted = paste_mask_in_image_old(torch.ones(4, 4), torch.tensor([2.0, 2.0, 6.0, 6.0]), 10, 10, 0.5)
    assert pasted.shape == (10, 10) and pasted[4, 4] == 1 and pasted[0, 0] == 0


def test_sem_seg_evaluator_counts_with_builtin_dtypes(tmp_path):
    gt = np.array([[0, 0, 1, 1], [0, 0, 1, 255]], np.uint8)
    Image.fromarray(gt).save(tmp_path / "gt.png")
    name = "stack_test_sem_seg"
    MetadataCatalog.get(name).set(stuff_classes=["a", "b"], ignore_label=255, evaluator_type="sem_seg")
    if name not in DatasetCatalog.list():
        DatasetCatalog.register(name, lambda: [{"file_name": "img.png", "sem_seg_file_name": str(tmp_path / "gt.png")}])
    evaluator = SemSegEvaluator(name, distributed=False)
    evaluator.reset()
    logits = torch.zeros(2, 2, 4)
    logits[1, :, 2:] = 1.0  # right half is class 1
    logits[1, 1, 1] = 1.0  # one wrong pixel
    evaluator.process([{"file_name": "img.png"}], [{"sem_seg": logits}])
    result = evaluator.evaluate()["sem_seg"]
    assert abs(result["pACC"] - 100 * 6 / 7) < 1e-6
    assert abs(result["IoU-a"] - 100 * 3 / 4) < 1e-6 and abs(result["IoU-b"] - 100 * 3 / 4) < 1e-6


def test_class_histogram_and_panoptic_drawing(monkeypatch):
    logged = []
    monkeypatch.setattr(build, "log_first_n", lambda level, msg, **kwargs: logged.append(msg))
    dicts = [{"annotations": [{"category_id": 0}, {"category_id": 1}, {"category_id": 1, "iscrowd": 1}]}]
    build.print_instances_class_histogram(dicts, ["cat", "dog"])
    assert len(logged) == 1 and "cat" in logged[0] and "dog" in logged[0]
    panoptic = torch.zeros(6, 6, dtype=torch.int32)
    panoptic[1:4, 1:4] = 1
    segments = [{"id": 1, "category_id": 0, "isthing": True}]
    metadata = MetadataCatalog.get("stack_test_panoptic")
    metadata.set(thing_classes=["cat"], stuff_classes=["cat"])
    drawn = Visualizer(np.zeros((6, 6, 3), np.uint8), metadata).draw_panoptic_seg(panoptic, segments)
    assert drawn.get_image().shape == (6, 6, 3)
