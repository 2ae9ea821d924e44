"""``videoccam eval``: one benchmark, one or several frame counts, resumable; and ``eval score``.

:func:`run_benchmark` reads the benchmark folder, runs :func:`~videoccam.eval.runner.evaluate_items`
per frame count into ``OUT`` (``OUT/frames-N`` with several), then scores the predictions file
(the file, not memory, is what is scored: a resumed run scores every row) and writes results.json,
results.md, the official files, manifest.json, and with several frame counts the sweep.
:func:`score_predictions` re-scores a predictions file without a model.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from videoccam.eval.benchmarks import get_benchmark
from videoccam.eval.predictions import PredictionFile, read_rows
from videoccam.eval.report import build_results, headline, manifest, write_results, write_sweep
from videoccam.eval.runner import LoopOptions, evaluate_items
from videoccam.eval.types import EvalItem
from videoccam.processing.media import input_size

if TYPE_CHECKING:
    from videoccam.pipeline import Pipeline

logger = logging.getLogger(__name__)

PROTOCOLS = ("videoccam",)


@dataclass
class EvalRequest:
    """What ``videoccam eval`` was asked (see docs/evaluation.md)."""

    benchmark: str
    data: Path
    out: Path
    num_frames: Sequence[int] = ()  # empty: the benchmark's Video-CCAM default
    subtitles: bool = False
    batch_size: int = 8
    workers: int = 2
    limit: int | None = None
    resume: bool = False
    protocol: str = "videoccam"
    seed: int = 0
    command: str = ""
    judge: Any = None
    progress: Callable[[str], Callable[[int, int], None] | None] | None = field(default=None, repr=False)


def load_items(bench: Any, data: Path, *, subtitles: bool, judged: bool, limit: int | None) -> list[EvalItem]:
    """The benchmark's questions (a warning names each missing part; duplicate ids are refused)."""
    if not data.is_dir():
        raise FileNotFoundError(f"--data {data}: no such folder")
    loaded = bench.load(data, subtitles=subtitles, judged=judged)
    for part in loaded.missing:
        logger.warning("%s: %s is missing from %s; evaluating what is there", bench.name, part, data)
    items = loaded.items[:limit] if limit is not None else loaded.items
    seen: set[str] = set()
    for item in items:
        if item.question_id in seen:
            raise ValueError(f"{bench.name}: question_id {item.question_id!r} appears twice in {data}")
        seen.add(item.question_id)
    if not items:
        raise ValueError(f"{bench.name}: no questions found under {data} (see docs/evaluation.md for the layout)")
    return items


def run_benchmark(pipe: Pipeline, request: EvalRequest) -> list[dict[str, Any]]:
    """Evaluate; the results of each frame count, in order (see the module docstring)."""
    if request.protocol not in PROTOCOLS:
        raise ValueError(f"--protocol {request.protocol!r}: one of {', '.join(PROTOCOLS)}")
    bench = get_benchmark(request.benchmark)
    items = load_items(bench, request.data, subtitles=request.subtitles, judged=request.judge is not None,
                       limit=request.limit)
    frame_counts = list(request.num_frames) or [bench.default_frames]
    request.out.mkdir(parents=True, exist_ok=True)
    runs = []
    for num_frames in frame_counts:
        out = request.out if len(frame_counts) == 1 else request.out / f"frames-{num_frames}"
        runs.append(_run_one(pipe, bench, items, request, num_frames, out))
    if len(frame_counts) > 1:
        write_sweep(request.out, runs)
    return runs


def _run_one(pipe: Pipeline, bench: Any, items: list[EvalItem], request: EvalRequest, num_frames: int,
             out: Path) -> dict[str, Any]:
    path = out / "predictions.jsonl"
    with PredictionFile.open(path, resume=request.resume) as store:
        unknown = set(store.done) - {item.question_id for item in items}
        if unknown:
            logger.warning("%s: %d rows are not questions of this run (another --limit or data?); they are kept "
                           "in the file but not scored", path, len(unknown))
        pending = [item for item in items if item.question_id not in store.done]
        logger.info("%s at %d frames: %d questions, %d to answer", bench.name, num_frames, len(items), len(pending))
        (out / "manifest.json").write_text(json.dumps(manifest(
            pipe, bench, num_frames=num_frames, protocol=request.protocol, sample_item=items[0],
            command=request.command, seed=request.seed, batch_size=request.batch_size, judge=request.judge),
            indent=1) + "\n")
        options = LoopOptions(num_frames=num_frames, batch_size=request.batch_size, workers=request.workers,
                              root=request.data, size=input_size(pipe.processor.image_processor))
        progress = request.progress(f"{bench.name} @{num_frames}") if request.progress is not None else None
        stats = evaluate_items(pipe, bench, pending, options, write=store.write, progress=progress)
    ids = {item.question_id for item in items}
    rows = [r for r in read_rows(path) if r["question_id"] in ids]
    results = build_results(bench, rows, num_frames=num_frames, protocol=request.protocol,
                            total_questions=len(items), judge=request.judge, wall_s=stats.wall_s)
    results["this_run"] = {"answered": stats.answered, "failed": stats.failed, "wall_s": round(stats.wall_s, 2),
                           "questions_per_s": round((stats.answered + stats.failed) / stats.wall_s, 3)
                           if stats.wall_s > 0 else None}
    write_results(out, results)
    written = bench.write_official(rows, out)
    name, value = headline(results)
    logger.info("%s @%d frames: %s %s; %d answered, %d failed; results in %s (official files: %s)", bench.name,
                num_frames, name, "-" if value is None else f"{value:.4f}", results["answered"], results["failed"],
                out, ", ".join(p.name for p in written) or "none")
    return results


def score_predictions(benchmark: str, predictions: Path, out: Path, *, judge: Any = None,
                      protocol: str = "videoccam") -> dict[str, Any]:
    """Re-score a predictions file (from this tool or any system with the same fields) without a model.

    ``parsed`` / ``correct`` are recomputed from ``response`` by the protocol's check; rows with an
    ``error`` stay failures.
    """
    bench = get_benchmark(benchmark)
    rows = read_rows(predictions)
    for row in rows:
        if not row.get("error"):
            if row.get("response") is None:
                row["error"] = "no response in the predictions file"
                continue
            row["parsed"], row["correct"] = bench.check(row["response"], row)
    frames = {r.get("num_frames") for r in rows}
    num_frames = frames.pop() if len(frames) == 1 else None
    out.mkdir(parents=True, exist_ok=True)
    results = build_results(bench, rows, num_frames=num_frames, protocol=protocol, total_questions=len(rows),
                            judge=judge)
    results["rescored_from"] = str(predictions)
    write_results(out, results)
    bench.write_official(rows, out)
    return results
