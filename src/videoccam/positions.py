"""Every LLM position id videoccam uses is built here, and only here.

Three modes, selected by the ``temporal_rope`` config option:

- ``"none"``: plain 1-D RoPE positions, ``arange`` over the real tokens (Video-CCAM).
- ``"tc"``: TC-LLaVA's temporal-aware dual RoPE, ``n_hat = n + gamma * I_t(n)``, where ``I_t``
  advances by one per text token and by one per frame block; text steps by ``1 + gamma``.
- ``"frame"``: text keeps step 1; each frame-block start after the first block of a media item
  adds ``gamma`` (``p_k = k + gamma * c_k``).

Prefill positions come from :func:`position_ids`, which also returns ``rope_delta``; decode
positions are ``cache_position * decode_step(mode, gamma) + rope_delta``
(:func:`decode_position_ids`), the mechanism of Qwen2-VL's ``rope_deltas``.

``cache_position`` is the raw cache slot index, padding included: ``0 .. S-1`` at prefill,
``S, S+1, ...`` while decoding (``cache.get_seq_length() + arange(q_len)``).
Never use position ids as cache slots.

Dtypes: ``"none"`` gives ``torch.long`` (bit-identical to HF's own positions); ``"tc"`` and
``"frame"`` give ``torch.float32`` (gamma may be fractional; HF rotary layers compute cos/sin from
``position_ids.float()``). Padding slots get position **0**, as ``transformers`` 5.x ``generate`` does.
"""

from __future__ import annotations

import math

import torch

from videoccam.constants import TEMPORAL_ROPE_MODES, TemporalRope
from videoccam.errors import ConfigError
from videoccam.masks import _check_token_metadata


def _check_mode_gamma(mode: TemporalRope, gamma: float) -> None:
    """Raise :class:`ConfigError` (a ``ValueError``) for an unknown mode or a bad gamma."""
    if mode not in TEMPORAL_ROPE_MODES:
        raise ConfigError(f"temporal_rope must be one of {TEMPORAL_ROPE_MODES}, got {mode!r}")
    if isinstance(gamma, bool) or not isinstance(gamma, (int, float)):
        raise ConfigError(f"rope_gamma must be a number, got {type(gamma).__name__}")
    if not math.isfinite(gamma) or gamma < 0:
        raise ConfigError(f"rope_gamma must be finite and >= 0, got {gamma}")


def decode_step(mode: TemporalRope, gamma: float) -> float:
    """Position increment per decoded token: ``1 + gamma`` for ``"tc"``, ``1`` otherwise.

    In ``"tc"`` every text token advances ``I_t`` by one, hence ``n_hat`` by ``1 + gamma``.

    Args:
        mode: ``temporal_rope`` mode, one of ``"none"``, ``"tc"``, ``"frame"``.
        gamma: ``rope_gamma`` (>= 0).

    Returns:
        The step as a Python float.

    Raises:
        ConfigError: (a ``ValueError``) unknown mode or bad gamma.
    """
    _check_mode_gamma(mode, gamma)
    return 1.0 + float(gamma) if mode == "tc" else 1.0


