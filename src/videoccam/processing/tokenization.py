"""Rendered prompts -> token ids with each placeholder expanded to Q tokens, labels, padding.

The processor renders messages with its chat template, then these functions tokenize the text,
check that it holds one placeholder token per media item, expand every placeholder token to
``num_visual_tokens`` (Q) copies, label the assistant turns for training, and pad a batch. The
same expansion serves the token counts of :func:`count_tokens`, so a count is exactly the length
the processor's ``input_ids`` will have.

User text stays text (:func:`encode_prompt`): the chat template's markup is tokenized with special
tokens recognised, but a text segment of a message (:data:`~videoccam.processing.messages.SEGMENTS`)
that holds the string of an added token (``<|im_end|>``, or ``<video>`` typed in a ``"text"`` part)
is tokenized with special tokens split, so typed control tokens cannot forge turns or
placeholders. A prompt with no such segment is tokenized whole, exactly as before.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Collection, Sequence
from typing import Any

import torch
from transformers import BatchFeature

from videoccam.processing.messages import SEGMENTS, without_segments

logger = logging.getLogger(__name__)

IGNORE_INDEX = -100  # the label of every token the loss skips

Render = Callable[[list[dict], bool], str]  # (messages, add_generation_prompt) -> the rendered prompt


_SENTINEL = "\ue000{}\ue001"  # stands for the k-th guarded text segment while the template renders
_SENTINEL_RE = re.compile("\ue000([0-9]+)\ue001")


def _guarded(tokenizer: Any, messages: Sequence[dict]) -> list[tuple[int, int]]:
    """``(message, segment)`` indices of the text segments that hold an added token's string."""
    added = [t for t in tokenizer.get_added_vocab() if t]
    return [(i, j) for i, msg in enumerate(messages) for j, (piece, is_text) in enumerate(msg.get(SEGMENTS, ()))
            if is_text and any(t in piece for t in added)]


def has_guarded_text(tokenizer: Any, messages: Sequence[dict]) -> bool:
    """Does a text segment of ``messages`` hold an added token's string (so :func:`encode_prompt`
    tokenizes it apart, special tokens split)?"""
    return bool(_guarded(tokenizer, messages))


def encode_prompt(tokenizer: Any, render: Render, messages: list[dict], add_generation_prompt: bool, *,
                  return_offsets_mapping: bool = False) -> tuple[str, list[int], list[tuple[int, int]] | None]:
    """Render and tokenize messages, their users' text kept as text: ``(prompt, ids, offsets)``.

    Text segments (:data:`~videoccam.processing.messages.SEGMENTS`) holding an added token's string
    are rendered as sentinels; the rendered prompt is cut at them, the template's pieces tokenized
    with special tokens recognised and the text pieces with ``split_special_tokens=True``, and the ids
    concatenated (offsets into the real prompt). Without such a segment the prompt is tokenized
    whole, as it always was.

    Raises:
        ValueError: the chat template alters a guarded text segment (its sentinel does not come
            back once, in place).
    """
    text = render(messages, add_generation_prompt)
    guarded = _guarded(tokenizer, messages)
    if not guarded:
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=return_offsets_mapping)
        return text, enc["input_ids"], enc["offset_mapping"] if return_offsets_mapping else None
    index = {ij: k for k, ij in enumerate(guarded)}
    stand_in = []
    for i, msg in enumerate(messages):
        if SEGMENTS not in msg:
            stand_in.append(msg)
            continue
        content = "".join(_SENTINEL.format(index[i, j]) if (i, j) in index else piece
                          for j, (piece, _) in enumerate(msg[SEGMENTS]))
        stand_in.append({**msg, "content": content})
    pieces = _SENTINEL_RE.split(render(stand_in, add_generation_prompt))  # markup, k, markup, k, ... markup
    order = [int(k) for k in pieces[1::2]]
    texts = [messages[i][SEGMENTS][j][0] for i, j in guarded]
    if order != list(range(len(guarded))) or "".join(
            texts[int(p)] if n % 2 else p for n, p in enumerate(pieces)) != text:
        raise ValueError("the chat template alters the text of a message holding special-token strings; "
                         "cannot keep that text as text")
    ids: list[int] = []
    offsets: list[tuple[int, int]] = []
    position = 0
    for n, piece in enumerate(pieces):
        piece = texts[int(piece)] if n % 2 else piece
        if not piece:
            continue
        enc = tokenizer(piece, add_special_tokens=False, return_offsets_mapping=return_offsets_mapping,
                        split_special_tokens=bool(n % 2))
        ids += enc["input_ids"]
        if return_offsets_mapping:
            offsets += [(position + a, position + b) for a, b in enc["offset_mapping"]]
        position += len(piece)
    return text, ids, offsets if return_offsets_mapping else None


