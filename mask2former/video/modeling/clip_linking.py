"""Inference on long videos in overlapping clips, with the queries of each clip linked to
those of the previous one.

Memory of whole-video inference grows with the number of frames (the decoder attends over
T * h * w pixels per level). Cut into clips of at most `clip_length` frames, consecutive
clips sharing `overlap` frames, only one clip's activations are alive at a time. A query of
a new clip continues the track whose masks on the shared frames it resembles most (Hungarian
matching on the dice cost of the image matcher); each frame keeps the masks of the first clip
that covers it and a track's class scores are averaged over its clips. A video of at most
`clip_length` frames is one clip, so its results are those of whole-video inference.
"""
from typing import List, Optional, Tuple

import torch
from scipy.optimize import linear_sum_assignment
from torch.nn import functional as F

from ...modeling.matcher import pairwise_dice

__all__ = ["clip_ranges", "ClipLinker"]


def clip_ranges(num_frames: int, clip_length: int, overlap: int) -> List[Tuple[int, int]]:
    """(start, end) of the clips covering frames 0..num_frames-1; clip_length 0 = one clip."""
    if num_frames < 1:
        raise ValueError("clip_ranges: a video needs at least one frame")
    if clip_length <= 0 or num_frames <= clip_length:
        return [(0, num_frames)]
    if not 1 <= overlap < clip_length:
        raise ValueError(f"clip_ranges: overlap must be in [1, clip_length={clip_length}), got {overlap}")
    ranges, start = [], 0
    while True:
        end = min(start + clip_length, num_frames)
        ranges.append((start, end))
        if end == num_frames:
            return ranges
        start = end - overlap


class ClipLinker:
    """Collects per-clip predictions of one video, in temporal order, into Q tracks:
    `class_scores()` (Q, K) and `mask_logits` (Q, T, h, w)."""

    def __init__(self, num_frames: int):
        self.num_frames = num_frames
        self.mask_logits: Optional[torch.Tensor] = None
        self._score_sum: Optional[torch.Tensor] = None
        self._num_clips = 0
        self._frames_done = 0

    def add(self, start: int, class_logits: torch.Tensor, mask_logits: torch.Tensor) -> None:
        """
        Args:
            start: index of the clip's first frame; clips overlap the previous one (or start at 0).
            class_logits: (Q, K+1), last = "no object".
            mask_logits: (Q, t, h, w) of the clip's frames start..start+t-1.
        """
        first_clip = self._num_clips == 0
        valid = start == 0 if first_clip else 0 <= start < self._frames_done
        if not valid:
            expected = "0" if first_clip else f"in 0..{self._frames_done - 1} (overlapping the previous clip)"
            raise ValueError(f"ClipLinker: a clip starts at frame {start}, expected {expected}")
        if self.mask_logits is None:
            shape = (mask_logits.shape[0], self.num_frames, *mask_logits.shape[2:])
            self.mask_logits = mask_logits.new_zeros(shape)
            order = torch.arange(mask_logits.shape[0], device=mask_logits.device)
        else:
            order = self._track_order(mask_logits[:, : self._frames_done - start], start)
        class_scores = F.softmax(class_logits, dim=-1)[:, :-1][order]
        self._score_sum = class_scores if self._score_sum is None else self._score_sum + class_scores
        end = start + mask_logits.shape[1]
        self.mask_logits[:, self._frames_done : end] = mask_logits[order, self._frames_done - start :]
        self._frames_done = end
        self._num_clips += 1

    def _track_order(self, shared_logits: torch.Tensor, start: int) -> torch.Tensor:
        """(Q,) the new clip's query continuing each track, matched on the shared frames."""
        tracks = self.mask_logits[:, start : self._frames_done].sigmoid().flatten(1)
        cost = pairwise_dice(shared_logits.flatten(1).float(), tracks.float())  # (new query, track)
        queries, tracks_of_queries = linear_sum_assignment(cost.cpu().numpy())
        order = torch.empty(len(queries), dtype=torch.int64)
        order[torch.as_tensor(tracks_of_queries)] = torch.as_tensor(queries)
        return order.to(shared_logits.device)

    def class_scores(self) -> torch.Tensor:
        """(Q, K) class probabilities of each track, averaged over the clips."""
        if self._frames_done != self.num_frames:
            raise RuntimeError(f"ClipLinker: frames {self._frames_done}..{self.num_frames - 1} were never added")
        return self._score_sum / self._num_clips
