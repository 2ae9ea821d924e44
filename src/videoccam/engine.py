"""The one inference path: media -> visual tokens -> batched, streamed, timed answers.

Everything that answers questions goes through here: :class:`videoccam.pipeline.Pipeline` (the
public object behind ``videoccam chat``, ``videoccam eval``, the server and the demo), the released
v1.2 API ``model.chat`` and :class:`~videoccam.session.ChatSession`.

* :func:`encode_media` decodes (unless given decoded :class:`~videoccam.processing.video.Video` s),
  preprocesses and encodes media items once: an :class:`Encoded` holds the projector output
  (``embeds [M, Q, D]``, ``frame_ids [M, Q]``), reusable for any number of questions.
* :func:`answer_batch` answers a batch of conversations in one ``generate`` (left padding), each
  with its own :class:`Encoded` (or none), streaming text deltas per row to a callback, and returns
  an :class:`Answer` per conversation with its token counts and :class:`~videoccam.timings.Timings`.

This module takes the model by duck typing (``encode_frames``, ``projector``, ``generate``,
``device``, ``config``) and never imports the model class, so the model's own ``chat`` can use it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from videoccam.hf_compat import CACHE_NAME
from videoccam.processing.media import media_kind
from videoccam.processing.video import Video, load_video
from videoccam.projector import ProjectorOutput
from videoccam.streaming import BatchStreamer, FirstTokenProbe, TeeStreamer
from videoccam.timings import StageClock, Timings

if TYPE_CHECKING:
    from transformers.generation.streamers import BaseStreamer

    from videoccam.processing.processor import VideoCCAMProcessor

logger = logging.getLogger(__name__)

DEFAULT_MAX_NEW_TOKENS = 512


@dataclass
class Encoded:
    """Media items encoded once (the projector output), to be asked about any number of times.

    Attributes:
        visual: ``embeds [M, Q, D]`` and ``frame_ids [M, Q]`` of the M items, on the model's device.
        kinds: ``"image"`` / ``"video"`` per item (the placeholder each item gets).
        videos: the decoded :class:`~videoccam.processing.video.Video` per item where one was decoded
            here or given (frame indices and timestamps: subtitles, evaluation records), else None.
        timings: the media stages of the encoding (decode, preprocess, vision, projector).
    """

    visual: ProjectorOutput
    kinds: list[str]
    videos: list[Video | None] = field(default_factory=list)
    timings: Timings = field(default_factory=Timings)

    def __len__(self) -> int:
        return len(self.kinds)


@dataclass
class Answer:
    """One conversation's answer.

    Attributes:
        text: the decoded answer, special tokens skipped, stripped (what ``model.chat`` returns).
        prompt_tokens: the prompt's length without padding (visual tokens included).
        completion_tokens: tokens generated up to and including the first stop token.
        finish_reason: ``"stop"`` (a stop token ended it) or ``"length"`` (``max_new_tokens`` did).
        timings: this answer's stages (the batch's prefill and generate times are shared by its rows).
        token_ids: the generated ids, up to and including the first stop token.
    """

    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str
    timings: Timings
    token_ids: list[int] = field(default_factory=list)


def load_item(item: Any, num_frames: int, video_kwargs: dict[str, Any] | None = None) -> Any:
    """A video path -> its decoded :class:`Video` (with ``num_frames`` unless ``video_kwargs`` says
    otherwise); any other media item unchanged (images and in-memory frames need no decoding)."""
    if isinstance(item, (str, Path)) and media_kind(item) == "video":
        return load_video(item, **{"num_frames": num_frames, **(video_kwargs or {})})
    return item


@torch.no_grad()
def encode_media(model: Any, processor: VideoCCAMProcessor, media: Sequence[Any], *,
                 kinds: Sequence[str] | None = None, video_kwargs: dict[str, Any] | None = None) -> Encoded:
    """Decode, preprocess and encode ``media`` once (see :class:`Encoded`).

    Args:
        model: a :class:`~videoccam.modeling.VideoCCAMForConditionalGeneration`.
        processor: its processor.
        media: items as :meth:`VideoCCAMProcessor.load_media` takes them (paths, frame lists, PIL
            images, arrays, decoded :class:`Video` s), in placeholder order; at least one.
        kinds: ``"image"`` / ``"video"`` per item; default :meth:`VideoCCAMProcessor.placeholder_for`.
        video_kwargs: sampling options for video paths (``num_frames``, ``sample``, ``fps``, ...).
    """
    media = list(media)
    if not media:
        raise ValueError("encode_media needs at least one media item")
    if kinds is None:
        kinds = ["image" if processor.placeholder_for(item) == processor.image_token else "video"
                 for item in media]
    clock, timings = StageClock(model.device), Timings()
    with clock.stage(timings, "decode"):
        loaded = [load_item(item, processor.num_frames, video_kwargs) if kind == "video" else item
                  for item, kind in zip(media, kinds, strict=True)]
    with clock.stage(timings, "preprocess"):
        features = processor.preprocess_media(loaded, list(kinds), video_kwargs)  # checks kinds
        pixel_values = features["pixel_values"].to(model.device)  # [N, 3, H, W]
        frame_counts = features["frame_counts"].to(model.device)  # [M]
    visual = encode_pixels(model, pixel_values, frame_counts, timings, clock)
    logger.info("encoded %d media items (%d frames)", len(media), int(frame_counts.sum()))
    return Encoded(visual, list(kinds), [v if isinstance(v, Video) else None for v in loaded], timings)


def encode_pixels(model: Any, pixel_values: torch.Tensor, frame_counts: torch.Tensor | Sequence[int],
                  timings: Timings, clock: StageClock) -> ProjectorOutput:
    """Vision encoder then projector, each stage timed into ``timings``."""
    with clock.stage(timings, "vision"):
        features = model.encode_frames(pixel_values)  # [N, P, Dv]
    with clock.stage(timings, "projector"):
        return model.projector(features, frame_counts)  # embeds [M, Q, D], frame_ids [M, Q]


def concat_visual(parts: Sequence[ProjectorOutput]) -> ProjectorOutput:
    """Several items' projector outputs -> one, in order (``[M1 + M2 + ..., Q, D]``)."""
    return ProjectorOutput(torch.cat([p.embeds for p in parts]), torch.cat([p.frame_ids for p in parts]))


