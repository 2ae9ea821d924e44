"""An LLM judge over any OpenAI-compatible endpoint, with a cache so a rerun never asks twice.

:class:`Judge` sends chat messages to ``{base_url}/chat/completions`` with the ``openai`` client
(temperature 0 unless told otherwise), retries failed calls (connection errors, 429, 5xx) with
exponential backoff, and keeps every reply in a JSONL cache keyed by the sha256 of the model and
the messages: scoring a predictions file again, or resuming after a crash, asks only what was never
answered. The key comes from an environment variable (``--judge-key-env``), never from the command
line. Tests use :mod:`videoccam.testing.stub_judge`, a local stand-in; no test calls a real API.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

logger = logging.getLogger(__name__)
T = TypeVar("T")


class JudgeError(RuntimeError):
    """The judge could not be reached or kept failing (the message names the URL and the last error)."""


class Judge:
    """A cached, retrying chat-completions client.

    Args:
        base_url: the endpoint's base URL (``https://api.openai.com/v1``, a vLLM server, ...).
        model: the judge model; recorded in the evaluation manifest.
        api_key_env: the environment variable holding the key (absent: ``"EMPTY"``, for local servers).
        cache_path: the JSONL cache (None: no cache).
        max_retries: retries of a failed call; backoff ``backoff_s * 2**attempt`` seconds between them.
        timeout_s: per-call timeout.
        temperature: sampling temperature of the judge (the MLVU and lmms-eval judges use 0).
    """

    def __init__(self, base_url: str, model: str, *, api_key_env: str = "OPENAI_API_KEY",
                 cache_path: str | Path | None = None, max_retries: int = 5, backoff_s: float = 1.0,
                 timeout_s: float = 60.0, temperature: float = 0.0) -> None:
        from openai import OpenAI  # the eval extra

        self.base_url, self.model, self.temperature = base_url, model, temperature
        self.max_retries, self.backoff_s = max_retries, backoff_s
        self.client = OpenAI(base_url=base_url, api_key=os.environ.get(api_key_env) or "EMPTY", max_retries=0,
                             timeout=timeout_s)
        self.cache_path = Path(cache_path) if cache_path is not None else None
        self._cache: dict[str, str] = self._read_cache()
        self._lock = threading.Lock()
        self.calls = 0  # requests sent (cache hits excluded)

    def _key(self, messages: list[dict[str, str]]) -> str:
        blob = json.dumps({"model": self.model, "temperature": self.temperature, "messages": messages},
                          sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(blob.encode()).hexdigest()

    def _read_cache(self) -> dict[str, str]:
        if self.cache_path is None or not self.cache_path.exists():
            return {}
        cache = {}
        for number, line in enumerate(self.cache_path.read_text().splitlines(), 1):
            try:
                entry = json.loads(line)
                cache[entry["key"]] = entry["reply"]
            except (json.JSONDecodeError, KeyError, TypeError):
                logger.warning("%s:%d: skipping an unreadable cache line (a killed run?)", self.cache_path, number)
        return cache

    def complete(self, messages: list[dict[str, str]]) -> str:
        """The judge's reply to ``messages`` (from the cache when it was asked before)."""
        key = self._key(messages)
        if key in self._cache:
            return self._cache[key]
        reply = self._ask(messages)
        with self._lock:
            self._cache[key] = reply
            if self.cache_path is not None:
                self.cache_path.parent.mkdir(parents=True, exist_ok=True)
                with open(self.cache_path, "a", encoding="utf-8") as f:
                    f.write(json.dumps({"key": key, "model": self.model, "reply": reply}, ensure_ascii=False) + "\n")
                    f.flush()
                    os.fsync(f.fileno())
        return reply

    def _ask(self, messages: list[dict[str, str]]) -> str:
        import openai

        last: Exception | None = None
        for attempt in range(self.max_retries + 1):
            if attempt:
                delay = self.backoff_s * 2 ** (attempt - 1)
                logger.warning("judge %s: %s; retry %d of %d in %.1f s", self.base_url, last, attempt,
                               self.max_retries, delay)
                time.sleep(delay)
            try:
                self.calls += 1
                response = self.client.chat.completions.create(model=self.model, messages=messages,
                                                               temperature=self.temperature)
                return response.choices[0].message.content or ""
            except (openai.APIConnectionError, openai.APITimeoutError, openai.RateLimitError,
                    openai.InternalServerError) as err:
                last = err
            except openai.APIStatusError as err:  # 4xx other than 429: asking again will not help
                raise JudgeError(f"judge {self.base_url} ({self.model}) refused the request: {err}") from err
        raise JudgeError(f"judge {self.base_url} ({self.model}) failed {self.max_retries + 1} times; last error: "
                         f"{last}")


def judged(judge: Judge, messages: list[dict[str, str]], parse: Callable[[str], T | None], *,
           attempts: int = 3) -> tuple[T | None, str]:
    """Ask until ``parse`` accepts the reply (VideoChatGPT's rule: an unparseable reply is asked again),
    at most ``attempts`` times; ``(parsed or None, last reply)``. Later attempts add a nonce system line
    so that the cache and a deterministic judge do not return the same reply again."""
    reply = ""
    for attempt in range(attempts):
        asked = messages if attempt == 0 else [*messages, {"role": "system", "content": f"(attempt {attempt + 1})"}]
        reply = judge.complete(asked)
        parsed = parse(reply)
        if parsed is not None:
            return parsed, reply
    return None, reply


def judge_all(judge: Judge, jobs: list[Any], run: Callable[[Any], T], workers: int = 4) -> list[T]:
    """``run(job)`` for every job with ``workers`` threads (judges are I/O bound), results in order."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max(1, workers), thread_name_prefix="judge") as pool:
        return list(pool.map(run, jobs))