def position_ids(
    frame_ids: torch.Tensor,
    media_ids: torch.Tensor,
    padding_mask: torch.Tensor,
    *,
    mode: TemporalRope,
    gamma: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Prefill RoPE positions of an LLM batch and the ``rope_delta`` that continues them at decode.

    Positions are computed per sample over the real tokens only (padding removed), so left
    padding does not shift them. With n the index of a token among the real tokens of its sample:

    - ``"none"``: ``p = n``.
    - ``"tc"``: ``p = n + gamma * I_t(n)`` with ``I_t(first real token) = 0`` and, going from the
      previous real token to this one, ``I_t`` advances by one for a text token that follows a text
      token, by one for a visual token that starts a new block (its (media, frame) differs from the
      previous token's, text included), and by zero otherwise. So the first text token after a
      video keeps the ``I_t`` of the last frame (the CSDN transcription of TC-LLaVA). Blocks may
      have unequal sizes. Example (gamma = 1; 3 text, 3 frames x 4 tokens, 4 text)::

          I_t : 0 1 2 | 3 3 3 3 | 4 4 4 4  | 5 5 5 5  | 5  6  7  8
          p   : 0 2 4 | 6 7 8 9 | 11 12 13 14 | 16 17 18 19 | 20 22 24 26

    - ``"frame"``: ``p = n + gamma * c(n)``, ``c`` counting the frame-block starts at or before n
      that are not the first block of their media item. Example (gamma = 1, same sequence)::

          p   : 0 1 2 | 3 4 5 6 | 8 9 10 11 | 13 14 15 16 | 17 18 19 20

    Decode: ``p = cache_position * decode_step(mode, gamma) + rope_delta`` with
    ``rope_delta = p_last + step - S * step`` so the token in cache slot ``S`` (first decoded token)
    gets ``p_last + step``. For ``"none"`` this is ``-(number of padding slots)``. This assumes the
    prompt ends with a text token (in ``"tc"``, a text token straight after a visual token would
    step by 1, not ``1 + gamma``).

    Args:
        frame_ids: frame index of each visual token within its media item; -1 for text and padding.
        media_ids: ordinal of the media item within its sample; -1 for text and padding.
        padding_mask: True (or 1) = real token; padding may be on the left or the right.
        mode: ``temporal_rope``: ``"none"``, ``"tc"`` or ``"frame"``.
        gamma: ``rope_gamma`` >= 0 (ignored by ``"none"``).

    Returns:
        ``(positions, rope_delta)``. Padding slots get position 0. ``torch.long`` for ``"none"``,
        ``torch.float32`` for ``"tc"`` and ``"frame"`` (whatever gamma is). With no visual tokens,
        ``"frame"`` equals ``arange`` exactly and ``"tc"`` equals ``arange * (1 + gamma)``.

    Shapes:
        frame_ids, media_ids, padding_mask: ``[B, S]``.
        positions: ``[B, S]``; rope_delta: ``[B, 1]``.

    Raises:
        ConfigError: (a ``ValueError``) unknown ``temporal_rope`` mode or bad ``rope_gamma``.
        ValueError: inconsistent metadata.
    """
    _check_mode_gamma(mode, gamma)
    real = _check_token_metadata(frame_ids, media_ids, padding_mask)  # [B, S] bool
    batch, seq_len = frame_ids.shape
    device = frame_ids.device
    step = decode_step(mode, gamma)

    n = real.long().cumsum(dim=1) - 1  # [B, S] index among real tokens
    slots = torch.arange(seq_len, device=device)  # [S]
    # Slot of the latest real token at or before each slot (-1 if none).
    last_real = torch.where(real, slots[None, :], -1).cummax(dim=1).values  # [B, S]

    if mode == "none":
        positions = n
    else:
        # Slot of the previous real token, strictly before each slot (-1 if none).
        prev = torch.cat([last_real.new_full((batch, 1), -1), last_real[:, :-1]], dim=1)  # [B, S]
        has_prev = real & (prev >= 0)  # [B, S]
        prev_c = prev.clamp(min=0)  # [B, S], safe gather index
        prev_frame = frame_ids.gather(1, prev_c)  # [B, S]
        prev_media = media_ids.gather(1, prev_c)  # [B, S]
        visual = frame_ids >= 0  # [B, S]
        prev_visual = has_prev & (prev_frame >= 0)  # [B, S]
        same_block_as_prev = prev_visual & (prev_media == media_ids) & (prev_frame == frame_ids)
        if mode == "tc":
            # I_t increments: new block for visual tokens, text after text for text tokens.
            inc = has_prev & torch.where(visual, ~same_block_as_prev, ~prev_visual)  # [B, S]
        else:  # "frame": a new frame block inside the same media item
            inc = visual & prev_visual & (prev_media == media_ids) & (prev_frame != frame_ids)  # [B, S]
        counter = inc.long().cumsum(dim=1)  # [B, S]: I_t for "tc", c for "frame"
        positions = n.to(torch.float32) + float(gamma) * counter.to(torch.float32)

    positions = positions.masked_fill(~real, 0)  # [B, S]
    p_last = positions.gather(1, last_real[:, -1:])  # [B, 1] position of the last real token
    # [B, 1]: long for "none" (-(number of padding slots) for left padding), else float32
    rope_delta = p_last + 1 - seq_len if mode == "none" else p_last + step - seq_len * step
    return positions, rope_delta


def decode_position_ids(
    cache_position: torch.Tensor,
    rope_delta: torch.Tensor,
    *,
    mode: TemporalRope,
    gamma: float,
) -> torch.Tensor:
    """Positions of decoded tokens: ``cache_position * decode_step(mode, gamma) + rope_delta``.

    Args:
        cache_position: raw cache slot of each new token, padding included (the first decoded
            token of a length-S prompt is in slot S). That is
            ``cache.get_seq_length() + torch.arange(q_len)``.
        rope_delta: as returned by :func:`position_ids` for the prompt.
        mode: ``temporal_rope`` mode (must match the prefill).
        gamma: ``rope_gamma`` (must match the prefill).

    Returns:
        ``torch.long`` for ``"none"``, ``torch.float32`` otherwise.

    Shapes:
        cache_position: ``[L]`` or ``[B, L]``; rope_delta: ``[B, 1]``. Returns: ``[B, L]``.

    Raises:
        ConfigError: (a ``ValueError``) unknown mode or bad gamma.
        ValueError: ``rope_delta`` is not ``[B, 1]`` or ``cache_position`` has the wrong rank.
    """
    step = decode_step(mode, gamma)
    if rope_delta.ndim != 2 or rope_delta.shape[1] != 1:
        raise ValueError(f"rope_delta must have shape [B, 1], got {tuple(rope_delta.shape)}")
    if cache_position.ndim == 1:
        cache_position = cache_position[None, :]  # [1, L]
    elif cache_position.ndim != 2:
        raise ValueError(f"cache_position must have shape [L] or [B, L], got {tuple(cache_position.shape)}")
    if mode == "none":
        return cache_position.long() + rope_delta.long()  # [B, L]
    return cache_position.to(torch.float32) * step + rope_delta.to(torch.float32)  # [B, L]