def with_placeholders(processor: VideoCCAMProcessor, messages: list[dict], kinds: Sequence[str]) -> list[dict]:
    """A conversation whose media were encoded apart: one placeholder per item opens the first user
    message when none is written (string contents; typed content parts are left to the processor)."""
    if kinds and all(isinstance(m.get("content"), str) for m in messages):
        return processor.prepend_placeholders(messages, kinds)
    return messages


@torch.no_grad()
def answer_batch(model: Any, processor: VideoCCAMProcessor, conversations: Sequence[list[dict]],
                 encoded: Sequence[Encoded | None] | None = None, *,
                 on_text: Callable[[int, str], None] | None = None, streamer: BaseStreamer | None = None,
                 **generate_kwargs: Any) -> list[Answer]:
    """Answer ``conversations`` in one ``generate`` (left padding).

    Args:
        model, processor: the model and its processor.
        conversations: each a list of ``{"role", "content"}`` messages, ending with the user's turn.
        encoded: per conversation its :class:`Encoded` media (placeholders are prepended to the first
            user message when none is written), or None for a text-only conversation.
        on_text: called with ``(conversation index, text delta)`` as the answers are produced.
        streamer: a ``generate`` streamer besides (e.g. :class:`~videoccam.streaming.AnswerStreamer`).
        generate_kwargs: passed to ``generate`` (``max_new_tokens`` default 512, ``do_sample``, ...).
    """
    conversations = [list(c) for c in conversations]
    encoded = list(encoded) if encoded is not None else [None] * len(conversations)
    if len(encoded) != len(conversations):
        raise ValueError(f"{len(encoded)} encoded media for {len(conversations)} conversations")
    messages = [with_placeholders(processor, conv, enc.kinds if enc is not None else [])
                for conv, enc in zip(conversations, encoded, strict=True)]
    clock, prep = StageClock(model.device), Timings()
    with clock.stage(prep, "preprocess"):
        inputs = processor(messages, None, add_generation_prompt=True, padding_side="left", return_tensors="pt",
                           text_only=True).to(model.device)
    parts = [enc.visual for enc in encoded if enc is not None]
    visual = concat_visual(parts) if parts else None
    answers = generate_answers(model, processor, inputs, visual, on_text=on_text, streamer=streamer, clock=clock,
                               **generate_kwargs)
    for answer, enc in zip(answers, encoded, strict=True):
        answer.timings.preprocess += prep.preprocess / len(answers)
        if enc is not None:  # the media stages of this conversation's own encoding
            answer.timings.add_media(enc.timings)
    return answers


