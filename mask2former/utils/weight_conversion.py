"""Rename ImageNet backbone weights to the names this project's backbones use, and write
them as detectron2 .pkl files (`{"model": {name: numpy}, "__author__", "matching_heuristics"}`).

The renaming is exact (no reliance on detectron2's suffix heuristics), so a converted
file lists exactly the backbone's keys; `matching_heuristics` is still set so that
detectron2 adds the `backbone.` prefix when loading into a full model.
"""
import argparse
import os
import pickle
import re
import sys
from typing import Callable, Dict, List, Mapping, Optional

import numpy as np
import torch

from .file_io import atomic_write_bytes, check_writable_folder

__all__ = [
    "WeightConversionError",
    "load_torch_state_dict",
    "torchvision_resnet_to_d2",
    "swin_to_d2",
    "write_d2_pickle",
    "conversion_main",
]


class WeightConversionError(ValueError):
    """The input file does not hold the weights the converter expects."""


def load_torch_state_dict(path: str, wrapper_keys=("model", "state_dict")) -> Dict[str, torch.Tensor]:
    """Load a .pth file and return its state dict, unwrapping `{"model": ...}` or
    `{"state_dict": ...}` when present."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as e:  # pickle / zip errors: name the file
        raise WeightConversionError(f"Cannot read '{path}' as a PyTorch checkpoint: {e}") from e
    if not isinstance(obj, Mapping):
        raise WeightConversionError(f"'{path}' holds a {type(obj).__name__}, not a state dict.")
    for key in wrapper_keys:
        if key in obj and isinstance(obj[key], Mapping):
            obj = obj[key]
            break
    return dict(obj)


_TV_STAGE = re.compile(r"^layer([1-4])\.(\d+)\.(.*)$")
_TV_BN_FIELDS = ("weight", "bias", "running_mean", "running_var")


def torchvision_resnet_to_d2(state_dict: Mapping[str, torch.Tensor]) -> Dict[str, np.ndarray]:
    """torchvision ResNet names -> detectron2 ResNet names, values as numpy.

    conv1/bn1 -> stem.conv1(.norm); layer{i}.{j} -> res{i+1}.{j};
    conv{k}/bn{k} -> conv{k}(.norm); downsample.0/.1 -> shortcut(.norm).
    The classifier (fc) and BatchNorm's num_batches_tracked are dropped.
    Raises WeightConversionError for a key it does not know.
    """
    if "conv1.weight" not in state_dict or not any(k.startswith("layer1.") for k in state_dict):
        raise WeightConversionError(
            "Not a torchvision ResNet state dict: expected keys 'conv1.weight' and 'layer1.*', "
            f"got e.g. {sorted(state_dict)[:5]}"
        )
    converted = {}
    for key, value in state_dict.items():
        if key.startswith("fc.") or key.endswith("num_batches_tracked"):
            continue
        stage = _TV_STAGE.match(key)
        if key.startswith("conv1."):
            new_key = "stem." + key
        elif key.startswith("bn1."):
            new_key = "stem.conv1.norm." + key[len("bn1.") :]
        elif stage:
            index, block, rest = stage.groups()
            prefix = f"res{int(index) + 1}.{block}."
            conv = re.match(r"^conv(\d)\.(weight)$", rest)
            norm = re.match(r"^bn(\d)\.(\w+)$", rest)
            down = re.match(r"^downsample\.([01])\.(\w+)$", rest)
            if conv:
                new_key = prefix + f"conv{conv.group(1)}.weight"
            elif norm and norm.group(2) in _TV_BN_FIELDS:
                new_key = prefix + f"conv{norm.group(1)}.norm.{norm.group(2)}"
            elif down and down.group(1) == "0" and down.group(2) == "weight":
                new_key = prefix + "shortcut.weight"
            elif down and down.group(1) == "1" and down.group(2) in _TV_BN_FIELDS:
                new_key = prefix + f"shortcut.norm.{down.group(2)}"
            else:
                raise WeightConversionError(f"Unknown torchvision ResNet key '{key}'")
        else:
            raise WeightConversionError(f"Unknown torchvision ResNet key '{key}'")
        converted[new_key] = value.detach().cpu().numpy()
    return converted


def swin_to_d2(state_dict: Mapping[str, torch.Tensor]) -> Dict[str, np.ndarray]:
    """Official Swin Transformer classification weights -> D2SwinTransformer names.

    Names are shared, except that the classifier (`head.*`) and the final `norm.*`
    (D2SwinTransformer has one norm per output stage instead, `norm0..norm3`, trained
    from scratch) are dropped, as are `attn_mask` buffers that the backbone computes
    for the actual input size.
    """
    if "patch_embed.proj.weight" not in state_dict:
        raise WeightConversionError(
            "Not a Swin Transformer state dict: expected key 'patch_embed.proj.weight', "
            f"got e.g. {sorted(state_dict)[:5]}"
        )
    converted = {}
    for key, value in state_dict.items():
        if key.startswith(("head.", "norm.")) or key.endswith("attn_mask"):
            continue
        if not key.startswith(("patch_embed.", "layers.", "absolute_pos_embed")):
            raise WeightConversionError(f"Unknown Swin Transformer key '{key}'")
        converted[key] = value.detach().cpu().numpy()
    return converted


def write_d2_pickle(path: str, weights: Dict[str, np.ndarray], author: str) -> None:
    """Write backbone weights as a detectron2 .pkl (atomically)."""
    payload = {"model": weights, "__author__": author, "matching_heuristics": True}
    atomic_write_bytes(path, pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL))


def conversion_main(
    argv: Optional[List[str]],
    description: str,
    input_help: str,
    convert: Callable[[Mapping[str, torch.Tensor]], Dict[str, np.ndarray]],
    author: str,
) -> int:
    """The command line of the conversion tools: `INPUT.pth OUTPUT.pkl`. Returns the exit
    status (1, with a message naming the input, when it does not hold the expected weights)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("input", help=input_help)
    parser.add_argument("output", help="detectron2 weights to write (.pkl)")
    args = parser.parse_args(argv)
    check_writable_folder(os.path.dirname(os.path.abspath(args.output)), "the output folder")
    try:
        weights = convert(load_torch_state_dict(args.input))
    except (WeightConversionError, FileNotFoundError) as e:
        print(f"error: {args.input}: {e}", file=sys.stderr)
        return 1
    write_d2_pickle(args.output, weights, author=author)
    print(f"Wrote {len(weights)} tensors to {args.output}")
    return 0
