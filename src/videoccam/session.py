"""Multi-turn chat about fixed media: the media encoded once, the KV cache kept between turns.

:class:`ChatSession` encodes its videos/images once, when it is created
(:func:`videoccam.engine.encode_media`). Each :meth:`ChatSession.ask` renders the whole conversation
so far and tokenizes it without media (``processor(..., text_only=True)``); the tokens that the kept
KV cache already holds (the longest common prefix with the last turn's sequence: the media, the
earlier questions and answers) are not computed again, only the new ones are prefilled. The cache
is cropped to that prefix first, so a turn whose rendering differs from the last one (a chat
template that rewrites history) still gets exactly the cache of its own tokens; when the common
prefix does not reach past the visual tokens, the turn is prefilled whole.

An answer is the one ``model.chat`` gives on the same history with the media themselves (TC-LLaVA
options included: the temporal positions of the new tokens continue from the kept ``rope_delta``).
``reuse_cache=False`` prefills every turn whole (the reference the tests compare with).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import torch
from transformers import DynamicCache

from videoccam.engine import Answer, Encoded, cache_kwargs, encode_media, generate_answers, with_placeholders
from videoccam.hf_compat import crop_cache
from videoccam.streaming import AnswerStreamer  # noqa: F401  (re-exported: its home before streaming.py)

if TYPE_CHECKING:
    from transformers.generation.streamers import BaseStreamer

    from videoccam.modeling import VideoCCAMForConditionalGeneration
    from videoccam.processing.processor import VideoCCAMProcessor
    from videoccam.projector import ProjectorOutput

logger = logging.getLogger(__name__)

__all__ = ["AnswerStreamer", "ChatSession"]


class ChatSession:
    """A conversation about fixed media: encoded once, each question sees the history.

    Args:
        model: the model (its device and dtype are used as they are).
        processor: the model's processor.
        media: the media items, in order (paths, frame lists, PIL images, arrays or
            :class:`~videoccam.processing.video.Video`, as :meth:`VideoCCAMProcessor.load_media`
            takes them); their placeholders open the first question. Empty: a text-only chat.
        kinds: per item ``"image"`` or ``"video"``; default :meth:`VideoCCAMProcessor.placeholder_for`.
        video_kwargs: sampling options for video paths (``num_frames``, ``sample``, ``fps``, ...).
        encoded: media already encoded (:func:`~videoccam.engine.encode_media`), in place of ``media``.
        reuse_cache: keep the KV cache between turns (default); False prefills every turn whole.

    Attributes:
        history: the conversation so far, ``{"role", "content"}`` messages; the first user message
            (a string) holds the media placeholders. Every later question is stored as typed text,
            ``[{"type": "text", "text": question}]``, so that what the user typed (``<video>`` or
            ``<|im_end|>`` included) stays text. Pass it with the media to ``model.chat`` to
            reproduce a turn: the same ids.
        encoded: the media's :class:`~videoccam.engine.Encoded` (None without media).
        last: the last turn's :class:`~videoccam.engine.Answer` (token counts, timings).
        reused_tokens: how many prompt tokens the last turn took from the cache (0: prefilled whole).
    """

    def __init__(self, model: VideoCCAMForConditionalGeneration, processor: VideoCCAMProcessor,
                 media: Sequence[Any] = (), *, kinds: Sequence[str] | None = None,
                 video_kwargs: dict[str, Any] | None = None, encoded: Encoded | None = None,
                 reuse_cache: bool = True) -> None:
        self.model = model
        self.processor = processor
        self.reuse_cache = reuse_cache
        self.history: list[dict[str, Any]] = []
        self.last: Answer | None = None
        self.reused_tokens = 0
        media = list(media)
        if encoded is not None and media:
            raise ValueError("ChatSession takes media or encoded media, not both")
        if encoded is None and media:
            encoded = encode_media(model, processor, media, kinds=kinds, video_kwargs=video_kwargs)
        elif encoded is None and kinds:
            raise ValueError(f"{len(kinds)} kinds given for 0 media items")
        self.encoded = encoded
        self._cache: DynamicCache | None = None
        self._cached_ids: list[int] = []  # the tokens whose keys and values the cache holds
        self._rope_delta: torch.Tensor | None = None
        self._media_timings_pending = encoded is not None  # the first answer carries the encoding's stages

    @property
    def visual_embeds(self) -> ProjectorOutput | None:
        """The cached projector output of the media (None without media)."""
        return None if self.encoded is None else self.encoded.visual

    def ask(self, question: str, streamer: BaseStreamer | None = None, *,
            on_text: Callable[[int, str], None] | None = None, **generate_kwargs: Any) -> str:
        """Answer ``question`` in the context of the media and the history; record both in the history.

        Args:
            question: the user's text; the media are attached to the first turn. The first question
                is string content (a placeholder typed in it counts as one, by the processor's rule
                for strings); a later question is text whole: a typed ``<video>`` is text.
            streamer: passed to ``generate`` (e.g. an :class:`~videoccam.streaming.AnswerStreamer`).
            on_text: called with ``(0, text delta)`` as the answer is produced.
            generate_kwargs: passed to ``generate`` (``max_new_tokens``, ``do_sample``, ``temperature``, ...).

        Returns:
            The answer (stripped), as ``model.chat`` gives it; :attr:`last` has its counts and timings.
        """
        kinds = self.encoded.kinds if self.encoded is not None else []
        if self.history:  # a follow-up question is text whole (a typed placeholder included)
            messages = [*self.history, {"role": "user", "content": [{"type": "text", "text": question}]}]
        else:  # the media's placeholders open the first question, by the processor's rule
            messages = with_placeholders(self.processor, [{"role": "user", "content": question}], kinds)
        inputs = self.processor([messages], None, add_generation_prompt=True, padding_side="left",
                                return_tensors="pt", text_only=True).to(self.model.device)
        ids = inputs["input_ids"][0].tolist()
        reused = self._reusable_prefix(ids)
        extra: dict[str, Any] = {}
        visual = self.visual_embeds
        if reused:
            crop_cache(self._cache, reused)
            extra = cache_kwargs(self._cache)
            if self._rope_delta is not None:
                extra["rope_delta"] = self._rope_delta
            visual = None  # the media's tokens are in the cache
        elif self.reuse_cache:
            self._cache = DynamicCache(config=self.model.config.text_config)
            extra = cache_kwargs(self._cache)
        if self.reuse_cache and self.model.config.temporal_rope != "none":
            handle = self.model.register_forward_hook(self._keep_rope_delta)
        else:
            handle = None
        try:
            answer = generate_answers(self.model, self.processor, inputs, visual, streamer=streamer, on_text=on_text,
                                      extra=extra, **generate_kwargs)[0]
        finally:
            if handle is not None:
                handle.remove()
        if self.reuse_cache:  # the cache holds every token fed: the prompt and all new tokens but the last
            self._cached_ids = (ids + answer.token_ids)[: self._cache.get_seq_length()]
        if self._media_timings_pending:
            answer.timings.add_media(self.encoded.timings)
            self._media_timings_pending = False
        self.reused_tokens, self.last = reused, answer
        self.history = [*messages, {"role": "assistant", "content": answer.text}]
        return answer.text

    def reset(self) -> None:
        """Forget the conversation (the encoded media stay; the cache is dropped)."""
        self.history, self._cache, self._cached_ids, self._rope_delta = [], None, [], None

    # ------------------------------------------------------------------ the kept cache
    def _reusable_prefix(self, ids: list[int]) -> int:
        """How many leading ``ids`` the cache can serve: the common prefix with the cached tokens, at
        most ``len(ids) - 1`` (one token must be fed), and 0 unless it covers every visual token."""
        if not self.reuse_cache or self._cache is None or not self._cached_ids:
            return 0
        common = 0
        for a, b in zip(ids, self._cached_ids, strict=False):
            if a != b:
                break
            common += 1
        common = min(common, len(ids) - 1)
        visual_ids = self.processor.visual_token_ids
        last_visual = max((i for i, t in enumerate(ids) if t in visual_ids), default=-1)
        return common if common > last_visual else 0

    def _keep_rope_delta(self, module: Any, args: Any, output: Any) -> None:
        delta = getattr(output, "rope_delta", None)
        if delta is not None:
            self._rope_delta = delta
