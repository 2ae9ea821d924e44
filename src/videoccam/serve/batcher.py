"""Dynamic batching: concurrent requests answered together in one ``generate``, in one model thread.

Requests wait in a bounded queue (``max_queue``; a full queue refuses at once, 429). One worker
thread owns the model: it takes the oldest waiting job, waits up to ``window_s`` for more, and runs
up to ``max_batch_size`` jobs **with the same generation options** (a ``generate`` has one option
set; a job with a ``seed`` runs alone, seeded) through :meth:`Pipeline.chat`, encoding each job's
media first. Text deltas go to each job's asyncio queue as they are produced; a job whose client
went away before it started is dropped, one in a running batch finishes but its output is discarded.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from videoccam.engine import Encoded, concat_visual
from videoccam.projector import ProjectorOutput
from videoccam.serve.errors import APIError
from videoccam.timings import Timings

if TYPE_CHECKING:
    from videoccam.engine import Answer
    from videoccam.pipeline import Pipeline
    from videoccam.processing.video import Video

logger = logging.getLogger(__name__)


@dataclass(eq=False)  # identity: a job is itself, whatever its fields
class Job:
    """One request's work and its channel back to the event loop."""

    messages: list[dict[str, Any]]
    media: list[Video]
    kinds: list[str]
    media_keys: list[str | None]
    generate: dict[str, Any]
    seed: int | None
    loop: asyncio.AbstractEventLoop
    events: asyncio.Queue = field(default_factory=asyncio.Queue)
    cancelled: bool = False
    decode_s: float = 0.0

    @property
    def key(self) -> str:
        return json.dumps(self.generate, sort_keys=True) if self.seed is None else f"seed:{id(self)}"

    def send(self, kind: str, value: Any) -> None:
        """From the model thread: ``("text", delta)``, ``("done", Answer)`` or ``("error", APIError)``."""
        if not self.cancelled:
            self.loop.call_soon_threadsafe(self.events.put_nowait, (kind, value))


