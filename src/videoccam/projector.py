"""The CCAM projector: learnable queries cross-attending to every frame under a causal mask.

Shape notation: M media items in the batch, N = sum of their frame counts, T frames of one item
(T_max after padding), P visual tokens per frame, Dv vision width, Q queries, D projector width,
H heads, K key/value heads, Dh head dim, Do output (LLM) width.

Each block is pre-norm with residuals::

    x = x + SelfAttn(LN(x))                 # among queries, frame-causal by default
    x = x + CrossAttn(LN(x), LN_kv(visual)) # masked: query i sees frames <= g(i)
    x = x + SwiGLU(LN(x))

followed by a final LayerNorm and a linear map to the LLM width.

The masked cross-attention pads the batch and calls ``scaled_dot_product_attention`` once per block
with the boolean ``[M, 1, Q, T_max*P]`` mask of :func:`videoccam.masks.projector_key_mask`, built once
per forward and shared by every block and head. PyTorch's fused kernels take the boolean mask without
materialising the ``[H, Q, T*P]`` scores. A mask-free "streaming" implementation (frame by frame with an
online softmax) was 1.2-1.3x slower on CPU from 32 frames on and 7.5-12.6x slower on an H100, and was removed
(docs/experiments/2026-12-05-projector-decision.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from videoccam.configuration import CCAMProjectorConfig, check_projector_path
from videoccam.masks import ccam_query_frames, projector_key_mask, projector_self_mask


@dataclass
class ProjectorOutput:
    """Projector result for M media items.

    Attributes:
        embeds: ``[M, Q, Do]`` visual tokens for the LLM.
        frame_ids: ``[M, Q]`` long, the frame block of every query (0 everywhere for ``mask="none"``
            and for images): the newest frame the query could see.
    """

    embeds: torch.Tensor
    frame_ids: torch.Tensor


class SwiGLU(nn.Module):
    def __init__(self, dim: int, hidden: int, bias: bool) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(dim, hidden, bias=bias)
        self.up_proj = nn.Linear(dim, hidden, bias=bias)
        self.down_proj = nn.Linear(hidden, dim, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class ProjectorAttention(nn.Module):
    """Multi-head (grouped-query) attention; keys/values may come from a different width."""

    def __init__(self, config: CCAMProjectorConfig, kv_dim: int) -> None:
        super().__init__()
        self.num_heads = config.num_heads
        self.num_kv_heads = config.num_key_value_heads
        self.head_dim = config.head_dim
        self.dropout = config.attention_dropout
        bias = config.attention_bias
        self.q_proj = nn.Linear(config.hidden_size, self.num_heads * self.head_dim, bias=bias)
        self.k_proj = nn.Linear(kv_dim, self.num_kv_heads * self.head_dim, bias=bias)
        self.v_proj = nn.Linear(kv_dim, self.num_kv_heads * self.head_dim, bias=bias)
        self.o_proj = nn.Linear(self.num_heads * self.head_dim, config.hidden_size, bias=bias)

    def queries(self, x: torch.Tensor) -> torch.Tensor:
        """``[..., L, D] -> [..., H, L, Dh]``."""
        q = self.q_proj(x).unflatten(-1, (self.num_heads, self.head_dim))  # [..., L, H, Dh]
        return q.transpose(-3, -2)  # [..., H, L, Dh]

    def keys_values(self, kv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``[..., S, Dkv] -> 2 x [..., K, S, Dh]``."""
        k = self.k_proj(kv).unflatten(-1, (self.num_kv_heads, self.head_dim)).transpose(-3, -2)  # [..., K, S, Dh]
        v = self.v_proj(kv).unflatten(-1, (self.num_kv_heads, self.head_dim)).transpose(-3, -2)  # [..., K, S, Dh]
        return k, v

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
               mask: torch.Tensor | None = None) -> torch.Tensor:
        """SDPA over prepared heads, then the output projection: ``[..., H, L, Dh] -> [..., L, D]``."""
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0,
            enable_gqa=self.num_kv_heads != self.num_heads,
        )  # [..., H, L, Dh]
        return self.o_proj(out.transpose(-3, -2).flatten(-2))  # [..., L, H*Dh] -> [..., L, D]


