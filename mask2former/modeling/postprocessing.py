"""Turning one image's class and mask predictions into semantic, panoptic and instance results.

The straightforward way upsamples all Q mask logits to the padded input size before
anything else ((Q, H, W) floats: ~350 MB per 800x1088 image at Q=100). Which queries a
panoptic or instance result needs depends only on the class scores, and bilinear
resizing treats every mask on its own, so here only those queries are upsampled, with
the same pixels as the straightforward path (`postprocess_all_queries`, kept for tests
and benchmarks). The semantic map, which needs every query, uses the separability of
bilinear resizing to go through the output in bands of rows.
"""
from typing import FrozenSet, NamedTuple, Optional, Sequence

import torch
from torch.nn import functional as F

from detectron2.modeling.postprocessing import sem_seg_postprocess
from detectron2.structures import Boxes, Instances

__all__ = [
    "QueryMaskUpsampler",
    "QueryPredictions",
    "semantic_inference",
    "banded_semantic_inference",
    "select_panoptic_queries",
    "panoptic_inference",
    "select_instance_queries",
    "instance_inference",
    "masks_to_boxes",
    "postprocess_image",
    "results_from_upsampled_masks",
    "postprocess_all_queries",
]


class QueryMaskUpsampler:
    """Upsamples the mask logits of chosen queries of one image, the way the model outputs them.

    Logits are bilinearly resized to the padded input size, cropped to the image, and
    (if `resize_to_output`) resized to the requested output size, as detectron2's
    `sem_seg_postprocess` does. Each mask's pixels do not depend on which other queries
    are upsampled in the same call.
    """

    def __init__(self, mask_logits, padded_size, image_size, output_size):
        """
        Args:
            mask_logits (Tensor): (Q, h, w) low-resolution logits (stride 4 of the padded input).
            padded_size (tuple[int, int]): (Hp, Wp) of the padded batch.
            image_size (tuple[int, int]): (H, W) of this image inside the padded batch.
            output_size (tuple[int, int]): requested (height, width) of the results.
        """
        self.mask_logits = mask_logits
        self.padded_size = tuple(padded_size)
        self.image_size = tuple(image_size)
        self.output_size = tuple(output_size)

    @property
    def num_queries(self):
        return self.mask_logits.shape[0]

    def __call__(self, query_indices, resize_to_output=True):
        """
        Args:
            query_indices (Tensor | slice): queries to upsample.
            resize_to_output (bool): resize to the output size; otherwise stop at the
                cropped image size.

        Returns:
            Tensor: (n, height, width) or (n, H, W) logits.
        """
        # Each mask is its own batch element: with masks as channels, PyTorch's CPU kernel
        # vectorises across channels for small outputs, and a mask's last bits would then
        # depend on which other masks are resized with it.
        masks = F.interpolate(
            self.mask_logits[query_indices][:, None], size=self.padded_size, mode="bilinear", align_corners=False
        )
        masks = masks[:, :, : self.image_size[0], : self.image_size[1]]
        if resize_to_output:
            masks = F.interpolate(masks, size=self.output_size, mode="bilinear", align_corners=False)
        return masks[:, 0]


class QueryPredictions(NamedTuple):
    """One image's predictions before post-processing: class logits (Q, K+1) of every query
    and their mask logits, with the sizes that place them in the requested output."""

    class_logits: torch.Tensor
    masks: QueryMaskUpsampler


def semantic_inference(class_logits, mask_logits):
    """Per-class score map: sum over queries of P(class) * sigmoid(mask).

    Args:
        class_logits (Tensor): (Q, K+1), last = "no object".
        mask_logits (Tensor): (Q, H, W).

    Returns:
        Tensor: (K, H, W).
    """
    class_probs = F.softmax(class_logits, dim=-1)[:, :-1]
    return torch.einsum("qc,qhw->chw", class_probs, mask_logits.sigmoid())


