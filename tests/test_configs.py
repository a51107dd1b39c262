"""The published config tree merges to exactly the published values."""
import json
from pathlib import Path

import pytest
import torch
from detectron2.config import get_cfg

from mask2former.config import add_maskformer2_config, build_config, use_cpu_if_no_cuda

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT / "tests" / "reference" / "effective_configs.json"

_REF = json.loads(REFERENCE.read_text())


def _flatten(node, prefix=""):
    out = {}
    for key, value in node.items():
        if isinstance(value, dict):
            out.update(_flatten(value, prefix + key + "."))
        else:
            out[prefix + key] = value
    return out


def _plain(value):
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _merged(path=None):
    cfg = build_config(None if path is None else ROOT / path)
    return {k: _plain(v) for k, v in _flatten(cfg).items() if not k.startswith("MASK2FORMER.")}


def test_defaults_match_published_keys():
    merged = _merged()
    assert merged == {k: _plain(v) for k, v in _REF["defaults"].items()}


def test_project_keys_do_not_shadow_published_ones():
    cfg = get_cfg()
    add_maskformer2_config(cfg)
    assert "MASK2FORMER" in cfg and "MASK2FORMER" not in _REF["defaults"]


@pytest.mark.parametrize("config_path", sorted(_REF["configs"]))
def test_published_config_merges_to_published_values(config_path):
    merged = _merged(config_path)
    expected = {k: _plain(v) for k, v in _REF["defaults"].items()}
    expected.update({k: _plain(v) for k, v in _REF["configs"][config_path].items()})
    differing = {k: (merged.get(k), expected[k]) for k in expected if merged.get(k) != expected[k]}
    assert not differing, f"{config_path}: (merged, published) = {differing}"


def test_every_published_config_is_shipped():
    shipped = {str(p.relative_to(ROOT)) for p in (ROOT / "configs").rglob("*.yaml")
               if not p.name.startswith("Base-") and "quickstart" not in p.parts}
    assert shipped >= set(_REF["configs"])


def test_build_config_applies_extra_configs_before_the_file_and_opts(tmp_path):
    def add_extra_config(cfg):
        cfg.MODEL.EXTRA_KEY = 1

    config_file = tmp_path / "extra.yaml"
    config_file.write_text("MODEL:\n  EXTRA_KEY: 2\n")
    cfg = build_config(config_file, ["SOLVER.MAX_ITER", "7"], extra_configs=[add_extra_config])
    assert cfg.MODEL.EXTRA_KEY == 2 and cfg.SOLVER.MAX_ITER == 7
    assert not cfg.is_frozen()
    with pytest.raises(FileNotFoundError, match="missing.yaml"):
        build_config(tmp_path / "missing.yaml")


def test_use_cpu_if_no_cuda_keeps_cpu_and_frozen_state():
    cfg = build_config(opts=["MODEL.DEVICE", "cuda"])
    cfg.freeze()
    changed = use_cpu_if_no_cuda(cfg)
    assert changed == (not torch.cuda.is_available())
    assert cfg.MODEL.DEVICE == ("cuda" if torch.cuda.is_available() else "cpu")
    assert cfg.is_frozen()
    cpu_cfg = build_config(opts=["MODEL.DEVICE", "cpu"])
    assert not use_cpu_if_no_cuda(cpu_cfg) and cpu_cfg.MODEL.DEVICE == "cpu"
