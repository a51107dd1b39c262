"""Mask2FormerPredictor: resizing, colour order, input checks, weights, batching."""
import numpy as np
import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.modeling import build_model

from demo_test_utils import make_image, real_model, stand_in_cfg
from mask2former.predictor import Mask2FormerPredictor
from mask2former.utils.checkpoint import CheckpointMismatchError


def _stand_in_predictor(extra=()):
    torch.manual_seed(0)
    return Mask2FormerPredictor(stand_in_cfg(list(extra)))


def test_resizes_shortest_edge_and_answers_at_original_size():
    predictor = _stand_in_predictor(["INPUT.MIN_SIZE_TEST", "64", "INPUT.MAX_SIZE_TEST", "96"])
    output = predictor(make_image(48, 64))
    assert predictor.model.images_seen[-1] == (64, 85)  # 48x64 -> short edge 64
    assert output["sem_seg"].shape[-2:] == (48, 64)
    assert output["panoptic_seg"][0].shape == (48, 64)
    predictor(make_image(20, 100))
    assert predictor.model.images_seen[-1] == (19, 96)  # long edge capped at MAX_SIZE_TEST


def test_colour_order_follows_input_format():
    rgb = _stand_in_predictor(["INPUT.FORMAT", "RGB"])
    bgr = Mask2FormerPredictor(model=rgb.model, min_size_test=64, max_size_test=96, input_format="BGR")
    image = make_image(48, 64, seed=2)
    # an RGB model given a BGR image sees what a BGR model sees in the flipped image
    expected = bgr(np.ascontiguousarray(image[:, :, ::-1]))["sem_seg"]
    assert torch.allclose(rgb(image)["sem_seg"], expected)
    assert not torch.allclose(rgb(image)["sem_seg"], bgr(image)["sem_seg"])


def test_bad_images_are_rejected_with_the_field_named():
    predictor = _stand_in_predictor()
    with pytest.raises(ValueError, match="uint8"):
        predictor(make_image().astype(np.float32))
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        predictor(make_image()[:, :, 0])
    with pytest.raises(ValueError, match="image 1"):
        predictor.predict_batch([make_image(), make_image()[:, :, :2]])
    with pytest.raises(ValueError, match="INPUT.FORMAT"):
        Mask2FormerPredictor(model=predictor.model, min_size_test=64, max_size_test=96, input_format="YUV")


def test_loads_model_weights_and_rejects_mismatched_ones(tmp_path):
    torch.manual_seed(1)
    trained = build_model(stand_in_cfg())
    DetectionCheckpointer(trained, str(tmp_path)).save("model_final")
    weights = str(tmp_path / "model_final.pth")
    predictor = _stand_in_predictor(["MODEL.WEIGHTS", weights])
    assert torch.equal(predictor.model.classifier.weight, trained.classifier.weight)
    with pytest.raises(CheckpointMismatchError, match="classifier.weight"):
        Mask2FormerPredictor(stand_in_cfg(["MODEL.WEIGHTS", weights, "MODEL.SEM_SEG_HEAD.NUM_CLASSES", "5"]))
    with pytest.raises(FileNotFoundError, match="missing.pkl"):
        Mask2FormerPredictor(stand_in_cfg(["MODEL.WEIGHTS", str(tmp_path / "missing.pkl")]))


def test_metadata_comes_from_first_test_dataset():
    assert _stand_in_predictor().metadata.stuff_classes[4] == "sky"


def _assert_same_prediction(a, b, atol=1e-4):
    assert torch.allclose(a["sem_seg"], b["sem_seg"], atol=atol)
    assert torch.equal(a["panoptic_seg"][0], b["panoptic_seg"][0])
    assert [s["category_id"] for s in a["panoptic_seg"][1]] == [
        s["category_id"] for s in b["panoptic_seg"][1]
    ]
    assert torch.allclose(a["instances"].scores, b["instances"].scores, atol=atol)
    assert torch.equal(a["instances"].pred_classes, b["instances"].pred_classes)


def test_batched_equals_single_on_real_model():
    predictor = Mask2FormerPredictor(model=real_model(), min_size_test=64, max_size_test=96, input_format="RGB")
    # 48x64 and 44x64 resize to 64x85 and 64x93, both padded to 64x96; 72x40 resizes to
    # 96x53, padded to 96x64: two forward passes, each with its own padded size
    images = [make_image(48, 64, 0), make_image(72, 40, 1), make_image(44, 64, 2), make_image(48, 64, 3)]
    batched = predictor.predict_batch(images)
    assert len(batched) == len(images)
    for image, result in zip(images, batched):
        _assert_same_prediction(result, predictor(image))
        assert result["sem_seg"].shape[-2:] == image.shape[:2]


def test_padded_batch_leaves_the_largest_image_unchanged():
    """Without grouping, only padding changes results: the image that sets the batch's
    padded size gets exactly its single-image prediction."""
    predictor = Mask2FormerPredictor(model=real_model(), min_size_test=64, max_size_test=96, input_format="RGB")
    largest, smaller = make_image(48, 64, 0), make_image(64, 64, 2)  # padded 64x96 and 64x64
    batched = predictor.predict_batch([smaller, largest], group_by_size=False)
    _assert_same_prediction(batched[1], predictor(largest))
    assert batched[0]["sem_seg"].shape[-2:] == (64, 64)


def test_cuda_config_falls_back_to_cpu_without_cuda():
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here, so there is no fallback to check")
    predictor = Mask2FormerPredictor(stand_in_cfg(["MODEL.DEVICE", "cuda"]))
    assert predictor.model.classifier.weight.device.type == "cpu"
    assert predictor(make_image())["sem_seg"].shape[-2:] == (48, 64)
