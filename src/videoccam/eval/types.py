"""The data every benchmark hands the evaluation loop, and what the loop writes back.

A benchmark (an object in ``videoccam.eval.benchmarks.<module>``, see :class:`Benchmark`) reads its
official on-disk layout into :class:`EvalItem` s (one per question), checks each response by the
protocol's own rule, and
scores a list of prediction rows (the lines of ``predictions.jsonl``, plain dicts, so that
``videoccam eval score`` can re-score a file from any system with the same fields).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

# the fields of a predictions.jsonl row (timings and meta besides); see docs/evaluation.md
PREDICTION_FIELDS = ("question_id", "task", "video", "frame_indices", "prompt", "response", "answer", "parsed",
                     "correct", "error")


@dataclass
class EvalItem:
    """One question, ready for the model.

    Attributes:
        question_id: unique within the benchmark (the official id where there is one).
        task: the task / question type the per-task accuracy groups by.
        video: the video file or frame folder; None when the record names none (then ``error`` says why).
        prompt: the user's text, which follows the media placeholder (``<video>\\n{prompt}``).
        answer: the ground truth as the protocol states it: ``"(B) text"`` for Video-CCAM's
            multiple choice, a letter for Video-MME, free text for open-ended sets.
        video_kwargs: :func:`~videoccam.processing.video.load_video` options other than
            ``num_frames`` (``sample``, ``start``, ``end``, ``frame_folder_fps``); items with the same
            video and options share one decode and one encode.
        subtitles: with ``with_subtitles``, the subtitle file whose lines at the sampled frames open
            the prompt (:func:`~videoccam.processing.subtitles.subtitle_prompt`); None = no file (the
            block is then the header and an empty line, as Video-CCAM prompts it).
        with_subtitles: whether the subtitle block opens the prompt.
        generate: generation options of this question (``max_new_tokens``, ``num_beams``).
        meta: the record's other fields, kept in the prediction row for breakdowns and official files.
        error: a problem found while reading the record (a missing field, no such video); the item
            is recorded with it and never reaches the model.
    """

    question_id: str
    task: str
    video: Path | None
    prompt: str
    answer: str
    video_kwargs: dict[str, Any] = field(default_factory=dict)
    subtitles: Path | None = None
    with_subtitles: bool = False
    generate: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


@dataclass
class LoadedBenchmark:
    """What a benchmark folder holds: its questions, and the parts that are missing (each warned about)."""

    items: list[EvalItem]
    missing: list[str] = field(default_factory=list)


class Benchmark(Protocol):
    """What a benchmark provides (module-level instances in ``videoccam.eval.benchmarks.<module>``).

    Attributes:
        name: the CLI name (``mvbench``, ``msvd-qa``, ...).
        default_frames: Video-CCAM's frame count for this benchmark.
    """

    name: str
    default_frames: int

    def load(self, root: Path, *, subtitles: bool = False, judged: bool = False) -> LoadedBenchmark:
        """The questions under ``root`` in the official layout (a partial download gives what is there).

        ``subtitles``: the with-subtitles setting (Video-MME). ``judged``: a judge is available, so the
        tasks that need one (MLVU's generation tasks) are included.
        """

    def check(self, response: str, row: dict[str, Any]) -> tuple[str | None, bool | None]:
        """``(parsed, correct)`` by the protocol's own rule (Video-CCAM's letter check for multiple choice)."""

    def score(self, rows: Sequence[dict[str, Any]], *, judge: Any = None) -> dict[str, Any]:
        """Metrics of prediction rows (failed rows, ``error`` set, included: the scorer leaves them out).

        Returns ``{"overall": {metric: value}, "tasks": {task: {metric: value}},
        "breakdowns": {name: {group: {metric: value}}}, "notes": [str]}``, where each value is a
        :func:`~videoccam.eval.scoring.proportion` dict or ``{"mean": x, "n": n}``. Multiple-choice
        benchmarks report ``"videoccam"`` (the rows' ``correct``, Video-CCAM's letter check) and
        ``"official"`` (the benchmark's own scorer on the same responses) side by side.
        """

    def write_official(self, rows: Sequence[dict[str, Any]], out_dir: Path) -> list[Path]:
        """The official submission / output files, where the benchmark has them; the paths written."""
