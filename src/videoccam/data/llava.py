"""The LLaVA record schema: one record -> chat messages (with placeholders) and media paths in placeholder order.

    {"id": "clip-1", "video": "clips/1.mp4",
     "conversations": [{"from": "human", "value": "<video>\\nWhat happens?"},
                       {"from": "gpt", "value": "The square moves left.", "weight": 2}]}

-> ``messages = [{"role": "user", "content": "<video>\\nWhat happens?"},
{"role": "assistant", "content": "The square moves left.", "weight": 2.0}]``, ``media = ["<root>/clips/1.mp4"]``,
``kinds = ["video"]``. The format is described in ``docs/training-data.md``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from videoccam.constants import IMAGE_TOKEN, VIDEO_TOKEN
from videoccam.data.records import DataRecordError
from videoccam.processing.messages import prepend_placeholders
from videoccam.processing.processor import check_turn_weight

__all__ = ["ROLES", "Conversation", "parse_record", "record_to_conversation"]

# a turn's "from" -> its chat role
ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}
_PLACEHOLDER = re.compile(f"({re.escape(VIDEO_TOKEN)}|{re.escape(IMAGE_TOKEN)})")


@dataclass
class Conversation:
    """A parsed record: what a sample is made of before tokenizing and decoding."""

    messages: list[dict]  # chat messages with placeholders (``weight`` on weighted assistant turns)
    media: list[str]  # paths in placeholder order (strings: pathlib is slow over a million records)
    kinds: list[str]  # "video" | "image" per media item


def record_to_conversation(record: dict, media_root: str | Path | None) -> tuple[list[dict], list[Path]]:
    """A LLaVA record -> chat messages (keeping ``<video>``/``<image>`` placeholders) and media paths.

    The k-th ``<video>`` placeholder (counted over the whole conversation) gets the k-th path of the
    record's ``video`` field and the k-th ``<image>`` the k-th path of ``image``, so the returned
    paths are in placeholder order. A record with media but no placeholder at all gets one per item
    (videos first) prepended to its first human turn. Relative paths are resolved against
    ``media_root`` (kept as given when it is ``None``).

    Raises:
        DataRecordError: (a ``ValueError``) naming the field at fault; its ``kind`` is ``"schema"``
            (missing/invalid fields, unknown ``from``, turns not alternating human/gpt or not ending
            with gpt), ``"placeholders"`` (placeholder count != media count, or a placeholder outside a
            human turn) or ``"empty"`` (an empty answer).
    """
    parsed = parse_record(record, None if media_root is None else Path(media_root))
    return parsed.messages, [Path(m) for m in parsed.media]


def parse_record(record: dict, media_root: Path | None, image_token: str = IMAGE_TOKEN,
                 video_token: str = VIDEO_TOKEN) -> Conversation:
    """:func:`record_to_conversation`, with the media kinds and the paths as strings; the placeholders
    are written as ``image_token`` / ``video_token`` (the processor's own spelling) in the messages."""
    if not isinstance(record, dict):
        raise DataRecordError("schema", f"a record must be a JSON object, got {type(record).__name__}")
    turns = record.get("conversations")
    messages = _messages(turns)
    videos, images = _media_field(record, "video"), _media_field(record, "image")
    messages, found = _placeholders(messages, len(videos), len(images))
    for i, msg in enumerate(messages):
        if msg["role"] == "assistant" and not msg["content"].strip():
            raise DataRecordError("empty", f"conversations[{i}]: empty answer")
    queues = {VIDEO_TOKEN: iter(videos), IMAGE_TOKEN: iter(images)}
    media = [_resolve(next(queues[tag]), media_root) for tag in found]
    kinds = ["video" if tag == VIDEO_TOKEN else "image" for tag in found]
    if (image_token, video_token) != (IMAGE_TOKEN, VIDEO_TOKEN):
        swap = {VIDEO_TOKEN: video_token, IMAGE_TOKEN: image_token}
        for msg in messages:
            msg["content"] = _PLACEHOLDER.sub(lambda m: swap[m.group(0)], msg["content"])
    return Conversation(messages, media, kinds)


def _messages(turns: object) -> list[dict]:
    """The turns as chat messages, checked: known roles, string values, valid weights, an optional
    system turn first, then human/gpt alternating and ending with gpt."""
    if not isinstance(turns, list) or not turns:
        raise DataRecordError("schema", "field 'conversations' must be a non-empty list of turns")
    messages = []
    for i, turn in enumerate(turns):
        if not isinstance(turn, dict):
            raise DataRecordError("schema", f"conversations[{i}] must be an object with 'from' and 'value'")
        source, value = turn.get("from"), turn.get("value")
        if not isinstance(source, str) or source not in ROLES:
            raise DataRecordError("schema", f"conversations[{i}].from is {source!r}; expected 'human', 'gpt' or "
                                  "'system'")
        if not isinstance(value, str):
            raise DataRecordError("schema",
                                  f"conversations[{i}].value must be a string, got {type(value).__name__}")
        messages.append({"role": ROLES[source], "content": value})
        if "weight" in turn:
            try:
                messages[-1]["weight"] = check_turn_weight(turn["weight"], ROLES[source], f"conversations[{i}]")
            except ValueError as err:
                raise DataRecordError("schema", str(err)) from None
    offset = 1 if messages[0]["role"] == "system" else 0
    body = messages[offset:]
    if not body:
        raise DataRecordError("schema", "field 'conversations' has no human/gpt turns")
    for j, msg in enumerate(body):
        expected = "user" if j % 2 == 0 else "assistant"
        if msg["role"] != expected:
            got, want = turns[j + offset]["from"], "human" if expected == "user" else "gpt"
            where = "a 'system' turn is only allowed first" if msg["role"] == "system" else (
                f"turns must alternate human, gpt, ... (got {got!r} where {want!r} was expected)")
            raise DataRecordError("schema", f"conversations[{j + offset}].from: {where}")
    if body[-1]["role"] != "assistant":
        raise DataRecordError("schema",
                              "field 'conversations' must end with a 'gpt' turn (nothing to learn after it)")
    return messages


def _placeholders(messages: list[dict], num_videos: int, num_images: int) -> tuple[list[dict], list[str]]:
    """The messages and their placeholders in order, checked against the media counts. A record with
    media but no placeholder gets one per item, videos first (the LLaVA convention), by the processor's
    own rule (:func:`videoccam.processing.messages.prepend_placeholders`)."""
    for i, msg in enumerate(messages):
        if msg["role"] != "user" and _PLACEHOLDER.search(msg["content"]):
            raise DataRecordError("placeholders",
                                  f"conversations[{i}]: placeholders are only allowed in human turns")
    messages = prepend_placeholders(messages, [VIDEO_TOKEN] * num_videos + [IMAGE_TOKEN] * num_images,
                                    pattern=_PLACEHOLDER)
    found = [m.group(0) for msg in messages for m in _PLACEHOLDER.finditer(msg["content"])]
    num_v, num_i = found.count(VIDEO_TOKEN), found.count(IMAGE_TOKEN)
    if num_v != num_videos or num_i != num_images:
        raise DataRecordError("placeholders", f"{num_v} {VIDEO_TOKEN} placeholder(s) for {num_videos} path(s) in "
                              f"'video' and {num_i} {IMAGE_TOKEN} for {num_images} in 'image'")
    return messages, found


def _media_field(record: dict, name: str) -> list[str]:
    value = record.get(name)
    if value is None:
        return []
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(x, str) and x.strip() for x in items):
        raise DataRecordError("schema", f"field {name!r} must be a path or a list of paths, got {value!r}")
    return items


def _resolve(path: str, media_root: Path | None) -> str:
    return path if media_root is None or os.path.isabs(path) else os.path.join(media_root, path)
