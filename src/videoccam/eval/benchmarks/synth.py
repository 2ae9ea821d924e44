"""The synthetic temporal world's test split (``videoccam synth``), the ablation's benchmark.

Layout: ``<root>/test.json`` (LLaVA records; ``video`` relative to ``root``; ``meta`` with
``family``, ``answer``, ``chance``, ``order_dependent``). The question is the first human turn
without its ``<video>`` line; the answer is checked by exact match after lowercasing and collapsing
spaces (greedy, 8 new tokens). Accuracy per question family comes with its chance level; the order
families (whose answer depends on the order of events) and the controls are averaged apart, as
docs/synthetic-world.md describes.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from videoccam.constants import VIDEO_TOKEN
from videoccam.eval.scoring import accuracy, by_group, macro_mean, scored_rows
from videoccam.eval.types import EvalItem, LoadedBenchmark

TEST_FILE = "test.json"


def normalise(text: str) -> str:
    """Lowercased, with runs of whitespace made single spaces."""
    return " ".join(text.strip().lower().split())


class SynthBenchmark:
    name = "synth"
    default_frames = 16

    def load(self, root: Path, *, subtitles: bool = False, judged: bool = False) -> LoadedBenchmark:
        path = Path(root) / TEST_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no test split (make one with `videoccam synth --out {root}`)")
        return self.load_file(path, Path(root))

    def load_file(self, path: Path, media_root: Path) -> LoadedBenchmark:
        """The questions of one LLaVA-format file whose ``video`` paths are relative to ``media_root``."""
        try:
            records = json.loads(Path(path).read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: not JSON ({err})") from None
        return LoadedBenchmark([self._item(Path(media_root), Path(path), k, rec) for k, rec in enumerate(records)])

    def _item(self, root: Path, path: Path, index: int, rec: Any) -> EvalItem:
        qid = str(rec.get("id", index)) if isinstance(rec, dict) else str(index)
        try:
            meta = rec["meta"]
            question = rec["conversations"][0]["value"]
            item = EvalItem(qid, str(meta["family"]), root / rec["video"],
                            question.replace(f"{VIDEO_TOKEN}\n", "", 1), str(meta["answer"]),
                            video_kwargs={"sample": "uniform"}, generate={"max_new_tokens": 8},
                            meta={"chance": meta["chance"], "order_dependent": meta["order_dependent"]})
        except (KeyError, IndexError, TypeError) as err:
            return EvalItem(qid, "unknown", None, "", "", error=f"{path}: record {index}: missing field {err}")
        if not item.video.exists():
            item.error = f"{item.video}: no such video"
        return item

    def check(self, response: str, row: dict[str, Any]) -> tuple[str | None, bool | None]:
        parsed = normalise(response)
        return parsed, parsed == normalise(row["answer"])

    def score(self, rows: Sequence[dict[str, Any]], *, judge: Any = None) -> dict[str, Any]:
        ok = scored_rows(rows)
        tasks = {name: {"accuracy": entry} for name, entry in by_group(ok, "task").items()}
        for name, entry in tasks.items():
            members = [r for r in ok if r["task"] == name]
            entry["chance"] = sum(r["meta"]["chance"] for r in members) / len(members)
            entry["order_dependent"] = bool(members[0]["meta"]["order_dependent"])
        order = {n: e["accuracy"] for n, e in tasks.items() if e["order_dependent"]}
        control = {n: e["accuracy"] for n, e in tasks.items() if not e["order_dependent"]}
        return {
            "overall": {"accuracy": accuracy(ok), "order_mean": macro_mean(order), "control_mean": macro_mean(control)},
            "tasks": tasks,
            "breakdowns": {},
            "notes": ["accuracy: exact match after lowercasing; order_mean / control_mean: the mean accuracy of the "
                      "order-dependent families / of the controls"],
        }

    def write_official(self, rows: Sequence[dict[str, Any]], out_dir: Path) -> list[Path]:
        return []  # no official format: predictions.jsonl is the record


SYNTH = SynthBenchmark()
