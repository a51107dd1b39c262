"""Set-prediction losses of Mask2Former: classification, mask BCE and dice."""
import torch
import torch.distributed as dist
from detectron2.utils import comm
from torch import nn
from torch.nn import functional as F

from .point_sampling import point_sample, point_sample_rows, sample_uncertain_points

__all__ = ["SetCriterion", "all_target_masks", "sigmoid_ce_loss", "dice_loss"]


def sigmoid_ce_loss(pred_logits, target_masks, num_masks):
    """Binary cross-entropy per mask (mean over points), summed over masks / num_masks.

    Args:
        pred_logits, target_masks (Tensor): (M, P).
        num_masks (float): normaliser.
    """
    loss = F.binary_cross_entropy_with_logits(pred_logits, target_masks, reduction="none")
    return loss.mean(1).sum() / num_masks


def dice_loss(pred_logits, target_masks, num_masks):
    """Dice loss 1 - (2 sum(p t) + 1) / (sum(p) + sum(t) + 1) per mask, summed / num_masks.

    Args:
        pred_logits, target_masks (Tensor): (M, P).
        num_masks (float): normaliser.
    """
    probs = pred_logits.sigmoid()
    numerator = 2 * (probs * target_masks).sum(-1)
    denominator = probs.sum(-1) + target_masks.sum(-1)
    return (1 - (numerator + 1) / (denominator + 1)).sum() / num_masks


def all_target_masks(targets, device):
    """The target masks of a batch, (N, ..., H, W) per image, as one float32 (R, 1, H, W)
    tensor: one row per mask (and frame), images in order."""
    masks = torch.cat([t["masks"].to(device) for t in targets])
    return masks.flatten(0, -3)[:, None].float()


def _with_masks_from(targets, target_masks):
    """The targets with their "masks" replaced by the same masks in `target_masks`
    (`all_target_masks(targets)`), as views."""
    replaced, start = [], 0
    for target in targets:
        rows = target["masks"].shape[:-2].numel()
        masks = target_masks[start : start + rows, 0].view(target["masks"].shape)
        replaced.append(dict(target, masks=masks))
        start += rows
    return replaced


