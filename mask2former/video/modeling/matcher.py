"""Hungarian matching of predicted to ground-truth instances over all frames of a clip."""
from ...modeling.matcher import HungarianMatcher

__all__ = ["VideoHungarianMatcher"]


class VideoHungarianMatcher(HungarianMatcher):
    """`HungarianMatcher` for clips: predictions "pred_masks" (B, Q, T, h, w), targets
    "masks" (N, T, H, W). One set of random points serves every frame of a clip, and a
    query's (or a target's) T masks read there count as one mask of T * P values in the BCE
    and dice costs (the image matcher's handling of dimensions before (h, w)); the class
    cost is the image one."""
