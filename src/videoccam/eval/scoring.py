"""Scoring shared by every benchmark: Video-CCAM's letter check, proportions with 95% intervals, groups.

Every metric is a dict of the same shape, so results.json and results.md read alike across
benchmarks::

    {"accuracy": 0.625, "correct": 5, "n": 8, "ci95": [0.306, 0.863]}

``n`` counts the questions the metric's own rule counts (Video-MME's official rule leaves
unanswerable replies out of it); failed items (``error`` set) never count, and are reported apart.
"""

from __future__ import annotations

import math
import string
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from typing import Any

LETTERS = string.ascii_uppercase
# the instruction line Video-CCAM ends every multiple-choice prompt with
MCQ_INSTRUCTION = "Answer with the option's letter from the given choices directly."
# the prefixes Video-CCAM's check_answer strips before reading the first token
_CHECK_PREFIXES = ("Answer:", "The answer is", "Answer is")


def wilson_interval(correct: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """95% Wilson score interval of a binomial proportion (``(nan, nan)`` for ``n == 0``)."""
    if n == 0:
        return (float("nan"), float("nan"))
    p = correct / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def proportion(correct: int, n: int) -> dict[str, Any]:
    """``{"accuracy", "correct", "n", "ci95"}`` (accuracy None when ``n == 0``)."""
    lo, hi = wilson_interval(correct, n)
    return {"accuracy": correct / n if n else None, "correct": int(correct), "n": int(n),
            "ci95": [lo, hi] if n else None}


def letter(index: int) -> str:
    """``0 -> "A"``, ``1 -> "B"``, ..."""
    return LETTERS[index]


def options_block(candidates: Sequence[str]) -> str:
    """``"(A) c0\\n(B) c1\\n..."``, Video-CCAM's option lines (no trailing newline)."""
    return "\n".join(f"({letter(i)}) {c}" for i, c in enumerate(candidates))


def check_answer(response: str, target: str) -> tuple[str, bool]:
    """Video-CCAM's ``check_answer`` (``eval/mvbench.py``): ``(parsed option, correct)``.

    Each of the prefixes ``Answer:``, ``The answer is``, ``Answer is`` is removed in turn (then the
    text is stripped), the first space-separated word is lowercased with ``.`` deleted, and it is
    correct when non-empty and either of it and ``target``'s first word (``"(B) text"`` -> ``"(b)"``)
    contains the other. Its quirks are kept on purpose: a lone ``(`` counts as correct, "The correct
    answer is B" does not, and a reply "B\nBecause ..." (no space before the newline) is wrong.
    """
    text = response
    for prefix in _CHECK_PREFIXES:
        text = text.removeprefix(prefix).strip()
    parsed = text.split(" ")[0].lower().replace(".", "")
    gt = target.split(" ")[0].lower()
    return parsed, len(parsed) > 0 and (parsed in gt or gt in parsed)


def scored_rows(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows that reached the model (``error`` empty)."""
    return [r for r in rows if not r.get("error")]


def accuracy(rows: Sequence[dict[str, Any]], correct: Callable[[dict[str, Any]], bool | None] | str = "correct",
             ) -> dict[str, Any]:
    """The proportion of ``rows`` that are correct; a row whose verdict is None is left out of ``n``.

    ``correct`` is a row field name or a function of the row.
    """
    get = (lambda r: r.get(correct)) if isinstance(correct, str) else correct
    verdicts = [get(r) for r in rows]
    counted = [v for v in verdicts if v is not None]
    return proportion(sum(bool(v) for v in counted), len(counted))


def by_group(rows: Sequence[dict[str, Any]], key: Callable[[dict[str, Any]], Any] | str,
             correct: Callable[[dict[str, Any]], bool | None] | str = "correct") -> dict[str, dict[str, Any]]:
    """:func:`accuracy` per group, groups in first-seen order (``key``: a field name or a function)."""
    get = (lambda r: r.get(key)) if isinstance(key, str) else key
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        groups[str(get(r))].append(r)
    return {name: accuracy(members, correct) for name, members in groups.items()}


def by_group_both(rows: Sequence[dict[str, Any]], key: Callable[[dict[str, Any]], Any] | str,
                  official: Callable[[dict[str, Any]], bool | None]) -> dict[str, dict[str, Any]]:
    """Per group, ``{"official": ..., "videoccam": ...}``: the benchmark's own check and the rows'
    ``correct`` (Video-CCAM's letter check) side by side (see :func:`by_group`)."""
    groups = {name: {"official": entry} for name, entry in by_group(rows, key, official).items()}
    for name, entry in by_group(rows, key).items():
        groups[name]["videoccam"] = entry
    return groups


def macro_mean(groups: dict[str, dict[str, Any]]) -> float | None:
    """The mean of the groups' accuracies (groups with no counted question are left out)."""
    values = [g["accuracy"] for g in groups.values() if g["accuracy"] is not None]
    return sum(values) / len(values) if values else None