def _resize_matrix(in_len, padded_len, crop_len, out_len, device):
    """The 1-D linear map of one image axis: resize `in_len` -> `padded_len`, keep the first
    `crop_len`, resize to `out_len` (None: stop after the crop). Returns (out, in_len) weights,
    obtained by passing the identity through the same resizes."""
    x = torch.eye(in_len, device=device)[None]
    x = F.interpolate(x, size=padded_len, mode="linear", align_corners=False)[..., :crop_len]
    if out_len is not None:
        x = F.interpolate(x, size=out_len, mode="linear", align_corners=False)
    return x[0].T.contiguous()


def banded_semantic_inference(class_logits, mask_logits, padded_size, image_size, output_size=None, band_rows=32):
    """`semantic_inference` on masks upsampled as `QueryMaskUpsampler` does, without
    holding all Q upsampled masks: bilinear resizing is separable, so the masks are resized
    along the width at low height, then `band_rows` output rows at a time along the height,
    and each band's query sum is written once. Equal to the plain computation up to float
    rounding.

    Args:
        class_logits (Tensor): (Q, K+1).
        mask_logits (Tensor): (Q, h, w) low-resolution logits.
        padded_size, image_size: (H, W) of the padded batch and of the image inside it.
        output_size: (height, width) to resize to after the crop; None keeps the image size.
        band_rows (int): output rows per band.

    Returns:
        Tensor: (K, height, width).
    """
    num_queries, low_h = mask_logits.shape[:2]
    out_h, out_w = output_size if output_size is not None else image_size
    resize_w = None if output_size is None else out_w
    # width first, at the low height: (Q, h, W_out)
    wide = F.interpolate(mask_logits, size=padded_size[1], mode="linear", align_corners=False)
    wide = wide[..., : image_size[1]]
    if resize_w is not None:
        wide = F.interpolate(wide, size=resize_w, mode="linear", align_corners=False)
    rows = _resize_matrix(low_h, padded_size[0], image_size[0], None if output_size is None else out_h, mask_logits.device)
    rows = rows.to(mask_logits.dtype)
    class_probs = F.softmax(class_logits, dim=-1)[:, :-1]  # (Q, K)
    semantic = mask_logits.new_empty((class_probs.shape[1], out_h, out_w))
    for r0 in range(0, out_h, band_rows):
        r1 = min(r0 + band_rows, out_h)
        weights = rows[r0:r1]
        used = weights.abs().sum(0).nonzero().flatten()  # the few low-res rows this band reads
        c0, c1 = int(used[0]), int(used[-1]) + 1
        band = torch.matmul(weights[:, c0:c1], wide[:, c0:c1]).sigmoid_()  # (Q, rows, W_out)
        semantic[:, r0:r1] = (class_probs.T @ band.view(num_queries, -1)).view(-1, r1 - r0, out_w)
    return semantic


def select_panoptic_queries(class_logits, num_classes, object_mask_threshold):
    """Queries that take part in the panoptic result.

    Args:
        class_logits (Tensor): (Q, K+1).
        num_classes (int): K.
        object_mask_threshold (float): minimum class score.

    Returns:
        (query indices (n,), scores (n,), labels (n,)) of the queries whose argmax is not
        "no object" and whose score exceeds the threshold.
    """
    scores, labels = F.softmax(class_logits, dim=-1).max(-1)
    keep = labels.ne(num_classes) & (scores > object_mask_threshold)
    query_indices = keep.nonzero().flatten()
    return query_indices, scores[query_indices], labels[query_indices]


