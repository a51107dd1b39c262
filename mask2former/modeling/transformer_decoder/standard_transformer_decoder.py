"""``StandardTransformerDecoder``: MaskFormer's DETR-style decoder on a single feature map."""
from typing import Dict, List, Optional

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.layers import Conv2d
from fvcore.nn import weight_init
from torch import Tensor, nn

from .build import TRANSFORMER_DECODER_REGISTRY
from .detr_transformer import Transformer
from .layers import MLP
from .legacy_keys import rename_legacy_keys
from .position_encoding import PositionEmbeddingSine

__all__ = ["StandardTransformerDecoder"]


@TRANSFORMER_DECODER_REGISTRY.register()
class StandardTransformerDecoder(nn.Module):
    """
    DETR's encoder-decoder transformer run on one feature map; each decoder output
    becomes class logits and a mask embedding dotted with ``mask_features``. With deep
    supervision every decoder layer's prediction is returned (``aux_outputs``).
    """

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
        dropout: float,
        dim_feedforward: int,
        enc_layers: int,
        dec_layers: int,
        pre_norm: bool,
        deep_supervision: bool,
        mask_dim: int,
        enforce_input_project: bool,
    ):
        """
        Args:
            in_channels: channels of the input feature map.
            mask_classification: predict class logits as well as masks.
            num_classes: K; the class head has K + 1 outputs.
            hidden_dim, nheads, dropout, dim_feedforward, pre_norm: transformer settings.
            num_queries: Q.
            enc_layers, dec_layers: transformer encoder / decoder depth.
            deep_supervision: return every decoder layer's prediction.
            mask_dim: channels of ``mask_features``.
            enforce_input_project: 1x1 projection even when ``in_channels == hidden_dim``.
        """
        super().__init__()
        if dec_layers < 1:
            raise ValueError(f"StandardTransformerDecoder needs at least one decoder layer, got {dec_layers}")
        self.mask_classification = mask_classification
        self.pe_layer = PositionEmbeddingSine(hidden_dim // 2, normalize=True)
        self.transformer = Transformer(
            d_model=hidden_dim,
            dropout=dropout,
            nhead=nheads,
            dim_feedforward=dim_feedforward,
            num_encoder_layers=enc_layers,
            num_decoder_layers=dec_layers,
            normalize_before=pre_norm,
            return_intermediate_dec=deep_supervision,
        )
        self.num_queries = num_queries
        self.query_embed = nn.Embedding(num_queries, hidden_dim)

        if in_channels != hidden_dim or enforce_input_project:
            self.input_proj = Conv2d(in_channels, hidden_dim, kernel_size=1)
            weight_init.c2_xavier_fill(self.input_proj)
        else:
            self.input_proj = nn.Sequential()
        self.aux_loss = deep_supervision

        if mask_classification:
            self.class_embed = nn.Linear(hidden_dim, num_classes + 1)
        self.mask_embed = MLP(hidden_dim, hidden_dim, mask_dim, 3)

    @classmethod
    def from_config(cls, cfg, in_channels, mask_classification):
        return {
            "in_channels": in_channels,
            "mask_classification": mask_classification,
            "num_classes": cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES,
            "hidden_dim": cfg.MODEL.MASK_FORMER.HIDDEN_DIM,
            "num_queries": cfg.MODEL.MASK_FORMER.NUM_OBJECT_QUERIES,
            "nheads": cfg.MODEL.MASK_FORMER.NHEADS,
            "dropout": cfg.MODEL.MASK_FORMER.DROPOUT,
            "dim_feedforward": cfg.MODEL.MASK_FORMER.DIM_FEEDFORWARD,
            "enc_layers": cfg.MODEL.MASK_FORMER.ENC_LAYERS,
            "dec_layers": cfg.MODEL.MASK_FORMER.DEC_LAYERS,
            "pre_norm": cfg.MODEL.MASK_FORMER.PRE_NORM,
            "deep_supervision": cfg.MODEL.MASK_FORMER.DEEP_SUPERVISION,
            "mask_dim": cfg.MODEL.SEM_SEG_HEAD.MASK_DIM,
            "enforce_input_project": cfg.MODEL.MASK_FORMER.ENFORCE_INPUT_PROJ,
        }

    def forward(self, x: Tensor, mask_features: Tensor, mask: Optional[Tensor] = None) -> Dict:
        """
        Args:
            x: (B, in_channels, h, w) the feature map the transformer runs on.
            mask_features: (B, mask_dim, H, W) per-pixel embeddings.
            mask: (B, H', W') bool padding mask (True on padding) or None; resized to (h, w).

        Returns:
            {"pred_logits": (B, Q, K+1), "pred_masks": (B, Q, H, W)} plus, with deep
            supervision, "aux_outputs": one dict per earlier decoder layer.
        """
        if not isinstance(x, torch.Tensor) or x.dim() != 4:
            got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"StandardTransformerDecoder expects one (B, C, H, W) map, got {got}")
        if mask is not None:
            mask = F.interpolate(mask[None].float(), size=x.shape[-2:]).to(torch.bool)[0]
        pos = self.pe_layer(x, mask)
        hs, _memory = self.transformer(self.input_proj(x), mask, self.query_embed.weight, pos)
        # hs: (num_outputs, B, Q, C)
        out: Dict = {}
        outputs_class = self.class_embed(hs) if self.mask_classification else None
        if outputs_class is not None:
            out["pred_logits"] = outputs_class[-1]
        if self.aux_loss:
            mask_embed = self.mask_embed(hs)
            outputs_seg_masks = torch.einsum("lbqc,bchw->lbqhw", mask_embed, mask_features)
            out["pred_masks"] = outputs_seg_masks[-1]
            out["aux_outputs"] = self._aux_outputs(outputs_class, outputs_seg_masks)
        else:
            mask_embed = self.mask_embed(hs[-1])
            out["pred_masks"] = torch.einsum("bqc,bchw->bqhw", mask_embed, mask_features)
        return out

    def _aux_outputs(self, outputs_class: Optional[Tensor], outputs_seg_masks: Tensor) -> List[Dict]:
        if outputs_class is not None:
            return [{"pred_logits": c, "pred_masks": m} for c, m in zip(outputs_class[:-1], outputs_seg_masks[:-1])]
        return [{"pred_masks": m} for m in outputs_seg_masks[:-1]]

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs):
        # The earliest MaskFormer checkpoints named the query embedding "static_query".
        rename_legacy_keys(
            state_dict, prefix, lambda k: "query_embed" + k[len("static_query"):] if k.startswith("static_query.") else None
        )
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )
