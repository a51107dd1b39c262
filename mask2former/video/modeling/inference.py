"""One video's instance results from per-query class scores and per-frame mask logits.

As in the published model: the top-k (query, class) pairs of the flattened scores, score =
the class probability alone, each kept query's masks of every frame upsampled to the
requested size and thresholded at 0. Only the kept queries are upsampled, a few frames at
a time (`QueryMaskUpsampler` resizes every plane on its own, so the pixels are those of
upsampling everything first).
"""
from typing import Dict, Sequence

import torch

from ...modeling.postprocessing import QueryMaskUpsampler

__all__ = ["video_instance_results"]


def video_instance_results(
    class_scores: torch.Tensor,
    mask_logits: torch.Tensor,
    padded_size: Sequence[int],
    image_size: Sequence[int],
    output_size: Sequence[int],
    topk: int = 10,
    frames_per_chunk: int = 16,
) -> Dict:
    """
    Args:
        class_scores: (Q, K) class probabilities, without "no object".
        mask_logits: (Q, T, h, w) low-resolution mask logits (stride 4 of the padded input).
        padded_size: (Hp, Wp) of the padded frames.
        image_size: (H, W) of the frames inside the padding.
        output_size: requested (height, width).
        topk: (query, class) pairs kept.
        frames_per_chunk: frames upsampled at a time (bounds the float32 masks held).

    Returns:
        {"image_size": (height, width), "pred_scores": [float] (descending),
         "pred_labels": [int], "pred_masks": [(T, height, width) bool CPU tensor]}
    """
    num_queries, num_classes = class_scores.shape
    if mask_logits.dim() != 4 or mask_logits.shape[0] != num_queries:
        raise ValueError(
            f"video_instance_results: mask_logits should be (Q={num_queries}, T, h, w), got {tuple(mask_logits.shape)}"
        )
    scores, flat_indices = class_scores.flatten().topk(min(topk, class_scores.numel()))
    queries = torch.div(flat_indices, num_classes, rounding_mode="floor")
    labels = flat_indices % num_classes
    num_frames = mask_logits.shape[1]
    masks = []
    for query in queries.tolist():
        upsample = QueryMaskUpsampler(mask_logits[query], padded_size, image_size, output_size)
        chunks = [upsample(slice(s, s + frames_per_chunk)) > 0 for s in range(0, num_frames, frames_per_chunk)]
        masks.append(torch.cat(chunks).cpu())
    return {
        "image_size": tuple(output_size),
        "pred_scores": scores.tolist(),
        "pred_labels": labels.tolist(),
        "pred_masks": masks,
    }
