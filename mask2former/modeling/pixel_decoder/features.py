"""Input checks shared by the pixel decoders."""
from typing import Dict, Iterable

from detectron2.layers import ShapeSpec
from torch import Tensor

__all__ = ["select_input_shape", "check_features"]


def select_input_shape(input_shape: Dict[str, ShapeSpec], names: Iterable[str], field: str) -> Dict[str, ShapeSpec]:
    """``input_shape`` restricted to ``names`` (a config list called ``field``), in stride order.
    Raises naming ``field`` when it asks for a feature the backbone does not produce."""
    names = list(names)
    missing = [n for n in names if n not in input_shape]
    if missing:
        raise ValueError(f"{field} asks for {missing}, but the backbone only outputs {sorted(input_shape)}")
    if not names:
        raise ValueError(f"{field} is empty")
    return dict(sorted(((k, input_shape[k]) for k in names), key=lambda kv: kv[1].stride))


def check_features(features: Dict[str, Tensor], expected: Dict[str, ShapeSpec], owner: str) -> None:
    """Clear error when ``features`` lacks one of ``expected`` or has the wrong channel count."""
    for name, spec in expected.items():
        if name not in features:
            raise KeyError(f"{owner} needs feature {name!r}; got {sorted(features)}")
        x = features[name]
        if x.dim() != 4 or (spec.channels is not None and x.shape[1] != spec.channels):
            raise ValueError(
                f"{owner}: feature {name!r} should be (B, {spec.channels}, H, W), got {tuple(x.shape)}"
            )
