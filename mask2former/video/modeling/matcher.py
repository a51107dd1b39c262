"""Hungarian matching of predicted to ground-truth instances over all frames of a clip."""
from ...modeling.matcher import HungarianMatcher
from ...modeling.point_sampling import point_sample

__all__ = ["VideoHungarianMatcher"]


class VideoHungarianMatcher(HungarianMatcher):
    """`HungarianMatcher` for clips: predictions "pred_masks" (B, Q, T, h, w), targets
    "masks" (N, T, H, W). One set of random points serves every frame of a clip, and a
    query's (or a target's) T masks read there count as one mask of T * P values in the BCE
    and dice costs; the class cost is the image one."""

    @staticmethod
    def _masks_at_points(masks, points):
        """(N, T, h, w) masks read at (1, P, 2) points shared by all frames -> (N, T * P)."""
        return point_sample(masks, points.expand(masks.shape[0], -1, -1)).flatten(1)
