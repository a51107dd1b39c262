"""Running an exported network without detectron2 or this project's model code.

    network = load_network("model.pt2")            # or .onnx, or an AOTInductor package
    meta = load_metadata("meta.json")
    results = predict(network, meta, [image_rgb])  # (H, W, 3) uint8 RGB arrays

Pre-processing is the model's own: shortest-edge resize (as detectron2's
`ResizeShortestEdge`, PIL bilinear), the configured channel order, normalisation and zero
padding to the size divisibility. Post-processing is `mask2former.postprocessing`, the
code the model's inference runs.
"""
import json
import os
import zipfile
from typing import Dict, List, Sequence, Tuple

import numpy as np
import torch
from torch.nn import functional as F

__all__ = ["ExportedNetwork", "load_network", "load_metadata", "postprocess_options", "preprocess", "predict"]


class ExportedNetwork:
    """An exported network: `network(images)` -> (pred_logits, pred_masks), float32 tensors.

    Args:
        path: a `torch.export` program (.pt2), an AOTInductor package (.pt2) or an ONNX
            model (.onnx).
        fmt: "export", "aoti" or "onnx"; by default told from the file.
    """

    def __init__(self, path: str, fmt: str = None):
        if not os.path.isfile(path):
            raise FileNotFoundError(f"exported model {path} does not exist")
        self.path = path
        self.format = fmt or detect_format(path)
        if self.format == "onnx":
            import onnxruntime

            self._session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
        else:
            import mask2former.ops  # noqa: F401  (registers torch.ops.mask2former for the program)

            if self.format == "export":
                self._module = torch.export.load(path).module()
            else:
                self._module = torch._inductor.aoti_load_package(path)

    def __call__(self, images: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """images: (N, 3, H, W) float32, normalised and padded."""
        if self.format == "onnx":
            logits, masks = self._session.run(None, {"images": images.detach().cpu().numpy()})
            return torch.from_numpy(logits), torch.from_numpy(masks)
        with torch.no_grad():
            logits, masks = self._module(images)
        return logits, masks


def detect_format(path: str) -> str:
    """"onnx" for .onnx files; for .pt2 archives "aoti" if they hold AOTInductor code, else "export"."""
    if path.endswith(".onnx"):
        return "onnx"
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{path} is neither an ONNX model (.onnx) nor a .pt2 archive")
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
    return "aoti" if any("/aotinductor/" in name for name in names) else "export"


def load_network(path: str, fmt: str = None) -> ExportedNetwork:
    return ExportedNetwork(path, fmt)


def load_metadata(path: str) -> Dict:
    """The `meta.json` written by the export; a clear error names the file and the key missing."""
    try:
        with open(path) as f:
            meta = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"cannot read the export metadata {path}: {e}") from e
    required = ("pixel_mean", "pixel_std", "size_divisibility", "input_format", "min_size_test",
                "max_size_test", "class_names", "postprocess")
    missing = [k for k in required if k not in meta]
    if missing:
        raise ValueError(f"{path} lacks the keys {missing}")
    return meta


def postprocess_options(meta: Dict, **tasks):
    """`PostprocessOptions` of the exported model; `tasks` (semantic_on=...) override its own."""
    from mask2former.postprocessing import PostprocessOptions

    options = dict(meta["postprocess"])
    if options.get("thing_classes") is not None:
        options["thing_classes"] = frozenset(options["thing_classes"])
    return PostprocessOptions(**options).with_tasks(**tasks)


def resized_size(height: int, width: int, short_edge: int, max_size: int) -> Tuple[int, int]:
    """(height, width) after a shortest-edge resize to `short_edge`, capped at `max_size`."""
    scale = short_edge / min(height, width)
    new_h, new_w = (short_edge, scale * width) if height < width else (scale * height, short_edge)
    if max(new_h, new_w) > max_size:
        scale = max_size / max(new_h, new_w)
        new_h, new_w = new_h * scale, new_w * scale
    return int(new_h + 0.5), int(new_w + 0.5)


def preprocess(images_rgb: Sequence[np.ndarray], meta: Dict):
    """RGB uint8 images -> (padded batch (N, 3, Hp, Wp) float32, per-image resized sizes).

    All images share one padded batch; give images of one padded size to get each image's
    single-image result (see `Mask2FormerPredictor`)."""
    from PIL import Image

    mean = torch.tensor(meta["pixel_mean"], dtype=torch.float32).view(-1, 1, 1)
    std = torch.tensor(meta["pixel_std"], dtype=torch.float32).view(-1, 1, 1)
    tensors = []
    for i, image in enumerate(images_rgb):
        if not (isinstance(image, np.ndarray) and image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.uint8):
            raise ValueError(f"image {i}: expected an (H, W, 3) uint8 RGB array")
        if meta["input_format"] == "BGR":
            image = image[:, :, ::-1]
        if meta["min_size_test"] > 0:
            size = resized_size(image.shape[0], image.shape[1], meta["min_size_test"], meta["max_size_test"])
            if size != image.shape[:2]:
                image = np.asarray(Image.fromarray(np.ascontiguousarray(image)).resize(size[::-1], Image.BILINEAR))
        tensor = torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1))).float()
        tensors.append((tensor - mean) / std)
    step = max(int(meta["size_divisibility"]), 1)
    padded_h = -(-max(t.shape[1] for t in tensors) // step) * step
    padded_w = -(-max(t.shape[2] for t in tensors) // step) * step
    smallest = int(meta.get("min_side", 0))  # absent in metadata of earlier exports
    if min(padded_h, padded_w) < smallest:
        raise ValueError(
            f"images padded to {padded_h}x{padded_w} are smaller than the exported network's "
            f"smallest side {smallest} (meta.json 'min_side'); use larger images or INPUT.MIN_SIZE_TEST"
        )
    batch = torch.stack([F.pad(t, (0, padded_w - t.shape[2], 0, padded_h - t.shape[1])) for t in tensors])
    return batch, [tuple(t.shape[-2:]) for t in tensors]


def predict(network, meta: Dict, images_rgb: Sequence[np.ndarray], **tasks) -> List[Dict]:
    """Results of RGB uint8 images at their own sizes: per image a dict with "sem_seg",
    "panoptic_seg" and/or "instances" as `mask2former.postprocessing.postprocess_image`
    returns them; `tasks` (panoptic_on=True, ...) override the exported model's choice."""
    from mask2former.postprocessing import postprocess_image

    batch, image_sizes = preprocess(images_rgb, meta)
    pred_logits, pred_masks = network(batch)
    options = postprocess_options(meta, **tasks)
    padded_size = tuple(batch.shape[-2:])
    return [
        postprocess_image(pred_logits[i], pred_masks[i], padded_size, image_sizes[i], image.shape[:2], options)
        for i, image in enumerate(images_rgb)
    ]
