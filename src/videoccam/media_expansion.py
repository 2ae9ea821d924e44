"""Copies of a prompt's media for beam search and ``num_return_sequences``.

``generate`` repeats every tensor argument row by row (``repeat_interleave(n, dim=0)``). That is
right for ``input_ids`` ``[B, S]`` but not for the media: ``pixel_values`` ``[N, 3, H, W]`` holds the
frames of every media item of the batch, so repeating it frame by frame would give beam 0 the
frames f0, f0, f1, f1 and beam 1 f2, f2, f3, f3. Here each prompt's media *items* are copied whole,
once per copy of the prompt, in the order of the copies (copies of a prompt adjacent, as
``repeat_interleave`` lays out the rows of ``input_ids``).
"""

from __future__ import annotations

from typing import Any

import torch

from videoccam.projector import ProjectorOutput

MEDIA_KEYS = ("pixel_values", "frame_counts", "visual_embeds")


def items_per_prompt(input_ids: torch.Tensor, media_token_ids: tuple[int, ...], num_query: int) -> list[int]:
    """Media items of each prompt: its placeholder tokens / Q (the processor expands each item to Q)."""
    ids = torch.tensor(media_token_ids, device=input_ids.device)  # [2]
    placeholders = torch.isin(input_ids, ids).sum(dim=1)  # [B]
    return [int(n) // num_query for n in placeholders]


def _copies(items: list[int], expand_size: int) -> list[int]:
    """Item indices after copying each prompt's items ``expand_size`` times, copies of a prompt adjacent.

    E.g. items [2, 1], expand_size 2 -> [0, 1, 0, 1, 2, 2].
    """
    order: list[int] = []
    start = 0
    for n in items:
        order += list(range(start, start + n)) * expand_size
        start += n
    return order


def _num_items(model_kwargs: dict[str, Any]) -> int | None:
    """Media items held by ``model_kwargs`` (None when it holds no media)."""
    visual = model_kwargs.get("visual_embeds")
    if visual is not None:
        return int(visual.embeds.shape[0])  # embeds [M, Q, D]
    pixels = model_kwargs.get("pixel_values")
    if pixels is None:
        return None
    counts = model_kwargs.get("frame_counts")
    return int(pixels.shape[0]) if counts is None else len(counts)  # one item per frame without frame_counts


def expand_media(model_kwargs: dict[str, Any], items: list[int], expand_size: int) -> dict[str, Any]:
    """``pixel_values`` / ``frame_counts`` / ``visual_embeds`` of ``model_kwargs`` with each prompt's
    media items copied whole ``expand_size`` times (other keys untouched; ``model_kwargs`` is updated).

    Raises:
        ValueError: the prompts' placeholders do not add up to the media items given.
    """
    total = _num_items(model_kwargs)
    if total is None:
        return model_kwargs
    if sum(items) != total:
        raise ValueError(
            f"the prompts hold placeholders for {sum(items)} media items but {total} were given; "
            "cannot copy each prompt's media for num_beams / num_return_sequences"
        )
    order = _copies(items, expand_size)  # M' = sum(items) * expand_size item indices
    visual = model_kwargs.get("visual_embeds")
    if visual is not None:
        index = torch.tensor(order, dtype=torch.long, device=visual.embeds.device)  # [M']
        model_kwargs["visual_embeds"] = ProjectorOutput(
            visual.embeds.index_select(0, index),  # [M, Q, D] -> [M', Q, D]
            visual.frame_ids.index_select(0, index.to(visual.frame_ids.device)),  # [M, Q] -> [M', Q]
        )
    pixels = model_kwargs.get("pixel_values")
    if pixels is not None:
        frame_counts = model_kwargs.get("frame_counts")
        counts = [1] * pixels.shape[0] if frame_counts is None else [int(c) for c in frame_counts]  # [M]
        item_frames = pixels.split(counts)  # M x [T_m, 3, H, W]
        model_kwargs["pixel_values"] = torch.cat([item_frames[item] for item in order])  # [N', 3, H, W]
        new_counts = [counts[item] for item in order]  # [M']
        if isinstance(frame_counts, torch.Tensor):
            model_kwargs["frame_counts"] = torch.tensor(new_counts, dtype=frame_counts.dtype,
                                                        device=frame_counts.device)  # [M']
        elif frame_counts is not None:
            model_kwargs["frame_counts"] = new_counts
    return model_kwargs