class Batcher:
    """See the module docstring."""

    def __init__(self, pipe: Pipeline, *, max_batch_size: int = 8, max_queue: int = 64, window_s: float = 0.01,
                 cache_items: int = 256) -> None:
        self.pipe, self.max_batch_size, self.max_queue, self.window_s = pipe, max_batch_size, max_queue, window_s
        self.cache_items = cache_items
        self._visual: OrderedDict[str, ProjectorOutput] = OrderedDict()  # media content key -> [1, Q, D] tokens
        self._reserved = 0  # admitted requests still decoding their media
        self._waiting: deque[Job] = deque()
        self._cond = threading.Condition()
        self._closed = False
        self.running = 0  # jobs in the batch being generated
        self._thread = threading.Thread(target=self._work, name="videoccam-model", daemon=True)
        self._thread.start()

    def check_admission(self) -> None:
        """Refuse at once what :meth:`reserve` would refuse now (429 full queue, 503 shutting down),
        before the request's body is even read; reserving stays :meth:`reserve`'s."""
        if self._closed:
            raise APIError(503, "the server is shutting down")
        if len(self._waiting) + self._reserved >= self.max_queue:
            raise APIError(429, f"the queue is full ({self.max_queue} requests waiting); retry later",
                           code="queue_full")

    def reserve(self) -> None:
        """Admit a request before its media are decoded, or refuse it at once: 429 when ``max_queue``
        requests are already waiting or decoding, 503 when shutting down. Then :meth:`submit` or
        :meth:`release`."""
        with self._cond:
            self.check_admission()
            self._reserved += 1

    def release(self) -> None:
        """Give back a reservation whose request failed before it was queued."""
        with self._cond:
            self._reserved -= 1

    def submit(self, job: Job) -> None:
        """Queue a job admitted by :meth:`reserve`."""
        with self._cond:
            self._reserved -= 1
            if self._closed:
                raise APIError(503, "the server is shutting down")
            self._waiting.append(job)
            self._cond.notify()

    def cancel(self, job: Job) -> None:
        """The job's client went away: a waiting job leaves the queue now (its slot is free at once); a
        running one finishes with its batch, its output discarded (:meth:`Job.send` drops it)."""
        with self._cond:
            job.cancelled = True
            if job in self._waiting:
                self._waiting.remove(job)

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            for job in self._waiting:
                job.send("error", APIError(503, "the server is shutting down"))
            self._waiting.clear()
            self._cond.notify_all()

    # ------------------------------------------------------------------ the model thread
    def _next_batch(self) -> list[Job]:
        with self._cond:
            while not self._waiting and not self._closed:
                self._cond.wait()
            if self._closed:
                return []
        deadline = time.monotonic() + self.window_s
        with self._cond:  # the batching window: let concurrent requests arrive
            while len(self._waiting) < self.max_batch_size and (left := deadline - time.monotonic()) > 0:
                self._cond.wait(left)
            while self._waiting and self._waiting[0].cancelled:
                self._waiting.popleft()
            if not self._waiting:
                return []
            first = self._waiting.popleft()
            batch, keep = [first], deque()
            while self._waiting:
                job = self._waiting.popleft()
                if job.cancelled:
                    continue
                if job.key == first.key and len(batch) < self.max_batch_size:
                    batch.append(job)
                else:
                    keep.append(job)
            self._waiting = keep
            self.running = len(batch)
            return batch

    def _work(self) -> None:
        while not self._closed:
            batch = self._next_batch()
            if batch:
                try:
                    self._run(batch)
                except Exception:  # noqa: BLE001 - the thread must live on; each job got its error
                    logger.exception("batch failed")
                finally:
                    self.running = 0

    def _encode(self, batch: list[Job]) -> tuple[list[Job], list[Encoded | None]]:
        """Each job's media as visual tokens: from the cache where a part was encoded before (by content),
        the rest in one vision + projector pass for the whole batch; if that pass fails, job by job (a
        bad one fails alone)."""
        fresh = [(j, i) for j, job in enumerate(batch) for i, key in enumerate(job.media_keys)
                 if key is None or key not in self._visual]
        pieces: dict[tuple[int, int], ProjectorOutput] = {}
        failed: set[int] = set()
        share = Timings()
        if fresh:
            try:
                done = self.pipe.encode([batch[j].media[i] for j, i in fresh],
                                        kinds=[batch[j].kinds[i] for j, i in fresh])
                groups = [fresh]
            except Exception:  # noqa: BLE001 - find the bad one below
                done, groups = None, [[(j, i) for j2, i in fresh if j2 == j] for j in sorted({j for j, _ in fresh})]
            for group in groups:
                enc = done
                if enc is None:
                    try:
                        enc = self.pipe.encode([batch[j].media[i] for j, i in group],
                                               kinds=[batch[j].kinds[i] for j, i in group])
                    except Exception as err:  # noqa: BLE001 - that request fails alone
                        batch[group[0][0]].send("error", APIError(400, f"the media could not be encoded: {err}"))
                        failed.add(group[0][0])
                        continue
                share.add_media(enc.timings, 1.0 / len({j for j, _ in fresh}))
                for n, (j, i) in enumerate(group):
                    piece = ProjectorOutput(enc.visual.embeds[n:n + 1], enc.visual.frame_ids[n:n + 1])  # [1, Q, *]
                    pieces[(j, i)] = piece
                    self._remember(batch[j].media_keys[i], piece)
        ready, encoded = [], []
        fresh_jobs = {j for j, _ in fresh}
        for j, job in enumerate(batch):
            if j in failed:
                continue
            ready.append(job)
            if not job.media:
                encoded.append(None)
                continue
            parts = [pieces.get((j, i)) or self._visual[key] for i, key in enumerate(job.media_keys)]
            timings = Timings()
            if j in fresh_jobs:
                timings.add_media(share)
            encoded.append(Encoded(concat_visual(parts), list(job.kinds), list(job.media), timings))
        return ready, encoded

    def _remember(self, key: str | None, piece: ProjectorOutput) -> None:
        if key is None or self.cache_items <= 0:
            return
        self._visual[key] = piece
        self._visual.move_to_end(key)
        while len(self._visual) > self.cache_items:
            self._visual.popitem(last=False)

    def _run(self, batch: list[Job]) -> None:
        ready, encoded = self._encode(batch)
        if not ready:
            return
        if ready[0].seed is not None:
            torch.manual_seed(ready[0].seed)
        try:
            answers = self.pipe.chat([job.messages for job in ready], encoded,
                                     on_text=lambda row, delta: ready[row].send("text", delta), **ready[0].generate)
        except Exception as err:  # noqa: BLE001
            if len(ready) > 1:  # one bad request must not fail the others: each alone
                for job in ready:
                    self._run([job])
                return
            status = 400 if isinstance(err, ValueError) else 500
            ready[0].send("error", APIError(status, f"{type(err).__name__}: {err}"))
            return
        for job, answer in zip(ready, answers, strict=True):
            answer.timings.decode += job.decode_s
            job.send("done", answer)


def finished(answer: Answer) -> dict[str, Any]:
    """The usage block of an answer."""
    return {"prompt_tokens": answer.prompt_tokens, "completion_tokens": answer.completion_tokens,
            "total_tokens": answer.prompt_tokens + answer.completion_tokens}
