"""The published config tree merges to exactly the published values."""
import json
from pathlib import Path

import pytest
from detectron2.config import get_cfg

from mask2former.config import add_deeplab_config, add_maskformer2_config

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
    cfg = get_cfg()
    add_deeplab_config(cfg)
    add_maskformer2_config(cfg)
    if path is not None:
        cfg.merge_from_file(str(ROOT / path))
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
