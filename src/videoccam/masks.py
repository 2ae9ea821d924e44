"""Every attention mask videoccam uses is built here, and only here.

Convention: boolean tensors, ``True`` = may attend.

- Projector (CCAM): :func:`ccam_query_frames` (the frame block ``g(i)`` of every query),
  :func:`ccam_mask` / :func:`ccam_query_self_mask` (one item), and the batched forms a projector
  forward builds once: :func:`projector_key_mask` (padded cross-attention keys) and
  :func:`projector_self_mask`.
- LLM prefill (TC-LLaVA frame blocks): :class:`LLMMaskRule` holds the rule as a predicate over the
  per-token frame ids, media ids and padding (``mask_mod``, the FlexAttention signature); the dense
  :func:`llm_attention_mask` is that predicate evaluated on every (query, key) pair, and
  :func:`to_hf_attention_mask` puts either into the form the Hugging Face attention backend needs.

Shape notation: Q queries, T frames, P visual tokens per frame, M media items, B batch, S LLM
sequence length.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from torch.nn.attention.flex_attention import BlockMask


def ccam_query_frames(num_queries: int, num_frames: int, device: torch.device | None = None) -> torch.Tensor:
    """Frame block ``g(i) = floor(i * T / Q)`` of every query; also the frame index handed to the LLM.

    Args:
        num_queries: Q, the number of learnable queries.
        num_frames: T, the number of frames of this media item (1 for an image).

    Returns:
        ``LongTensor[Q]``, non-decreasing, values in ``[0, T-1]``.

    Example (Q=8, T=3)::

        i    : 0 1 2 3 4 5 6 7
        g(i) : 0 0 0 1 1 1 2 2
    """
    if num_queries < 1 or num_frames < 1:
        raise ValueError(f"ccam needs num_queries >= 1 and num_frames >= 1, got {num_queries} and {num_frames}")
    i = torch.arange(num_queries, device=device, dtype=torch.long)
    return torch.div(i * num_frames, num_queries, rounding_mode="floor")


def ccam_mask(num_queries: int, num_frames: int, device: torch.device | None = None) -> torch.Tensor:
    """Causal cross-attention mask of Video-CCAM: query i may see frame f iff ``f <= floor(i*T/Q)``.

    Returns:
        ``BoolTensor[Q, T]`` (True = may attend). Expand along P to mask the ``T*P`` keys.

    Example (Q=8, T=4): each pair of queries opens one more frame::

        frame ->  0 1 2 3
        q0        1 0 0 0
        q1        1 0 0 0
        q2        1 1 0 0
        q3        1 1 0 0
        q4        1 1 1 0
        q5        1 1 1 0
        q6        1 1 1 1
        q7        1 1 1 1

    With T = 1 (an image) every query sees everything.
    """
    g = ccam_query_frames(num_queries, num_frames, device)  # [Q]
    f = torch.arange(num_frames, device=device, dtype=torch.long)  # [T]
    return f[None, :] <= g[:, None]  # [Q, T]


def ccam_query_self_mask(num_queries: int, num_frames: int, device: torch.device | None = None) -> torch.Tensor:
    """Frame-causal self-attention among queries: query i may see query k iff ``g(k) <= g(i)``.

    Keeps a query from carrying information of a frame later than its own block.

    Returns:
        ``BoolTensor[Q, Q]`` (True = may attend).

    Example (Q=4, T=2)::

        key ->  0 1 2 3
        q0      1 1 0 0
        q1      1 1 0 0
        q2      1 1 1 1
        q3      1 1 1 1
    """
    g = ccam_query_frames(num_queries, num_frames, device)  # [Q]
    return g[None, :] <= g[:, None]  # [Q, Q]


def projector_self_mask(num_queries: int, frame_counts: Sequence[int],
                        device: torch.device | None = None) -> torch.Tensor:
    """The projector's query self-attention mask of every media item (:func:`ccam_query_self_mask` each).

    Args:
        num_queries: Q.
        frame_counts: ``[M]`` frames per media item (an image counts 1).

    Returns:
        ``BoolTensor[M, 1, Q, Q]`` (True = may attend), one head dimension for SDPA to broadcast.
    """
    return torch.stack([ccam_query_self_mask(num_queries, t, device=device) for t in frame_counts])[:, None]


def projector_key_mask(num_queries: int, frame_counts: Sequence[int], tokens_per_frame: int, *,
                       causal: bool = True, device: torch.device | None = None) -> torch.Tensor:
    """The projector's cross-attention mask over the padded visual tokens of M media items.

    Item m's frames are flattened in temporal order (``T_m * P`` keys) and zero-padded to the longest
    item (``T_max * P`` keys). Query i of item m may see the P tokens of frame f iff ``f < T_m`` (a real
    frame) and, with ``causal``, ``f <= g(i) = floor(i * T_m / Q)`` (:func:`ccam_mask`). Padding keys are
    never seen; every query sees frame 0, so no row is all False. Built once per projector forward and
    shared by every block and head.

    Args:
        num_queries: Q.
        frame_counts: ``[M]`` frames per media item (an image counts 1), each >= 1.
        tokens_per_frame: P, visual tokens per frame.
        causal: the CCAM mask (``mask="ccam"``); False = plain cross-attention to every real frame.

    Returns:
        ``BoolTensor[M, 1, Q, T_max*P]`` (True = may attend).

    Example (Q=4, frame counts [2, 3], P=2, so T_max*P = 6 keys ``f0 f0 f1 f1 f2 f2``)::

        item 0 (T=2, g = 0 0 1 1)   item 1 (T=3, g = 0 0 1 2)
        q0  1 1 0 0 0 0             q0  1 1 0 0 0 0
        q1  1 1 0 0 0 0             q1  1 1 0 0 0 0
        q2  1 1 1 1 0 0             q2  1 1 1 1 0 0
        q3  1 1 1 1 0 0             q3  1 1 1 1 1 1

    With ``causal=False`` every row of item 0 is ``1 1 1 1 0 0`` and every row of item 1 is all ones.
    """
    t_max = max(frame_counts)
    frames = torch.arange(t_max, device=device)  # [T_max]
    counts = torch.tensor(list(frame_counts), device=device)  # [M]
    allowed = (frames[None, :] < counts[:, None])[:, None, :].expand(-1, num_queries, -1)  # [M, Q, T_max]: real
    if causal:
        g = torch.stack([ccam_query_frames(num_queries, t, device=device) for t in frame_counts])  # [M, Q]
        allowed = allowed & (frames[None, None, :] <= g[:, :, None])  # [M, Q, T_max]
    return allowed.repeat_interleave(tokens_per_frame, dim=2)[:, None]  # [M, Q, T_max*P] -> [M, 1, Q, T_max*P]


# ---------------------------------------------------------------------------------------------
# LLM side: per-token metadata -> prefill attention mask (TC-LLaVA frame-wise block causal mask)
# ---------------------------------------------------------------------------------------------


def _check_token_metadata(
    frame_ids: torch.Tensor, media_ids: torch.Tensor, padding_mask: torch.Tensor
) -> torch.Tensor:
    """Validate the per-token metadata of an LLM batch; return ``padding_mask`` as a bool tensor.

    Shared by :func:`llm_attention_mask` and :func:`videoccam.positions.position_ids`.

    Raises:
        ValueError: wrong rank, shapes that differ, non-integer ids, ids below -1, a token that is
            visual in one of ``frame_ids``/``media_ids`` but not the other, a padding token with visual
            metadata, an empty sequence, or a sample with no real token.
    """
    names = ("frame_ids", "media_ids", "padding_mask")
    for name, t in zip(names, (frame_ids, media_ids, padding_mask), strict=True):
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.ndim != 2:
            raise ValueError(f"{name} must have shape [B, S], got {tuple(t.shape)}")
    if not frame_ids.shape == media_ids.shape == padding_mask.shape:
        raise ValueError(
            "frame_ids, media_ids and padding_mask must share the shape [B, S], got "
            f"{tuple(frame_ids.shape)}, {tuple(media_ids.shape)} and {tuple(padding_mask.shape)}"
        )
    if frame_ids.shape[1] == 0:
        raise ValueError("the sequence length S must be >= 1, got an empty sequence")
    for name, t in zip(names[:2], (frame_ids, media_ids), strict=True):
        if t.dtype.is_floating_point or t.dtype.is_complex or t.dtype == torch.bool:
            raise ValueError(f"{name} must be an integer tensor, got dtype {t.dtype}")
        if bool((t < -1).any()):
            raise ValueError(f"{name} must be -1 (text/padding) or >= 0 (visual), got min {int(t.min())}")
    if padding_mask.dtype != torch.bool:
        if padding_mask.dtype.is_floating_point or bool(((padding_mask != 0) & (padding_mask != 1)).any()):
            raise ValueError(
                "padding_mask must be a bool tensor (True = real token) or an integer 0/1 tensor"
            )
        padding_mask = padding_mask.bool()
    visual = frame_ids >= 0  # [B, S]
    if not torch.equal(visual, media_ids >= 0):
        raise ValueError("frame_ids and media_ids must both be -1 (text/padding) or both be >= 0 (visual)")
    if bool((visual & ~padding_mask).any()):
        raise ValueError("padding tokens (padding_mask False) must have frame_ids == media_ids == -1")
    if not bool(padding_mask.any(dim=1).all()):
        raise ValueError("every sample needs at least one real token (a padding_mask row is all False)")
    return padding_mask


@dataclass(frozen=True, eq=False)
class LLMMaskRule:
    """The LLM prefill attention rule of a batch, as a predicate over per-token metadata.

    Query q may attend key k iff k is a real token AND
    ``(k <= q OR (frame_block AND q, k visual AND media(q) == media(k) AND frame(q) == frame(k)))``;
    any query may also attend itself, so a padding query's row is never all False (SDPA and softmax
    never produce NaN) while real queries never attend padding keys. One sequence per row (no packing).

    :attr:`mask_mod` is that rule with the FlexAttention signature ``(b, h, q, k) -> bool``; it indexes
    only the ``[B, S]`` metadata, so a ``BlockMask`` (:meth:`block_mask`) never needs the ``[B, S, S]``
    matrix. :meth:`dense` evaluates the same predicate on every pair (:func:`llm_attention_mask`).

    Attributes:
        frame_ids: ``[B, S]`` frame index of each visual token within its media item; -1 for text and padding.
        media_ids: ``[B, S]`` ordinal of the media item within its sample; -1 for text and padding.
        padding_mask: ``[B, S]`` True (or 1) = real token, False (or 0) = padding (left or right); stored
            as bool.
        frame_block: add full attention inside each (media item, frame) block (TC-LLaVA).

    Raises:
        ValueError: inconsistent metadata (wrong shapes or dtypes; padding must carry -1 ids).
    """

    frame_ids: torch.Tensor
    media_ids: torch.Tensor
    padding_mask: torch.Tensor
    frame_block: bool

    def __post_init__(self) -> None:
        padding = _check_token_metadata(self.frame_ids, self.media_ids, self.padding_mask)  # [B, S] bool
        object.__setattr__(self, "padding_mask", padding)

    @property
    def shape(self) -> tuple[int, int]:
        """``(B, S)``."""
        batch, seq_len = self.frame_ids.shape
        return batch, seq_len

    @property
    def mask_mod(self) -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]:
        """The rule as ``mask_mod(b, h, q, k) -> bool``: True where query ``q`` of sample ``b`` may attend
        key ``k`` (any head ``h``).

        The indices are integer tensors that broadcast together: scalars under FlexAttention's ``vmap``,
        or grids such as ``b [B, 1, 1]``, ``q [1, S, 1]``, ``k [1, 1, S]`` for the dense form. A plain
        function (FlexAttention refuses bound methods), closing over the ``[B, S]`` metadata only.
        """
        frame_ids, media_ids, padding = self.frame_ids, self.media_ids, self.padding_mask  # [B, S] each
        frame_block = self.frame_block

        def mask_mod(b: torch.Tensor, h: torch.Tensor, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
            allowed = k <= q  # causal
            if frame_block:
                frame_q = frame_ids[b, q]
                # frame ids are >= 0 exactly on visual tokens; an equal frame id makes the key visual too
                same_block = (frame_q >= 0) & (frame_q == frame_ids[b, k]) & (media_ids[b, q] == media_ids[b, k])
                allowed = allowed | same_block
            return (allowed & padding[b, k]) | (q == k)  # real keys only; every query sees itself

        return mask_mod

    def dense(self) -> torch.Tensor:
        """The predicate on every (query, key) pair: ``BoolTensor[B, 1, S, S]`` (HF takes a 4-D mask)."""
        batch, seq_len = self.shape
        device = self.frame_ids.device
        b = torch.arange(batch, device=device)[:, None, None]  # [B, 1, 1]
        idx = torch.arange(seq_len, device=device)  # [S]
        allowed = self.mask_mod(b, torch.zeros((), dtype=torch.long, device=device),
                                idx[None, :, None], idx[None, None, :])  # [B, S(q), S(k)]
        return allowed[:, None]  # [B, 1, S, S]

    def block_mask(self) -> BlockMask:
        """A FlexAttention ``BlockMask`` built from :attr:`mask_mod` (shared by all heads)."""
        from torch.nn.attention.flex_attention import create_block_mask

        batch, seq_len = self.shape
        return create_block_mask(self.mask_mod, B=batch, H=None, Q_LEN=seq_len, KV_LEN=seq_len,
                                 device=self.frame_ids.device)


def llm_attention_mask(
    frame_ids: torch.Tensor,
    media_ids: torch.Tensor,
    padding_mask: torch.Tensor,
    *,
    frame_block: bool,
) -> torch.Tensor:
    """Prefill attention mask of the LLM: causal + padding, optionally with TC-LLaVA frame blocks.

    The dense form of :class:`LLMMaskRule` (see there for the rule): query q may attend key k iff k is
    a real token AND ``(k <= q OR (frame_block AND q, k visual AND media(q) == media(k) AND frame(q) ==
    frame(k)))``; every query also attends itself (a left-padding query attends nothing else).

    Use it for prefill only: decode steps are plain causal plus padding (a 2-D mask suffices).
    Hugging Face ``eager`` and ``flex_attention`` *add* a tensor mask to the scores, so hand the mask to a
    model through :func:`to_hf_attention_mask` (SDPA accepts it as is).

    Example: text ``t0 t1``, a video with frames ``a`` (2 tokens) and ``b`` (2 tokens), text ``t2``;
    ``frame_ids = [-1,-1,0,0,1,1,-1]``, ``media_ids = [-1,-1,0,0,0,0,-1]``. With ``frame_block=True``
    (the entries marked ``*`` are the ones plain causal would forbid)::

        key ->  t0 t1 a0 a1 b0 b1 t2
        t0       1  0  0  0  0  0  0
        t1       1  1  0  0  0  0  0
        a0       1  1  1  1* 0  0  0
        a1       1  1  1  1  0  0  0
        b0       1  1  1  1  1  1* 0
        b1       1  1  1  1  1  1  0
        t2       1  1  1  1  1  1  1

    Args: those of :class:`LLMMaskRule`.

    Returns:
        Bool mask ``[B, 1, S, S]`` (query, key; True = may attend), as Hugging Face expects a 4-D mask.

    Raises:
        ValueError: inconsistent metadata (shapes ``[B, S]``; padding must carry -1 ids).
    """
    return LLMMaskRule(frame_ids, media_ids, padding_mask, frame_block=frame_block).dense()


def additive_attention_mask(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Turn a boolean mask (True = may attend) into the additive form: 0 if allowed, else ``finfo.min``.

    Hugging Face ``eager`` (``scores + mask``) needs this form; a boolean mask there would silently add
    0/1. SDPA accepts either form.

    Args:
        mask: boolean mask, e.g. from :func:`llm_attention_mask`.
        dtype: the model's compute dtype (``model.dtype``), so the minimum is representable.

    Returns:
        Floating mask of ``dtype``.

    Shapes:
        mask: any, typically ``[B, 1, S, S]``. Returns: the same shape.

    Raises:
        ValueError: ``mask`` is not boolean or ``dtype`` is not a floating dtype.
    """
    if mask.dtype != torch.bool:
        raise ValueError(f"additive_attention_mask expects a bool mask, got dtype {mask.dtype}")
    if not dtype.is_floating_point:
        raise ValueError(f"additive_attention_mask needs a floating dtype, got {dtype}")
    zero = torch.zeros((), dtype=dtype, device=mask.device)
    return torch.where(mask, zero, torch.finfo(dtype).min)


