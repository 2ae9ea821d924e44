"""What an evaluation run leaves besides its predictions: results.json / results.md, manifest.json,
and with several frame counts a sweep table and plot."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import sys
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from videoccam.eval.scoring import scored_rows
from videoccam.timings import sum_timings

logger = logging.getLogger(__name__)

# the overall metric a sweep and a one-line summary show, first found wins
HEADLINE_METRICS = ("m_avg", "official", "videoccam", "accuracy", "score")
FULL_HASH_LIMIT = 2 * 2**30  # weight files up to this size are hashed whole (bytes)


def build_results(bench: Any, rows: Sequence[dict[str, Any]], *, num_frames: int, protocol: str,
                  total_questions: int, judge: Any = None, wall_s: float | None = None) -> dict[str, Any]:
    """results.json: counts (failures apart), the benchmark's metrics and breakdowns, timing sums."""
    ok = scored_rows(rows)
    failed = [r for r in rows if r.get("error")]
    scores = bench.score(rows, judge=judge)
    timings = sum_timings(r["timings"] for r in ok if r.get("timings"))
    results: dict[str, Any] = {
        "benchmark": bench.name, "protocol": protocol, "num_frames": num_frames,
        "questions": total_questions, "predictions": len(rows), "answered": len(ok), "failed": len(failed),
        "failures": [{"question_id": r["question_id"], "error": r["error"]} for r in failed],
        **scores,
        "timings_total_s": timings,
    }
    if ok:
        results["seconds_per_question"] = round(sum(timings[s] for s in ("decode", "preprocess", "vision",
                                                                         "projector", "generate")) / len(ok), 4)
    if wall_s is not None:
        results["wall_s"] = round(wall_s, 2)
    return results


def headline(results: dict[str, Any]) -> tuple[str, float | None]:
    """``(metric name, value)`` of the run's main number (accuracy as a fraction, or a mean score)."""
    overall = results.get("overall", {})
    for name in (*HEADLINE_METRICS, *overall):
        entry = overall.get(name)
        if isinstance(entry, dict):
            value = entry.get("accuracy", entry.get("mean"))
            return name, value
        if isinstance(entry, (int, float)):
            return name, float(entry)
    return "none", None


def _cell(entry: Any) -> str:
    """A metric as table text: ``62.5 [30.6, 86.3] (5/8)``, ``3.41 (n=12)``, or ``-``."""
    if isinstance(entry, dict):
        if "accuracy" in entry:
            if entry["accuracy"] is None:
                return "-"
            lo, hi = entry.get("ci95") or (None, None)
            interval = f" [{100 * lo:.1f}, {100 * hi:.1f}]" if lo is not None else ""
            return f"{100 * entry['accuracy']:.1f}{interval} ({entry['correct']}/{entry['n']})"
        if "mean" in entry:
            return "-" if entry["mean"] is None else f"{entry['mean']:.2f} (n={entry.get('n', '?')})"
    if isinstance(entry, bool):
        return "yes" if entry else "no"
    if isinstance(entry, (int, float)):
        return f"{entry:.4g}"
    return "-" if entry is None else str(entry)


def _table(title: str, groups: dict[str, dict[str, Any]]) -> list[str]:
    metrics: list[str] = []
    for values in groups.values():
        metrics += [m for m in values if m not in metrics]
    lines = [f"### {title}", "", "| | " + " | ".join(metrics) + " |", "|---" * (len(metrics) + 1) + "|"]
    lines += [f"| {name} | " + " | ".join(_cell(values.get(m)) for m in metrics) + " |"
              for name, values in groups.items()]
    return [*lines, ""]


def results_markdown(results: dict[str, Any]) -> str:
    """results.md: the same numbers as results.json, as tables (accuracy % [95% CI] (correct/n))."""
    lines = [f"# {results['benchmark']} at {results['num_frames']} frames ({results['protocol']} protocol)", "",
             f"{results['questions']} questions: {results['answered']} answered, {results['failed']} failed "
             "(failures are not counted in any metric; see results.json `failures`).", ""]
    lines += _table("Overall", {"all": results.get("overall", {})})
    if results.get("tasks"):
        lines += _table("Per task", results["tasks"])
    for name, groups in (results.get("breakdowns") or {}).items():
        lines += _table(f"By {name}", groups)
    for note in results.get("notes") or []:
        lines.append(f"- {note}")
    if "seconds_per_question" in results:
        lines += ["", f"Seconds per question (sum of stages / answered): {results['seconds_per_question']}"]
    return "\n".join(lines).rstrip() + "\n"


def write_results(out_dir: Path, results: dict[str, Any]) -> None:
    (out_dir / "results.json").write_text(json.dumps(results, indent=1, ensure_ascii=False) + "\n")
    (out_dir / "results.md").write_text(results_markdown(results))