def panoptic_inference(scores, labels, mask_logits, overlap_threshold, thing_classes: Optional[FrozenSet[int]]):
    """Panoptic segmentation from the kept queries.

    Each pixel goes to the query with the largest score * mask probability; a segment
    keeps the pixels it wins where its own probability is >= 0.5, and is dropped when
    empty or when its won area / its own (>= 0.5) area is below `overlap_threshold`.
    Stuff segments of the same class are merged.

    Args:
        scores, labels (Tensor): (n,) class scores and contiguous class ids of the kept queries.
        mask_logits (Tensor): (n, H, W) their mask logits (modified in place).
        overlap_threshold (float):
        thing_classes (frozenset[int] | None): contiguous ids of thing classes; None
            means unknown, and every class is then treated as a thing (nothing merged).

    Returns:
        (Tensor int32 (H, W) segment ids, 0 = void; list of dicts id/isthing/category_id)
    """
    height, width = mask_logits.shape[-2:]
    panoptic_seg = torch.zeros((height, width), dtype=torch.int32, device=mask_logits.device)
    segments_info = []
    if mask_logits.shape[0] == 0:
        return panoptic_seg, segments_info
    mask_probs = mask_logits.sigmoid_()
    winner = (scores.view(-1, 1, 1) * mask_probs).argmax(0)  # (H, W)
    stuff_segment_ids = {}
    segment_id = 0
    for k, label in enumerate(labels.tolist()):
        isthing = thing_classes is None or label in thing_classes
        won = winner == k
        own = mask_probs[k] >= 0.5
        won_area = int(won.sum())
        own_area = int(own.sum())
        segment = won & own
        if won_area == 0 or own_area == 0 or not bool(segment.any()):
            continue
        if won_area / own_area < overlap_threshold:
            continue
        if not isthing and label in stuff_segment_ids:
            panoptic_seg[segment] = stuff_segment_ids[label]
            continue
        segment_id += 1
        if not isthing:
            stuff_segment_ids[label] = segment_id
        panoptic_seg[segment] = segment_id
        segments_info.append({"id": segment_id, "isthing": bool(isthing), "category_id": int(label)})
    return panoptic_seg, segments_info


def select_instance_queries(class_logits, topk, thing_classes: Optional[FrozenSet[int]] = None):
    """Top-k (query, class) pairs by class score.

    Args:
        class_logits (Tensor): (Q, K+1).
        topk (int): how many pairs to keep (at most Q*K).
        thing_classes (frozenset[int] | None): if given, pairs of other classes are
            dropped after the top-k selection.

    Returns:
        (query indices (n,), scores (n,), labels (n,)), by decreasing score.
    """
    class_probs = F.softmax(class_logits, dim=-1)[:, :-1]
    num_classes = class_probs.shape[1]
    scores, flat_indices = class_probs.flatten().topk(min(topk, class_probs.numel()), sorted=True)
    labels = flat_indices % num_classes
    query_indices = torch.div(flat_indices, num_classes, rounding_mode="floor")
    if thing_classes is not None:
        keep = torch.tensor([int(c) in thing_classes for c in labels.tolist()], dtype=torch.bool, device=labels.device)
        scores, labels, query_indices = scores[keep], labels[keep], query_indices[keep]
    return query_indices, scores, labels


def masks_to_boxes(masks):
    """Tight boxes around binary masks, XYXY with exclusive max (x1 = last column + 1), as
    detectron2's `BitMasks.get_bounding_boxes`; empty masks give zero boxes.

    Args:
        masks (Tensor): (N, H, W) bool.

    Returns:
        Tensor: (N, 4) float32.
    """
    boxes = torch.zeros((masks.shape[0], 4), dtype=torch.float32, device=masks.device)
    if masks.shape[0] == 0:
        return boxes
    rows = masks.any(dim=2)  # (N, H)
    cols = masks.any(dim=1)  # (N, W)
    nonempty = rows.any(dim=1)
    height, width = masks.shape[-2:]
    y0 = rows.byte().argmax(dim=1)
    y1 = height - rows.flip(1).byte().argmax(dim=1)
    x0 = cols.byte().argmax(dim=1)
    x1 = width - cols.flip(1).byte().argmax(dim=1)
    boxes[nonempty] = torch.stack([x0, y0, x1, y1], dim=1)[nonempty].float()
    return boxes


