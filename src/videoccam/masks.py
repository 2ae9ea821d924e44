"""Every attention mask videoccam uses is built here, and only here.

Convention: boolean tensors, ``True`` = may attend.

Shape notation: Q queries, T frames, P visual tokens per frame, B batch, S LLM sequence length.
"""

from __future__ import annotations

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
