"""Every attention mask videoccam uses is built here, and only here.

Convention: boolean tensors, ``True`` = may attend.

Shape notation: Q queries, T frames, P visual tokens per frame, B batch, S LLM sequence length.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


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
    for name, t in zip(names, (frame_ids, media_ids, padding_mask)):
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
    for name, t in zip(names[:2], (frame_ids, media_ids)):
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


def llm_attention_mask(
    frame_ids: torch.Tensor,
    media_ids: torch.Tensor,
    padding_mask: torch.Tensor,
    *,
    frame_block: bool,
) -> torch.Tensor:
    """Prefill attention mask of the LLM: causal + padding, optionally with TC-LLaVA frame blocks.

    Query q may attend key k iff k is a real token AND
    ``(k <= q OR (frame_block AND q, k visual AND media(q) == media(k) AND frame(q) == frame(k)))``.
    A padding query may additionally attend itself, so no row is all False and SDPA/softmax never
    produce NaN; real queries never attend padding keys. One sequence per row (no packing).

    Use it for prefill only: decode steps are plain causal plus padding (a 2-D mask suffices).
    Hugging Face ``eager`` and ``flex_attention`` *add* a tensor mask to the scores, so convert it with
    :func:`additive_attention_mask` before handing it to a model (SDPA accepts both forms).

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

    Args:
        frame_ids: frame index of each visual token within its media item; -1 for text and padding.
        media_ids: ordinal of the media item within its sample; -1 for text and padding.
        padding_mask: True (or 1) = real token, False (or 0) = padding (left or right).
        frame_block: add full attention inside each (media item, frame) block.

    Returns:
        Bool mask, True = may attend.

    Shapes:
        frame_ids, media_ids, padding_mask: ``[B, S]``.
        Returns: ``[B, 1, S, S]`` (query, key), as Hugging Face expects a 4-D mask.

    Raises:
        ValueError: inconsistent metadata (see the shapes above; padding must carry -1 ids).
    """
    padding_mask = _check_token_metadata(frame_ids, media_ids, padding_mask)
    seq_len = frame_ids.shape[1]
    idx = torch.arange(seq_len, device=frame_ids.device)  # [S]
    allowed = (idx[None, :] <= idx[:, None])[None]  # [1, S(q), S(k)] causal
    if frame_block:
        visual = frame_ids >= 0  # [B, S]
        same_block = (
            (media_ids[:, :, None] == media_ids[:, None, :])
            & (frame_ids[:, :, None] == frame_ids[:, None, :])
            & visual[:, :, None]
            & visual[:, None, :]
        )  # [B, S(q), S(k)]
        allowed = allowed | same_block
    allowed = allowed & padding_mask[:, None, :]  # [B, S, S]: real keys only
    allowed = allowed | torch.eye(seq_len, dtype=torch.bool, device=frame_ids.device)[None]  # pad rows: self
    return allowed[:, None]  # [B, 1, S, S]


def additive_attention_mask(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Turn a boolean mask (True = may attend) into the additive form: 0 if allowed, else ``finfo.min``.

    Hugging Face ``eager`` (``scores + mask``) and ``flex_attention`` (``score_mod`` adds the tensor)
    need this form; a boolean mask there would silently add 0/1. SDPA accepts either form.

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


def to_hf_attention_mask(mask: torch.Tensor, *, attn_implementation: str, dtype: torch.dtype):
    """Put a boolean prefill mask into the form the configured Hugging Face attention backend needs.

    Pass the result as ``attention_mask=`` to a transformers 5.x ``*ForCausalLM`` forward: a 4-D
    mask (tensor or ``BlockMask``) is returned unchanged by ``create_causal_mask`` and reaches every
    layer as is. Read the backend from ``model.config._attn_implementation``.

    - ``"sdpa"``: the boolean mask itself (True = may attend).
    - ``"eager"``: additive float mask (:func:`additive_attention_mask`); eager computes
      ``scores + mask``, so a boolean mask would silently add 0/1 instead of masking.
    - ``"flex_attention"``: a ``torch.nn.attention.flex_attention.BlockMask`` built from the mask.
      (A dense tensor would be added in a ``score_mod``; on CPU with torch 2.13 that path crashes.)
      Building it compiles a kernel: slow on CPU.
    - ``"flash_attention_*"`` and anything else: ``ValueError``. Flash attention keeps only 2-D
      padding and would silently run plain causal attention.

    Args:
        mask: boolean mask, True = may attend, e.g. from :func:`llm_attention_mask`.
        attn_implementation: ``model.config._attn_implementation``.
        dtype: the model's compute dtype (``model.dtype``), used for the additive form.

    Returns:
        A bool tensor (sdpa), a float tensor of ``dtype`` (eager) or a ``BlockMask`` (flex_attention).

    Shapes:
        mask: ``[B, 1, S, S]``. Returns: ``[B, 1, S, S]`` (tensor forms).

    Raises:
        ValueError: the backend cannot take a custom mask, or ``mask`` is not a 4-D bool tensor.
    """
    if mask.dtype != torch.bool or mask.ndim != 4:
        raise ValueError(f"expected a bool mask of shape [B, 1, S, S], got {mask.dtype} {tuple(mask.shape)}")
    if attn_implementation == "sdpa":
        return mask
    if attn_implementation == "eager":
        return additive_attention_mask(mask, dtype)
    if attn_implementation == "flex_attention":
        from torch.nn.attention.flex_attention import create_block_mask

        dense = mask[:, 0]  # [B, S, S]

        def mask_mod(b, h, q, k):  # noqa: ANN001, ARG001 - flex signature
            return dense[b, q, k]

        return create_block_mask(
            mask_mod, B=mask.shape[0], H=None, Q_LEN=mask.shape[2], KV_LEN=mask.shape[3], device=mask.device
        )
    raise ValueError(
        f"attn_implementation={attn_implementation!r} cannot apply the frame-block attention mask "
        f"(flash attention silently drops custom masks); use one of {MASK_CAPABLE_ATTN_IMPLEMENTATIONS}"
    )
