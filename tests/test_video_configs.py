"""The published YouTube-VIS configs merge to exactly the published values, and the model
built from each has exactly the published state-dict keys and shapes (so published video
checkpoints load strictly). Models are built on the meta device: no memory, no init time."""
import json
from pathlib import Path

import pytest
import torch
from detectron2.config import get_cfg
from detectron2.modeling import build_model

import mask2former  # noqa: F401  (registers the model components)
from mask2former import add_maskformer2_video_config, build_config
from test_configs import _flatten, _plain

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT / "tests" / "reference" / "video"
_REF = json.loads((REFERENCE / "effective_configs.json").read_text())
CONFIGS = sorted(_REF["configs"])


def _cfg(path=None):
    return build_config(str(ROOT / path) if path else None, extra_configs=[add_maskformer2_video_config])


def _published_keys(cfg):
    return {k: _plain(v) for k, v in _flatten(cfg).items() if not k.startswith("MASK2FORMER.")}


def test_twelve_published_configs_are_shipped():
    assert len(CONFIGS) == 12
    for path in CONFIGS:
        assert (ROOT / path).is_file(), f"published config {path} missing"


def test_video_defaults_match_published_keys():
    assert _published_keys(_cfg()) == _REF["defaults"]


def test_video_config_adds_image_keys_when_missing():
    cfg = get_cfg()
    add_maskformer2_video_config(cfg)
    assert _published_keys(cfg) == _REF["defaults"]
    assert cfg.MASK2FORMER.VIDEO.CLIP_LENGTH == 0  # whole-video inference, as published


@pytest.mark.parametrize("config_path", CONFIGS)
def test_published_video_config_merges_to_published_values(config_path):
    merged = _published_keys(_cfg(config_path))
    expected = dict(_REF["defaults"], **_REF["configs"][config_path])
    differing = {k: (merged.get(k), expected[k]) for k in set(merged) | set(expected) if merged.get(k) != expected.get(k)}
    assert not differing, f"{config_path}: (merged, published) = {differing}"


def _entries(model):
    params = {name for name, _ in model.named_parameters()}
    return [[k, list(v.shape), "param" if k in params else "buffer"] for k, v in model.state_dict().items()]


@pytest.mark.parametrize("config_path", CONFIGS)
def test_published_video_config_builds_published_state_dict(config_path):
    manifest = json.loads((REFERENCE / "state_dict" / Path(config_path).with_suffix(".json")).read_text())
    status = json.loads((REFERENCE / "state_dict" / "_build_status.json").read_text())[config_path]
    cfg = _cfg(config_path)
    cfg.MODEL.WEIGHTS = ""
    cfg.MODEL.DEVICE = "meta"
    with torch.device("meta"):
        model = build_model(cfg)
    assert type(model).__name__ == status["meta_arch"]
    assert type(model.sem_seg_head.predictor).__name__ == status["decoder"]
    entries = _entries(model)
    got, want = [e[0] for e in entries], [e[0] for e in manifest["entries"]]
    assert set(got) == set(want), f"missing {sorted(set(want) - set(got))[:10]}, unexpected {sorted(set(got) - set(want))[:10]}"
    assert got == want, "same keys, different order"
    assert entries == manifest["entries"]
    assert sum(p.numel() for p in model.parameters()) == manifest["num_parameters"] == status["num_parameters"]
    # A checkpoint with exactly these keys loads strictly.
    checkpoint = {name: torch.empty(shape, device="meta") for name, shape, _ in manifest["entries"]}
    result = model.load_state_dict(checkpoint, strict=True, assign=True)
    assert not result.missing_keys and not result.unexpected_keys