# ------------------------------------------------------------------ manifest
def _version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def weights_hash(model_path: str | None) -> dict[str, Any] | None:
    """sha256 of a local model folder's weight files (name, size, hash each); files over 2 GiB are
    hashed over their size and first and last 64 MiB (``"method": "head-tail"``), to stay quick."""
    if model_path is None or not Path(model_path).is_dir():
        return None
    files = sorted(p for p in Path(model_path).iterdir() if p.suffix in (".safetensors", ".bin"))
    entries = []
    for path in files:
        size = path.stat().st_size
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            if size <= FULL_HASH_LIMIT:
                for block in iter(lambda f=f: f.read(2**24), b""):
                    digest.update(block)
                method = "full"
            else:
                digest.update(str(size).encode())
                digest.update(f.read(2**26))
                f.seek(size - 2**26)
                digest.update(f.read(2**26))
                method = "head-tail"
        entries.append({"file": path.name, "bytes": size, "sha256": digest.hexdigest(), "method": method})
    return {"files": entries}


def manifest(pipe: Any, bench: Any, *, num_frames: int, protocol: str, sample_item: Any, command: str,
             seed: int, batch_size: int, judge: Any = None) -> dict[str, Any]:
    """manifest.json: everything needed to explain why two numbers differ."""
    model = pipe.model
    return {
        "versions": {"videoccam": _version("videoccam"), "torch": _version("torch"),
                     "transformers": _version("transformers"), "av": _version("av"),
                     "python": platform.python_version()},
        "platform": platform.platform(),
        "model": {"path": pipe.model_path, "weights": weights_hash(pipe.model_path),
                  "temporal_rope": model.config.temporal_rope, "frame_block_mask": model.config.frame_block_mask,
                  "num_visual_tokens": model.config.num_visual_tokens},
        "benchmark": bench.name, "protocol": protocol, "num_frames": num_frames,
        "prompt_example": None if sample_item is None else sample_item.prompt,
        "chat_template": pipe.processor.chat_template,
        "sampling": None if sample_item is None else sample_item.video_kwargs,
        "generation": {"do_sample": False, "max_new_tokens_default": 100,
                       "item_options": None if sample_item is None else sample_item.generate},
        "decoder": os.environ.get("VIDEOCCAM_VIDEO_BACKEND", "pyav"),
        "dtype": str(model.dtype).removeprefix("torch."), "device": str(model.device),
        "attn_implementation": model.language_model.config._attn_implementation,
        "seed": seed, "batch_size": batch_size,
        "judge": None if judge is None else {"model": judge.model, "url": judge.base_url},
        "command": command or " ".join(sys.argv),
    }


# ------------------------------------------------------------------ sweep
def write_sweep(out: Path, runs: Sequence[dict[str, Any]]) -> None:
    """sweep.json, sweep.md and sweep.png: the headline metric and seconds per question against frames."""
    rows = []
    for results in runs:
        name, value = headline(results)
        rows.append({"num_frames": results["num_frames"], "metric": name, "value": value,
                     "seconds_per_question": results.get("seconds_per_question"), "answered": results["answered"],
                     "failed": results["failed"]})
    (out / "sweep.json").write_text(json.dumps(rows, indent=1) + "\n")
    lines = ["| frames | metric | value | s / question | answered | failed |", "|---|---|---|---|---|---|"]
    for r in rows:
        if r["value"] is None:
            value = "-"
        else:
            value = f"{r['value']:.2f}" if r["metric"] == "score" else f"{100 * r['value']:.1f}"
        spq = "-" if r["seconds_per_question"] is None else f"{r['seconds_per_question']:.3f}"
        lines.append(f"| {r['num_frames']} | {r['metric']} | {value} | {spq} | {r['answered']} | {r['failed']} |")
    (out / "sweep.md").write_text("\n".join(lines) + "\n")
    try:
        _plot(out / "sweep.png", rows)
    except ImportError:
        logger.warning("matplotlib is not installed: no sweep.png (pip install 'videoccam[eval]')")


def _plot(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    frames = [r["num_frames"] for r in rows]
    fig, left = plt.subplots(figsize=(6, 3.5), dpi=120)
    left.plot(frames, [r["value"] if r["value"] is not None else float("nan") for r in rows], "o-", color="tab:blue")
    left.set_xlabel("frames")
    left.set_ylabel(rows[0]["metric"] if rows else "metric", color="tab:blue")
    right = left.twinx()
    right.plot(frames, [r["seconds_per_question"] or float("nan") for r in rows], "s--", color="tab:red")
    right.set_ylabel("seconds per question", color="tab:red")
    left.set_xticks(frames)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
