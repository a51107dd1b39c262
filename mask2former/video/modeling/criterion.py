"""Set-prediction losses of video Mask2Former."""
from ...modeling.criterion import SetCriterion

__all__ = ["VideoSetCriterion"]


class VideoSetCriterion(SetCriterion):
    """`SetCriterion` for clips: "pred_masks" (B, Q, T, h, w), target "masks" (N, T, H, W).

    After matching whole clips (`VideoHungarianMatcher`), each matched (query, frame) mask
    is a mask of its own, with its own importance-sampled points, and the mask losses are
    summed over frames and normalised by the number of matched instances (not frames): the
    image criterion's handling of dimensions before (h, w).
    """
