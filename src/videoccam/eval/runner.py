"""The evaluation loop: decode ahead, encode each video once, batch the questions, never lose a row.

:func:`evaluate_items` answers :class:`~videoccam.eval.types.EvalItem` s with a
:class:`~videoccam.pipeline.Pipeline`:

* the items are grouped by video (and sampling options): each video is decoded once per frame count,
  by background threads that run ahead of the model (``workers``), and encoded once
  (:meth:`Pipeline.encode`) for all its questions (Video-MME has three per video);
* questions (of any videos) are answered ``batch_size`` at a time in one ``generate``, grouped by
  their generation options; an encoding is dropped once its last question is answered;
* every question gives one row, written as soon as its batch is done (``write``); a video that
  fails to decode, a record that was bad from the start, or a batch that fails (then each of its
  questions is retried alone) gives rows with ``error`` set, and the loop goes on.

Timings in a row are that question's share: its video's decode/preprocess/vision/projector seconds
divided by the questions that share the video, and its batch's prefill/generate seconds divided by
the batch size, so that the sums over rows are the wall time of each stage.
"""

from __future__ import annotations

import json
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from videoccam.eval.types import Benchmark, EvalItem
from videoccam.processing.subtitles import load_subtitles, subtitle_prompt
from videoccam.processing.video import Video, load_video
from videoccam.timings import Timings

if TYPE_CHECKING:
    from videoccam.engine import Encoded
    from videoccam.pipeline import Pipeline

logger = logging.getLogger(__name__)

Decoder = Callable[..., Video]  # (item, num_frames, size) -> Video
Row = dict[str, Any]


@dataclass
class LoopOptions:
    """How :func:`evaluate_items` runs.

    Attributes:
        num_frames: frames sampled per video.
        batch_size: questions per ``generate``.
        workers: background decoding threads (0: decode in the loop's thread).
        max_new_tokens: the default answer length (Video-CCAM's multiple-choice runs use 100, greedy);
            an item's own ``generate`` options override it.
        root: paths in the rows are written relative to it when they lie under it.
        size: ``(width, height)`` frames are resized to while decoding (the model's input size, so a
            long 720p video is never held at full size); None keeps the source size.
    """

    num_frames: int
    batch_size: int = 8
    workers: int = 2
    max_new_tokens: int = 100
    root: Path | None = None
    size: tuple[int, int] | None = None


@dataclass
class LoopStats:
    answered: int = 0
    failed: int = 0
    wall_s: float = 0.0


def decode_item(item: EvalItem, num_frames: int, size: tuple[int, int] | None = None) -> Video:
    """An item's video at ``num_frames`` with its sampling options (the default decoder)."""
    return load_video(item.video, **{"num_frames": num_frames, "size": size, **item.video_kwargs})


@dataclass
class _Question:
    item: EvalItem
    encoded: Encoded
    video: Video
    prompt: str
    media_share: float  # 1 / the questions of this video


def evaluate_items(pipe: Pipeline, bench: Benchmark, items: Sequence[EvalItem], options: LoopOptions, *,
                   write: Callable[[Row], None], decode: Decoder = decode_item,
                   progress: Callable[[int, int], None] | None = None) -> LoopStats:
    """Answer ``items`` and ``write`` one row per item (see the module docstring)."""
    stats, start = LoopStats(), time.perf_counter()
    total, done = len(items), 0

    def emit(row: Row) -> None:
        nonlocal done
        write(row)
        done += 1
        if row["error"]:
            stats.failed += 1
        else:
            stats.answered += 1
        if progress is not None:
            progress(done, total)

    groups: OrderedDict[str, list[EvalItem]] = OrderedDict()
    for item in items:
        if item.error or item.video is None:
            emit(_row(item, options, error=item.error or "the record names no video"))
            continue
        groups.setdefault(_group_key(item), []).append(item)
    batches: dict[str, list[_Question]] = {}
    for group, result in _decoded_groups(groups, decode, options):
        if isinstance(result, Exception):
            for item in group:
                emit(_row(item, options, error=f"{type(result).__name__}: {result}"))
            continue
        video, decode_s = result
        try:
            encoded = pipe.encode([video], kinds=["video"])
        except Exception as err:  # noqa: BLE001 - a video the model cannot take fails its questions only
            for item in group:
                emit(_row(item, options, video=video, error=f"{type(err).__name__}: {err}"))
            continue
        encoded.timings.decode += decode_s
        for item in group:
            question = _question(item, encoded, video, len(group), options)
            if isinstance(question, dict):  # a row: the question failed before the model
                emit(question)
                continue
            key = json.dumps(item.generate, sort_keys=True)
            batches.setdefault(key, []).append(question)
            if len(batches[key]) >= options.batch_size:
                _answer(pipe, bench, batches.pop(key), options, emit)
    for batch in batches.values():
        _answer(pipe, bench, batch, options, emit)
    stats.wall_s = time.perf_counter() - start
    return stats


