"""Reading training files: a LLaVA JSON list or JSONL lines -> records, each with the line it starts on.

    records = read_records("train.jsonl")              # list[dict]; the first malformed line raises
    numbered = read_numbered(path, problems)           # [(line, record)]; bad lines go to ``problems``

Nothing here knows the LLaVA schema (see :mod:`videoccam.data.llava`): a record is any JSON object.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from videoccam.errors import VideoCCAMError

__all__ = ["PROBLEM_KINDS", "DataRecordError", "Problem", "read_numbered", "read_records", "record_id"]

# every kind of problem a training file can have; the data check reports them by these names
PROBLEM_KINDS = ("json", "schema", "placeholders", "empty", "missing", "decode", "too_long")
_WS = re.compile(r"[ \t\n\r]*")


class DataRecordError(VideoCCAMError, ValueError):
    """A training record is malformed; ``kind`` is one of :data:`PROBLEM_KINDS`."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass
class Problem:
    """One problem of a training file (see :func:`videoccam.data.check_dataset`).

    ``line`` is the 1-based line of the file where the record starts (for a JSON list too: the line
    of its opening brace), 0 for a problem of the whole file.
    """

    line: int
    id: str | None
    kind: str  # one of PROBLEM_KINDS
    message: str


def read_records(path: str | Path) -> list[dict]:
    """Read a LLaVA JSON file (a list of records) or a JSONL file (one record per line; blank lines ok).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        DataRecordError: malformed JSON or a record that is not an object (the message names the
            file and line).
    """
    return [record for _, record in read_numbered(Path(path))]


def record_id(record: Any) -> str | None:
    """A record's ``id`` as a string (None when it has none), for messages."""
    rid = record.get("id") if isinstance(record, dict) else None
    return None if rid is None else str(rid)


def read_numbered(path: Path, problems: list[Problem] | None = None) -> list[tuple[int, dict]]:
    """``(line, record)`` pairs. With ``problems`` given, bad records are appended there and skipped
    (after a syntax error inside a JSON list nothing further can be read); otherwise the first raises."""

    def bad(line: int, kind: str, message: str) -> None:
        if problems is None:
            raise DataRecordError(kind, f"{path}:{line}: {message}")
        problems.append(Problem(line, None, kind, message))

    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        bad(0, "json", f"not UTF-8 text ({err.reason} at byte {err.start})")
        return []
    start = _WS.match(text).end()
    records: list[tuple[int, dict]] = []
    if start < len(text) and text[start] == "[":
        _parse_json_list(text, start + 1, records, bad)
    else:
        _parse_json_lines(text, records, bad)
    if not records and problems is not None and not problems:
        bad(0, "json", "the file holds no records")
    return records


def _parse_json_lines(text: str, records: list[tuple[int, dict]], bad: Callable[[int, str, str], None]) -> None:
    """One record per line; blank lines are skipped."""
    decoder = json.JSONDecoder()
    for number, raw in enumerate(text.split("\n"), 1):  # not splitlines: U+2028 may sit inside a string
        if not raw.strip():
            continue
        try:
            record = decoder.decode(raw)
        except json.JSONDecodeError as err:
            bad(number, "json", f"invalid JSON: {err.msg} (column {err.colno})")
            continue
        if not isinstance(record, dict):
            bad(number, "schema", f"a record must be a JSON object, got {type(record).__name__}")
            continue
        records.append((number, record))


def _parse_json_list(text: str, pos: int, records: list[tuple[int, dict]],
                     bad: Callable[[int, str, str], None]) -> None:
    """Parse ``[record, record, ...]`` element by element, keeping the line where each starts."""
    decoder = json.JSONDecoder()
    line, line_pos = 1, 0

    def line_of(at: int) -> int:
        nonlocal line, line_pos
        line += text.count("\n", line_pos, at)
        line_pos = at
        return line

    pos = _WS.match(text, pos).end()
    if text.startswith("]", pos):
        pos += 1
    else:
        while True:
            try:
                record, end = decoder.raw_decode(text, pos)
            except json.JSONDecodeError as err:
                bad(err.lineno, "json", f"invalid JSON: {err.msg} (column {err.colno}); the rest of the list "
                    "cannot be read")
                return
            number = line_of(pos)
            if isinstance(record, dict):
                records.append((number, record))
            else:
                bad(number, "schema", f"a record must be a JSON object, got {type(record).__name__}")
            pos = _WS.match(text, end).end()
            if text.startswith(",", pos):
                pos = _WS.match(text, pos + 1).end()
                continue
            if text.startswith("]", pos):
                pos += 1
                break
            bad(line_of(pos), "json", "invalid JSON: expected ',' or ']' after a record; the rest of the list "
                "cannot be read")
            return
    if _WS.match(text, pos).end() != len(text):
        bad(line_of(pos), "json", "invalid JSON: extra data after the closing ']'")
