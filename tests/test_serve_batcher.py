"""The dynamic batcher of `videoccam serve` (videoccam.serve.batcher) with a stand-in pipeline.

The grouping rule (one option set per generate, a seeded request alone), the bounded queue (429 at
once, a cancelled request's slot freed at once and the request never run) and shutdown (503).
"""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

pytest.importorskip("fastapi")

from videoccam.engine import Answer  # noqa: E402
from videoccam.serve.batcher import Batcher, Job  # noqa: E402
from videoccam.serve.errors import APIError  # noqa: E402
from videoccam.timings import Timings  # noqa: E402


class FakePipe:
    """Records each ``chat`` call's conversations (by their text); the first call waits for ``release``."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self.options: list[dict] = []
        self.started, self.release = threading.Event(), threading.Event()

    def chat(self, conversations, encoded, *, on_text, **generate):
        self.started.set()
        self.release.wait(10)
        names = [conv[-1]["content"] for conv in conversations]
        self.calls.append(names)
        self.options.append(generate)
        for row, name in enumerate(names):
            on_text(row, name.lower())
        return [Answer(name.lower(), 3, 1, "stop", Timings()) for name in names]


def job(name: str, loop, seed: int | None = None, tokens: int = 8) -> Job:
    return Job([{"role": "user", "content": name}], [], [], [], {"max_new_tokens": tokens, "do_sample": False},
               seed, loop)


async def result(j: Job) -> tuple[str, str]:
    """The job's streamed text and its answer's text."""
    streamed = ""
    while True:
        kind, value = await asyncio.wait_for(j.events.get(), 10)
        if kind == "text":
            streamed += value
        elif kind == "done":
            return streamed, value.text
        else:
            raise value


def submit(batcher: Batcher, j: Job) -> Job:
    batcher.reserve()
    batcher.submit(j)
    return j


def test_requests_are_grouped_by_options_and_a_seed_runs_alone():
    pipe = FakePipe()
    batcher = Batcher(pipe, max_batch_size=8, max_queue=16, window_s=0.005)

    async def main():
        loop = asyncio.get_running_loop()
        first = submit(batcher, job("A", loop))
        assert await asyncio.to_thread(pipe.started.wait, 5)  # A runs alone, holding the model thread
        rest = [submit(batcher, j) for j in (job("B", loop), job("C", loop, tokens=4), job("D", loop),
                                             job("E", loop, seed=1), job("F", loop, seed=1))]
        pipe.release.set()
        return [await result(j) for j in (first, *rest)]

    try:
        results = asyncio.run(main())
    finally:
        batcher.close()
    assert results == [(n, n) for n in "abcdef"]  # streamed deltas == the answers
    # B and D share options: one generate; C (other max_tokens) apart; E and F (seeded) each alone
    assert pipe.calls == [["A"], ["B", "D"], ["C"], ["E"], ["F"]]
    assert [o["max_new_tokens"] for o in pipe.options] == [8, 8, 4, 8, 8]


def test_a_full_queue_refuses_at_once_and_a_cancelled_request_frees_its_slot():
    pipe = FakePipe()
    batcher = Batcher(pipe, max_batch_size=1, max_queue=2, window_s=0.0)

    async def main():
        loop = asyncio.get_running_loop()
        running = submit(batcher, job("A", loop))
        assert await asyncio.to_thread(pipe.started.wait, 5)
        gone, waiting = submit(batcher, job("B", loop)), submit(batcher, job("C", loop))
        start = time.perf_counter()
        with pytest.raises(APIError) as info:
            batcher.reserve()
        assert info.value.status == 429 and info.value.code == "queue_full"
        assert time.perf_counter() - start < 0.1
        batcher.cancel(gone)  # B's client went away before B started
        assert batcher.waiting == 1
        late = submit(batcher, job("D", loop))  # its slot is free at once
        pipe.release.set()
        out = [await result(j) for j in (running, waiting, late)]
        assert gone.events.empty()  # nothing was sent to the cancelled request
        return out

    try:
        assert asyncio.run(main()) == [("a", "a"), ("c", "c"), ("d", "d")]
    finally:
        batcher.close()
    assert pipe.calls == [["A"], ["C"], ["D"]]  # B never ran


def test_shutdown_answers_waiting_requests_with_503():
    pipe = FakePipe()
    batcher = Batcher(pipe, max_batch_size=1, max_queue=4, window_s=0.0)

    async def main():
        loop = asyncio.get_running_loop()
        submit(batcher, job("A", loop))
        assert await asyncio.to_thread(pipe.started.wait, 5)
        waiting = submit(batcher, job("B", loop))
        batcher.close()
        pipe.release.set()
        with pytest.raises(APIError) as info:
            await result(waiting)
        assert info.value.status == 503
        with pytest.raises(APIError) as info:
            batcher.reserve()
        assert info.value.status == 503

    asyncio.run(main())
