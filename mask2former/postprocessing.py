"""Turning one image's class and mask predictions into semantic, panoptic and instance results.

Shared by the model's inference (`mask2former.modeling`, which wraps the results in
detectron2 structures) and by the runner of an exported model, so this module must import
only torch.

The straightforward way upsamples all Q mask logits to the output size before anything
else ((Q, H, W) floats: ~350 MB per 800x1088 image at Q=100, ~10 GB for a 24-megapixel
output). Here the work is split in three steps:

1. select: which queries a panoptic or instance result needs depends only on the class
   scores;
2. upsample what is kept: bilinear resizing treats every mask on its own and is separable,
   so the kept masks are resized along the width at low height, then along the height in
   bands of columns, each band with the same pixels as the straightforward path;
3. assemble: each band adds to running per-query sums and writes its slice of the final
   maps, so that no full-size float mask of every kept query is ever held.

The semantic map, which needs every query, is one (K x Q) by (Q x pixels) matrix product
over bands of output rows (`banded_semantic_inference`).
"""
import dataclasses
import functools
from typing import FrozenSet, Iterator, NamedTuple, Optional, Tuple

import torch
from torch.nn import functional as F

__all__ = [
    "PostprocessOptions",
    "QueryMaskUpsampler",
    "QueryPredictions",
    "InstancePredictions",
    "crop_and_resize",
    "semantic_inference",
    "banded_semantic_inference",
    "select_panoptic_queries",
    "PanopticAssembler",
    "panoptic_inference",
    "select_instance_queries",
    "InstanceAssembler",
    "instance_inference",
    "mask_bounding_boxes",
    "postprocess_image",
    "results_from_upsampled_masks",
    "postprocess_all_queries",
]


@dataclasses.dataclass(frozen=True)
class PostprocessOptions:
    """What inference produces from the query predictions, and how.

    Attributes:
        num_classes: K, without "no object".
        semantic_on, panoptic_on, instance_on: which results to produce.
        resize_before_semantic: compute the semantic map from masks already at the output
            size (otherwise at image size, resizing the K-channel map afterwards).
        object_mask_threshold, overlap_threshold: panoptic thresholds.
        detections_per_image: top-k of the instance result.
        thing_classes: contiguous thing ids; None if unknown (panoptic then treats every
            class as a thing). With panoptic on, the instance result keeps only things.
        band_bytes: upper bound of the full-size float masks held at once. Bands are
            read by several passes (sigmoid, products, sums); at 16 MiB a band is mostly
            still in cache for the next pass (at 800x1088, 64 MiB bands took 15% longer).
    """

    num_classes: int
    semantic_on: bool = True
    panoptic_on: bool = False
    instance_on: bool = False
    resize_before_semantic: bool = True
    object_mask_threshold: float = 0.8
    overlap_threshold: float = 0.8
    detections_per_image: int = 100
    thing_classes: Optional[FrozenSet[int]] = None
    band_bytes: int = 16 * 2**20

    def with_tasks(self, semantic_on=None, panoptic_on=None, instance_on=None) -> "PostprocessOptions":
        """These options with some results switched on or off (None keeps the setting)."""
        changes = {"semantic_on": semantic_on, "panoptic_on": panoptic_on, "instance_on": instance_on}
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})


class InstancePredictions(NamedTuple):
    """Instance results of one image as plain tensors (n detections)."""

    masks: torch.Tensor  # (n, H, W) bool, logit > 0
    boxes: torch.Tensor  # (n, 4) float32 XYXY around the masks
    scores: torch.Tensor  # (n,) class score * mean mask probability inside the mask
    classes: torch.Tensor  # (n,) int64 contiguous class ids
    image_size: Tuple[int, int]


def crop_and_resize(masks, image_size, output_size):
    """Crop (N, C, Hp, Wp) maps to the image and bilinearly resize them to the output size
    (what detectron2's `sem_seg_postprocess` does to one (C, Hp, Wp) map)."""
    masks = masks[:, :, : image_size[0], : image_size[1]]
    return F.interpolate(masks, size=tuple(output_size), mode="bilinear", align_corners=False)


