"""Building blocks shared by the transformer decoders and the transformer pixel decoders.

Tensors follow ``nn.MultiheadAttention``'s default sequence-first layout: (L, B, C).
Attention is called with ``need_weights=False``: the averaged attention maps are never used,
and without them PyTorch runs fused scaled-dot-product attention (about twice as fast on CPU).
Every residual block can run post-norm (``normalize_before=False``, the published setting:
x = norm(x + f(x))) or pre-norm (x = x + f(norm(x))).
"""
from typing import Callable, Optional

import torch.nn.functional as F
from torch import Tensor, nn

from mask2former.ops import onednn

__all__ = [
    "MLP",
    "SelfAttentionLayer",
    "CrossAttentionLayer",
    "FFNLayer",
    "get_activation_fn",
    "with_pos_embed",
    "xavier_uniform_matrices_",
]


def get_activation_fn(name: str) -> Callable[[Tensor], Tensor]:
    """The activation called ``name`` ("relu", "gelu" or "glu")."""
    activations = {"relu": F.relu, "gelu": F.gelu, "glu": F.glu}
    if name not in activations:
        raise ValueError(f"activation should be one of {sorted(activations)}, got {name!r}")
    return activations[name]


def with_pos_embed(tensor: Tensor, pos: Optional[Tensor]) -> Tensor:
    """``tensor + pos``; positions are added to queries and keys, never to values."""
    return tensor if pos is None else tensor + pos


def xavier_uniform_matrices_(module: nn.Module) -> None:
    """Xavier-uniform init of every parameter with two or more dims (weights, not biases
    or norms): the transformer init of DETR-style models."""
    for p in module.parameters():
        if p.dim() > 1:
            nn.init.xavier_uniform_(p)


class MLP(nn.Module):
    """``num_layers`` linear layers with ReLU between them (not after the last).

    Children are ``layers.0 .. layers.{num_layers-1}`` (the published checkpoint names).
    """

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int):
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"MLP needs at least one layer, got num_layers={num_layers}")
        dims_in = [input_dim] + [hidden_dim] * (num_layers - 1)
        dims_out = [hidden_dim] * (num_layers - 1) + [output_dim]
        self.num_layers = num_layers
        self.layers = nn.ModuleList(nn.Linear(i, o) for i, o in zip(dims_in, dims_out))

    def forward(self, x: Tensor) -> Tensor:
        """(..., input_dim) -> (..., output_dim)"""
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < self.num_layers - 1:
                x = F.relu(x)
        return x


class SelfAttentionLayer(nn.Module):
    """Multi-head self-attention among the queries, with residual and LayerNorm."""

    def __init__(self, d_model: int, nhead: int, dropout: float = 0.0, normalize_before: bool = False):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout)
        self.norm = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)
        self.normalize_before = normalize_before
        xavier_uniform_matrices_(self)

    def forward(
        self,
        tgt: Tensor,
        tgt_mask: Optional[Tensor] = None,
        tgt_key_padding_mask: Optional[Tensor] = None,
        query_pos: Optional[Tensor] = None,
    ) -> Tensor:
        """tgt, query_pos: (Q, B, C) -> (Q, B, C)"""
        x = self.norm(tgt) if self.normalize_before else tgt
        q = k = with_pos_embed(x, query_pos)
        x = onednn.multihead_attention(self.self_attn, q, k, x, attn_mask=tgt_mask, key_padding_mask=tgt_key_padding_mask)
        tgt = tgt + self.dropout(x)
        return tgt if self.normalize_before else self.norm(tgt)


class CrossAttentionLayer(nn.Module):
    """Queries attend to image features (``memory``), optionally masked, with residual and
    LayerNorm. ``memory_mask`` is (B * nhead, Q, HW) bool, True where attention is blocked."""

    def __init__(self, d_model: int, nhead: int, dropout: float = 0.0, normalize_before: bool = False):
        super().__init__()
        self.multihead_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout)
        self.norm = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)
        self.normalize_before = normalize_before
        xavier_uniform_matrices_(self)

    def forward(
        self,
        tgt: Tensor,
        memory: Tensor,
        memory_mask: Optional[Tensor] = None,
        memory_key_padding_mask: Optional[Tensor] = None,
        pos: Optional[Tensor] = None,
        query_pos: Optional[Tensor] = None,
    ) -> Tensor:
        """tgt, query_pos: (Q, B, C); memory, pos: (HW, B, C) -> (Q, B, C)"""
        x = self.norm(tgt) if self.normalize_before else tgt
        x = onednn.multihead_attention(
            self.multihead_attn,
            with_pos_embed(x, query_pos),
            with_pos_embed(memory, pos),
            memory,
            attn_mask=memory_mask,
            key_padding_mask=memory_key_padding_mask,
        )
        tgt = tgt + self.dropout(x)
        return tgt if self.normalize_before else self.norm(tgt)


class FFNLayer(nn.Module):
    """Position-wise feed-forward block (linear, activation, linear) with residual and LayerNorm."""

    def __init__(
        self,
        d_model: int,
        dim_feedforward: int = 2048,
        dropout: float = 0.0,
        activation: str = "relu",
        normalize_before: bool = False,
    ):
        super().__init__()
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm = nn.LayerNorm(d_model)
        self.activation = get_activation_fn(activation)
        self.normalize_before = normalize_before
        xavier_uniform_matrices_(self)

    def forward(self, tgt: Tensor) -> Tensor:
        """(Q, B, C) -> (Q, B, C)"""
        x = self.norm(tgt) if self.normalize_before else tgt
        x = onednn.feed_forward(x, self.linear1, self.linear2, self.activation, self.dropout)
        tgt = tgt + self.dropout(x)
        return tgt if self.normalize_before else self.norm(tgt)
