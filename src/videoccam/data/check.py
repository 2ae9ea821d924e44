"""``videoccam data check``: every problem of a training file, record by record, before a run starts.

    report = run_data_check("train.jsonl", processor, max_length=4096)
    for p in report.problems:
        print(f"train.jsonl:{p.line}: {p.kind}: {p.message}")

The kinds are :data:`~videoccam.data.records.PROBLEM_KINDS`; see ``docs/training-data.md``.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from videoccam.constants import DEFAULT_NUM_FRAMES, IMAGE_TOKEN, VIDEO_TOKEN
from videoccam.data.llava import Conversation, parse_record
from videoccam.data.records import DataRecordError, Problem, read_numbered, record_id
from videoccam.errors import ConfigError, MediaError, MediaNotFoundError
from videoccam.processing.processor import VideoCCAMProcessor
from videoccam.processing.video import check_media_path, load_video

__all__ = ["DataCheckReport", "check_dataset", "run_data_check"]


@dataclass
class DataCheckReport:
    """What :func:`run_data_check` found: records read (malformed ones included) and the problems."""

    path: Path
    num_records: int
    problems: list[Problem]

    def counts(self) -> Counter[str]:
        return Counter(p.kind for p in self.problems)


def check_dataset(path: str | Path, processor: VideoCCAMProcessor | None, *, media_root: str | Path | None = None,
                  max_length: int | None = None, num_frames: int = DEFAULT_NUM_FRAMES,
                  decode: bool = True) -> list[Problem]:
    """Every problem of a training file, in line order (see :func:`run_data_check`)."""
    return run_data_check(path, processor, media_root=media_root, max_length=max_length, num_frames=num_frames,
                          decode=decode).problems


def run_data_check(path: str | Path, processor: VideoCCAMProcessor | None, *, media_root: str | Path | None = None,
                   max_length: int | None = None, num_frames: int = DEFAULT_NUM_FRAMES, decode: bool = True,
                   progress: Callable[[int, int], None] | None = None) -> DataCheckReport:
    """Check a LLaVA JSON/JSONL training file record by record, going on after each problem.

    Kinds (:data:`~videoccam.data.records.PROBLEM_KINDS`): ``json`` (malformed line), ``schema``,
    ``placeholders``, ``empty`` (see :func:`~videoccam.data.llava.record_to_conversation`),
    ``missing`` (media file not found), ``decode`` (exists but does not decode; only with
    ``decode=True``, which decodes ``num_frames`` frames of every video and each image once),
    ``too_long`` (tokens incl. ``num_visual_tokens`` per placeholder > ``max_length``; needs
    ``processor``). ``processor`` may be ``None``: no token counts then. ``media_root`` defaults to
    the file's folder. ``progress(records checked, records)`` is called before each record's media
    check and at the end (:mod:`videoccam.progress`).
    """
    path = Path(path)
    if max_length is not None and processor is None:
        raise ConfigError("max_length needs a processor (its tokenizer counts the tokens)")
    root = Path(media_root) if media_root is not None else path.parent
    tokens = (IMAGE_TOKEN, VIDEO_TOKEN) if processor is None else (processor.image_token, processor.video_token)
    problems: list[Problem] = []
    numbered = read_numbered(path, problems)
    num_records = len(numbered) + sum(1 for p in problems if p.line > 0)
    checked: dict[tuple[str, str], tuple[str, str] | None] = {}  # (path, kind) -> its problem, each checked once
    parsed: list[tuple[int, str | None, Conversation]] = []
    for index, (line, record) in enumerate(numbered):
        if progress is not None:
            progress(index, len(numbered))
        rid = record_id(record)
        try:
            p = parse_record(record, root, *tokens)
        except DataRecordError as err:
            problems.append(Problem(line, rid, err.kind, str(err)))
            continue
        for item, kind in zip(p.media, p.kinds, strict=True):
            if (item, kind) not in checked:
                checked[item, kind] = _media_problem(item, kind, num_frames, decode)
            if checked[item, kind] is not None:
                problems.append(Problem(line, rid, *checked[item, kind]))
        parsed.append((line, rid, p))
    if progress is not None:
        progress(len(numbered), len(numbered))
    if processor is not None:
        problems += _length_problems(processor, parsed, max_length)
    problems.sort(key=lambda p: p.line)
    return DataCheckReport(path, num_records, problems)


def _length_problems(processor: VideoCCAMProcessor, parsed: list[tuple[int, str | None, Conversation]],
                     max_length: int | None) -> list[Problem]:
    """Records whose text holds stray placeholder tokens, and those over ``max_length`` tokens."""
    problems = []
    counts = processor.count_tokens([p.messages for _, _, p in parsed], [len(p.media) for _, _, p in parsed])
    for (line, rid, _), n in zip(parsed, counts, strict=True):
        if n is None:
            problems.append(Problem(line, rid, "placeholders",
                                    "the text holds placeholder tokens besides the media's"))
        elif max_length is not None and n > max_length:
            problems.append(Problem(line, rid, "too_long", f"{n} tokens > max_length {max_length}"))
    return problems


def _media_problem(path: str, kind: str, num_frames: int, decode: bool) -> tuple[str, str] | None:
    if not os.path.exists(path):
        return "missing", f"{kind} not found: {path}"
    if not decode:
        return None
    try:
        check_media_path(path)
        load_video(path, num_frames=1 if kind == "image" else num_frames, sample="uniform")
    except MediaNotFoundError as err:
        return "missing", str(err)
    except (MediaError, OSError) as err:
        return "decode", f"{kind} does not decode: {err}"
    return None
