"""Answers as ``generate`` produces them: text deltas per row, and the time of the first token.

``generate`` calls a streamer's ``put(ids)`` with the prompt ids first (``[B, S]``), then once per
step with the new tokens (``[B]`` or ``[B, 1]``), then ``end()``. :class:`IncrementalDecoder` turns
one row's tokens into text deltas whose concatenation is exactly the final
``decode(tokens, skip_special_tokens=True).strip()`` (each step decodes all tokens so far, so byte-level
and SentencePiece decoders alike never drift; an incomplete multi-byte character and trailing
whitespace are held back until more text follows). :class:`AnswerStreamer` writes one answer to a
text stream; :class:`BatchStreamer` calls ``on_text(row, delta)`` for every row of a batch;
:class:`FirstTokenProbe` records when the first new token arrives (the time to first token) and
:class:`TeeStreamer` hands the same calls to several streamers.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, TextIO

import torch
from transformers.generation.streamers import BaseStreamer

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

logger = logging.getLogger(__name__)


class IncrementalDecoder:
    """One row's generated tokens -> text deltas (see the module docstring)."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase) -> None:
        self.tokenizer = tokenizer
        self.tokens: list[int] = []
        self.written = ""

    def feed(self, tokens: Sequence[int], final: bool = False) -> str:
        """Add ``tokens``; the text to emit now (``""`` while held back)."""
        self.tokens.extend(int(t) for t in tokens)
        text = self.tokenizer.decode(self.tokens, skip_special_tokens=True).strip()
        if not final and text.endswith("\ufffd"):  # a multi-byte character still incomplete
            return ""
        if text.startswith(self.written):
            delta, self.written = text[len(self.written):], text
            return delta
        if final:  # the decoder rewrote text already emitted (not seen with byte-level / SentencePiece)
            logger.warning("the streamed answer differs from its final decoding; emitting the final text")
            self.written = text
            return "\n" + text
        return ""


class AnswerStreamer(BaseStreamer):
    """Write a generated answer to a text stream as its tokens arrive (batch size 1).

    What is written, once generation ends, is exactly ``tokenizer.decode(answer_tokens,
    skip_special_tokens=True).strip()`` followed by a newline, i.e. what printing the finished
    answer stripped gives.

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
        self._decoder = IncrementalDecoder(tokenizer)
        self._prompt_pending = skip_prompt

    def put(self, value: torch.Tensor) -> None:
        if value.ndim > 1 and value.shape[0] > 1:
            raise ValueError(f"AnswerStreamer streams one sequence, got a batch of {value.shape[0]}")
        if self._prompt_pending:
            self._prompt_pending = False
            return
        self._write(self._decoder.feed(value.reshape(-1).tolist()))

    def end(self) -> None:
        self._write(self._decoder.feed([], final=True) + "\n")
        self._decoder, self._prompt_pending = IncrementalDecoder(self.tokenizer), self.skip_prompt

    def _write(self, text: str) -> None:
        if text:
            out = self.file if self.file is not None else sys.stdout
            out.write(text)
            out.flush()


class BatchStreamer(BaseStreamer):
    """Call ``on_text(row, delta)`` as each row of a batched ``generate`` produces text.

    A row stops streaming at its first stop token (later steps only pad it). The prompt ``put`` is
    skipped. Deltas of a row concatenate to its final decoded, stripped answer.

    Args:
        tokenizer: the model's tokenizer.
        on_text: called from the generating thread with the row index and the new text.
        stop_token_ids: the ids that end an answer (the processor's ``stop_token_ids``).
    """

    def __init__(self, tokenizer: PreTrainedTokenizerBase, on_text: Callable[[int, str], None],
                 stop_token_ids: Sequence[int] = ()) -> None:
        self.tokenizer = tokenizer
        self.on_text = on_text
        self.stop = frozenset(int(t) for t in stop_token_ids)
        self._decoders: list[IncrementalDecoder] | None = None
        self._done: list[bool] = []
        self._prompt_pending = True

    def put(self, value: torch.Tensor) -> None:
        if self._prompt_pending:
            self._prompt_pending = False
            rows = value.shape[0] if value.ndim > 1 else 1
            self._decoders = [IncrementalDecoder(self.tokenizer) for _ in range(rows)]
            self._done = [False] * rows
            return
        assert self._decoders is not None
        step = value.reshape(len(self._decoders), -1).tolist()  # [B] or [B, 1] -> [B, k]
        for row, tokens in enumerate(step):
            if self._done[row]:
                continue
            kept = []
            for token in tokens:
                if token in self.stop:
                    self._done[row] = True
                    break
                kept.append(token)
            delta = self._decoders[row].feed(kept)
            if delta:
                self.on_text(row, delta)

    def end(self) -> None:
        for row, decoder in enumerate(self._decoders or []):
            delta = decoder.feed([], final=True)
            if delta:
                self.on_text(row, delta)
        self._decoders, self._done, self._prompt_pending = None, [], True


class FirstTokenProbe(BaseStreamer):
    """Record ``perf_counter()`` times of the first new token and of the end of generation.

    ``clock``: a function giving the time (a :meth:`videoccam.timings.StageClock.now`, which
    synchronises CUDA, so the first token's time includes the prefill's kernels).
    """

    def __init__(self, clock: Callable[[], float] = time.perf_counter) -> None:
        self.clock = clock
        self.first_token_at: float | None = None
        self.ended_at: float | None = None
        self._puts = 0

    def put(self, value: torch.Tensor) -> None:
        self._puts += 1
        if self._puts == 2:  # the first put is the prompt
            self.first_token_at = self.clock()

    def end(self) -> None:
        self.ended_at = self.clock()


class TeeStreamer(BaseStreamer):
    """Hand every ``put`` / ``end`` to each of ``streamers`` in order (``generate`` takes one streamer)."""

    def __init__(self, streamers: Sequence[BaseStreamer]) -> None:
        self.streamers = list(streamers)

    def put(self, value: torch.Tensor) -> None:
        for streamer in self.streamers:
            streamer.put(value)

    def end(self) -> None:
        for streamer in self.streamers:
            streamer.end()