class QueryMaskUpsampler:
    """Upsamples the mask logits of chosen queries of one image, the way the model outputs them.

    Logits are bilinearly resized to the padded input size, cropped to the image, and
    (if `resize_to_output`) resized to the requested output size. Each mask's pixels do
    not depend on which other queries are upsampled in the same call, nor on whether they
    are produced whole (`__call__`) or in bands of columns (`column_bands`).
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
        self.output_size = (int(output_size[0]), int(output_size[1]))

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
        if resize_to_output:
            return crop_and_resize(masks, self.image_size, self.output_size)[:, 0]
        return masks[:, 0, : self.image_size[0], : self.image_size[1]]

    def column_bands(self, query_indices, band_bytes) -> Iterator[Tuple[int, int, torch.Tensor]]:
        """The output-size logits of the chosen queries, a band of columns at a time.

        Yields (c0, c1, logits (n, height, c1 - c0)) equal to `self(query_indices)[..., c0:c1]`:
        the last (large) bilinear resize is done as a resize of the width alone followed by
        one of the height alone, which does per pixel the same arithmetic as the 2-D kernel
        (it interpolates along the width, then along the height).
        """
        masks = self.mask_logits[query_indices][:, None]
        if self.output_size == self.image_size:
            # the resize to the padded size is the large one; the crop comes after it
            target, crop = self.padded_size, self.image_size
        else:
            masks = F.interpolate(masks, size=self.padded_size, mode="bilinear", align_corners=False)
            masks = masks[:, :, : self.image_size[0], : self.image_size[1]]
            target, crop = self.output_size, self.output_size
        wide = F.interpolate(masks, size=(masks.shape[-2], target[1]), mode="bilinear", align_corners=False)
        wide = wide[..., : crop[1]]
        height, width = crop
        # at most 2**24 pixels of a mask per band: the assemblers count pixels as floats
        band_width = max(1, min(width, band_bytes // max(1, 4 * masks.shape[0] * target[0]), 2**24 // target[0]))
        for c0 in range(0, width, band_width):
            c1 = min(c0 + band_width, width)
            columns = wide if band_width == width else wide[..., c0:c1].contiguous()
            band = F.interpolate(columns, size=(target[0], c1 - c0), mode="bilinear", align_corners=False)
            yield c0, c1, band[:, 0, :height]


class QueryPredictions(NamedTuple):
    """One image's predictions before post-processing: class logits (Q, K+1) of every query
    and their mask logits, with the sizes that place them in the requested output."""

    class_logits: torch.Tensor
    masks: QueryMaskUpsampler


_ONEDNN_PRODUCTS = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


@functools.lru_cache(maxsize=None)
def _intel_cpu() -> bool:
    """Whether /proc/cpuinfo names an Intel CPU (False where there is none to read)."""
    try:
        with open("/proc/cpuinfo") as f:
            return any(line.startswith("vendor_id") and "GenuineIntel" in line for line in f)
    except OSError:
        return False


def _class_scores_into(out, class_probs_t, pixel_probs):
    """out (K, n) = class_probs_t (K, Q) @ pixel_probs (n, Q).T. On non-Intel CPUs through
    oneDNN: MKL ran this product (K=133, Q=100, n=41344) at a third of oneDNN's speed on an
    AMD EPYC (17 ms against 6 ms with the copy into `out`). On Intel MKL writes into the
    strided `out` directly, faster than oneDNN plus the copy (4.6 ms against 7.3 ms)."""
    onednn = (
        _ONEDNN_PRODUCTS
        and not _intel_cpu()
        and out.device.type == "cpu"
        and out.dtype == class_probs_t.dtype == pixel_probs.dtype == torch.float32
        and not (class_probs_t.requires_grad or pixel_probs.requires_grad)
        and not (torch.compiler.is_compiling() or torch.jit.is_tracing())  # runtimes know the plain op
    )
    if not onednn:
        return out.addmm_(class_probs_t, pixel_probs.T, beta=0)
    return out.copy_(torch.ops.mkldnn._linear_pointwise(class_probs_t, pixel_probs, None, "none", [], ""))


def _class_sum_into(out, class_probs_t, mask_logits):
    """out (K, n) = class_probs_t (K, Q) @ sigmoid(mask_logits (Q, n)), without keeping the
    sigmoid of more than a band of pixels at once."""
    step = max(1, 2**20 // max(1, mask_logits.shape[0]))
    for s in range(0, mask_logits.shape[1], step):
        probs = mask_logits[:, s : s + step].sigmoid()
        _class_scores_into(out[:, s : s + step], class_probs_t, probs.T)
    return out


def semantic_inference(class_logits, mask_logits):
    """Per-class score map: sum over queries of P(class) * sigmoid(mask).

    Args:
        class_logits (Tensor): (Q, K+1), last = "no object".
        mask_logits (Tensor): (Q, H, W).

    Returns:
        Tensor: (K, H, W).
    """
    class_probs = F.softmax(class_logits, dim=-1)[:, :-1]
    num_queries, height, width = mask_logits.shape
    semantic = mask_logits.new_empty((class_probs.shape[1], height * width))
    _class_sum_into(semantic, class_probs.T.contiguous(), mask_logits.reshape(num_queries, -1))
    return semantic.view(-1, height, width)


def _resize_matrix(in_len, padded_len, crop_len, out_len, device):
    """The 1-D linear map of one image axis: resize `in_len` -> `padded_len`, keep the first
    `crop_len`, resize to `out_len` (None: stop after the crop). Returns (out, in_len) weights,
    obtained by passing the identity through the same resizes."""
    x = torch.eye(in_len, device=device)[None]
    x = F.interpolate(x, size=padded_len, mode="linear", align_corners=False)[..., :crop_len]
    if out_len is not None:
        x = F.interpolate(x, size=out_len, mode="linear", align_corners=False)
    return x[0].T.contiguous()


# Below these, mask and class probabilities count as 0 in the semantic sum: their products
# would be subnormal floats, which make the matrix product several times slower, and they
# change the scores by less than 1e-15.
_SEMANTIC_MIN_MASK_LOGIT = -40.0
_SEMANTIC_MIN_CLASS_PROB = 1e-20


def banded_semantic_inference(
    class_logits, mask_logits, padded_size, image_size, output_size=None, band_bytes=16 * 2**20
):
    """`semantic_inference` on masks upsampled as `QueryMaskUpsampler` does, without
    holding all Q upsampled masks: bilinear resizing is separable, so the masks are resized
    along the width at low height, then a band of output rows at a time along the height,
    and each band's query sum is one matrix product written in place. Equal to the plain
    computation up to float rounding (and probabilities below 1e-17 taken as 0).

    Args:
        class_logits (Tensor): (Q, K+1).
        mask_logits (Tensor): (Q, h, w) low-resolution logits.
        padded_size, image_size: (H, W) of the padded batch and of the image inside it.
        output_size: (height, width) to resize to after the crop; None keeps the image size.
        band_bytes (int): upper bound of the (rows, width, Q) float buffer of a band;
            large bands keep the matrix products efficient.

    Returns:
        Tensor: (K, height, width).
    """
    num_queries, low_h = mask_logits.shape[:2]
    if output_size is not None and tuple(output_size) == tuple(image_size):
        output_size = None  # resizing to the same size changes nothing
    out_h, out_w = output_size if output_size is not None else image_size
    # queries last (channels-last: PyTorch's resize vectorises across them), so that each
    # band is one contiguous (pixels, Q) matrix for both the sigmoid and the query sum
    masks = mask_logits.clamp(min=_SEMANTIC_MIN_MASK_LOGIT)[None].contiguous(memory_format=torch.channels_last)
    # width first, at the low height
    wide = F.interpolate(masks, size=(low_h, padded_size[1]), mode="bilinear", align_corners=False)
    wide = wide[..., : image_size[1]]
    if output_size is not None:
        wide = F.interpolate(wide, size=(low_h, out_w), mode="bilinear", align_corners=False)
    wide = wide[0].permute(1, 2, 0).reshape(low_h, out_w * num_queries)  # (h, W * Q)
    rows = _resize_matrix(low_h, padded_size[0], image_size[0], None if output_size is None else out_h, mask_logits.device)
    rows = rows.to(mask_logits.dtype)
    class_probs_t = F.softmax(class_logits, dim=-1)[:, :-1].T.contiguous()  # (K, Q)
    class_probs_t[class_probs_t < _SEMANTIC_MIN_CLASS_PROB] = 0
    semantic = mask_logits.new_empty((class_probs_t.shape[0], out_h * out_w))
    band_rows = max(1, min(out_h, band_bytes // (mask_logits.element_size() * num_queries * out_w)))
    band_buffer = mask_logits.new_empty(band_rows * out_w * num_queries)
    for r0 in range(0, out_h, band_rows):
        r1 = min(r0 + band_rows, out_h)
        weights = rows[r0:r1]
        used = weights.abs().sum(0).nonzero().flatten()  # the few low-res rows this band reads
        c0, c1 = int(used[0]), int(used[-1]) + 1
        band = band_buffer[: (r1 - r0) * out_w * num_queries].view(r1 - r0, out_w * num_queries)
        torch.mm(weights[:, c0:c1], wide[c0:c1], out=band)
        probs = band.sigmoid_().view(-1, num_queries)  # (pixels, Q)
        # one large product per band (per-row products run several times slower), written
        # straight into the result
        _class_scores_into(semantic[:, r0 * out_w : r1 * out_w], class_probs_t, probs)
    return semantic.view(-1, out_h, out_w)


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


class PanopticAssembler:
    """Builds the panoptic segmentation of the kept queries from their mask probabilities,
    one band of columns at a time (every column must be added).

    Each pixel goes to the query with the largest score * mask probability; a segment
    keeps the pixels it wins where its own probability is >= 0.5, and is dropped when
    empty or when its won area / its own (>= 0.5) area is below `overlap_threshold`.
    Stuff segments of the same class are merged.
    """

    def __init__(self, scores, labels, output_size):
        """
        Args:
            scores, labels (Tensor): (n,) class scores and contiguous class ids of the kept queries.
            output_size (tuple[int, int]): (height, width).
        """
        self.scores, self.labels = scores, labels
        device = scores.device
        # per pixel: 1 + the winning query where the pixel is inside its own mask, else 0
        # every column is written by `add` when any query is kept (no zero-filling pass)
        new = torch.empty if scores.shape[0] else torch.zeros
        self.owner = new(tuple(output_size), dtype=torch.int32, device=device)
        self.won_area = torch.zeros(scores.shape[0], dtype=torch.int64, device=device)
        self.own_area = torch.zeros(scores.shape[0], dtype=torch.int64, device=device)

    def add(self, c0, c1, mask_probs):
        """Columns c0:c1 of the kept queries' mask probabilities (n, height, c1 - c0), the
        sigmoid of their logits (modified in place)."""
        if self.scores.shape[0] == 0:
            return
        # 0/1 as floats: a sum over bools would make an int64 copy of its input (the band
        # sizes keep float counts exact)
        own = torch.ge(mask_probs, 0.5, out=torch.empty_like(mask_probs))
        self.own_area += own.flatten(1).sum(1).long()
        # max(0) finds the same first maximum as argmax(0), several times faster across dim 0
        winner = mask_probs.mul_(self.scores.view(-1, 1, 1)).max(0).indices  # (height, c1 - c0)
        self.won_area += torch.bincount(winner.flatten(), minlength=self.scores.shape[0])
        inside = own.gather(0, winner[None])[0] > 0
        self.owner[:, c0:c1] = torch.where(inside, winner.int() + 1, 0)

    def finish(self, overlap_threshold, thing_classes: Optional[FrozenSet[int]]):
        """
        Args:
            overlap_threshold (float):
            thing_classes (frozenset[int] | None): contiguous ids of thing classes; None
                means unknown, and every class is then treated as a thing (nothing merged).

        Returns:
            (Tensor int32 (height, width) segment ids, 0 = void; list of dicts id/isthing/category_id)
        """
        num_kept = self.scores.shape[0]
        segment_area = torch.bincount(self.owner.flatten(), minlength=num_kept + 1)[1:]
        segment_of_owner = [0] * (num_kept + 1)  # entry 0: pixels no query owns
        segments_info = []
        stuff_segment_ids = {}
        per_query = zip(self.labels.tolist(), self.won_area.tolist(), self.own_area.tolist(), segment_area.tolist())
        for k, (label, won, own, area) in enumerate(per_query):
            isthing = thing_classes is None or label in thing_classes
            if won == 0 or own == 0 or area == 0 or won / own < overlap_threshold:
                continue
            if not isthing and label in stuff_segment_ids:
                segment_of_owner[k + 1] = stuff_segment_ids[label]
                continue
            segment_id = len(segments_info) + 1
            if not isthing:
                stuff_segment_ids[label] = segment_id
            segment_of_owner[k + 1] = segment_id
            segments_info.append({"id": segment_id, "isthing": bool(isthing), "category_id": int(label)})
        lookup = torch.tensor(segment_of_owner, dtype=torch.int32, device=self.owner.device)
        return lookup[self.owner], segments_info


def panoptic_inference(scores, labels, mask_logits, overlap_threshold, thing_classes: Optional[FrozenSet[int]]):
    """Panoptic segmentation (see `PanopticAssembler`) from the kept queries' mask logits
    (n, H, W) given whole (modified in place)."""
    assembler = PanopticAssembler(scores, labels, mask_logits.shape[-2:])
    assembler.add(0, mask_logits.shape[-1], mask_logits.sigmoid_())
    return assembler.finish(overlap_threshold, thing_classes)


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


def _boxes_from_occupied(rows, cols):
    """XYXY boxes with exclusive max around masks, from which of their rows (N, H) and
    columns (N, W) hold a pixel (bool); empty masks give zero boxes."""
    boxes = torch.zeros((rows.shape[0], 4), dtype=torch.float32, device=rows.device)
    if rows.shape[0] == 0:
        return boxes
    nonempty = rows.any(dim=1)
    height, width = rows.shape[1], cols.shape[1]
    y0 = rows.byte().argmax(dim=1)
    y1 = height - rows.flip(1).byte().argmax(dim=1)
    x0 = cols.byte().argmax(dim=1)
    x1 = width - cols.flip(1).byte().argmax(dim=1)
    boxes[nonempty] = torch.stack([x0, y0, x1, y1], dim=1)[nonempty].float()
    return boxes


def mask_bounding_boxes(masks):
    """Tight boxes around binary masks, XYXY with exclusive max (x1 = last column + 1), as
    detectron2's `BitMasks.get_bounding_boxes` (torchvision's `masks_to_boxes` has x1 = last
    column); empty masks give zero boxes.

    Args:
        masks (Tensor): (N, H, W) bool.

    Returns:
        Tensor: (N, 4) float32.
    """
    return _boxes_from_occupied(masks.any(dim=2), masks.any(dim=1))


class InstanceAssembler:
    """Builds the instances of selected (query, class) pairs from the mask logits of the
    queries they use, one band of columns at a time (every column must be added): masks
    (logit > 0), boxes around them, and scores = class score * mean mask probability
    inside the mask."""

    def __init__(self, mask_rows, num_masks, output_size, device):
        """
        Args:
            mask_rows (Tensor): (n,) int64, the row of each pair among the logits passed to
                `add`, so that a query chosen with several classes is scored once.
            num_masks (int): m, the rows of the logits passed to `add`.
            output_size (tuple[int, int]): (height, width).
        """
        self.mask_rows = mask_rows
        self.output_size = (int(output_size[0]), int(output_size[1]))
        height, width = self.output_size
        # every column is written by `add` (no zero-filling pass)
        self.binary = torch.empty((mask_rows.shape[0], height, width), dtype=torch.bool, device=device)
        self.prob_sums = torch.zeros(num_masks, dtype=torch.float32, device=device)
        # pixels inside each mask per row and per column, as floats (a sum over bools would
        # make an int64 copy of its input); they give the areas and the boxes
        self.row_counts = torch.zeros((num_masks, height), dtype=torch.float32, device=device)
        self.col_counts = torch.zeros((num_masks, width), dtype=torch.float32, device=device)

    def add(self, c0, c1, mask_logits, mask_probs):
        """Columns c0:c1 of the m masks' logits and of their sigmoid (m, height, c1 - c0),
        not modified."""
        if self.mask_rows.shape[0] == 0:
            return
        inside = mask_logits > 0
        if torch.equal(self.mask_rows, torch.arange(mask_logits.shape[0], device=self.mask_rows.device)):
            self.binary[:, :, c0:c1] = inside
        else:
            self.binary[:, :, c0:c1] = inside[self.mask_rows]
        weights = inside.float()
        self.row_counts += weights.sum(2)
        self.col_counts[:, c0:c1] = weights.sum(1)
        self.prob_sums += weights.mul_(mask_probs).flatten(1).sum(1)

    def finish(self, scores, labels) -> InstancePredictions:
        """
        Args:
            scores, labels (Tensor): (n,) class scores and contiguous class ids of the pairs.
        """
        areas = self.col_counts.double().sum(1)  # exact: every count is an integer
        mask_scores = self.prob_sums / (areas.float() + 1e-6)
        boxes = _boxes_from_occupied(self.row_counts > 0, self.col_counts > 0)
        rows = self.mask_rows
        return InstancePredictions(self.binary, boxes[rows], scores * mask_scores[rows], labels, self.output_size)


def instance_inference(scores, labels, mask_logits, output_size, mask_rows=None) -> InstancePredictions:
    """Instances (see `InstanceAssembler`) from mask logits (m, H, W) given whole; pair i
    uses mask `mask_rows[i]` (mask i if None)."""
    if mask_rows is None:
        mask_rows = torch.arange(mask_logits.shape[0], device=mask_logits.device)
    assembler = InstanceAssembler(mask_rows, mask_logits.shape[0], output_size, mask_logits.device)
    assembler.add(0, mask_logits.shape[-1], mask_logits, mask_logits.sigmoid())
    return assembler.finish(scores, labels)


def _semantic_result(class_logits, mask_logits, padded_size, image_size, output_size, options: PostprocessOptions):
    sizes = (padded_size, image_size)
    if options.resize_before_semantic:
        return banded_semantic_inference(class_logits, mask_logits, *sizes, output_size, options.band_bytes)
    semantic = banded_semantic_inference(class_logits, mask_logits, *sizes, None, options.band_bytes)
    return crop_and_resize(semantic[None], semantic.shape[-2:], output_size)[0]


def postprocess_image(class_logits, mask_logits, padded_size, image_size, output_size, options: PostprocessOptions):
    """All requested results of one image, without upsampling all Q masks at once.

    Panoptic and instance results upsample only the queries they keep, a band of columns
    at a time, with exactly the pixels of the plain path; the semantic map goes a band of
    rows at a time (`banded_semantic_inference`).

    Args:
        class_logits (Tensor): (Q, K+1).
        mask_logits (Tensor): (Q, h, w) at stride 4 of the padded input.
        padded_size, image_size, output_size: (H, W) of the padded batch, of this image
            inside it, and of the requested output.
        options (PostprocessOptions):

    Returns:
        dict with "sem_seg" (K, height, width), "panoptic_seg" (int32 map, segments_info),
        "instances" (InstancePredictions), as requested.
    """
    output_size = (int(output_size[0]), int(output_size[1]))
    result = {}
    if options.semantic_on:
        result["sem_seg"] = _semantic_result(
            class_logits, mask_logits, padded_size, image_size, output_size, options
        )
    if not (options.panoptic_on or options.instance_on):
        return result

    # 1. select
    pan_queries, pan_scores, pan_labels = select_panoptic_queries(
        class_logits, options.num_classes, options.object_mask_threshold
    )
    ins_queries, ins_scores, ins_labels = select_instance_queries(
        class_logits, options.detections_per_image, options.thing_classes if options.panoptic_on else None
    )
    if not options.panoptic_on:
        pan_queries, pan_scores, pan_labels = pan_queries[:0], pan_scores[:0], pan_labels[:0]
    if not options.instance_on:
        ins_queries = ins_queries[:0]
    needed = torch.unique(torch.cat([pan_queries, ins_queries]))  # sorted
    # each (query, class) pair of the instances and each panoptic query is a row of `needed`
    pan_rows, ins_rows = torch.searchsorted(needed, pan_queries), torch.searchsorted(needed, ins_queries)

    # 2. upsample what is kept, a band of columns at a time, and 3. assemble the results
    panoptic = PanopticAssembler(pan_scores, pan_labels, output_size)
    instances = InstanceAssembler(ins_rows, needed.shape[0], output_size, mask_logits.device)
    upsampler = QueryMaskUpsampler(mask_logits, padded_size, image_size, output_size)
    for c0, c1, logits in upsampler.column_bands(needed, options.band_bytes):
        probs = logits.sigmoid()
        instances.add(c0, c1, logits, probs)
        panoptic.add(c0, c1, probs[pan_rows])  # a copy: the panoptic pass works in place
    if options.instance_on:
        result["instances"] = instances.finish(ins_scores, ins_labels)
    if options.panoptic_on:
        result["panoptic_seg"] = panoptic.finish(options.overlap_threshold, options.thing_classes)
    return result


def results_from_upsampled_masks(class_logits, masks, options: PostprocessOptions):
    """Panoptic and instance results (those switched on) from the mask logits of every
    query, already at the output size.

    Args:
        class_logits (Tensor): (Q, K+1).
        masks (Tensor): (Q, height, width) mask logits (not modified).

    Returns:
        dict with "panoptic_seg" and/or "instances" (InstancePredictions), as requested.
    """
    result = {}
    if options.instance_on:
        thing_classes = options.thing_classes if options.panoptic_on else None
        queries, scores, labels = select_instance_queries(class_logits, options.detections_per_image, thing_classes)
        result["instances"] = instance_inference(scores, labels, masks[queries], tuple(masks.shape[-2:]))
    if options.panoptic_on:
        queries, scores, labels = select_panoptic_queries(
            class_logits, options.num_classes, options.object_mask_threshold
        )
        result["panoptic_seg"] = panoptic_inference(
            scores, labels, masks[queries], options.overlap_threshold, options.thing_classes
        )
    return result


def postprocess_all_queries(class_logits, mask_logits, padded_size, image_size, output_size, options):
    """Same results as `postprocess_image`, computed the plain way: all Q masks are
    upsampled together first (kept to check `postprocess_image` and as the benchmark's
    baseline)."""
    padded = F.interpolate(mask_logits[None], size=tuple(padded_size), mode="bilinear", align_corners=False)
    result = {}
    if options.semantic_on and not options.resize_before_semantic:
        semantic = semantic_inference(class_logits, padded[0])
        result["sem_seg"] = crop_and_resize(semantic[None], image_size, output_size)[0]
    if options.resize_before_semantic or options.panoptic_on or options.instance_on:
        all_masks = crop_and_resize(padded, image_size, output_size)[0]
        if options.semantic_on and options.resize_before_semantic:
            result["sem_seg"] = semantic_inference(class_logits, all_masks)
        result.update(results_from_upsampled_masks(class_logits, all_masks, options))
    return result