class CCAMBlock(nn.Module):
    def __init__(self, config: CCAMProjectorConfig) -> None:
        super().__init__()
        eps = config.layer_norm_eps
        self.self_norm = nn.LayerNorm(config.hidden_size, eps=eps)
        self.self_attn = ProjectorAttention(config, kv_dim=config.hidden_size)
        self.cross_norm = nn.LayerNorm(config.hidden_size, eps=eps)
        self.kv_norm = nn.LayerNorm(config.cross_hidden_size, eps=eps)
        self.cross_attn = ProjectorAttention(config, kv_dim=config.cross_hidden_size)
        self.mlp_norm = nn.LayerNorm(config.hidden_size, eps=eps)
        self.mlp = SwiGLU(config.hidden_size, config.intermediate_size, config.mlp_bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, visual: torch.Tensor, frame_counts: list[int],
                self_mask: torch.Tensor | None, key_mask: torch.Tensor) -> torch.Tensor:
        """One block.

        Shapes:
            x: ``[M, Q, D]``; visual: ``[N, P, Dv]`` (frames of all items, concatenated);
            self_mask: ``[M, 1, Q, Q]`` bool or None (no mask); key_mask: ``[M, 1, Q, T_max*P]`` bool, the
            cross-attention mask (it also hides the padding frames of shorter items).
        """
        h = self.self_norm(x)
        q, (k, v) = self.self_attn.queries(h), self.self_attn.keys_values(h)  # [M, H, Q, Dh], [M, K, Q, Dh]
        x = x + self.dropout(self.self_attn.attend(q, k, v, self_mask))

        q = self.cross_attn.queries(self.cross_norm(x))  # [M, H, Q, Dh]
        k, v = self.cross_attn.keys_values(self.kv_norm(visual))  # [N, K, P, Dh] each
        keys, values = _padded_items(k, frame_counts), _padded_items(v, frame_counts)  # [M, K, T_max*P, Dh]
        attn = self.cross_attn.attend(q, keys, values, key_mask)  # [M, Q, D]
        x = x + self.dropout(attn)
        return x + self.dropout(self.mlp(self.mlp_norm(x)))


def _per_item_keys(k: torch.Tensor, frame_counts: list[int]) -> list[torch.Tensor]:
    """``[N, K, P, Dh]`` -> M x ``[K, T_m*P, Dh]`` (frames of one item flattened in temporal order)."""
    return [kk.transpose(0, 1).flatten(1, 2) for kk in k.split(frame_counts)]  # [T, K, P, Dh] -> [K, T*P, Dh]


def _padded_items(x: torch.Tensor, frame_counts: list[int]) -> torch.Tensor:
    """``[N, K, P, Dh]`` -> ``[M, K, T_max*P, Dh]``: each item's frames flattened in temporal order, zero-padded
    to the longest item."""
    t_max = max(frame_counts)
    if min(frame_counts) == t_max:  # equal clips (training batches): one reshape, no padding copies
        return x.unflatten(0, (len(frame_counts), t_max)).transpose(1, 2).flatten(2, 3)  # [M, K, T*P, Dh]
    return torch.nn.utils.rnn.pad_sequence(
        [xx.transpose(0, 1) for xx in _per_item_keys(x, frame_counts)], batch_first=True
    ).transpose(1, 2)  # [M, T_max*P, K, Dh] -> [M, K, T_max*P, Dh]


class CCAMProjector(nn.Module):
    """Visual tokens of M media items (variable frame counts) -> Q tokens each for the LLM."""

    def __init__(self, config: CCAMProjectorConfig) -> None:
        super().__init__()
        self.config = config
        self.query = nn.Parameter(torch.empty(config.num_query, config.hidden_size))
        self.layers = nn.ModuleList(CCAMBlock(config) for _ in range(config.num_layers))
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.output_proj = nn.Linear(config.hidden_size, config.output_size)
        nn.init.normal_(self.query, std=config.initializer_range)

    def query_frame_ids(self, frame_counts: list[int], device: torch.device) -> torch.Tensor:
        """``[M, Q]`` frame block of every query of every item (zeros without the CCAM mask)."""
        q = self.config.num_query
        if self.config.mask == "none":
            return torch.zeros(len(frame_counts), q, dtype=torch.long, device=device)
        return torch.stack([ccam_query_frames(q, t, device=device) for t in frame_counts])  # [M, Q]

    def forward(self, visual: torch.Tensor, frame_counts: list[int] | torch.Tensor) -> ProjectorOutput:
        """Project the visual tokens.

        Args:
            visual: ``[N, P, Dv]``, the frames of all M items concatenated in order.
            frame_counts: ``[M]`` frames per item, summing to N (an image counts 1).

        Returns:
            :class:`ProjectorOutput` with ``embeds [M, Q, Do]`` and ``frame_ids [M, Q]``.

        Raises:
            ValueError: ``frame_counts`` not positive or not summing to N.
            ConfigError: (a ``ValueError``) ``config.path`` set to anything but ``"dense"`` after validation.
        """
        counts = [int(c) for c in frame_counts]
        if not counts or min(counts) < 1 or sum(counts) != visual.shape[0]:
            raise ValueError(
                f"frame_counts {counts} must be positive and sum to the number of frames ({visual.shape[0]})"
            )
        check_projector_path(self.config.path)  # the config may have been changed after its validation
        num_query, device = self.config.num_query, visual.device
        frame_ids = self.query_frame_ids(counts, device)  # [M, Q]
        use_ccam = self.config.mask == "ccam"
        # the masks are built once here and shared by every block (videoccam.masks owns them)
        self_mask = None
        if use_ccam and self.config.causal_query_self_attention:
            self_mask = projector_self_mask(num_query, counts, device=device)  # [M, 1, Q, Q]
        key_mask = projector_key_mask(num_query, counts, visual.shape[1], causal=use_ccam,
                                      device=device)  # [M, 1, Q, T_max*P]
        x = self.query.to(visual.dtype).expand(len(counts), -1, -1)  # [M, Q, D]
        for layer in self.layers:
            x = layer(x, visual, counts, self_mask, key_mask)
        return ProjectorOutput(embeds=self.output_proj(self.norm(x)), frame_ids=frame_ids)
