"""Per-request stage timings: where the time of one answer goes.

One :class:`Timings` record per request (per answer in a batch), filled by the inference engine
(:mod:`videoccam.engine`): ``decode`` (reading and sampling the video), ``preprocess`` (resizing and
normalising the frames), ``vision`` (the vision encoder), ``projector`` (the CCAM projector),
``prefill`` (from the start of ``generate`` to the first new token: the LLM prefill, i.e. time to
first token once the media are encoded), ``generate`` (the whole ``generate`` call) and the decode
speed in tokens per second after the first token. ``peak_memory_mb`` is CUDA's max allocated memory
during the request on a GPU, else the process's peak resident set size (which only grows: on CPU it
is the process peak so far, not the request's own).

On CUDA every stage boundary synchronises the device (:class:`StageClock`), so the split is honest:
kernels launched in one stage are counted in that stage.

``videoccam chat --timings`` prints the record, ``videoccam eval`` writes it per question and sums
it in results.json, and the server returns it with each response.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields

import torch

#: the stages, in pipeline order (seconds each)
STAGES = ("decode", "preprocess", "vision", "projector", "prefill", "generate")


@dataclass
class Timings:
    """Seconds per stage of one request, and what the LLM produced.

    Attributes:
        decode, preprocess, vision, projector, prefill, generate: seconds (see the module docstring);
            0 for a stage that did not run in this request (media encoded earlier and reused).
        prompt_tokens: the LLM's input length (visual tokens included).
        new_tokens: tokens generated for this answer.
        tokens_per_s: decode speed after the first token (None with fewer than 2 new tokens).
        batch_size: answers produced by the same ``generate`` call (1 = alone).
        peak_memory_mb: see the module docstring; ``memory`` says which (``cuda_max_allocated`` or
            ``process_peak_rss``).
    """

    decode: float = 0.0
    preprocess: float = 0.0
    vision: float = 0.0
    projector: float = 0.0
    prefill: float = 0.0
    generate: float = 0.0
    prompt_tokens: int = 0
    new_tokens: int = 0
    tokens_per_s: float | None = None
    batch_size: int = 1
    peak_memory_mb: float | None = None
    memory: str | None = None

    @property
    def time_to_first_token(self) -> float:
        """Seconds from the raw media to the first new token (every stage before decoding tokens)."""
        return self.decode + self.preprocess + self.vision + self.projector + self.prefill

    def to_dict(self) -> dict[str, float | int | str | None]:
        """The record as JSON-ready values (seconds rounded to 0.1 ms), ``time_to_first_token`` included."""
        out: dict[str, float | int | str | None] = {}
        for key, value in asdict(self).items():
            out[key] = round(value, 4) if isinstance(value, float) else value
        out["time_to_first_token"] = round(self.time_to_first_token, 4)
        return out

    def add_media(self, other: Timings, share: float = 1.0) -> None:
        """Add ``share`` of ``other``'s media stages (decode .. projector) to this record, e.g. a
        question's share of a video encoded once for several questions."""
        for name in ("decode", "preprocess", "vision", "projector"):
            setattr(self, name, getattr(self, name) + share * getattr(other, name))

    def format(self) -> str:
        """One line for a terminal: ``decode 0.12s | preprocess ... | 41.2 tok/s | peak 812 MB``."""
        parts = [f"{name} {getattr(self, name):.3f}s" for name in STAGES]
        parts.append(f"first token {self.time_to_first_token:.3f}s")
        parts.append(f"{self.prompt_tokens} prompt / {self.new_tokens} new tokens")
        if self.tokens_per_s is not None:
            parts.append(f"{self.tokens_per_s:.1f} tok/s")
        if self.batch_size > 1:
            parts.append(f"batch {self.batch_size}")
        if self.peak_memory_mb is not None:
            parts.append(f"peak {self.peak_memory_mb:.0f} MB ({self.memory})")
        return " | ".join(parts)


def sum_timings(records: Iterable[dict]) -> dict[str, float]:
    """Totals of the stage seconds and token counts of ``Timings.to_dict()`` records (missing keys = 0)."""
    keys = (*STAGES, "time_to_first_token", "new_tokens", "prompt_tokens")
    totals = dict.fromkeys(keys, 0.0)
    for record in records:
        for key in keys:
            totals[key] += float(record.get(key) or 0.0)
    return {key: round(value, 4) for key, value in totals.items()}


class StageClock:
    """Times stages into a :class:`Timings`, synchronising CUDA at each boundary when on a GPU."""

    def __init__(self, device: torch.device | str | None) -> None:
        self.cuda = device is not None and torch.device(device).type == "cuda"

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()

    def now(self) -> float:
        """A synchronised ``time.perf_counter()``."""
        self.sync()
        return time.perf_counter()

    @contextmanager
    def stage(self, timings: Timings, name: str) -> Iterator[None]:
        """Add the time of the ``with`` block to ``timings.<name>``."""
        start = self.now()
        try:
            yield
        finally:
            setattr(timings, name, getattr(timings, name) + self.now() - start)

    def reset_peak(self) -> None:
        """Start a request's CUDA peak-memory window (no-op on CPU: RSS peaks cannot be reset)."""
        if self.cuda:
            torch.cuda.reset_peak_memory_stats()

    def record_peak(self, timings: Timings) -> None:
        """Write the peak memory into ``timings`` (see the module docstring)."""
        if self.cuda:
            timings.peak_memory_mb = torch.cuda.max_memory_allocated() / 2**20
            timings.memory = "cuda_max_allocated"
        else:
            timings.peak_memory_mb = process_peak_rss_mb()
            timings.memory = "process_peak_rss"


def process_peak_rss_mb() -> float | None:
    """This process's peak resident set size in MiB (``ru_maxrss``: KiB on Linux, bytes on macOS);
    None where the ``resource`` module does not exist (Windows)."""
    try:
        import resource
    except ImportError:
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def field_names() -> list[str]:
    """The record's field names (documentation and tests)."""
    return [f.name for f in fields(Timings)]
