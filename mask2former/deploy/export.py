"""Writing an exported network in one of three formats, and the `meta.json` beside it.

- "export": the `torch.export` program (`torch.export.save`, .pt2). Runs with torch and the
  op library `mask2former._C` (`import mask2former.ops` registers it).
- "aoti": an AOTInductor package (`torch._inductor.aoti_compile_and_package`, .pt2): the
  network compiled to a shared library for the device it was built on; the deformable
  attention is still called through the op library, so running it needs torch and
  `mask2former._C` too.
- "onnx": an ONNX model whose deformable attention is standard ONNX ops
  (`onnx_ms_deform_attn`); runs in onnxruntime alone.

Every file is written next to its final path and renamed into place, so a failed export
never leaves a truncated artefact.
"""
import json
import os
import shutil
import tempfile
from typing import Dict

import torch

__all__ = ["FORMATS", "save_program", "export_metadata", "write_metadata", "metadata_path"]

FORMATS = ("export", "aoti", "onnx")


def metadata_path(artefact_path: str) -> str:
    """`meta.json` in the folder of the artefact."""
    return os.path.join(os.path.dirname(os.path.abspath(artefact_path)), "meta.json")


def _atomic_target(path: str):
    """A temporary path in the folder of `path` (same file system, so the rename is atomic)."""
    folder = os.path.dirname(os.path.abspath(path)) or "."
    os.makedirs(folder, exist_ok=True)
    tmp_dir = tempfile.mkdtemp(prefix=".export-", dir=folder)
    return tmp_dir, os.path.join(tmp_dir, os.path.basename(path))


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


def save_program(program, path: str, fmt: str, aoti_options: Dict = None) -> None:
    """Write the `torch.export` program `program` to `path` in format `fmt` (see FORMATS).

    Args:
        aoti_options: extra `inductor_configs` for the AOTInductor build.
    """
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
    tmp_dir, tmp_path = _atomic_target(path)
    try:
        if fmt == "export":
            torch.export.save(program, tmp_path)
        elif fmt == "aoti":
            torch._inductor.aoti_compile_and_package(
                program, package_path=tmp_path, inductor_configs=dict(aoti_options or {})
            )
        else:
            _save_onnx(program, tmp_path)
        os.replace(tmp_path, path)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)


def postprocess_fields(model) -> Dict:
    """The `PostprocessOptions` of a `MaskFormer`, as JSON-able fields."""
    thing_classes = model.thing_classes()
    return {
        "num_classes": model.num_classes,
        "semantic_on": model.semantic_on,
        "panoptic_on": model.panoptic_on,
        "instance_on": model.instance_on,
        "resize_before_semantic": model.sem_seg_postprocess_before_inference,
        "object_mask_threshold": model.object_mask_threshold,
        "overlap_threshold": model.overlap_threshold,
        "detections_per_image": model.test_topk_per_image,
        "thing_classes": None if thing_classes is None else sorted(thing_classes),
    }


def export_metadata(model, cfg, fmt: str, dtype: str) -> Dict:
    """What the runner needs besides the network, from a `MaskFormer` and its config."""
    from mask2former.utils.visualizer import display_metadata  # needs detectron2, as the export does

    shown = display_metadata(model.metadata, model.num_classes)
    return {
        "format": fmt,
        "dtype": dtype,
        "torch_version": torch.__version__,
        "class_names": list(shown.stuff_classes)[: model.num_classes],
        "class_colors": [list(map(int, c)) for c in shown.stuff_colors][: model.num_classes],
        "pixel_mean": [float(v) for v in model.pixel_mean.flatten()],
        "pixel_std": [float(v) for v in model.pixel_std.flatten()],
        "size_divisibility": int(model.size_divisibility),
        "input_format": cfg.INPUT.FORMAT,
        "min_size_test": int(cfg.INPUT.MIN_SIZE_TEST),
        "max_size_test": int(cfg.INPUT.MAX_SIZE_TEST),
        "num_queries": int(model.num_queries),
        "postprocess": postprocess_fields(model),
    }


def write_metadata(path: str, metadata: Dict) -> None:
    """Write `metadata` as JSON to `path`, atomically."""
    tmp_dir, tmp_path = _atomic_target(path)
    try:
        with open(tmp_path, "w") as f:
            json.dump(metadata, f, indent=2)
        os.replace(tmp_path, path)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