def check_placeholders(ids: Sequence[int], num_media: int, visual_ids: Collection[int], where: str) -> None:
    """``ValueError`` naming ``where`` unless ``ids`` hold ``num_media`` placeholder tokens (``visual_ids``)."""
    found = sum(1 for t in ids if t in visual_ids)
    if found != num_media:
        raise ValueError(
            f"{where}: the rendered prompt holds {found} placeholder tokens but {num_media} were "
            "expected (does the chat template or the text contain stray placeholders?)"
        )


def expand_placeholders(ids: list[int], labels: list[int], weights: list[float], visual_ids: Collection[int],
                        num_visual_tokens: int) -> tuple[list[int], list[int], list[float]]:
    """Each placeholder token -> Q copies (label -100, weight 0); other tokens keep label and weight."""
    out_ids, out_labels, out_weights = [], [], []
    for t, lab, w in zip(ids, labels, weights, strict=True):
        if t in visual_ids:
            out_ids += [t] * num_visual_tokens
            out_labels += [IGNORE_INDEX] * num_visual_tokens
            out_weights += [0.0] * num_visual_tokens
        else:
            out_ids.append(t)
            out_labels.append(lab)
            out_weights.append(w)
    return out_ids, out_labels, out_weights


def assistant_spans(render: Render, messages: list[dict], text: str,
                    b: int) -> list[tuple[int, int, int, float]]:
    """Assistant turns in the rendered ``text``: ``(start, end of the answer text, end of the turn with
    its end-of-turn marker, loss weight)`` character offsets, found by rendering the prefixes."""
    spans = []
    for k, msg in enumerate(messages):
        if msg["role"] != "assistant":
            continue
        start = len(render(messages[:k], True)) if k else 0
        end_text = render(messages[: k + 1], False)
        if not text.startswith(end_text):
            raise ValueError(f"conversation {b}: the chat template is not prefix-stable; cannot locate "
                             f"turn {k}")
        found = text.find(msg["content"], start, len(end_text)) if msg["content"] else -1
        content_end = found + len(msg["content"]) if found >= 0 else len(end_text)
        spans.append((start, content_end, len(end_text), float(msg.get("weight", 1.0))))
    if not spans:
        logger.debug("conversation %d has no assistant turn: all labels are -100", b)
    return spans


def tokenize_conversation(tokenizer: Any, render: Render, messages: list[dict], *,
                          add_generation_prompt: bool, return_labels: bool, num_media: int, visual_ids: Collection[int],
                          num_visual_tokens: int, b: int) -> tuple[list[int], list[int], list[float]]:
    """Token ids, labels and per-token loss weights (0 where the label is -100) of one conversation,
    placeholders expanded. The text of an assistant message gets its weight, its end-of-turn marker
    ``min(weight, 1)``."""
    text, ids, offsets = encode_prompt(tokenizer, render, messages, add_generation_prompt,
                                       return_offsets_mapping=return_labels)
    check_placeholders(ids, num_media, visual_ids, f"conversation {b}")
    labels, weights = [IGNORE_INDEX] * len(ids), [0.0] * len(ids)
    if return_labels:
        spans = assistant_spans(render, messages, text, b)
        for i, (start, _) in enumerate(offsets):
            span = next((span for span in spans if span[0] <= start < span[2]), None)
            if span is not None:  # the answer's text gets the weight, its end-of-turn marker at most 1
                labels[i], weights[i] = ids[i], span[3] if start < span[1] else min(span[3], 1.0)
    return expand_placeholders(ids, labels, weights, visual_ids, num_visual_tokens)


