"""Writing an exported network in one of three formats, and the `meta.json` beside it.

- "export": the `torch.export` program (`torch.export.save`, .pt2). Runs with torch and the
  op library `mask2former._C` (`import mask2former.ops` registers it).
- "aoti": an AOTInductor package (`torch._inductor.aoti_compile_and_package`, .pt2): the
  network compiled to a shared library for the device it was built on; the deformable
  attention is still called through the op library, so running it needs torch and
  `mask2former._C` too.
- "onnx": an ONNX model whose deformable attention is standard ONNX ops
  (`onnx_ms_deform_attn`); runs in onnxruntime alone.

Every file is written next to its final path and renamed into place
(`mask2former.utils.file_io`), so a failed export never leaves a truncated artefact.
"""
import dataclasses
import os
from typing import Dict

import torch

from mask2former.deploy.network import smallest_side
from mask2former.utils.file_io import atomic_path, atomic_write_json

__all__ = ["FORMATS", "save_program", "export_metadata", "write_metadata", "metadata_path"]

FORMATS = ("export", "aoti", "onnx")


def metadata_path(artefact_path: str) -> str:
    """`meta.json` in the folder of the artefact."""
    return os.path.join(os.path.dirname(os.path.abspath(artefact_path)), "meta.json")


def _save_onnx(program, path: str) -> None:
    from .onnx_ms_deform_attn import ONNX_OPSET, translation_table

    onnx_program = torch.onnx.export(
        program,
        f=None,
        input_names=["images"],
        output_names=["pred_logits", "pred_masks"],
        opset_version=ONNX_OPSET,
        custom_translation_table=translation_table(),
        dynamo=True,
        verbose=False,
    )
    onnx_program.save(path, external_data=False)


# Freezing lets Inductor treat the weights as constants: it folds and prepacks them for the
# CPU's matrix kernels (the tiny quickstart model ran in 0.70x the time of the unfrozen build).
# Inductor applies it only to a build without autograd: `save_program` builds under no_grad.
AOTI_OPTIONS = {"freezing": True}


def save_program(program, path: str, fmt: str, aoti_options: Dict = None) -> None:
    """Write the `torch.export` program `program` to `path` in format `fmt` (see FORMATS).

    Args:
        aoti_options: `inductor_configs` for the AOTInductor build, over AOTI_OPTIONS.
    """
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
    with atomic_path(path) as tmp_path:
        if fmt == "export":
            torch.export.save(program, tmp_path)
        elif fmt == "aoti":
            with torch.no_grad():
                torch._inductor.aoti_compile_and_package(
                    program, package_path=tmp_path, inductor_configs={**AOTI_OPTIONS, **(aoti_options or {})}
                )
        else:
            _save_onnx(program, tmp_path)


def postprocess_fields(model) -> Dict:
    """The `PostprocessOptions` of a `MaskFormer`, as JSON-able fields."""
    fields = dataclasses.asdict(model.postprocess_options)
    if fields["thing_classes"] is not None:
        fields["thing_classes"] = sorted(fields["thing_classes"])
    return fields


def export_metadata(model, cfg, fmt: str) -> Dict:
    """What the runner needs besides the network, from a `MaskFormer` and its config."""
    from mask2former.utils.visualizer import display_metadata  # needs detectron2, as the export does

    num_classes = model.postprocess_options.num_classes
    shown = display_metadata(model.metadata, num_classes)
    return {
        "format": fmt,
        "dtype": cfg.MASK2FORMER.INFERENCE_DTYPE,
        "torch_version": torch.__version__,
        "class_names": list(shown.stuff_classes)[:num_classes],
        "class_colors": [list(map(int, c)) for c in shown.stuff_colors][:num_classes],
        "pixel_mean": [float(v) for v in model.pixel_mean.flatten()],
        "pixel_std": [float(v) for v in model.pixel_std.flatten()],
        "size_divisibility": int(model.size_divisibility),
        "min_side": smallest_side(model, model.size_divisibility),
        "input_format": cfg.INPUT.FORMAT,
        "min_size_test": int(cfg.INPUT.MIN_SIZE_TEST),
        "max_size_test": int(cfg.INPUT.MAX_SIZE_TEST),
        "postprocess": postprocess_fields(model),
    }


def write_metadata(path: str, metadata: Dict) -> None:
    """Write `metadata` as JSON to `path`, atomically."""
    atomic_write_json(path, metadata, indent=2)
