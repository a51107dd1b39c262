"""For every published config, ``build_model(cfg).state_dict()`` has exactly the published keys,
in order, with the published shapes and parameter/buffer kinds, and the published parameter count.

Models are built on the meta device: same modules and shapes, no memory or init time.
"""
import json
from pathlib import Path

import pytest
import torch
from detectron2.modeling import build_model

import mask2former  # noqa: F401  (registers the model components)
from mask2former.config import build_config

ROOT = Path(__file__).resolve().parents[1]
MANIFESTS = ROOT / "tests" / "reference" / "state_dict" / "configs"

assert MANIFESTS.is_dir(), f"reference state-dict manifests missing: {MANIFESTS}"

CONFIGS = sorted(str(p.relative_to(MANIFESTS).with_suffix(".yaml")) for p in MANIFESTS.rglob("*.json"))


def _cfg(relative_yaml: str, device: str):
    cfg = build_config(ROOT / "configs" / relative_yaml)
    cfg.MODEL.WEIGHTS = ""
    cfg.MODEL.DEVICE = device
    return cfg


def _entries(model: torch.nn.Module):
    params = {name for name, _ in model.named_parameters()}
    return [[k, list(v.shape), "param" if k in params else "buffer"] for k, v in model.state_dict().items()]


def test_every_published_config_has_a_manifest():
    assert len(CONFIGS) == 47
    for relative in CONFIGS:
        assert (ROOT / "configs" / relative).is_file(), f"published config {relative} missing from configs/"


@pytest.mark.parametrize("relative_yaml", CONFIGS)
def test_state_dict_matches_published_manifest(relative_yaml):
    manifest = json.loads((MANIFESTS / relative_yaml).with_suffix(".json").read_text())
    with torch.device("meta"):
        model = build_model(_cfg(relative_yaml, "meta"))
    entries = _entries(model)
    expected = manifest["entries"]

    got_keys, want_keys = [e[0] for e in entries], [e[0] for e in expected]
    missing = sorted(set(want_keys) - set(got_keys))
    unexpected = sorted(set(got_keys) - set(want_keys))
    assert not missing and not unexpected, f"missing {missing[:10]}, unexpected {unexpected[:10]}"
    assert got_keys == want_keys, "same keys, different order"
    mismatched = [(g, w) for g, w in zip(entries, expected) if g != w]
    assert not mismatched, f"shape or kind differs: {mismatched[:10]}"
    assert sum(p.numel() for p in model.parameters()) == manifest["num_parameters"]
    # pixel_mean / pixel_std are non-persistent; the checkpoint has no metadata-dependent renames.
    assert not any(".pixel_decoder.pixel_decoder." in k for k in got_keys)


def test_cpu_build_matches_meta_build():
    """The meta-device shortcut describes the real model: one config built for real on CPU."""
    relative = "coco/panoptic-segmentation/maskformer2_R50_bs16_50ep.yaml"
    if relative not in CONFIGS:
        pytest.skip(f"no manifest for {relative}")
    with torch.device("meta"):
        meta_model = build_model(_cfg(relative, "meta"))
    cpu_model = build_model(_cfg(relative, "cpu"))
    assert _entries(cpu_model) == _entries(meta_model)
    assert all(v.device.type == "cpu" for v in cpu_model.state_dict().values())


@pytest.mark.parametrize(
    "relative_yaml",
    [
        "coco/panoptic-segmentation/maskformer2_R50_bs16_50ep.yaml",
        "cityscapes/semantic-segmentation/maskformer2_R101_bs16_90k.yaml",
        "ade20k/semantic-segmentation/swin/maskformer2_swin_large_IN21k_384_bs16_160k_res640.yaml",
    ],
)
def test_published_checkpoint_layout_loads_strictly_without_metadata(relative_yaml):
    """A checkpoint with exactly the published keys and no version metadata (as a converted
    model-zoo file is) loads with strict=True: nothing is renamed on the way."""
    if relative_yaml not in CONFIGS:
        pytest.skip(f"no manifest for {relative_yaml}")
    manifest = json.loads((MANIFESTS / relative_yaml).with_suffix(".json").read_text())
    with torch.device("meta"):
        model = build_model(_cfg(relative_yaml, "meta"))
    checkpoint = {name: torch.empty(shape, device="meta") for name, shape, _ in manifest["entries"]}
    result = model.load_state_dict(checkpoint, strict=True, assign=True)
    assert not result.missing_keys and not result.unexpected_keys