def instance_inference(scores, labels, mask_logits, output_size, mask_rows=None):
    """Instances from selected (query, class) pairs.

    Args:
        scores, labels (Tensor): (n,) class scores and contiguous class ids.
        mask_logits (Tensor): (m, H, W) mask logits; row i belongs to pair i unless
            `mask_rows` is given.
        output_size (tuple[int, int]): (H, W).
        mask_rows (Tensor | None): (n,) row of `mask_logits` of each pair, so that a query
            chosen with several classes is stored and scored once.

    Returns:
        Instances with pred_masks (n, H, W) bool (logit > 0), pred_boxes from the masks,
        scores = class score * mean mask probability inside the mask, pred_classes.
    """
    binary = mask_logits > 0
    mask_scores = mask_logits.new_empty(mask_logits.shape[0])
    for i in range(0, mask_logits.shape[0], 8):  # chunks keep the float temporaries small
        probs = mask_logits[i : i + 8].sigmoid().flatten(1)
        inside = binary[i : i + 8].flatten(1)
        mask_scores[i : i + 8] = (probs * inside).sum(1) / (inside.sum(1) + 1e-6)
    boxes = masks_to_boxes(binary)
    if mask_rows is not None:
        binary, mask_scores, boxes = binary[mask_rows], mask_scores[mask_rows], boxes[mask_rows]
    result = Instances(tuple(output_size))
    result.pred_masks = binary
    result.pred_boxes = Boxes(boxes)
    result.scores = scores * mask_scores
    result.pred_classes = labels
    return result


def _rows_of(queries, stored_queries):
    """Row in `stored_queries` (sorted list) of each entry of `queries` (Tensor)."""
    row_of = {q: row for row, q in enumerate(stored_queries)}
    return torch.tensor([row_of[q] for q in queries.tolist()], dtype=torch.int64, device=queries.device)


def postprocess_image(
    class_logits,
    mask_logits,
    padded_size: Sequence[int],
    image_size: Sequence[int],
    output_size: Sequence[int],
    *,
    num_classes: int,
    semantic_on: bool,
    panoptic_on: bool,
    instance_on: bool,
    resize_before_semantic: bool,
    object_mask_threshold: float,
    overlap_threshold: float,
    detections_per_image: int,
    thing_classes: Optional[FrozenSet[int]],
    query_chunk_size: int = 16,
):
    """All requested results of one image, without upsampling all Q masks at once.

    Panoptic and instance results upsample only the queries they keep (exactly as the
    plain path does); the semantic map goes band by band (`banded_semantic_inference`).

    Args:
        class_logits (Tensor): (Q, K+1).
        mask_logits (Tensor): (Q, h, w) at stride 4 of the padded input.
        padded_size, image_size, output_size: (H, W) of the padded batch, of this image
            inside it, and of the requested output.
        num_classes (int): K.
        semantic_on, panoptic_on, instance_on (bool): which results to produce.
        resize_before_semantic (bool): compute the semantic map from masks already at the
            output size (otherwise at image size, resizing the K-channel map afterwards).
        object_mask_threshold, overlap_threshold (float): panoptic thresholds.
        detections_per_image (int): top-k of the instance result.
        thing_classes (frozenset[int] | None): contiguous thing ids; None if unknown. With
            panoptic on, the instance result keeps only thing classes.
        query_chunk_size (int): queries upsampled at a time.

    Returns:
        dict with "sem_seg" (K, height, width), "panoptic_seg" (int32 map, segments_info),
        "instances" (Instances), as requested.
    """
    upsampler = QueryMaskUpsampler(mask_logits, padded_size, image_size, output_size)
    result = {}
    if panoptic_on:
        pan_queries, pan_scores, pan_labels = select_panoptic_queries(class_logits, num_classes, object_mask_threshold)
    if instance_on:
        ins_queries, ins_scores, ins_labels = select_instance_queries(
            class_logits, detections_per_image, thing_classes if panoptic_on else None
        )
    needed = set()
    if panoptic_on:
        needed.update(pan_queries.tolist())
    if instance_on:
        needed.update(ins_queries.tolist())
    needed = sorted(needed)

    if semantic_on:
        if resize_before_semantic:
            semantic = banded_semantic_inference(class_logits, mask_logits, padded_size, image_size, output_size)
        else:
            semantic = banded_semantic_inference(class_logits, mask_logits, padded_size, image_size, None)
            semantic = sem_seg_postprocess(semantic, semantic.shape[-2:], *output_size)
        result["sem_seg"] = semantic

    # Panoptic and instance results read exactly upsampled masks of the needed queries only.
    height, width = int(output_size[0]), int(output_size[1])
    stored = mask_logits.new_empty((len(needed), height, width))
    for i in range(0, len(needed), query_chunk_size):
        chunk = torch.tensor(needed[i : i + query_chunk_size], dtype=torch.int64, device=mask_logits.device)
        stored[i : i + len(chunk)] = upsampler(chunk)

    if instance_on:
        result["instances"] = instance_inference(
            ins_scores, ins_labels, stored, (height, width), _rows_of(ins_queries, needed)
        )
    if panoptic_on:
        result["panoptic_seg"] = panoptic_inference(
            pan_scores, pan_labels, stored[_rows_of(pan_queries, needed)], overlap_threshold, thing_classes
        )
    return result


