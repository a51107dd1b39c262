"""Run a trained Mask2Former on plain images (BGR numpy arrays, as cv2 reads them).

    predictor = Mask2FormerPredictor(cfg)          # builds the model, loads MODEL.WEIGHTS
    result = predictor(image_bgr)                  # one image
    results = predictor.predict_batch([im1, im2])  # several images, one result each

Each result is the model's eval output for the image at its original size: a dict with
"sem_seg" (K, H, W), "panoptic_seg" ((H, W) int32 ids, segments_info) and/or "instances",
depending on `MODEL.MASK_FORMER.TEST.{SEMANTIC,PANOPTIC,INSTANCE}_ON`.
"""
import logging
from collections import defaultdict
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
from detectron2.config import configurable
from detectron2.data import MetadataCatalog
from detectron2.data import transforms as T
from detectron2.modeling import build_model

from .config import use_cpu_if_no_cuda
from .utils.checkpoint import load_weights_checked

__all__ = ["Mask2FormerPredictor"]

logger = logging.getLogger(__name__)


class Mask2FormerPredictor:
    """Resize, colour conversion and a no-grad forward pass around a model in eval mode.

    Batching: the model pads all images of one forward pass to the largest of them, and
    the network sees the padded area (GroupNorm statistics, deformable and masked
    attention all cover it), so an image batched with a larger one gets other predictions
    than alone; the image that sets the padded size is unaffected. `predict_batch`
    therefore only batches images whose padded sizes are equal (`group_by_size=True`, the
    default), which gives the single-image results up to float rounding (measured: 7e-7).
    With `group_by_size=False` all images share one padded batch; measured with
    benchmarks/bench_predictor_batching.py on the R50 COCO panoptic model (random weights, four
    images of different shapes at MIN_SIZE_TEST 384), semantic scores then moved by up to
    1.3 (they are sums over queries, range 0..Q), and as untrained class scores are nearly
    tied, the arg-max label changed at most pixels. On CPU that mode was also barely
    faster (1.05x the single-image speed, against 1.2x for grouped batches).
    """

    @configurable
    def __init__(
        self,
        *,
        model: torch.nn.Module,
        min_size_test: int,
        max_size_test: int,
        input_format: str,
        size_divisibility: Optional[int] = None,
        metadata=None,
        max_batch_size: int = 8,
    ):
        """
        Args:
            model: a model in detectron2's input/output convention, put in eval mode here.
            min_size_test, max_size_test: shortest-edge resize (INPUT.MIN/MAX_SIZE_TEST);
                `min_size_test` 0 disables resizing.
            input_format: "RGB" or "BGR", the channel order the model expects.
            size_divisibility: the multiple the model pads images to, used to group
                images of equal padded size in `predict_batch`; by default the model's
                own `size_divisibility` (else 1: only images of equal size are grouped).
            metadata: detectron2 Metadata of the categories, kept for visualisation.
            max_batch_size: most images per forward pass in `predict_batch`.
        """
        if input_format not in ("RGB", "BGR"):
            raise ValueError(f"INPUT.FORMAT must be 'RGB' or 'BGR', got {input_format!r}")
        self.model = model.eval()
        self.input_format = input_format
        if size_divisibility is None:
            size_divisibility = getattr(model, "size_divisibility", 1)
        self.size_divisibility = max(int(size_divisibility), 1)
        self.metadata = metadata
        self.max_batch_size = max(int(max_batch_size), 1)
        self.resize = (
            T.ResizeShortestEdge([min_size_test, min_size_test], max_size_test)
            if min_size_test > 0
            else None
        )

    @classmethod
    def from_config(cls, cfg, allow_partial_weights: bool = False, load_weights: bool = True):
        """Build the model of `cfg` and load `cfg.MODEL.WEIGHTS` into it.

        Weights that do not fit the model raise `CheckpointMismatchError` naming the keys,
        unless `allow_partial_weights`. MODEL.DEVICE "cuda" falls back to the CPU when
        CUDA is not available. An empty MODEL.WEIGHTS keeps random weights (with
        a warning), which is only useful for smoke tests.
        """
        cfg = cfg.clone()
        requested_device = cfg.MODEL.DEVICE
        if use_cpu_if_no_cuda(cfg):
            logger.warning(f"MODEL.DEVICE is {requested_device!r} but CUDA is not available: using CPU.")
        model = build_model(cfg)
        if load_weights:
            if cfg.MODEL.WEIGHTS:
                load_weights_checked(model, cfg.MODEL.WEIGHTS, allow_partial=allow_partial_weights)
            else:
                logger.warning("MODEL.WEIGHTS is empty: the model keeps its random initialisation.")
        metadata = MetadataCatalog.get(cfg.DATASETS.TEST[0]) if len(cfg.DATASETS.TEST) else None
        return {
            "model": model,
            "min_size_test": cfg.INPUT.MIN_SIZE_TEST,
            "max_size_test": cfg.INPUT.MAX_SIZE_TEST,
            "input_format": cfg.INPUT.FORMAT,
            "metadata": metadata,
        }

    def _to_model_input(self, image: np.ndarray, index: Optional[int] = None) -> Dict:
        """(H, W, 3) uint8 BGR array -> the model's input dict (resized, colour order)."""
        where = "image" if index is None else f"image {index}"
        if not isinstance(image, np.ndarray):
            raise TypeError(f"{where}: expected a numpy array (H, W, 3), got {type(image).__name__}")
        if image.ndim != 3 or image.shape[2] != 3 or image.shape[0] == 0 or image.shape[1] == 0:
            raise ValueError(f"{where}: expected shape (H, W, 3) in BGR order, got {image.shape}")
        if image.dtype != np.uint8:
            raise ValueError(f"{where}: expected dtype uint8, got {image.dtype}")
        height, width = image.shape[:2]
        if self.input_format == "RGB":
            image = image[:, :, ::-1]
        if self.resize is not None:
            image = self.resize.get_transform(image).apply_image(image)
        tensor = torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))
        return {"image": tensor, "height": height, "width": width}

    def _padded_size(self, model_input: Dict):
        d = self.size_divisibility
        h, w = model_input["image"].shape[-2:]
        return (-(-h // d) * d, -(-w // d) * d)

    @torch.no_grad()
    def __call__(self, image: np.ndarray) -> Dict:
        """Predict one (H, W, 3) uint8 BGR image; returns the model's output dict."""
        return self.model([self._to_model_input(image)])[0]

    @torch.no_grad()
    def predict_batch(
        self, images: Sequence[np.ndarray], group_by_size: bool = True
    ) -> List[Dict]:
        """Predict several BGR images; returns one output dict per image, in order.

        With `group_by_size` (default) only images of equal padded size share a forward
        pass, so results equal single-image calls; see the class docstring otherwise.
        """
        inputs = [self._to_model_input(im, i) for i, im in enumerate(images)]
        groups = defaultdict(list)
        for i, model_input in enumerate(inputs):
            key = self._padded_size(model_input) if group_by_size else None
            groups[key].append(i)
        results: List[Optional[Dict]] = [None] * len(inputs)
        for indices in groups.values():
            for start in range(0, len(indices), self.max_batch_size):
                chunk = indices[start : start + self.max_batch_size]
                outputs = self.model([inputs[i] for i in chunk])
                for i, output in zip(chunk, outputs):
                    results[i] = output
        return results