def _group_key(item: EvalItem) -> str:
    return json.dumps([str(item.video), item.video_kwargs], sort_keys=True, default=str)


def _decoded_groups(groups: OrderedDict[str, list[EvalItem]], decode: Decoder, options: LoopOptions,
                    ) -> Iterator[tuple[list[EvalItem], tuple[Video, float] | Exception]]:
    """Each group with its decoded video and decode seconds (or the exception), in order; with
    ``workers`` the next groups are decoded by threads while the caller works on this one."""

    def work(item: EvalItem) -> tuple[Video, float]:
        t0 = time.perf_counter()
        video = decode(item, options.num_frames, options.size)
        return video, time.perf_counter() - t0

    ordered = list(groups.values())
    if options.workers <= 0:
        for group in ordered:
            try:
                yield group, work(group[0])
            except Exception as err:  # noqa: BLE001 - recorded in the group's rows
                yield group, err
        return
    ahead = options.workers * 2  # decoded videos waiting for the model, at most
    with ThreadPoolExecutor(options.workers, thread_name_prefix="eval-decode") as pool:
        pending: list[Future] = []
        for group in ordered[:ahead]:
            pending.append(pool.submit(work, group[0]))
        for index, group in enumerate(ordered):
            future = pending[index]
            if index + ahead < len(ordered):
                pending.append(pool.submit(work, ordered[index + ahead][0]))
            try:
                yield group, future.result()
            except Exception as err:  # noqa: BLE001 - recorded in the group's rows
                yield group, err
            pending[index] = None  # the decoded frames are freed once their questions are batched


def _question(item: EvalItem, encoded: Encoded, video: Video, count: int, options: LoopOptions) -> _Question | Row:
    """The question with its final prompt (the subtitle block opens it when the item asks for one)."""
    prompt = item.prompt
    if item.with_subtitles:
        try:
            lines = load_subtitles(item.subtitles, video.indices / video.fps) if item.subtitles is not None else []
        except Exception as err:  # noqa: BLE001 - a bad subtitle file fails its question only
            return _row(item, options, video=video, error=f"{type(err).__name__}: {err}")
        prompt = subtitle_prompt(lines) + prompt
    return _Question(item, encoded, video, prompt, 1.0 / count)


def _answer(pipe: Pipeline, bench: Benchmark, batch: list[_Question], options: LoopOptions,
            emit: Callable[[Row], None]) -> None:
    """One ``generate`` for the batch; on failure each question alone, a failing one recorded."""
    kwargs = {"max_new_tokens": options.max_new_tokens, "do_sample": False, **batch[0].item.generate}
    convs = [[{"role": "user", "content": q.prompt}] for q in batch]
    try:
        answers = pipe.chat(convs, [q.encoded for q in batch], **kwargs)
    except Exception as err:  # noqa: BLE001 - retried alone below, or recorded
        if len(batch) > 1:
            logger.warning("a batch of %d failed (%s: %s); answering its questions one by one", len(batch),
                           type(err).__name__, err)
            for question in batch:
                _answer(pipe, bench, [question], options, emit)
            return
        q = batch[0]
        emit(_row(q.item, options, video=q.video, prompt=q.prompt, error=f"{type(err).__name__}: {err}"))
        return
    for q, answer in zip(batch, answers, strict=True):
        timings = Timings(prefill=answer.timings.prefill / len(batch), generate=answer.timings.generate / len(batch),
                          prompt_tokens=answer.prompt_tokens, new_tokens=answer.completion_tokens,
                          tokens_per_s=answer.timings.tokens_per_s, batch_size=len(batch),
                          peak_memory_mb=answer.timings.peak_memory_mb, memory=answer.timings.memory)
        timings.preprocess = answer.timings.preprocess - q.encoded.timings.preprocess  # the prompt's own
        timings.add_media(q.encoded.timings, q.media_share)
        row = _row(q.item, options, video=q.video, prompt=q.prompt, response=answer.text, timings=timings)
        row["parsed"], row["correct"] = bench.check(answer.text, row)
        emit(row)


def _row(item: EvalItem, options: LoopOptions, *, video: Video | None = None, prompt: str | None = None,
         response: str | None = None, error: str | None = None, timings: Timings | None = None) -> Row:
    """A predictions.jsonl row (see docs/evaluation.md)."""
    return {
        "question_id": item.question_id, "task": item.task, "video": _relative(item.video, options.root),
        "num_frames": options.num_frames,
        "frame_indices": None if video is None else [int(i) for i in video.indices],
        "prompt": prompt if prompt is not None else item.prompt, "response": response, "answer": item.answer,
        "parsed": None, "correct": None, "error": error, "meta": item.meta,
        "timings": None if timings is None else timings.to_dict(),
    }


def _relative(path: Path | None, root: Path | None) -> str | None:
    if path is None:
        return None
    if root is not None:
        try:
            return str(Path(path).relative_to(root))
        except ValueError:
            pass
    return str(path)
