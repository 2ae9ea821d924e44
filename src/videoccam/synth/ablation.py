"""The temporal ablation: what CCAM and each TC-LLaVA option buy on the synthetic world.

Per seed, stage 1 (the shipped ``synth-stills`` config: perception on single frames) is trained
once; every variant is then stage 2, the shipped ``synth-ccam`` config with one change, started from
that stage-1 model and trained on the same clips, steps and seed with :func:`videoccam.train.train`
at 16 frames, then evaluated (greedy, exact match of the answer) on the test split at 16, 32 and 64
frames. Accuracy per question family comes
with the number of questions and a 95% Wilson interval; the order families have chance 1/2 (or
1/(n-1) for ``after``), see docs/synthetic-world.md.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch

from videoccam.configs import resolve_config
from videoccam.data import FrameCache, read_records
from videoccam.eval.benchmarks.synth import SYNTH
from videoccam.eval.runner import LoopOptions, evaluate_items
from videoccam.eval.scoring import wilson_interval
from videoccam.pipeline import Pipeline
from videoccam.processing.video import Video, load_video
from videoccam.synth.forked import run_forked
from videoccam.train.config import PROJECTOR_CHECKPOINT_OPTIONS, load_config
from videoccam.train.distributed import training_device

logger = logging.getLogger(__name__)
T = TypeVar("T")

# the default recipe's configs: stage 1 on the stills, stage 2 on the clips (docs/synthetic-world.md)
STAGE1_CONFIG = "synth-stills"
CONFIG = "synth-ccam"

# variant name -> config overrides (dotted keys) on top of synth-ccam
VARIANTS: dict[str, list[str]] = {
    "plain cross-attn": ["model.projector.mask=none"],
    "CCAM": [],
    "CCAM + frame-block mask": ["model.frame_block_mask=true"],
    "CCAM + dual RoPE": ["model.temporal_rope=tc"],
    "CCAM + both": ["model.frame_block_mask=true", "model.temporal_rope=tc"],
}


@dataclass
class FamilyScore:
    family: str
    order_dependent: bool
    n: int
    correct: int
    chance: float

    @property
    def accuracy(self) -> float:
        return self.correct / self.n if self.n else float("nan")

    @property
    def interval(self) -> tuple[float, float]:
        return wilson_interval(self.correct, self.n)


def evaluate(model: Any, processor: Any, test_file: str | Path, num_frames: int, *, batch_size: int = 50,
             media_root: str | Path | None = None, limit: int | None = None,
             frame_cache: FrameCache | None = None) -> list[dict[str, Any]]:
    """Greedy answers to every test question at ``num_frames`` uniformly sampled frames, through the
    evaluation loop of ``videoccam eval synth`` (:func:`videoccam.eval.runner.evaluate_items`); the
    clips are read from ``frame_cache`` when given (e.g. one warmed for every variant before they
    were forked) and resized by the processor, as in training.

    Returns one record per question: ``id``, ``family``, ``answer``, ``prediction``, ``correct``,
    ``chance``, ``order_dependent`` (a clip that fails to decode is recorded with ``error``).
    """
    test_file = Path(test_file)
    root = Path(media_root) if media_root is not None else test_file.parent
    items = SYNTH.load_file(test_file, root).items[:limit]

    def decode(item: Any, n: int, size: Any) -> Video:  # size unused: the processor resizes, as in training
        if frame_cache is None:
            return load_video(item.video, num_frames=n, sample="uniform")
        frames = frame_cache.frames(item.video, n, "uniform")  # uint8 [T, H, W, 3]
        return load_video(frames, num_frames=len(frames))  # every cached frame, in order

    rows: list[dict[str, Any]] = []
    options = LoopOptions(num_frames=num_frames, batch_size=batch_size, workers=0, max_new_tokens=8)
    evaluate_items(Pipeline(model, processor), SYNTH, items, options, write=rows.append, decode=decode)
    return [{"id": r["question_id"], "family": r["task"], "answer": r["answer"], "chance": r["meta"].get("chance"),
             "order_dependent": r["meta"].get("order_dependent"), "prediction": r["response"],
             "correct": bool(r["correct"]), **({"error": r["error"]} if r["error"] else {})} for r in rows]


def score(results: Sequence[dict[str, Any]]) -> dict[str, FamilyScore]:
    """Per-family counts (chance = the mean of the records' chance levels)."""
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in results:
        groups[r["family"]].append(r)
    return {
        family: FamilyScore(family, rows[0]["order_dependent"], len(rows), sum(r["correct"] for r in rows),
                            sum(r["chance"] for r in rows) / len(rows))
        for family, rows in groups.items()
    }


def builds_the_model(override: str) -> bool:
    """Whether ``override`` (``key=value``) shapes a model that a stage builds, which a stage starting
    from a checkpoint keeps (and refuses to be told): ``model.vision_config.*``, ``model.text_config.*``
    and the projector's shape fields (``model.projector.num_query``, not ``...mask``)."""
    keys = override.split("=", 1)[0].strip().split(".")  # e.g. ["model", "text_config", "num_hidden_layers"]
    if keys[:2] in (["model", "vision_config"], ["model", "text_config"]):
        return True
    return keys[:2] == ["model", "projector"] and len(keys) > 2 and keys[2] not in PROJECTOR_CHECKPOINT_OPTIONS


def run_ablation(data_dir: str | Path, out_dir: str | Path, *, variants: Sequence[str] = tuple(VARIANTS),
                 frames: Sequence[int] = (16, 32, 64), seeds: Sequence[int] = (0,), config: str = CONFIG,
                 stage1_config: str | None = STAGE1_CONFIG, stage1_data: str | Path | None = None,
                 overrides: Sequence[str] = (), limit: int | None = None, workers: int = 2) -> dict[str, Any]:
    """Train every variant (per seed) and evaluate it; write ``results.json`` and ``results.md``.

    With ``stage1_config`` (default: the ``synth-stills`` perception stage on ``stills.json``), stage 1
    is trained once per seed into ``out/seed<S>/stills`` (an existing one is reused, and ``stills.json``
    is then not needed) and every variant's stage 2 (``config``) starts from it, so the variants differ
    only in their stage-2 options. ``overrides`` apply to both
    stages, except those that shape the model (:func:`builds_the_model`, e.g.
    ``model.text_config.num_hidden_layers=4``), which go to the stage that builds it: stage 1, whose
    model every variant then starts from. ``stage1_config=None`` trains ``config`` alone (it must
    then build its own model, and takes every override).
    ``stage1_data``: the ``videoccam synth`` folder whose ``stills.json`` and tokenizer stage 1 trains
    on (default ``data_dir``), e.g. the same world's first 12000 clips while stage 2 trains on 60000:
    the fixed stage-1 steps then see the same stills whatever the size of the clip set.

    ``workers`` processes decode the clips, then train and evaluate the variants side by side, each
    on ``torch.get_num_threads() // workers`` threads (a small model on a 2-core CPU gets more steps
    per second from two one-thread processes than from one two-thread process); the variants left
    over after the last full round run one at a time on all threads. Every training (stage 1 too)
    runs in a forked child, so this process never initialises CUDA and can still fork workers on a
    GPU machine, where each trains on the GPU.
    """

    data_dir, out_dir = Path(data_dir), Path(out_dir)
    stills_dir = data_dir if stage1_data is None else Path(stage1_data)
    if stage1_data is not None and stage1_config is None:
        raise ValueError("stage1_data needs a stage 1, but stage1_config is None")
    untrained = [seed for seed in seeds if not (stage1_final(out_dir, seed) / "config.json").is_file()]
    if stage1_config is not None and untrained and not (stills_dir / "stills.json").is_file():
        raise FileNotFoundError(f"{stills_dir / 'stills.json'}: stage 1 ({stage1_config}) of seeds {untrained} "
                                "trains on it; make it with `videoccam synth`")
    out_dir.mkdir(parents=True, exist_ok=True)
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise ValueError(f"unknown variants {unknown}; known: {list(VARIANTS)}")
    started = time.perf_counter()
    tokenizer = f"model.tokenizer={stills_dir / 'tokenizer'}"
    clips = f"data.train={data_dir / 'train.json'}"
    stage2_overrides = [o for o in overrides if stage1_config is None or not builds_the_model(o)]
    base = load_config(resolve_config(config),
                       [*([tokenizer] if stage1_config is None else []), clips, *stage2_overrides])
    # the clips decoded once, here, for every variant: the children forked later share it copy on write
    cache = FrameCache() if base.data.cache_frames else None
    if cache is not None:
        _warm_test_clips(cache, data_dir, frames, limit, workers)
    stage1_s: dict[int, float] = {}
    source: dict[int, list[str]] = {}
    for seed in seeds:
        seeded = [f"model.seed={seed}", f"optim.seed={seed}", f"data.seed={seed}", "output.progress=false"]
        if stage1_config is None:
            source[seed] = [tokenizer, *seeded]
            continue
        final = stage1_final(out_dir, seed)
        t0 = time.perf_counter()
        if seed in untrained:
            run_in_child(_train, load_config(resolve_config(stage1_config), [
                tokenizer, f"data.train={stills_dir / 'stills.json'}", f"output.dir={final.parent}", *seeded,
                *overrides]))
        stage1_s[seed] = time.perf_counter() - t0
        source[seed] = [f"model.checkpoint={final}", *seeded]
    jobs = [VariantJob(name, seed, str(data_dir), str(out_dir / f"seed{seed}" / variant_slug(name)), config,
                       [clips, *source[seed], *VARIANTS[name], *stage2_overrides], tuple(frames), limit)
            for seed in seeds for name in variants]
    to_train = [job for job in jobs if not job.trained()]
    if cache is not None and to_train:
        _warm_training_clips(cache, load_config(resolve_config(config), to_train[0].overrides), workers)
    side_by_side = len(jobs) // workers * workers if workers > 1 else 0
    # each child trains and evaluates one variant, `workers` side by side on their share of the cores;
    # fork hands them the clip cache of this process (copy on write), so nothing is decoded twice
    per_job = run_forked(run_variant, [(job, cache) for job in jobs[:side_by_side]], workers=workers,
                         threads=max(1, torch.get_num_threads() // workers))
    per_job += run_forked(run_variant, [(job, cache) for job in jobs[side_by_side:]])  # the odd ones: every thread
    runs = [run for job_runs in per_job for run in job_runs]
    summary = {"data": str(data_dir), "stage1_data": str(stills_dir), "config": config,
               "stage1_config": stage1_config,
               "overrides": list(overrides), "seeds": list(seeds), "frames": list(frames),
               "stage1_s": stage1_s, "wall_s": time.perf_counter() - started, "runs": runs}
    (out_dir / "results.json").write_text(json.dumps(summary, indent=1))
    (out_dir / "results.md").write_text(markdown_table(summary))
    return summary


def _warm_test_clips(cache: FrameCache, data_dir: Path, frames: Sequence[int], limit: int | None,
                     workers: int) -> None:
    """Decode every test clip into ``cache``, in parallel, once for all variants and frame counts."""
    t0 = time.perf_counter()
    test_clips = [data_dir / r["video"] for r in read_records(data_dir / "test.json")[:limit]]
    for num_frames in frames:
        cache.warm_frames(test_clips, num_frames, "uniform", workers=workers)
    logger.info("decoded the test clips in %.0f s", time.perf_counter() - t0)


def _warm_training_clips(cache: FrameCache, config: Any, workers: int) -> None:
    """Decode and resize every training clip of ``config`` (a variant's) into ``cache``, once for all
    variants (they share the frame count, sampling and image processor)."""
    t0 = time.perf_counter()
    processor = run_in_child(_processor, config)  # the variants' processor; no torch work in this process
    root = Path(config.data.media_root or Path(config.data.train).parent)  # where the dataset finds them
    train_clips = [root / r["video"] for r in read_records(config.data.train)]
    cache.warm_pixels(train_clips, config.data.num_frames, config.data.sample, processor, workers=workers)
    logger.info("decoded and resized the training clips in %.0f s", time.perf_counter() - t0)


def stage1_final(out_dir: Path, seed: int) -> Path:
    """Where the ablation in ``out_dir`` keeps the stage-1 model of ``seed`` (reused when it exists)."""
    return out_dir / f"seed{seed}" / "stills" / "final"


def run_in_child(fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` in a forked child process on this process's thread count; returns its result.

    CUDA cannot be initialised again in a process forked after the parent initialised it, so the
    ablation trains nothing in its own process: its later forks (the variants' workers) stay valid.
    """
    return run_forked(fn, [args])[0]


def _train(config: Any) -> Path:
    """:func:`videoccam.train.train`, looked up when called (a function the child can be sent by name);
    a stage 1 that an earlier ablation left unfinished continues from its last checkpoint."""
    from videoccam.train import train

    return train(config, resume=True)


def _processor(config: Any) -> Any:
    """The processor that a training with ``config`` builds."""
    from videoccam.train.build import build_model

    return build_model(config.model, config.data.num_frames)[1]


@dataclass(frozen=True)
class VariantJob:
    """One variant of one seed: its stage-2 training (``config`` + ``overrides``) and evaluations."""

    name: str
    seed: int
    data_dir: str
    run_dir: str
    config: str
    overrides: list[str]
    frames: tuple[int, ...]
    limit: int | None

    def trained(self) -> bool:
        """Whether the variant's ``final`` model exists (it is then only evaluated)."""
        return (Path(self.run_dir) / "final" / "config.json").is_file()


def run_variant(job: VariantJob, frame_cache: FrameCache | None = None) -> list[dict[str, Any]]:
    """Train ``job``'s variant (unless its ``final`` model exists) and evaluate it at every frame count;
    writes ``predictions-<frames>.jsonl`` next to the run and returns one results entry per frame count.
    ``frame_cache``: the clips decoded ahead (the training's with ``data.cache_frames``, and the test clips)."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from videoccam.train import train

    run_dir, data_dir = Path(job.run_dir), Path(job.data_dir)
    final = run_dir / "final"
    t0 = time.perf_counter()
    config = load_config(resolve_config(job.config), [*job.overrides, f"output.dir={run_dir}"])
    if not job.trained():  # a finished variant is not trained again; an unfinished one continues
        train(config, resume=True, frame_cache=frame_cache)
    train_s = time.perf_counter() - t0
    # scored where it trained
    model = AutoModelForImageTextToText.from_pretrained(final).to(training_device(config.engine)).eval()
    processor = AutoProcessor.from_pretrained(final)
    runs = []
    for num_frames in job.frames:
        t1 = time.perf_counter()
        results = evaluate(model, processor, data_dir / "test.json", num_frames, limit=job.limit,
                           frame_cache=frame_cache)
        scores = score(results)
        runs.append({
            "variant": job.name, "seed": job.seed, "frames": num_frames, "train_s": train_s,
            "eval_s": time.perf_counter() - t1, "model": str(final),
            "families": {f: {"n": s.n, "correct": s.correct, "accuracy": s.accuracy, "ci95": list(s.interval),
                             "chance": s.chance, "order_dependent": s.order_dependent} for f, s in scores.items()},
        })
        (run_dir / f"predictions-{num_frames}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in results))
        logger.info("%s seed %d @%d frames: %s", job.name, job.seed, num_frames,
                    ", ".join(f"{f} {s.accuracy:.2f}" for f, s in scores.items()))
    return runs


def variant_slug(name: str) -> str:
    """The run folder name of a variant: "CCAM + dual RoPE" -> "ccam-dual-rope"."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def markdown_table(summary: dict[str, Any]) -> str:
    """One row per (variant, frames, seed): accuracy % [95% CI] per family, order and control means.

    With several seeds, a table of the mean over seeds [lowest, highest seed] per (variant, frames)
    comes first.
    """
    runs = summary["runs"]
    if not runs:
        return ""
    families = list(runs[0]["families"])
    order = [f for f in families if runs[0]["families"][f]["order_dependent"]]
    control = [f for f in families if f not in order]
    columns = [f"{f} (n={runs[0]['families'][f]['n']}, chance {100 * runs[0]['families'][f]['chance']:.0f})"
               for f in order + control]
    several = len(summary["seeds"]) > 1
    lines = []
    if several:
        lines += [f"Mean over seeds {', '.join(map(str, summary['seeds']))} [lowest, highest seed]:", ""]
        lines += _seed_mean_table(runs, columns, order, control)
        lines += ["", "Per seed:", ""]
    head = ["variant", "frames", *(["seed"] if several else []), *columns, "order mean", "control mean"]
    rows = [[run["variant"], str(run["frames"]), *([str(run["seed"])] if several else []),
             *[accuracy_cell(run["families"][f]) for f in order + control],
             f"{100 * _mean(run['families'], order):.1f}", f"{100 * _mean(run['families'], control):.1f}"]
            for run in runs]
    lines += _markdown_lines(head, rows)
    minutes = summary["wall_s"] / 60
    lines.append("")
    lines.append(f"Accuracy % [95% Wilson interval], greedy exact match; trained at 16 frames. "
                 f"Wall time {minutes:.1f} min.")
    return "\n".join(lines) + "\n"


def _seed_mean_table(runs: Sequence[dict[str, Any]], columns: Sequence[str], order: Sequence[str],
                     control: Sequence[str]) -> list[str]:
    """Rows of (variant, frames) in first-seen order: each family's mean accuracy % over the seeds,
    with the lowest and highest seed's, and the order and control means averaged over the seeds."""
    groups: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for run in runs:
        groups.setdefault((run["variant"], run["frames"]), []).append(run["families"])
    rows = []
    for (variant, frames), per_seed in groups.items():
        cells = []
        for f in (*order, *control):
            acc = [100 * fam[f]["accuracy"] for fam in per_seed]  # one accuracy % per seed
            cells.append(f"{sum(acc) / len(acc):.1f} [{min(acc):.0f}, {max(acc):.0f}]")
        means = [100 * sum(_mean(fam, names) for fam in per_seed) / len(per_seed)
                 for names in (order, control)]  # order, control
        rows.append([variant, str(frames), str(len(per_seed)), *cells, *(f"{m:.1f}" for m in means)])
    return _markdown_lines(["variant", "frames", "seeds", *columns, "order mean", "control mean"], rows)


def _markdown_lines(head: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """A markdown table's lines: the header, the rule, one line per row."""
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head),
            *("| " + " | ".join(row) + " |" for row in rows)]


def accuracy_cell(entry: dict[str, Any]) -> str:
    """``"74 [65, 82]"``: a results.json family entry's accuracy % and 95% interval."""
    lo, hi = entry["ci95"]
    return f"{100 * entry['accuracy']:.0f} [{100 * lo:.0f}, {100 * hi:.0f}]"


def _mean(families: dict[str, Any], names: Sequence[str]) -> float:
    return sum(families[f]["accuracy"] for f in names) / len(names) if names else float("nan")