def generate_answers(model: Any, processor: VideoCCAMProcessor, inputs: Any, visual: ProjectorOutput | None, *,
                     on_text: Callable[[int, str], None] | None = None, streamer: BaseStreamer | None = None,
                     clock: StageClock | None = None, extra: dict[str, Any] | None = None,
                     **generate_kwargs: Any) -> list[Answer]:
    """``generate`` over tokenized ``inputs`` (``input_ids``, ``attention_mask``) with ``visual`` tokens,
    timed; the answers decoded (see :func:`answer_batch`). ``extra``: further model inputs for
    ``generate`` (the KV cache and ``rope_delta`` of a session's earlier turns)."""
    clock = clock or StageClock(model.device)
    for key, value in processor.generation_defaults().items():  # eos_token_id, pad_token_id
        generate_kwargs.setdefault(key, value)
    generate_kwargs.setdefault("max_new_tokens", DEFAULT_MAX_NEW_TOKENS)
    batch = inputs["input_ids"].shape[0]
    streamers = [s for s in (streamer,) if s is not None]
    if on_text is not None:
        streamers.append(BatchStreamer(processor.tokenizer, on_text, processor.stop_token_ids))
    beams = int(generate_kwargs.get("num_beams") or getattr(model.generation_config, "num_beams", 1) or 1)
    probe = FirstTokenProbe(clock.now) if beams == 1 else None  # generate refuses streamers with beams
    if probe is not None:
        streamers.insert(0, probe)
    elif streamers:
        raise ValueError("streaming is not possible with beam search (num_beams > 1)")
    if streamers:
        generate_kwargs["streamer"] = streamers[0] if len(streamers) == 1 else TeeStreamer(streamers)
    if visual is not None:
        generate_kwargs["visual_embeds"] = visual
    clock.reset_peak()
    start = clock.now()
    output = model.generate(**inputs, **(extra or {}), **generate_kwargs)  # [B, S + new]
    end = clock.now()
    new_tokens = output[:, inputs["input_ids"].shape[1]:]  # [B, new]
    return [_answer(processor, row, inputs["attention_mask"][b], generate_kwargs["max_new_tokens"], start, end,
                    probe, batch, clock) for b, row in enumerate(new_tokens)]


def _answer(processor: VideoCCAMProcessor, row: torch.Tensor, attention_mask: torch.Tensor, max_new_tokens: int,
            start: float, end: float, probe: FirstTokenProbe | None, batch: int, clock: StageClock) -> Answer:
    """One row of ``generate``'s new tokens -> its :class:`Answer`."""
    stop = set(processor.stop_token_ids)
    ids = row.tolist()
    first_stop = next((i for i, t in enumerate(ids) if t in stop), None)
    count = len(ids) if first_stop is None else first_stop + 1
    finish = "stop" if first_stop is not None or count < max_new_tokens else "length"
    timings = Timings(prompt_tokens=int(attention_mask.sum()), new_tokens=count, batch_size=batch,
                      generate=end - start)
    if probe is not None and probe.first_token_at is not None:
        timings.prefill = probe.first_token_at - start
        if count > 1:
            timings.tokens_per_s = (count - 1) / max(end - probe.first_token_at, 1e-9)
    clock.record_peak(timings)
    text = processor.tokenizer.decode(ids[:count], skip_special_tokens=True).strip()
    return Answer(text, timings.prompt_tokens, count, finish, timings, ids[:count])


def cache_kwargs(cache: Any) -> dict[str, Any]:
    """``{name: cache}`` under the installed transformers' name for the KV cache (``generate``'s keyword)."""
    return {CACHE_NAME: cache}