def count_tokens(tokenizer: Any, chat_template: str | None, conversations: Sequence[list[dict]],
                 num_media: Sequence[int] | None, visual_ids: Collection[int], num_visual_tokens: int, *,
                 add_generation_prompt: bool = False, batch_size: int = 1024) -> list[int | None]:
    """Exact token counts (text + Q per placeholder) of conversations with string contents, rendered
    ``batch_size`` at a time; ``None`` where ``num_media`` is given and the rendered text holds another
    number of placeholder tokens. See ``VideoCCAMProcessor.count_tokens``. Conversations whose text
    segments hold special-token strings are tokenized one at a time by :func:`encode_prompt`, as the
    processor's call tokenizes them."""
    if num_media is not None and len(num_media) != len(conversations):
        raise ValueError(f"{len(conversations)} conversations but num_media for {len(num_media)}")

    def render(messages: list[dict], add_generation_prompt: bool) -> str:
        return tokenizer.apply_chat_template(without_segments(messages), chat_template=chat_template,
                                             tokenize=False, add_generation_prompt=add_generation_prompt)

    out: list[int | None] = []
    for s in range(0, len(conversations), batch_size):
        chunk = list(conversations[s:s + batch_size])
        guarded = {k for k, conv in enumerate(chunk) if _guarded(tokenizer, conv)}
        plain = [without_segments(conv) for k, conv in enumerate(chunk) if k not in guarded]
        texts = tokenizer.apply_chat_template(
            plain, chat_template=chat_template, tokenize=False, add_generation_prompt=add_generation_prompt,
        ) if plain else []
        encoded = iter(tokenizer(texts, add_special_tokens=False, return_attention_mask=False)["input_ids"]
                       if texts else [])
        for k, conv in enumerate(chunk):
            ids = encode_prompt(tokenizer, render, conv, add_generation_prompt)[1] if k in guarded else next(encoded)
            placeholders = sum(1 for t in ids if t in visual_ids)
            expected = placeholders if num_media is None else num_media[s + k]
            length = len(ids) + placeholders * (num_visual_tokens - 1)  # each placeholder -> Q tokens
            out.append(length if placeholders == expected else None)
    return out


def pad_batch(ids_batch: list[list[int]], labels_batch: list[list[int]] | None, padding_side: str,
              pad_id: int | None, weights_batch: list[list[float]] | None = None) -> dict[str, torch.Tensor]:
    """Sequences of different lengths -> ``input_ids`` / ``attention_mask`` (and ``labels``,
    ``loss_weights`` when given) ``[B, S]``, padded on ``padding_side`` to the longest."""
    if pad_id is None:
        raise ValueError("the tokenizer has no pad_token; set tokenizer.pad_token before batching")
    length = max(len(x) for x in ids_batch)

    def pad(seq: list, value: float) -> list:
        fill = [value] * (length - len(seq))
        return fill + seq if padding_side == "left" else seq + fill

    data = {
        "input_ids": torch.tensor([pad(x, pad_id) for x in ids_batch], dtype=torch.long),  # [B, S]
        "attention_mask": torch.tensor([pad([1] * len(x), 0) for x in ids_batch], dtype=torch.long),  # [B, S]
    }
    if labels_batch is not None:
        data["labels"] = torch.tensor([pad(x, IGNORE_INDEX) for x in labels_batch],
                                      dtype=torch.long)  # [B, S]
    if weights_batch is not None:
        data["loss_weights"] = torch.tensor([pad(x, 0.0) for x in weights_batch],
                                            dtype=torch.float32)  # [B, S]
    return data


def batch_feature(data: dict[str, torch.Tensor], pixel_values: list[torch.Tensor]) -> BatchFeature:
    """Padded text tensors + each media item's ``[n, 3, H, W]`` frames -> the model inputs
    (``pixel_values`` / ``frame_counts`` when there are media)."""
    if pixel_values:
        data["pixel_values"] = torch.cat(pixel_values)  # [N, 3, H, W]
        data["frame_counts"] = torch.tensor([p.shape[0] for p in pixel_values], dtype=torch.long)  # [M]
    return BatchFeature(data=data)
