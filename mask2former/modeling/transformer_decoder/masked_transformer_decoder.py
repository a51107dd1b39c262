"""``MultiScaleMaskedTransformerDecoder``: Mask2Former's decoder with masked cross-attention."""
from typing import Dict, List, Optional, Sequence, Tuple

import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.layers import Conv2d
from fvcore.nn import weight_init
from torch import Tensor, nn

from mask2former.ops import onednn

from .build import TRANSFORMER_DECODER_REGISTRY
from .layers import MLP, CrossAttentionLayer, FFNLayer, SelfAttentionLayer
from .legacy_keys import rename_legacy_keys
from .position_encoding import PositionEmbeddingSine

__all__ = ["MultiScaleMaskedTransformerDecoder", "attention_mask_from_mask_logits", "frames_to_sequence"]


def resize_planes(planes: Tensor, size: Sequence[int]) -> Tensor:
    """Bilinear resize (half-pixel centres, as ``F.interpolate`` with ``align_corners=False``)
    of (B, ..., H, W) over its last two dimensions to ``size`` (h, w)."""
    (height, width), (h, w) = planes.shape[-2:], size
    if height % h == 0 and width % w == 0 and (height // h) % 2 == 0 and (width // w) % 2 == 0:
        return _shrink_by_even_factors(planes, height // h, width // w)
    resized = F.interpolate(planes.flatten(1, -3), size=tuple(size), mode="bilinear", align_corners=False)
    return resized.view(*planes.shape[:-2], *resized.shape[-2:])


def _shrink_by_even_factors(planes: Tensor, fy: int, fx: int) -> Tensor:
    # Shrinking by an even factor f, each output pixel's centre falls halfway between input
    # pixels f/2 - 1 and f/2 of its block: bilinear is the mean of those two per axis. Strided
    # sums do it without the layout copies F.interpolate makes for many channels.
    rows = planes[..., fy // 2 - 1 :: fy, :] + planes[..., fy // 2 :: fy, :]
    return (rows[..., fx // 2 - 1 :: fx] + rows[..., fx // 2 :: fx]) * 0.25


def attention_mask_from_mask_logits(mask_logits: Tensor, target_size: Sequence[int], num_heads: int) -> Tensor:
    """
    The masked-attention mask for the next cross-attention layer.

    Args:
        mask_logits: (B, Q, H, W) predicted mask logits, or (B, Q, T, H, W) for clips of T
            frames (the memory then holds the T frames one after the other).
        target_size: (h, w) of the memory the next layer attends to.
        num_heads: attention heads of that layer.

    Returns:
        (B * num_heads, Q, [T *] h * w) bool, True where attention is blocked: pixels whose
        resized mask probability is below 0.5. A query whose row would be blocked
        entirely is left unblocked (it would otherwise attend to nothing). Detached; for one
        image a view that repeats one mask for every head, not to be written to.
    """
    # Frames are resized as separate planes, like queries.
    return attention_mask_from_resized_logits(resize_planes(mask_logits, target_size), num_heads)


def attention_mask_from_resized_logits(mask_logits: Tensor, num_heads: int) -> Tensor:
    """``attention_mask_from_mask_logits`` of logits already at the attended size."""
    batch_size, num_queries = mask_logits.shape[:2]
    blocked = mask_logits.sigmoid().view(batch_size, num_queries, -1) < 0.5  # (B, Q, [T] hw)
    blocked = blocked & ~blocked.all(dim=-1, keepdim=True)
    # the heads share the mask: for one image, a view with a zero head stride (no copy)
    return blocked.unsqueeze(1).expand(-1, num_heads, -1, -1).flatten(0, 1).detach()


def frames_to_sequence(flat: Tensor, num_frames: int) -> Tensor:
    """(B * T, C, S) per-frame tokens, frames of a clip consecutive -> (T * S, B, C): the
    sequence-first layout of nn.MultiheadAttention, a clip's T frames one after the other."""
    frames, channels, tokens = flat.shape
    return flat.view(frames // num_frames, num_frames, channels, tokens).permute(1, 3, 0, 2).flatten(0, 1)


@TRANSFORMER_DECODER_REGISTRY.register()
class MultiScaleMaskedTransformerDecoder(nn.Module):
    """
    Learned queries refined by ``dec_layers`` layers of (masked cross-attention, self-attention,
    FFN), the cross-attention cycling round robin over the multi-scale features (lowest
    resolution first). Each query only attends to the pixels its previous mask prediction
    covers. Class and mask predictions are made from the learned queries and after every
    layer: ``dec_layers + 1`` predictions, the last one being the output. In eval mode the
    earlier predictions are made only at the size of the memory they mask, and not returned.
    """

    # Version 2 = the Mask2Former layout; checkpoints written by this module carry it.
    _version = 2

    @configurable
    def __init__(
        self,
        in_channels: int,
        mask_classification: bool = True,
        *,
        num_classes: int,
        hidden_dim: int,
        num_queries: int,
        nheads: int,
        dim_feedforward: int,
        dec_layers: int,
        pre_norm: bool,
        mask_dim: int,
        enforce_input_project: bool,
        num_feature_levels: int = 3,
    ):
        """
        Args:
            in_channels: channels of the multi-scale features.
            mask_classification: predict class logits (``class_embed``) as well as masks.
            num_classes: K; the class head has K + 1 outputs, the last meaning "no object".
            hidden_dim: query and attention width.
            num_queries: Q.
            nheads: attention heads.
            dim_feedforward: FFN hidden width.
            dec_layers: number of transformer layers (the config's DEC_LAYERS - 1).
            pre_norm: pre-norm instead of post-norm blocks.
            mask_dim: channels of ``mask_features`` (output width of ``mask_embed``).
            enforce_input_project: project features with a 1x1 conv even when
                ``in_channels == hidden_dim``.
            num_feature_levels: number of multi-scale features attended round robin.
        """
        super().__init__()
        if dec_layers < 1:
            raise ValueError(f"MultiScaleMaskedTransformerDecoder needs at least one layer, got {dec_layers}")
        self.mask_classification = mask_classification
        self.num_heads = nheads
        self.num_layers = dec_layers
        self.num_queries = num_queries
        self.num_feature_levels = num_feature_levels

        self.pe_layer = PositionEmbeddingSine(hidden_dim // 2, normalize=True)

        self.transformer_self_attention_layers = nn.ModuleList()
        self.transformer_cross_attention_layers = nn.ModuleList()
        self.transformer_ffn_layers = nn.ModuleList()
        for _ in range(dec_layers):
            self.transformer_self_attention_layers.append(
                SelfAttentionLayer(hidden_dim, nheads, dropout=0.0, normalize_before=pre_norm)
            )
            self.transformer_cross_attention_layers.append(
                CrossAttentionLayer(hidden_dim, nheads, dropout=0.0, normalize_before=pre_norm)
            )
            self.transformer_ffn_layers.append(
                FFNLayer(hidden_dim, dim_feedforward, dropout=0.0, normalize_before=pre_norm)
            )
        self.decoder_norm = nn.LayerNorm(hidden_dim)

        # query_feat: the queries' initial content; query_embed: their positional embedding.
        self.query_feat = nn.Embedding(num_queries, hidden_dim)
        self.query_embed = nn.Embedding(num_queries, hidden_dim)
        self.level_embed = nn.Embedding(num_feature_levels, hidden_dim)

        self.input_proj = nn.ModuleList()
        for _ in range(num_feature_levels):
            if in_channels != hidden_dim or enforce_input_project:
                proj = Conv2d(in_channels, hidden_dim, kernel_size=1)
                weight_init.c2_xavier_fill(proj)
                self.input_proj.append(proj)
            else:
                self.input_proj.append(nn.Sequential())

        if mask_classification:
            self.class_embed = nn.Linear(hidden_dim, num_classes + 1)
        self.mask_embed = MLP(hidden_dim, hidden_dim, mask_dim, 3)

    @classmethod
    def from_config(cls, cfg, in_channels, mask_classification):
        dec_layers = cfg.MODEL.MASK_FORMER.DEC_LAYERS
        if dec_layers < 2:
            raise ValueError(
                f"MODEL.MASK_FORMER.DEC_LAYERS={dec_layers}: MultiScaleMaskedTransformerDecoder needs >= 2 "
                "(one prediction from the learned queries plus at least one layer)"
            )
        return {
            "in_channels": in_channels,
            "mask_classification": mask_classification,
            "num_classes": cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES,
            "hidden_dim": cfg.MODEL.MASK_FORMER.HIDDEN_DIM,
            "num_queries": cfg.MODEL.MASK_FORMER.NUM_OBJECT_QUERIES,
            "nheads": cfg.MODEL.MASK_FORMER.NHEADS,
            "dim_feedforward": cfg.MODEL.MASK_FORMER.DIM_FEEDFORWARD,
            # DEC_LAYERS counts the prediction made from the learned queries before any layer.
            "dec_layers": dec_layers - 1,
            "pre_norm": cfg.MODEL.MASK_FORMER.PRE_NORM,
            "mask_dim": cfg.MODEL.SEM_SEG_HEAD.MASK_DIM,
            "enforce_input_project": cfg.MODEL.MASK_FORMER.ENFORCE_INPUT_PROJ,
        }

    def forward(self, x: List[Tensor], mask_features: Tensor, mask: Optional[Tensor] = None) -> Dict:
        """
        Args:
            x: ``num_feature_levels`` maps (B, in_channels, H_l, W_l), lowest resolution first.
            mask_features: (B, mask_dim, H/4, W/4) per-pixel embeddings.
            mask: unused (kept for the common decoder interface).

        Returns:
            {"pred_logits": (B, Q, K+1), "pred_masks": (B, Q, H/4, W/4)}, in training also
            "aux_outputs": [{"pred_logits", "pred_masks"}] * dec_layers (earlier predictions, in order).
        """
        del mask
        self._check_inputs(x, mask_features)
        memories, positions, sizes = self._memories(x, num_frames=1)
        # Every layer multiplies by the mask features: in (B, C, H, W) order (one copy here if
        # a pixel decoder gives them channels-last), no product needs a transposing copy.
        return self._decode(memories, positions, sizes, mask_features.contiguous())

    def _check_inputs(self, x: List[Tensor], mask_features: Tensor) -> None:
        if len(x) != self.num_feature_levels:
            raise ValueError(
                f"{type(self).__name__} expects {self.num_feature_levels} feature maps, got {len(x)}"
            )
        mask_dim = self.mask_embed.layers[-1].out_features
        if mask_features.dim() != 4 or mask_features.shape[1] != mask_dim or mask_features.shape[0] != x[0].shape[0]:
            raise ValueError(
                f"mask_features should be (B={x[0].shape[0]}, mask_dim={mask_dim}, H, W), got {tuple(mask_features.shape)}"
            )

    def _position_embedding(self, feature: Tensor, num_frames: int) -> Tensor:
        """(B * T, C, h, w) -> (B * T, C, h * w) positional embedding of every frame's pixels."""
        del num_frames  # images: each one is its own clip
        return self.pe_layer(feature, None).flatten(2)

    def _memories(self, x: List[Tensor], num_frames: int) -> Tuple[List[Tensor], List[Tensor], List]:
        """Per level, the memory and its positions (T * h * w, B, C) and the size (h, w), for
        features (B * T, C, h, w) of B clips of ``num_frames`` frames (an image is a clip of 1)."""
        memories, positions, sizes = [], [], []
        for level, feature in enumerate(x):
            sizes.append(feature.shape[-2:])
            # Contiguous once here: every layer attending to this level projects memory +
            # positions, and a linear on a permuted (tokens, B, C) view becomes a batched
            # product over tokens (AOTInductor then copies the weight once per token). Under
            # autocast also cast once, to the dtype the projections compute in.
            dtype = onednn.compute_dtype(feature)
            position = frames_to_sequence(self._position_embedding(feature, num_frames), num_frames)
            positions.append(position.to(dtype).contiguous())
            memory = self.input_proj[level](feature).flatten(2) + self.level_embed.weight[level][None, :, None]
            memories.append(frames_to_sequence(memory, num_frames).to(dtype).contiguous())
        return memories, positions, sizes

    def _decode(self, memories: List[Tensor], positions: List[Tensor], sizes: List, mask_features: Tensor) -> Dict:
        batch_size = memories[0].shape[1]
        query_embed = self.query_embed.weight.unsqueeze(1).repeat(1, batch_size, 1)  # (Q, B, C)
        output = self.query_feat.weight.unsqueeze(1).repeat(1, batch_size, 1)
        # Only training supervises the earlier predictions' masks; inference needs them only
        # as attention masks, at the size attended. Resizing is linear, so resizing the mask
        # features once per level gives those logits without any full-size mask but the last.
        attention_features = None if self.training else [resize_planes(mask_features, size) for size in sizes]

        def predict(output: Tensor, next_level: int, final: bool):
            """Class logits, mask logits (None where inference skips them) and the attention
            mask for memory level ``next_level`` (None after the last layer at inference)."""
            if self.training:
                return self.forward_prediction_heads(output, mask_features, sizes[next_level])
            if final:
                return (*self._class_and_mask_logits(output, mask_features), None)
            outputs_class, attention_logits = self._class_and_mask_logits(output, attention_features[next_level])
            return outputs_class, None, attention_mask_from_resized_logits(attention_logits, self.num_heads)

        predictions_class, predictions_mask = [], []
        outputs_class, outputs_mask, attn_mask = predict(output, 0, final=False)
        predictions_class.append(outputs_class)
        predictions_mask.append(outputs_mask)

        for i in range(self.num_layers):
            level = i % self.num_feature_levels
            output = self.transformer_cross_attention_layers[i](
                output,
                memories[level],
                memory_mask=attn_mask,
                memory_key_padding_mask=None,
                pos=positions[level],
                query_pos=query_embed,
            )
            output = self.transformer_self_attention_layers[i](
                output, tgt_mask=None, tgt_key_padding_mask=None, query_pos=query_embed
            )
            output = self.transformer_ffn_layers[i](output)
            next_level = (i + 1) % self.num_feature_levels
            outputs_class, outputs_mask, attn_mask = predict(output, next_level, final=i == self.num_layers - 1)
            predictions_class.append(outputs_class)
            predictions_mask.append(outputs_mask)

        outputs = {"pred_logits": predictions_class[-1], "pred_masks": predictions_mask[-1]}
        if self.training:
            outputs["aux_outputs"] = self._aux_outputs(predictions_class, predictions_mask)
        return outputs

    def forward_prediction_heads(
        self, output: Tensor, mask_features: Tensor, attn_mask_target_size: Sequence[int]
    ) -> Tuple[Optional[Tensor], Tensor, Tensor]:
        """
        Args:
            output: (Q, B, C) queries.
            mask_features: (B, mask_dim, H, W).
            attn_mask_target_size: (h, w) of the memory attended next.

        Returns:
            class logits (B, Q, K+1) or None, mask logits (B, Q, H, W),
            attention mask (B * nheads, Q, h * w) bool.
        """
        outputs_class, outputs_mask = self._class_and_mask_logits(output, mask_features)
        attn_mask = attention_mask_from_mask_logits(outputs_mask, attn_mask_target_size, self.num_heads)
        return outputs_class, outputs_mask, attn_mask

    def _class_and_mask_logits(self, output: Tensor, mask_features: Tensor) -> Tuple[Optional[Tensor], Tensor]:
        """(Q, B, C) queries -> class logits (B, Q, K+1) or None, mask logits at the size of ``mask_features``."""
        decoder_output = self.decoder_norm(output).transpose(0, 1)  # (B, Q, C)
        outputs_class = self.class_embed(decoder_output) if self.mask_classification else None
        return outputs_class, self._mask_logits(self.mask_embed(decoder_output), mask_features)

    @staticmethod
    def _mask_logits(mask_embed: Tensor, mask_features: Tensor) -> Tensor:
        """(B, Q, C) query embeddings and (B, C, H, W) pixel embeddings -> (B, Q, H, W)."""
        return onednn.mask_logits(mask_embed, mask_features)

    def _aux_outputs(self, outputs_class: List[Optional[Tensor]], outputs_masks: List[Tensor]) -> List[Dict]:
        if self.mask_classification:
            return [{"pred_logits": c, "pred_masks": m} for c, m in zip(outputs_class[:-1], outputs_masks[:-1])]
        return [{"pred_masks": m} for m in outputs_masks[:-1]]

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs):
        # MaskFormer-era checkpoints named the initial query content "static_query".
        rename_legacy_keys(
            state_dict, prefix, lambda k: "query_feat" + k[len("static_query"):] if k.startswith("static_query.") else None
        )
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )
