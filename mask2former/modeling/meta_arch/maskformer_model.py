"""The Mask2Former meta-architecture: backbone + mask-classification head + set criterion."""
import math
from typing import Dict, List, Optional, Tuple

import torch
from torch import nn

from detectron2.config import configurable
from detectron2.data import MetadataCatalog
from detectron2.data.catalog import Metadata
from detectron2.modeling import META_ARCH_REGISTRY, build_backbone, build_sem_seg_head
from detectron2.modeling.backbone import Backbone
from detectron2.structures import BitMasks, ImageList

from mask2former.ops import onednn

from ..backbone.folded_resnet import FoldedResNet
from ..criterion import SetCriterion
from ..matcher import HungarianMatcher
from ..postprocessing import (
    PostprocessOptions,
    QueryMaskUpsampler,
    QueryPredictions,
    as_detectron2_results,
    postprocess_image,
    results_from_upsampled_masks,
    semantic_inference,
    thing_classes_of,
)

__all__ = ["MaskFormer", "INFERENCE_DTYPES"]

INFERENCE_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


@META_ARCH_REGISTRY.register()
class MaskFormer(nn.Module):
    """Mask classification for semantic, panoptic and instance segmentation.

    Training returns a dict of weighted scalar losses; inference returns, per image, the
    results switched on ("sem_seg", "panoptic_seg", "instances") at the requested
    (height, width).
    """

    # Built by `from_config`; subclasses for other inputs (e.g. video) swap in their own.
    matcher_class = HungarianMatcher
    criterion_class = SetCriterion

    @configurable
    def __init__(
        self,
        *,
        backbone: Backbone,
        sem_seg_head: nn.Module,
        criterion: SetCriterion,
        num_queries: int,
        metadata: Metadata,
        size_divisibility: int,
        pixel_mean: Tuple[float],
        pixel_std: Tuple[float],
        postprocess: PostprocessOptions,
        inference_dtype: torch.dtype = torch.float32,
    ):
        """
        Args:
            backbone: detectron2 backbone producing the features the head reads.
            sem_seg_head: maps features to {"pred_logits", "pred_masks", "aux_outputs"}.
            criterion: computes the unweighted losses; its `weight_dict` weights them.
            num_queries: Q; accepted for the published constructor interface, not needed
                here (the head produces the queries).
            metadata: dataset metadata (of the first test dataset).
            size_divisibility: pad the batch to a multiple of this.
            pixel_mean, pixel_std: per-channel normalisation, in the input channel order.
            postprocess: which results inference produces and how (number of classes,
                thresholds, thing classes, ...).
            inference_dtype: torch.float32, or torch.bfloat16 to run the network under
                bfloat16 autocast at inference (post-processing stays in float32).
        """
        super().__init__()
        self.backbone = backbone
        # Inference of plain ResNets with batch norm folded into the convolutions (faster, same results).
        self._folded_backbone = FoldedResNet(backbone) if FoldedResNet.supports(backbone) else None
        self.sem_seg_head = sem_seg_head
        self.criterion = criterion
        self.metadata = metadata
        if size_divisibility < 0:
            size_divisibility = backbone.size_divisibility
        self.size_divisibility = size_divisibility
        if len(pixel_mean) != len(pixel_std):
            raise ValueError(f"MaskFormer: pixel_mean {pixel_mean} and pixel_std {pixel_std} differ in length")
        # A zero or non-finite std turns every image into inf/NaN, which would surface
        # much later as a "diverged" matcher cost. (Checked on the Python values: the
        # model may be built on the meta device, where tensors hold no values.)
        if not all(math.isfinite(s) and s != 0 for s in pixel_std):
            raise ValueError(f"MODEL.PIXEL_STD {list(pixel_std)} must be finite and non-zero")
        if not all(math.isfinite(m) for m in pixel_mean):
            raise ValueError(f"MODEL.PIXEL_MEAN {list(pixel_mean)} must be finite")
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean, dtype=torch.float32).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std, dtype=torch.float32).view(-1, 1, 1), False)
        self.postprocess_options = postprocess
        if inference_dtype not in INFERENCE_DTYPES.values():
            raise ValueError(f"MaskFormer: inference_dtype must be one of {list(INFERENCE_DTYPES.values())}")
        self.inference_dtype = inference_dtype

    @classmethod
    def from_config(cls, cfg):
        backbone = build_backbone(cfg)
        sem_seg_head = build_sem_seg_head(cfg, backbone.output_shape())
        mf = cfg.MODEL.MASK_FORMER
        num_classes = cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES

        matcher = cls.matcher_class(
            cost_class=mf.CLASS_WEIGHT,
            cost_mask=mf.MASK_WEIGHT,
            cost_dice=mf.DICE_WEIGHT,
            num_points=mf.TRAIN_NUM_POINTS,
        )
        final_weights = {"loss_ce": mf.CLASS_WEIGHT, "loss_mask": mf.MASK_WEIGHT, "loss_dice": mf.DICE_WEIGHT}
        weight_dict = dict(final_weights)
        if mf.DEEP_SUPERVISION:
            # The head predicts before its first layer and after each of DEC_LAYERS - 1
            # layers; all but the last prediction are auxiliary.
            for i in range(mf.DEC_LAYERS - 1):
                weight_dict.update({f"{k}_{i}": v for k, v in final_weights.items()})
        criterion = cls.criterion_class(
            num_classes,
            matcher=matcher,
            weight_dict=weight_dict,
            eos_coef=mf.NO_OBJECT_WEIGHT,
            losses=("labels", "masks"),
            num_points=mf.TRAIN_NUM_POINTS,
            oversample_ratio=mf.OVERSAMPLE_RATIO,
            importance_sample_ratio=mf.IMPORTANCE_SAMPLE_RATIO,
        )
        if cfg.DATASETS.TEST:
            metadata = MetadataCatalog.get(cfg.DATASETS.TEST[0])
        else:
            metadata = Metadata()
        postprocess = PostprocessOptions(
            num_classes=num_classes,
            semantic_on=mf.TEST.SEMANTIC_ON,
            panoptic_on=mf.TEST.PANOPTIC_ON,
            instance_on=mf.TEST.INSTANCE_ON,
            # Panoptic and instance results are defined on masks at the output size, and
            # the semantic map is then taken from the same masks.
            resize_before_semantic=(
                mf.TEST.SEM_SEG_POSTPROCESSING_BEFORE_INFERENCE or mf.TEST.PANOPTIC_ON or mf.TEST.INSTANCE_ON
            ),
            object_mask_threshold=mf.TEST.OBJECT_MASK_THRESHOLD,
            overlap_threshold=mf.TEST.OVERLAP_THRESHOLD,
            detections_per_image=cfg.TEST.DETECTIONS_PER_IMAGE,
            thing_classes=thing_classes_of(metadata),
        )
        if cfg.MASK2FORMER.INFERENCE_DTYPE not in INFERENCE_DTYPES:
            raise ValueError(
                f"MASK2FORMER.INFERENCE_DTYPE must be one of {sorted(INFERENCE_DTYPES)}, "
                f"got {cfg.MASK2FORMER.INFERENCE_DTYPE!r}"
            )
        return {
            "inference_dtype": INFERENCE_DTYPES[cfg.MASK2FORMER.INFERENCE_DTYPE],
            "backbone": backbone,
            "sem_seg_head": sem_seg_head,
            "criterion": criterion,
            "num_queries": mf.NUM_OBJECT_QUERIES,
            "metadata": metadata,
            # The backbone may need a coarser padding than the configured one (e.g. Swin windows).
            "size_divisibility": max(mf.SIZE_DIVISIBILITY, backbone.size_divisibility),
            "pixel_mean": cfg.MODEL.PIXEL_MEAN,
            "pixel_std": cfg.MODEL.PIXEL_STD,
            "postprocess": postprocess,
        }

    @property
    def device(self):
        return self.pixel_mean.device

    def forward(self, batched_inputs):
        """
        Args:
            batched_inputs (list[dict]): per image, "image" (C, H, W) uint8 tensor in the
                configured channel order; optional "height", "width" (output size); for
                training "instances" with gt_classes (N,) int64 and gt_masks (BitMasks or
                (N, H, W) bool/uint8 tensor).

        Returns:
            training: dict[str, Tensor] of weighted scalar losses.
            inference: list[dict], per image, with "sem_seg" (K, height, width),
            "panoptic_seg" (int32 (height, width), segments_info) and/or "instances".
        """
        images = self.preprocess_images(batched_inputs)
        if self.training:
            outputs = self.sem_seg_head(self.backbone(images.tensor))
            targets = self.prepare_targets(batched_inputs, images)
            losses = self.criterion(outputs, targets)
            weights = self.criterion.weight_dict
            return {name: loss * weights[name] for name, loss in losses.items() if name in weights}
        return self.inference(self.network_outputs(images.tensor), batched_inputs, images)

    def network_outputs(self, images: torch.Tensor) -> Dict:
        """Backbone and head at inference, in `inference_dtype`; the final class and mask
        logits are returned in float32 for post-processing."""
        with torch.autocast(self.device.type, dtype=self.inference_dtype, enabled=self.inference_dtype != torch.float32):
            outputs = self.sem_seg_head(self.inference_features(images))
        return dict(outputs, pred_logits=outputs["pred_logits"].float(), pred_masks=outputs["pred_masks"].float())

    def inference_features(self, images: torch.Tensor) -> Dict[str, torch.Tensor]:
        """The backbone's features at inference: through `FoldedResNet` where it applies."""
        folded = self._folded_backbone is not None and not self.training and onednn.inference_rewrites_apply()
        if folded and not onednn.has_forward_hooks(self.backbone):  # hooks must see the backbone's own modules run
            return self._folded_backbone(images)
        return self.backbone(images)

    def preprocess_images(self, batched_inputs) -> ImageList:
        """Normalise each image and pad the batch (with zeros after normalisation)."""
        images = []
        for i, inputs in enumerate(batched_inputs):
            image = inputs.get("image") if isinstance(inputs, dict) else None
            if not isinstance(image, torch.Tensor) or image.dim() != 3 or image.shape[0] != self.pixel_mean.shape[0]:
                got = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
                raise ValueError(
                    f"MaskFormer: batched_inputs[{i}]['image'] must be a ({self.pixel_mean.shape[0]}, H, W) "
                    f"tensor, got {got}"
                )
            if image.is_floating_point() and not torch.isfinite(image).all():
                name = inputs.get("file_name", f"batched_inputs[{i}]")
                raise ValueError(f"MaskFormer: input image '{name}' has NaN or infinite pixel values")
            images.append((image.to(self.device) - self.pixel_mean) / self.pixel_std)
        return ImageList.from_tensors(images, self.size_divisibility)

    def prepare_targets(self, batched_inputs, images: ImageList):
        """Per image {"labels": (N,) int64, "masks": (N, Hp, Wp) bool} at the padded batch size."""
        padded_h, padded_w = images.tensor.shape[-2:]
        targets = []
        for i, inputs in enumerate(batched_inputs):
            height, width = images.image_sizes[i]
            instances = inputs.get("instances")
            if instances is None:
                raise ValueError(f"MaskFormer: batched_inputs[{i}] has no 'instances' for training")
            labels = instances.gt_classes.to(self.device, torch.int64)
            masks = instances.gt_masks if instances.has("gt_masks") else None
            if isinstance(masks, BitMasks):
                masks = masks.tensor
            if masks is None and len(labels) == 0:
                masks = torch.zeros((0, height, width), dtype=torch.bool)
            if not isinstance(masks, torch.Tensor) or masks.dim() != 3 or masks.shape[0] != len(labels):
                got = tuple(masks.shape) if isinstance(masks, torch.Tensor) else type(masks).__name__
                raise ValueError(
                    f"MaskFormer: batched_inputs[{i}]['instances'].gt_masks must be BitMasks or an "
                    f"(N, H, W) tensor with N = {len(labels)} gt_classes, got {got}"
                )
            if masks.shape[-2] > padded_h or masks.shape[-1] > padded_w:
                raise ValueError(
                    f"MaskFormer: batched_inputs[{i}]['instances'].gt_masks is {tuple(masks.shape[-2:])}, "
                    f"larger than the image {tuple(images.image_sizes[i])}"
                )
            padded = torch.zeros((len(labels), padded_h, padded_w), dtype=torch.bool, device=self.device)
            padded[:, : masks.shape[-2], : masks.shape[-1]] = masks.to(self.device).bool()
            targets.append({"labels": labels, "masks": padded})
        return targets

    def thing_classes(self) -> Optional[frozenset]:
        """Contiguous ids of thing classes, or None if the metadata does not say."""
        return self.postprocess_options.thing_classes

    def predict_queries(self, batched_inputs) -> List[QueryPredictions]:
        """Inference without post-processing: per image, the class logits of every query and
        an upsampler of their mask logits to the requested output size (for test-time
        augmentation, which fuses the queries of several views)."""
        images = self.preprocess_images(batched_inputs)
        return self._query_predictions(self.network_outputs(images.tensor), batched_inputs, images)

    def _query_predictions(self, outputs, batched_inputs, images: ImageList) -> List[QueryPredictions]:
        padded_size = tuple(images.tensor.shape[-2:])
        predictions = []
        for i, inputs in enumerate(batched_inputs):
            image_size = images.image_sizes[i]
            output_size = (inputs.get("height", image_size[0]), inputs.get("width", image_size[1]))
            masks = QueryMaskUpsampler(outputs["pred_masks"][i], padded_size, image_size, output_size)
            predictions.append(QueryPredictions(outputs["pred_logits"][i], masks))
        return predictions

    def semantic_scores(self, predictions: QueryPredictions, upsampled_mask_logits: torch.Tensor) -> torch.Tensor:
        """The (K, height, width) "sem_seg" of `postprocess` for one image, reusing
        `upsampled_mask_logits` (Q, height, width), the masks of `predictions` at the output
        size, when the model takes the semantic scores from masks at that size (test-time
        augmentation upsamples them anyway)."""
        if self.postprocess_options.resize_before_semantic:
            return semantic_inference(predictions.class_logits, upsampled_mask_logits)
        return self.postprocess(predictions, semantic_on=True, panoptic_on=False, instance_on=False)["sem_seg"]

    def inference(self, outputs, batched_inputs, images: ImageList):
        return [self.postprocess(p) for p in self._query_predictions(outputs, batched_inputs, images)]

    def postprocess(
        self,
        predictions: QueryPredictions,
        semantic_on: Optional[bool] = None,
        panoptic_on: Optional[bool] = None,
        instance_on: Optional[bool] = None,
    ) -> Dict:
        """The results of one image; each task defaults to whether the model has it on."""
        masks = predictions.masks
        options = self.postprocess_options.with_tasks(semantic_on, panoptic_on, instance_on)
        result = postprocess_image(
            predictions.class_logits, masks.mask_logits, masks.padded_size, masks.image_size, masks.output_size, options
        )
        return as_detectron2_results(result)

    def postprocess_upsampled(self, class_logits, mask_logits) -> Dict:
        """Panoptic and instance results (those the model has on) from class logits (Q, K+1)
        and mask logits (Q, height, width) already at the output size."""
        return as_detectron2_results(results_from_upsampled_masks(class_logits, mask_logits, self.postprocess_options))