def results_from_upsampled_masks(
    class_logits,
    masks,
    *,
    num_classes: int,
    panoptic_on: bool,
    instance_on: bool,
    object_mask_threshold: float,
    overlap_threshold: float,
    detections_per_image: int,
    thing_classes: Optional[FrozenSet[int]],
):
    """Panoptic and instance results from the mask logits of every query, already at the
    output size.

    Args:
        class_logits (Tensor): (Q, K+1).
        masks (Tensor): (Q, height, width) mask logits (not modified).
        other arguments: as in `postprocess_image`.

    Returns:
        dict with "panoptic_seg" and/or "instances", as requested.
    """
    result = {}
    if instance_on:
        queries, scores, labels = select_instance_queries(
            class_logits, detections_per_image, thing_classes if panoptic_on else None
        )
        result["instances"] = instance_inference(scores, labels, masks[queries], tuple(masks.shape[-2:]))
    if panoptic_on:
        queries, scores, labels = select_panoptic_queries(class_logits, num_classes, object_mask_threshold)
        result["panoptic_seg"] = panoptic_inference(scores, labels, masks[queries], overlap_threshold, thing_classes)
    return result


def postprocess_all_queries(
    class_logits,
    mask_logits,
    padded_size: Sequence[int],
    image_size: Sequence[int],
    output_size: Sequence[int],
    *,
    num_classes: int,
    semantic_on: bool,
    panoptic_on: bool,
    instance_on: bool,
    resize_before_semantic: bool,
    object_mask_threshold: float,
    overlap_threshold: float,
    detections_per_image: int,
    thing_classes: Optional[FrozenSet[int]],
):
    """Same results as `postprocess_image`, computed the plain way: all Q masks are
    upsampled together first (kept to check `postprocess_image` and as the benchmark's
    baseline)."""
    padded = F.interpolate(mask_logits[None], size=tuple(padded_size), mode="bilinear", align_corners=False)[0]
    resize_first = resize_before_semantic or panoptic_on or instance_on
    all_masks = sem_seg_postprocess(padded, image_size, *output_size) if resize_first else None
    result = {}
    if semantic_on:
        if resize_before_semantic:
            result["sem_seg"] = semantic_inference(class_logits, all_masks)
        else:
            result["sem_seg"] = sem_seg_postprocess(semantic_inference(class_logits, padded), image_size, *output_size)
    result.update(
        results_from_upsampled_masks(
            class_logits,
            all_masks,
            num_classes=num_classes,
            panoptic_on=panoptic_on,
            instance_on=instance_on,
            object_mask_threshold=object_mask_threshold,
            overlap_threshold=overlap_threshold,
            detections_per_image=detections_per_image,
            thing_classes=thing_classes,
        )
    )
    return result
