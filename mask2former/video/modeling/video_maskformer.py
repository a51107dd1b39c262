"""``VideoMaskFormer``: Mask2Former for video instance segmentation."""
from typing import Dict, List

import torch
from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY
from detectron2.structures import ImageList

from ...modeling.meta_arch.maskformer_model import MaskFormer
from .clip_linking import ClipLinker, clip_ranges
from .criterion import VideoSetCriterion
from .inference import video_instance_results
from .matcher import VideoHungarianMatcher

__all__ = ["VideoMaskFormer"]


@META_ARCH_REGISTRY.register()
class VideoMaskFormer(MaskFormer):
    """The image backbone and pixel decoder run on every frame; a video transformer decoder
    (``VideoMultiScaleMaskedTransformerDecoder``) predicts, per query, one class for the clip
    and one mask per frame.

    Input: a list of videos, each a dict with "image" (a list of T (C, H, W) tensors),
    optional "height", "width" (output size) and, for training, "instances" (a list of T
    `Instances` with gt_classes, gt_masks and gt_ids, the same instances in the same order in
    every frame, id -1 where absent). Training returns the weighted losses; inference (one
    video per call) returns {"image_size", "pred_scores", "pred_labels", "pred_masks"}.
    """

    matcher_class = VideoHungarianMatcher
    criterion_class = VideoSetCriterion

    @configurable
    def __init__(self, *, num_frames: int, test_topk_per_video: int = 10, clip_length: int = 0, clip_overlap: int = 1, **kwargs):
        """
        Args:
            num_frames: frames per training clip.
            test_topk_per_video: (query, class) pairs kept per video in inference.
            clip_length: inference runs on clips of at most this many frames (0: whole video).
            clip_overlap: frames shared by consecutive clips, on which queries are linked.
            kwargs: as `MaskFormer`.
        """
        super().__init__(**kwargs)
        if clip_length > 0 and not 1 <= clip_overlap < clip_length:
            raise ValueError(
                f"VideoMaskFormer: clip_overlap (MASK2FORMER.VIDEO.CLIP_OVERLAP={clip_overlap}) must be in "
                f"[1, clip_length (MASK2FORMER.VIDEO.CLIP_LENGTH={clip_length}))"
            )
        if test_topk_per_video < 1:
            raise ValueError(f"VideoMaskFormer: MASK2FORMER.VIDEO.TEST_TOPK must be >= 1, got {test_topk_per_video}")
        self.num_frames = num_frames
        self.test_topk_per_video = test_topk_per_video
        self.clip_length = clip_length
        self.clip_overlap = clip_overlap

    @classmethod
    def from_config(cls, cfg):
        args = super().from_config(cfg)
        video = cfg.MASK2FORMER.VIDEO
        args.update(
            num_frames=cfg.INPUT.SAMPLING_FRAME_NUM,
            test_topk_per_video=video.TEST_TOPK,
            clip_length=video.CLIP_LENGTH,
            clip_overlap=video.CLIP_OVERLAP,
        )
        return args

    def forward(self, batched_inputs: List[Dict]):
        if not self.training:
            return self.inference_video(batched_inputs)
        for i, video in enumerate(batched_inputs):
            if len(self._frames(video, i)) != self.num_frames:
                raise ValueError(
                    f"VideoMaskFormer: training video {i} has {len(video['image'])} frames, "
                    f"INPUT.SAMPLING_FRAME_NUM is {self.num_frames}"
                )
        images = self.preprocess_images([{"image": f} for i, v in enumerate(batched_inputs) for f in self._frames(v, i)])
        outputs = self.sem_seg_head(self.backbone(images.tensor))
        losses = self.criterion(outputs, self.prepare_targets(batched_inputs, images))
        weights = self.criterion.weight_dict
        return {name: loss * weights[name] for name, loss in losses.items() if name in weights}

    @staticmethod
    def _frames(video: Dict, index: int) -> List[torch.Tensor]:
        frames = video.get("image") if isinstance(video, dict) else None
        if not isinstance(frames, (list, tuple)) or not frames:
            raise ValueError(f"VideoMaskFormer: batched_inputs[{index}]['image'] must be a non-empty list of (C, H, W) frames")
        sizes = {tuple(f.shape) for f in frames if isinstance(f, torch.Tensor)}
        if len(sizes) != 1 or not all(isinstance(f, torch.Tensor) for f in frames):
            raise ValueError(f"VideoMaskFormer: the frames of batched_inputs[{index}] are not tensors of one size: {sorted(sizes)}")
        return list(frames)

    def prepare_targets(self, batched_inputs: List[Dict], images: ImageList) -> List[Dict]:
        """Per video {"labels": (N,), "ids": (N, T), "masks": (N, T, Hp, Wp) bool} of the N
        instances present in at least one of its frames."""
        frame_inputs = []
        for i, video in enumerate(batched_inputs):
            instances = video.get("instances")
            if not isinstance(instances, (list, tuple)) or len(instances) != len(video["image"]):
                raise ValueError(f"VideoMaskFormer: batched_inputs[{i}]['instances'] must be a list of one Instances per frame")
            if len({len(x) for x in instances}) != 1:
                raise ValueError(f"VideoMaskFormer: batched_inputs[{i}]['instances'] differ in length across frames")
            frame_inputs.extend({"instances": x} for x in instances)
        frame_targets = super().prepare_targets(frame_inputs, images)

        targets, first = [], 0
        for video in batched_inputs:
            frames = frame_targets[first : first + len(video["image"])]
            first += len(frames)
            ids = torch.stack([x.gt_ids.to(self.device, torch.int64) for x in video["instances"]], dim=1)
            present = (ids != -1).any(dim=1)
            targets.append(
                {
                    "labels": frames[-1]["labels"][present],
                    "ids": ids[present],
                    "masks": torch.stack([t["masks"] for t in frames], dim=1)[present],
                }
            )
        return targets

    def inference_video(self, batched_inputs: List[Dict]) -> Dict:
        """Results of one video, computed clip by clip (`clip_ranges`) and linked."""
        if len(batched_inputs) != 1:
            raise ValueError(f"VideoMaskFormer: inference takes one video per call, got {len(batched_inputs)}")
        video = batched_inputs[0]
        frames = self._frames(video, 0)
        linker = ClipLinker(len(frames))
        for start, end in clip_ranges(len(frames), self.clip_length, self.clip_overlap):
            images = self.preprocess_images([{"image": f} for f in frames[start:end]])
            outputs = self.network_outputs(images.tensor)
            linker.add(start, outputs["pred_logits"][0], outputs["pred_masks"][0])
            del outputs
        image_size = images.image_sizes[0]
        return video_instance_results(
            linker.class_scores(),
            linker.mask_logits,
            padded_size=tuple(images.tensor.shape[-2:]),
            image_size=image_size,
            output_size=(video.get("height", image_size[0]), video.get("width", image_size[1])),
            topk=self.test_topk_per_video,
        )
