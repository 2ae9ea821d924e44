"""Multi-turn chat about fixed media, with the media encoded once per session.

:class:`ChatSession` decodes its videos/images and runs SigLIP and the CCAM projector once, when it
is created, and keeps the projector output (``embeds [M, Q, D]``, ``frame_ids [M, Q]``). Every
:meth:`ChatSession.ask` then renders the whole conversation so far, tokenizes it without media
(``processor(..., text_only=True)``) and answers through :meth:`VideoCCAMForConditionalGeneration.chat`
with ``visual_embeds=`` the cached output: an answer is exactly what ``model.chat`` gives on the same
history with the media themselves, TC-LLaVA options included (their per-token frame ids come from
the cached ``frame_ids``). Each turn re-runs the LLM prefill over the full history; only the vision
side is cached.

:class:`AnswerStreamer` prints an answer to a text stream while ``generate`` produces it.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, TextIO

import torch
from transformers.generation.streamers import BaseStreamer

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from videoccam.modeling import VideoCCAMForConditionalGeneration
    from videoccam.processing.processor import VideoCCAMProcessor
    from videoccam.projector import ProjectorOutput

logger = logging.getLogger(__name__)


class ChatSession:
    """A conversation about fixed media: the media are encoded once, each question sees the history.

    Args:
        model: the model (its device and dtype are used as they are).
        processor: the model's processor.
        media: the media items, in order (paths, frame lists, PIL images, arrays or
            :class:`~videoccam.processing.video.Video`, as :meth:`VideoCCAMProcessor.load_media`
            takes them); their placeholders open the first question. Empty: a text-only chat.
        kinds: per item ``"image"`` or ``"video"``; default :meth:`VideoCCAMProcessor.placeholder_for`
            decides (one frame or a still-image path: image).
        video_kwargs: sampling options for video paths (``num_frames``, ``sample``, ``fps``, ...).

    Attributes:
        history: the conversation so far, ``{"role", "content"}`` messages; the first user message
            (a string) holds the media placeholders. Every later question is stored as typed text,
            ``[{"type": "text", "text": question}]``, so that what the user typed (``<video>`` or
            ``<|im_end|>`` included) stays text. Pass it with the media to ``model.chat`` to
            reproduce a turn: the same ids.
        visual_embeds: the cached projector output of the media (None without media).
    """

    def __init__(self, model: VideoCCAMForConditionalGeneration, processor: VideoCCAMProcessor,
                 media: Sequence[Any] = (), *, kinds: Sequence[str] | None = None,
                 video_kwargs: dict[str, Any] | None = None) -> None:
        self.model = model
        self.processor = processor
        self.history: list[dict[str, Any]] = []
        self.visual_embeds: ProjectorOutput | None = None
        media = list(media)
        if kinds is None:
            kinds = ["image" if processor.placeholder_for(item) == processor.image_token else "video"
                     for item in media]
        self._kinds = list(kinds)
        if media:
            features = processor.preprocess_media(media, self._kinds, video_kwargs)  # checks kinds
            device = model.device
            with torch.no_grad():
                self.visual_embeds = model.get_visual_embeds(
                    features["pixel_values"].to(device), features["frame_counts"].to(device)
                )  # embeds [M, Q, D], frame_ids [M, Q]
            logger.info("encoded %d media items (%d frames) once for the session", len(media),
                        int(features["frame_counts"].sum()))
        elif self._kinds:
            raise ValueError(f"{len(self._kinds)} kinds given for 0 media items")

    def ask(self, question: str, streamer: BaseStreamer | None = None, **generate_kwargs: Any) -> str:
        """Answer ``question`` in the context of the media and the history; record both in the history.

        Args:
            question: the user's text; the media are attached to the first turn. The first question
                is string content (a placeholder typed in it counts as one, by the processor's rule
                for strings); a later question is text whole: a typed ``<video>`` is text.
            streamer: passed to ``generate`` (e.g. an :class:`AnswerStreamer`), to see the answer as
                it is produced.
            generate_kwargs: passed to :meth:`VideoCCAMForConditionalGeneration.chat` and so to
                ``generate`` (``max_new_tokens``, ``do_sample``, ``temperature``, ``top_p``, ...).

        Returns:
            The answer, decoded exactly as ``model.chat`` decodes it.
        """
        if self.history:  # a follow-up question is text whole (a typed placeholder included)
            messages = [*self.history, {"role": "user", "content": [{"type": "text", "text": question}]}]
        else:  # the media's placeholders open the first question, by the processor's rule
            messages = self.processor.prepend_placeholders([{"role": "user", "content": question}], self._kinds)
        answer = self.model.chat(messages, None, self.processor, visual_embeds=self.visual_embeds,
                                 streamer=streamer, **generate_kwargs)[0]
        self.history = [*messages, {"role": "assistant", "content": answer}]
        return answer

    def reset(self) -> None:
        """Forget the conversation (the encoded media stay)."""
        self.history = []


class AnswerStreamer(BaseStreamer):
    """Write a generated answer to a text stream as its tokens arrive (batch size 1).

    What is written, once generation ends, is exactly ``tokenizer.decode(answer_tokens,
    skip_special_tokens=True).strip()`` followed by a newline, i.e. what printing the finished
    answer stripped gives. Each step decodes all answer tokens so far (byte-level and SentencePiece
    decoders alike, no drift from decoding in pieces) and writes what was added; an incomplete
    multi-byte character and trailing whitespace are held back until more text follows.

    Args:
        tokenizer: the model's tokenizer.
        file: the stream to write to; default ``sys.stdout`` at the time of writing.
        skip_prompt: ignore the first ``put`` (``generate`` sends the prompt ids first).
    """

    def __init__(self, tokenizer: PreTrainedTokenizerBase, file: TextIO | None = None,
                 skip_prompt: bool = True) -> None:
        self.tokenizer = tokenizer
        self.file = file
        self.skip_prompt = skip_prompt
        self._tokens: list[int] = []
        self._written = ""
        self._prompt_pending = skip_prompt

    def put(self, value: torch.Tensor) -> None:
        if value.ndim > 1 and value.shape[0] > 1:
            raise ValueError(f"AnswerStreamer streams one sequence, got a batch of {value.shape[0]}")
        if self._prompt_pending:
            self._prompt_pending = False
            return
        self._tokens.extend(int(t) for t in value.reshape(-1).tolist())
        self._write(final=False)

    def end(self) -> None:
        self._write(final=True)
        self._tokens, self._written, self._prompt_pending = [], "", self.skip_prompt

    def _write(self, final: bool) -> None:
        text = self.tokenizer.decode(self._tokens, skip_special_tokens=True).strip()
        if not final and text.endswith("\ufffd"):  # a multi-byte character still incomplete
            return
        out = self.file if self.file is not None else sys.stdout
        if text.startswith(self._written):
            out.write(text[len(self._written):])
            self._written = text
        elif final:  # the decoder rewrote text already written (not seen with byte-level / SentencePiece)
            logger.warning("the streamed answer differs from its final decoding; writing the final text")
            out.write("\n" + text)
        if final:
            out.write("\n")
        out.flush()
