"""Run a trained video Mask2Former on a list of frames (BGR numpy arrays, as cv2 reads them).

    predictor = VideoPredictor(cfg)      # builds the model, loads MODEL.WEIGHTS
    result = predictor(frames)           # {"image_size", "pred_scores", "pred_labels", "pred_masks"}

`pred_masks[i]` is a (T, H, W) bool tensor at the frames' original size: instance `i` is
the same object in every frame (the queries are shared across frames).
"""
from typing import Dict, Sequence

import numpy as np
import torch

from ..predictor import Mask2FormerPredictor

__all__ = ["VideoPredictor"]


class VideoPredictor(Mask2FormerPredictor):
    """The image predictor's resizing, colour order and checked weight loading, with one
    forward pass per video. Long videos are split into clips by the model itself
    (MASK2FORMER.VIDEO.CLIP_LENGTH)."""

    @torch.no_grad()
    def __call__(self, frames: Sequence[np.ndarray]) -> Dict:
        """Predict a video given as T (H, W, 3) uint8 BGR frames of one size."""
        if len(frames) == 0:
            raise ValueError("The video has no frames.")
        inputs = [self._to_model_input(frame, i) for i, frame in enumerate(frames)]
        size = (inputs[0]["height"], inputs[0]["width"])
        for i, model_input in enumerate(inputs):
            if (model_input["height"], model_input["width"]) != size:
                raise ValueError(
                    f"frame {i} is {model_input['width']}x{model_input['height']} (WxH) but "
                    f"frame 0 is {size[1]}x{size[0]}: all frames of a video must have one size."
                )
        video = {"image": [x["image"] for x in inputs], "height": size[0], "width": size[1]}
        return self.model([video])

