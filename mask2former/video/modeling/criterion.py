"""Set-prediction losses of video Mask2Former."""
from ...modeling.criterion import SetCriterion

__all__ = ["VideoSetCriterion"]


class VideoSetCriterion(SetCriterion):
    """`SetCriterion` for clips: "pred_masks" (B, Q, T, h, w), target "masks" (N, T, H, W).

    After matching whole clips (`VideoHungarianMatcher`), each matched (query, frame) mask
    is a mask of its own, with its own importance-sampled points, and the mask losses are
    summed over frames and normalised by the number of matched instances (not frames).
    """

    def _matched_masks(self, outputs, targets, indices):
        """Predicted (M * T, h, w) float32 and target (M * T, H, W) masks of the matched frames."""
        pred_masks, target_masks = super()._matched_masks(outputs, targets, indices)
        return pred_masks.flatten(0, 1), target_masks.flatten(0, 1)