class SetCriterion(nn.Module):
    """Matches predictions to targets, then computes the losses of every decoder output.

    Losses of the final output are named "loss_ce", "loss_mask", "loss_dice"; those of the
    i-th auxiliary output (`outputs["aux_outputs"][i]`) get the suffix "_{i}". The returned
    losses are unweighted; `weight_dict` tells the caller how to weight them, and
    auxiliary outputs without any weight in it are not evaluated.
    """

    LOSS_NAMES = ("loss_ce", "loss_mask", "loss_dice")

    def __init__(
        self,
        num_classes: int,
        matcher: nn.Module,
        weight_dict: dict,
        eos_coef: float,
        losses=("labels", "masks"),
        num_points: int = 112 * 112,
        oversample_ratio: float = 3.0,
        importance_sample_ratio: float = 0.75,
    ):
        """
        Args:
            num_classes: K, number of classes without "no object".
            matcher: a module mapping (outputs, targets) to per-image index pairs.
            weight_dict: loss name -> weight (used by the caller).
            eos_coef: cross-entropy weight of the "no object" class.
            losses: which of "labels" (loss_ce) and "masks" (loss_mask, loss_dice) to compute.
            num_points, oversample_ratio, importance_sample_ratio: point sampling of the
                mask losses (see `sample_uncertain_points`).
        """
        super().__init__()
        unknown = set(losses) - {"labels", "masks"}
        if unknown:
            raise ValueError(f"SetCriterion: unknown losses {sorted(unknown)}; use 'labels' and/or 'masks'")
        self.num_classes = num_classes
        self.matcher = matcher
        self.weight_dict = dict(weight_dict)
        self.eos_coef = eos_coef
        self.losses = tuple(losses)
        self.num_points = num_points
        self.oversample_ratio = oversample_ratio
        self.importance_sample_ratio = importance_sample_ratio
        empty_weight = torch.ones(num_classes + 1)
        empty_weight[-1] = eos_coef
        self.register_buffer("empty_weight", empty_weight)

    def loss_labels(self, outputs, targets, indices, num_masks):
        """Cross-entropy over K+1 classes; unmatched queries are "no object"."""
        class_logits = outputs["pred_logits"].float()  # (B, Q, K+1)
        target_classes = torch.full(
            class_logits.shape[:2], self.num_classes, dtype=torch.int64, device=class_logits.device
        )
        batch_idx, query_idx = self._matched_queries(indices)
        matched_labels = torch.cat([t["labels"][j] for t, (_, j) in zip(targets, indices)])
        target_classes[batch_idx, query_idx] = matched_labels.to(class_logits.device)
        loss_ce = F.cross_entropy(class_logits.transpose(1, 2), target_classes, self.empty_weight)
        return {"loss_ce": loss_ce}

    def loss_masks(self, outputs, targets, indices, num_masks, target_masks=None):
        """Sigmoid BCE and dice on importance-sampled points of the matched masks.

        `target_masks` is `all_target_masks(targets, device)`, which `forward` converts once
        for all decoder outputs; computed here if not given.
        """
        pred_masks = self._matched_pred_masks(outputs, indices)[:, None]
        if target_masks is None:
            target_masks = all_target_masks(targets, pred_masks.device)
        with torch.no_grad():
            points = sample_uncertain_points(
                pred_masks, self.num_points, self.oversample_ratio, self.importance_sample_ratio
            )
            rows = self._matched_target_rows(targets, indices, pred_masks.device)
            target_points = point_sample_rows(target_masks, rows, points)[:, 0]
        pred_points = point_sample(pred_masks, points)[:, 0]
        return {
            "loss_mask": sigmoid_ce_loss(pred_points, target_points, num_masks),
            "loss_dice": dice_loss(pred_points, target_points, num_masks),
        }

    def _matched_pred_masks(self, outputs, indices):
        """Predicted masks (M, ..., h, w) of the M matched pairs as (M', h, w) float32, one
        row per mask (M' = M * T for clips of T frames)."""
        batch_idx, query_idx = self._matched_queries(indices)
        return outputs["pred_masks"][batch_idx, query_idx].float().flatten(0, -3)

    @staticmethod
    def _matched_target_rows(targets, indices, device):
        """(M',) rows of `all_target_masks(targets)` matching `_matched_pred_masks` row by row."""
        rows, start = [], 0
        for target, (_, target_idx) in zip(targets, indices):
            frames = torch.arange(target["masks"].shape[1:-2].numel(), device=device)
            rows.append(start + (target_idx.to(device)[:, None] * len(frames) + frames).flatten())
            start += len(target["masks"]) * len(frames)
        return torch.cat(rows)

    @staticmethod
    def _matched_queries(indices):
        """(batch index, query index) of every matched prediction, as two (M,) tensors."""
        batch_idx = torch.cat([torch.full_like(src, b) for b, (src, _) in enumerate(indices)])
        query_idx = torch.cat([src for src, _ in indices])
        return batch_idx, query_idx

    def _losses_of(self, outputs, targets, target_masks, num_masks):
        indices = self.matcher(outputs, targets)
        losses = {}
        if "labels" in self.losses:
            losses.update(self.loss_labels(outputs, targets, indices, num_masks))
        if "masks" in self.losses:
            losses.update(self.loss_masks(outputs, targets, indices, num_masks, target_masks))
        return losses

    def num_masks_per_worker(self, targets, device):
        """Target masks per worker, averaged over all workers and at least 1."""
        num_masks = torch.as_tensor(
            [float(sum(len(t["labels"]) for t in targets))], dtype=torch.float, device=device
        )
        world_size = comm.get_world_size()
        if world_size > 1:
            dist.all_reduce(num_masks)
        return torch.clamp(num_masks / world_size, min=1).item()

    def forward(self, outputs, targets):
        """
        Args:
            outputs (dict): "pred_logits" (B, Q, K+1), "pred_masks" (B, Q, h, w) and
                optionally "aux_outputs", a list of dicts with the same two keys.
            targets (list[dict]): per image, "labels" (N,) int64 and "masks" (N, H, W)
                (H, W the padded input size; N may be 0).

        Returns:
            dict[str, Tensor]: unweighted scalar losses.
        """
        device = outputs["pred_logits"].device
        num_masks = self.num_masks_per_worker(targets, device)
        # The only float copy of the targets, made once for the matcher and the losses of
        # all decoder outputs (the matcher gets float32 views of it as the targets' masks).
        target_masks = all_target_masks(targets, device)
        targets = _with_masks_from(targets, target_masks)
        final = {k: v for k, v in outputs.items() if k != "aux_outputs"}
        losses = self._losses_of(final, targets, target_masks, num_masks)
        for i, aux in enumerate(outputs.get("aux_outputs", [])):
            if not any(f"{name}_{i}" in self.weight_dict for name in self.LOSS_NAMES):
                continue  # no weight for this output (deep supervision off): skip the matching
            aux_losses = self._losses_of(aux, targets, target_masks, num_masks)
            losses.update({f"{k}_{i}": v for k, v in aux_losses.items()})
        return losses

    def extra_repr(self):
        return (
            f"num_classes={self.num_classes}, eos_coef={self.eos_coef}, losses={list(self.losses)}, "
            f"num_points={self.num_points}, oversample_ratio={self.oversample_ratio}, "
            f"importance_sample_ratio={self.importance_sample_ratio}"
        )
