"""Published-format checkpoints ({"model": {name: numpy}, "__author__", ...} pickles) load
into this project's model with no missing or unexpected keys, and bad ones are named."""
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from detectron2.modeling import build_model

from demo_test_utils import PANOPTIC_R50, base_cfg, make_image, real_model, stand_in_cfg, tiny_cfg
from mask2former.utils.checkpoint import (
    CheckpointMismatchError,
    compare_state_dict_keys,
    load_weights_checked,
    save_in_published_format,
)

REFERENCE = Path(__file__).resolve().parent / "reference" / "state_dict" / "configs"


def _eval_input(seed):
    image = torch.as_tensor(make_image(64, 96, seed).transpose(2, 0, 1).copy())
    return [{"image": image, "height": 64, "width": 96}]


@pytest.mark.parametrize("matching_heuristics", [False, True])
def test_published_format_round_trip_gives_identical_outputs(tmp_path, matching_heuristics):
    """Both flavours: plain name matching, and detectron2's suffix heuristics (which must
    still map every key onto itself)."""
    source = real_model()
    path = tmp_path / "model_published.pkl"
    save_in_published_format(source.state_dict(), str(path), author="test",
                             matching_heuristics=matching_heuristics)
    with open(path, "rb") as f:
        payload = pickle.load(f)
    assert set(payload) == {"model", "__author__", "matching_heuristics"}
    assert all(isinstance(v, np.ndarray) for v in payload["model"].values())

    torch.manual_seed(123)  # a different initialisation
    target = build_model(tiny_cfg()).eval()
    assert any(
        not torch.equal(a, b) for a, b in zip(source.state_dict().values(), target.state_dict().values())
    )
    report = load_weights_checked(target, str(path))
    assert report.is_clean, report.describe()
    with torch.no_grad():
        expected, actual = source(_eval_input(0))[0], target(_eval_input(0))[0]
    assert torch.equal(expected["sem_seg"], actual["sem_seg"])
    assert torch.equal(expected["panoptic_seg"][0], actual["panoptic_seg"][0])
    assert torch.equal(expected["instances"].pred_masks, actual["instances"].pred_masks)


def test_strict_check_names_missing_unexpected_and_mismatched_keys(tmp_path):
    torch.manual_seed(0)
    model = build_model(stand_in_cfg())
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    weights.pop("classifier.bias")
    weights["classifier.weight"] = torch.zeros(3, 3, 1, 1)
    weights["old_head.weight"] = torch.zeros(2)
    path = tmp_path / "bad.pkl"
    save_in_published_format(weights, str(path))

    with pytest.raises(CheckpointMismatchError) as error:
        load_weights_checked(build_model(stand_in_cfg()), str(path))
    message = str(error.value)
    assert "bad.pkl" in message
    assert "missing in the checkpoint (1)" in message and "classifier.bias" in message
    assert "unexpected (not in the model) (1)" in message and "old_head.weight" in message
    assert "classifier.weight: checkpoint (3, 3, 1, 1) vs model (7, 3, 1, 1)" in message

    report = load_weights_checked(build_model(stand_in_cfg()), str(path), allow_partial=True)
    assert report.missing == ["classifier.bias"]
    assert report.unexpected == ["old_head.weight"]
    assert [k for k, _, _ in report.shape_mismatched] == ["classifier.weight"]


def test_compare_state_dict_keys_is_exact():
    model_state = {"a.weight": torch.zeros(2, 3), "b.bias": torch.zeros(4)}
    report = compare_state_dict_keys(model_state, {"a.weight": np.zeros((3, 2)), "c": np.zeros(1)})
    assert report.missing == ["b.bias"] and report.unexpected == ["c"]
    assert report.shape_mismatched == [("a.weight", (3, 2), (2, 3))]
    assert compare_state_dict_keys(model_state, dict(model_state)).is_clean


@pytest.mark.parametrize(
    "config",
    [
        "coco/panoptic-segmentation/maskformer2_R50_bs16_50ep",
        "ade20k/semantic-segmentation/maskformer2_R50_bs16_160k",
    ],
)
def test_published_key_list_matches_full_model(config):
    """A published checkpoint of these configs (its keys and shapes are in tests/reference/)
    loads strictly: the model has exactly those keys and shapes."""
    reference = REFERENCE / f"{config}.json"
    cfg = base_cfg(Path(PANOPTIC_R50).parents[2] / f"{config}.yaml", ["MODEL.WEIGHTS", "", "MODEL.DEVICE", "cpu"])
    model = build_model(cfg)
    entries = json.loads(reference.read_text())["entries"]
    # shapes without allocating: broadcast views of one scalar
    published = {name: np.broadcast_to(np.float32(0), shape) for name, shape, _ in entries}
    report = compare_state_dict_keys(model.state_dict(), published)
    assert report.is_clean, report.describe()
    assert list(model.state_dict()) == [name for name, _, _ in entries], "key order differs"