#: Hugging Face attention backends that honour a custom 4-D prefill mask.
MASK_CAPABLE_ATTN_IMPLEMENTATIONS: tuple[str, ...] = ("sdpa", "eager", "flex_attention")


def to_hf_attention_mask(mask: torch.Tensor | LLMMaskRule, *, attn_implementation: str,
                         dtype: torch.dtype) -> torch.Tensor | BlockMask:
    """Put a prefill mask into the form the configured Hugging Face attention backend needs.

    Pass the result as ``attention_mask=`` to a transformers 5.x ``*ForCausalLM`` forward: a 4-D
    mask (tensor or ``BlockMask``) is returned unchanged by ``create_causal_mask`` and reaches every
    layer as is. Read the backend from ``model.config._attn_implementation``.

    - ``"sdpa"``: the boolean mask itself (True = may attend).
    - ``"eager"``: additive float mask (:func:`additive_attention_mask`); eager computes
      ``scores + mask``, so a boolean mask would silently add 0/1 instead of masking.
    - ``"flex_attention"``: a ``torch.nn.attention.flex_attention.BlockMask`` built from the rule's
      predicate (:meth:`LLMMaskRule.block_mask`), so give an :class:`LLMMaskRule`: no ``[B, S, S]``
      tensor is indexed (a dense tensor would be added in a ``score_mod``; on CPU with torch 2.13 that
      path crashes). Building it evaluates the predicate block by block: slow on CPU.
    - ``"flash_attention_*"`` and anything else: ``ValueError``. Flash attention keeps only 2-D
      padding and would silently run plain causal attention.

    Args:
        mask: an :class:`LLMMaskRule`, or a boolean mask (True = may attend), e.g. from
            :func:`llm_attention_mask`, for ``sdpa`` / ``eager``.
        attn_implementation: ``model.config._attn_implementation``.
        dtype: the model's compute dtype (``model.dtype``), used for the additive form.

    Returns:
        A bool tensor (sdpa), a float tensor of ``dtype`` (eager) or a ``BlockMask`` (flex_attention).

    Shapes:
        mask: ``[B, 1, S, S]`` (tensor form). Returns: ``[B, 1, S, S]`` (tensor forms).

    Raises:
        ValueError: the backend cannot take a custom mask, ``mask`` is not a 4-D bool tensor, or
            ``flex_attention`` is given a tensor instead of an :class:`LLMMaskRule`.
    """
    rule = mask if isinstance(mask, LLMMaskRule) else None
    if rule is None and (mask.dtype != torch.bool or mask.ndim != 4):
        raise ValueError(f"expected a bool mask of shape [B, 1, S, S], got {mask.dtype} {tuple(mask.shape)}")
    if attn_implementation == "sdpa":
        return mask if rule is None else rule.dense()
    if attn_implementation == "eager":
        return additive_attention_mask(mask if rule is None else rule.dense(), dtype)
    if attn_implementation == "flex_attention":
        if rule is None:
            raise ValueError(
                "attn_implementation='flex_attention' builds its BlockMask from the mask rule's predicate: pass "
                "LLMMaskRule(frame_ids, media_ids, padding_mask, frame_block=...) instead of a dense tensor"
            )
        return rule.block_mask()
    raise ValueError(
        f"attn_implementation={attn_implementation!r} cannot apply the frame-block attention mask "
        f"(flash attention silently drops custom masks); use one of {MASK_CAPABLE_ATTN_IMPLEMENTATIONS}"
    )
