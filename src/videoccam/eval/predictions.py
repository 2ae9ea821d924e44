"""``predictions.jsonl``: one line per question, appended as it is answered, safe to kill at any point.

Each row is written whole with one ``write`` of a complete line, then flushed and fsynced, so a
killed run leaves at most one torn last line. :meth:`PredictionFile.open` with ``resume=True`` reads
the complete rows back, cuts a torn tail off, and the run skips the question ids already there: a
run killed at any point and resumed ends with exactly one row per question.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Any

logger = logging.getLogger(__name__)


class PredictionsExistError(FileExistsError):
    """An output folder already holds predictions and neither ``--resume`` nor a new folder was given."""


def read_rows(path: str | Path) -> list[dict[str, Any]]:
    """The complete rows of a predictions file (a torn last line is skipped with a warning).

    Raises:
        ValueError: a line other than the last is not JSON (the file was not written by this tool,
            or was edited), naming the file and line.
    """
    path = Path(path)
    lines = path.read_bytes().split(b"\n")
    rows = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            if number == len(lines):  # no newline after it: the torn write of a killed run
                logger.warning("%s: ignoring the incomplete last line (a killed run)", path)
                continue
            raise ValueError(f"{path}:{number}: not a JSON line ({err.msg})") from None
        if not isinstance(row, dict) or "question_id" not in row:
            raise ValueError(f"{path}:{number}: a prediction row needs a question_id")
        rows.append(row)
    return rows


class PredictionFile:
    """The predictions of one run (one benchmark at one frame count), appended row by row.

    Attributes:
        path: the file.
        done: question id -> row, for the rows already in the file.
    """

    def __init__(self, path: Path, rows: Iterable[dict[str, Any]]) -> None:
        self.path = path
        self.done: dict[str, dict[str, Any]] = {}
        for row in rows:
            if str(row["question_id"]) in self.done:
                raise ValueError(f"{path}: question_id {row['question_id']!r} appears twice")
            self.done[str(row["question_id"])] = row
        self._file: IO[bytes] | None = None

    @classmethod
    def open(cls, path: str | Path, *, resume: bool) -> PredictionFile:
        """Start a new file, or continue one with ``resume``.

        Raises:
            PredictionsExistError: the file has rows and ``resume`` is False.
        """
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        rows: list[dict[str, Any]] = []
        if path.exists() and path.stat().st_size > 0:
            if not resume:
                raise PredictionsExistError(f"{path} already holds predictions: pass --resume to continue that run, "
                                            "or another --out")
            rows = read_rows(path)
            _cut_torn_tail(path)
        store = cls(path, rows)
        store._file = open(path, "ab")  # noqa: SIM115 - held open for the run, closed by close()
        if rows:
            logger.info("%s: resuming after %d answered questions", path, len(rows))
        return store

    def write(self, row: dict[str, Any]) -> None:
        """Append one row durably (one line, flushed and fsynced)."""
        if self._file is None:
            raise ValueError(f"{self.path} is closed")
        key = str(row["question_id"])
        if key in self.done:
            raise ValueError(f"{self.path}: question_id {key!r} written twice")
        self._file.write((json.dumps(row, ensure_ascii=False) + "\n").encode())
        self._file.flush()
        os.fsync(self._file.fileno())
        self.done[key] = row

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> PredictionFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _cut_torn_tail(path: Path) -> None:
    """Truncate the file after its last newline (drops a torn last line, so appends start clean)."""
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    if end != len(data):
        with open(path, "r+b") as f:
            f.truncate(end)
