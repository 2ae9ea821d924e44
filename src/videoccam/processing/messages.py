"""Conversations as the processor takes them -> messages with string contents, and their media.

A conversation is a list of ``{"role", "content"}`` messages (an assistant message may carry a
loss ``"weight"``). ``content`` is a string holding ``<image>`` / ``<video>`` placeholders, or a
list of typed parts (``{"type": "text", "text": ...}``, ``{"type": "image", "image": ...}``,
``{"type": "video", "video": ...}``), which become the same string with a placeholder where each
media part was. One rule is defined here for every caller (the processor, the training data):
media given without any placeholder get one each, opening the first user message
(:func:`prepend_placeholders`).

What is the user's text and what is a placeholder is decided here, once: a normalised message
keeps its content split into segments (private key :data:`SEGMENTS`, ``(string, is_text)``
pairs). The placeholders of string content and those of typed media parts are placeholders;
everything else written in a message (string content between placeholders, all of a ``"text"``
part, a literal ``<video>`` in it included) is text, which the tokenization keeps as plain text
(:func:`~videoccam.processing.tokenization.encode_prompt`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from typing import Any

SEGMENTS = "_segments"  # a normalised message's content as (string, is_text) pairs; never rendered

# __call__ options that apply_chat_template takes from its **kwargs (transformers' legacy place for them)
CALL_OPTIONS = frozenset({"num_frames", "fps", "video_kwargs", "padding", "padding_side",
                          "add_special_tokens"})


def check_turn_weight(weight: Any, role: str, where: str) -> float:
    """A message's loss weight as a float; ``ValueError`` naming ``where`` unless it is a finite number
    >= 0 on an assistant message."""
    if role != "assistant":
        raise ValueError(f"{where}: only assistant turns take a loss weight ('weight'), not {role!r} ones")
    number = isinstance(weight, (int, float)) and not isinstance(weight, bool)
    if not number or not math.isfinite(weight) or weight < 0:
        raise ValueError(f"{where}: 'weight' must be a finite number >= 0, got {weight!r}")
    return float(weight)


def as_batch(conversations: list, media: list | None) -> tuple[list[list], list[list]]:
    """Accept one conversation or a batch; pair each with its list of media items."""
    if not isinstance(conversations, list) or not conversations:
        raise ValueError("conversations must be a non-empty list (one conversation, or a batch of them)")
    single = isinstance(conversations[0], dict)
    if single:
        conversations = [conversations]
        media = None if media is None else [media]
    if media is None:
        media = [[] for _ in conversations]
    if len(media) != len(conversations):
        raise ValueError(f"{len(conversations)} conversations but media for {len(media)}")
    return conversations, [[] if m is None else list(m) for m in media]


def placeholder_pattern(image_token: str, video_token: str) -> re.Pattern[str]:
    """The regular expression that finds either placeholder (group 0 is the placeholder)."""
    return re.compile(f"({re.escape(image_token)}|{re.escape(video_token)})")


def segments_of(message: dict, pattern: re.Pattern[str]) -> list[tuple[str, bool]]:
    """A message's content as ``(string, is_text)`` segments: its :data:`SEGMENTS` when normalised,
    else its string content split at the placeholders (``pattern``), which are not text."""
    if SEGMENTS in message:
        return message[SEGMENTS]
    return [(piece, k % 2 == 0) for k, piece in enumerate(pattern.split(message["content"])) if piece]


def find_placeholders(messages: Sequence[dict], pattern: re.Pattern[str]) -> list[str]:
    """The placeholders of messages with string contents, in reading order (never those in a
    message's text segments: :data:`SEGMENTS`)."""
    return [m.group(0) for msg in messages for piece, is_text in segments_of(msg, pattern) if not is_text
            for m in pattern.finditer(piece)]


def without_segments(messages: Sequence[dict]) -> list[dict]:
    """The messages as a chat template sees them: without the private :data:`SEGMENTS` key."""
    return [{k: v for k, v in msg.items() if k != SEGMENTS} if SEGMENTS in msg else msg for msg in messages]


def prepend_placeholders(messages: Sequence[dict], placeholders: Sequence[str], *,
                         pattern: re.Pattern[str] | None = None,
                         where: str = "the conversation") -> list[dict]:
    """Media given without placeholders get one each: the rule of the processor and the training data.

    When no message holds a placeholder (``pattern``; default: ``<image>`` / ``<video>``), the first
    user message is opened with ``placeholders``, in order, each followed by a newline
    (``"<video>\\n<image>\\nwhat happens ?"``). Otherwise, or when ``placeholders`` is empty, the
    messages come back as they are: whether their placeholders match the media is the caller's
    check.

    Args:
        messages: ``{"role", "content"}`` messages with string contents (not modified).
        placeholders: one placeholder string per media item, in media order.
        pattern: what counts as a placeholder already written (:func:`placeholder_pattern`).
        where: names the conversation in the error.

    Returns:
        A new list; the first user message is a new dict when placeholders were prepended.

    Raises:
        ValueError: placeholders to prepend but no user message.
    """
    if pattern is None:
        from videoccam.constants import IMAGE_TOKEN, VIDEO_TOKEN

        pattern = placeholder_pattern(IMAGE_TOKEN, VIDEO_TOKEN)
    out = list(messages)
    if not placeholders or find_placeholders(out, pattern):
        return out
    first = next((k for k, m in enumerate(out) if m["role"] == "user"), None)
    if first is None:
        raise ValueError(f"{where}: media given but there is no user message to attach them to")
    tags = "".join(f"{p}\n" for p in placeholders)
    out[first] = {**out[first], "content": tags + out[first]["content"]}
    if SEGMENTS in out[first]:
        out[first][SEGMENTS] = [(tags, False), *out[first][SEGMENTS]]
    return out


def content_to_text(content: Any, inline: list, where: str, image_token: str, video_token: str,
                    segments: list | None = None, require_media: bool = True) -> str:
    """One message's ``content`` -> a string with placeholders; the media of typed parts are
    appended to ``inline`` in order, and the ``(string, is_text)`` segments to ``segments`` when
    given (a ``"text"`` part is text whole; string content is text between its placeholders).
    ``require_media=False``: a bare ``{"type": "video"}`` / ``{"type": "image"}`` part (media encoded
    apart) is a placeholder, and None is appended to ``inline`` for it."""
    if isinstance(content, str):
        if segments is not None:
            segments += segments_of({"content": content}, placeholder_pattern(image_token, video_token))
        return content
    if not isinstance(content, list):
        raise ValueError(f"{where}: content must be a string or a list of parts")
    text = []
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            text.append(part["text"])
            if segments is not None and part["text"]:
                segments.append((part["text"], True))
        elif kind in ("image", "video"):
            source = next((key for key in (kind, "path", "url") if key in part), None)
            if source is None and require_media:
                raise ValueError(f"{where}: a {kind!r} part needs a {kind!r} (or 'path' / 'url') field")
            inline.append(None if source is None else part[source])
            text.append(image_token if kind == "image" else video_token)
            if segments is not None:
                segments.append((text[-1], False))
        else:
            raise ValueError(f"{where}: unknown content part type {kind!r}")
    return "".join(text)


def normalise_conversation(conv: list, items: list, b: int, *, image_token: str, video_token: str,
                           placeholder_for: Callable[[Any], str],
                           text_only: bool = False) -> tuple[list[dict], list]:
    """One conversation and its ``media`` items -> messages with string contents and the media in
    placeholder order.

    Each message keeps its content's text and placeholder segments (:data:`SEGMENTS`: the
    placeholders written in a ``"text"`` part are text, not counted). Typed parts become
    placeholders (their media are the conversation's, and then ``items`` must be
    empty); loss weights are checked; media without any placeholder get one each
    (:func:`prepend_placeholders`, ``placeholder_for`` picks it). ``text_only``: no media at all,
    the written placeholders and bare typed media parts (``{"type": "video"}``) are placeholders.

    Raises:
        ValueError: naming conversation ``b``: a malformed message, media given twice, or a
            placeholder count other than the media count.
    """
    messages, inline = [], []
    for i, msg in enumerate(conv):
        where = f"conversation {b}, message {i}"
        if not isinstance(msg, dict) or "role" not in msg or "content" not in msg:
            raise ValueError(f"{where}: expected a dict with 'role' and 'content'")
        segments: list[tuple[str, bool]] = []
        message = {"role": msg["role"], "content": content_to_text(msg["content"], inline, where, image_token,
                                                                   video_token, segments, not text_only)}
        message[SEGMENTS] = segments
        if "weight" in msg:
            message["weight"] = check_turn_weight(msg["weight"], msg["role"], where)
        messages.append(message)
    if inline and items:
        raise ValueError(f"conversation {b}: media given both inline (typed parts) and in `media`")
    if text_only and any(item is not None for item in inline):
        raise ValueError(f"conversation {b}: text_only=True but media given inline (typed parts)")
    if text_only:
        return messages, []
    items = inline or list(items)
    pattern = placeholder_pattern(image_token, video_token)
    count = len(find_placeholders(messages, pattern))
    if count == 0 and items:
        messages = prepend_placeholders(messages, [placeholder_for(item) for item in items], pattern=pattern,
                                        where=f"conversation {b}")
    elif count != len(items):
        raise ValueError(
            f"conversation {b}: {count} {image_token}/{video_token} placeholders but {len(items)} media items"
        )
    return messages, items
