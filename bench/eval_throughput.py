"""Benchmark: questions per second of the `videoccam eval` loop against the naive loop, same run.

    PYTHONPATH=src python bench/eval_throughput.py --cache /tmp/videoccam-evalbench

Two fixture shapes, generated once into --cache (synthetic videos of ``videoccam.testing.media``,
x264 ``ultrafast``), with Video-CCAM's multiple-choice prompt and frame counts:

* ``mvbench``: one question per clip (``--questions`` clips of 640x360, 8 s at 30 fps), 16 frames;
* ``videomme``: three questions per video (``--questions / 3`` videos of 640x360, 60 s at 30 fps), 96 frames.

For each shape, with the bundled model (greedy, ``max_new_tokens`` 100 as the protocol):

* ``naive``: for each question in turn, decode its video, encode it, generate its answer alone;
* ``eval``: :func:`videoccam.eval.runner.evaluate_items`, the loop behind ``videoccam eval``
  (decoding ahead in ``--workers`` threads, each video decoded and encoded once for all its
  questions, ``--batch-size`` questions per ``generate``).

Both decode at the model's input size. The loops take turns (``--repeats``), after one warm-up
question each; the table shows the median questions per second and the ratio eval / naive, and
whether both loops gave the same answers (greedy: they must).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import torch  # noqa: E402

from videoccam import Pipeline  # noqa: E402
from videoccam.eval.runner import LoopOptions, evaluate_items  # noqa: E402
from videoccam.eval.scoring import MCQ_INSTRUCTION, check_answer, options_block  # noqa: E402
from videoccam.eval.types import EvalItem  # noqa: E402
from videoccam.processing.media import input_size  # noqa: E402
from videoccam.processing.video import load_video  # noqa: E402
from videoccam.testing.media import write_test_video  # noqa: E402

FPS = 30
SHAPES = {  # name: (questions per video, seconds per video, frames sampled)
    "mvbench": (1, 8, 16),
    "videomme": (3, 60, 96),
}
CANDIDATES = ["the red one", "the green one", "the blue one", "none of them"]


class MultipleChoice:
    """The letter check of Video-CCAM as a benchmark object (what evaluate_items needs)."""

    name = "bench"

    def check(self, response: str, row: dict) -> tuple[str, bool]:
        return check_answer(response, row["answer"])


def make_items(cache: Path, shape: str, questions: int) -> list[EvalItem]:
    per_video, seconds, _ = SHAPES[shape]
    folder = cache / shape
    folder.mkdir(parents=True, exist_ok=True)
    items = []
    for v in range(max(1, questions // per_video)):
        path = folder / f"video{v:03d}.mp4"
        if not path.exists():
            write_test_video(path, num_frames=seconds * FPS, fps=FPS, size=(640, 360))
        for q in range(per_video):
            question = f"Question: which object moves first in part {q + 1} ?\nOptions:\n{options_block(CANDIDATES)}"
            items.append(EvalItem(f"{shape}-{v}-{q}", shape, path, f"{question}\n{MCQ_INSTRUCTION}",
                                  f"(A) {CANDIDATES[0]}", video_kwargs={"sample": "uniform"}))
    return items


def naive_loop(pipe: Pipeline, items: list[EvalItem], num_frames: int, size) -> list[str]:
    answers = []
    for item in items:
        video = load_video(item.video, num_frames=num_frames, size=size, **item.video_kwargs)
        encoded = pipe.encode([video], kinds=["video"])
        convs = [[{"role": "user", "content": item.prompt}]]
        answers.append(pipe.chat(convs, [encoded], max_new_tokens=100, do_sample=False)[0].text)
    return answers


def eval_loop(pipe: Pipeline, items: list[EvalItem], num_frames: int, size, batch_size: int, workers: int
              ) -> list[str]:
    rows: list[dict] = []
    options = LoopOptions(num_frames=num_frames, batch_size=batch_size, workers=workers, size=size)
    evaluate_items(pipe, MultipleChoice(), items, options, write=rows.append)
    assert not any(r["error"] for r in rows), [r["error"] for r in rows if r["error"]]
    by_id = {r["question_id"]: r["response"] for r in rows}
    return [by_id[item.question_id] for item in items]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=None, help="fixture folder (default: a temporary one)")
    parser.add_argument("--questions", type=int, default=24)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = parser.parse_args()
    cache = args.cache or Path(tempfile.mkdtemp(prefix="videoccam-evalbench-"))
    pipe = Pipeline.from_pretrained(device="cpu")
    size = input_size(pipe.processor.image_processor)
    print(f"# eval throughput: bundled model, CPU ({torch.get_num_threads()} threads), {platform.processor() or ''} "
          f"torch {torch.__version__}; batch {args.batch_size}, {args.workers} decode workers, "
          f"median of {args.repeats}")
    print("| shape | questions | videos | frames | naive q/s | eval q/s | eval / naive | same answers |")
    print("|---|---|---|---|---|---|---|---|")
    rows = []
    for shape in args.shapes:
        items = make_items(cache, shape, args.questions)
        num_frames = SHAPES[shape][2]
        naive_loop(pipe, items[:1], num_frames, size)  # warm-up
        eval_loop(pipe, items[:1], num_frames, size, args.batch_size, args.workers)
        times: dict[str, list[float]] = {"naive": [], "eval": []}
        answers: dict[str, list[str]] = {}
        for _ in range(args.repeats):
            for name in ("naive", "eval"):  # taking turns
                start = time.perf_counter()
                if name == "naive":
                    answers[name] = naive_loop(pipe, items, num_frames, size)
                else:
                    answers[name] = eval_loop(pipe, items, num_frames, size, args.batch_size, args.workers)
                times[name].append(time.perf_counter() - start)
        qps = {name: len(items) / statistics.median(t) for name, t in times.items()}
        same = sum(a == b for a, b in zip(answers["naive"], answers["eval"], strict=True))
        videos = len({item.video for item in items})
        row = {"shape": shape, "questions": len(items), "videos": videos, "frames": num_frames,
               "naive_qps": qps["naive"], "eval_qps": qps["eval"], "ratio": qps["eval"] / qps["naive"],
               "same_answers": same}
        rows.append(row)
        print(f"| {shape} | {len(items)} | {videos} | {num_frames} | {qps['naive']:.2f} | {qps['eval']:.2f} | "
              f"{row['ratio']:.2f}x | {same}/{len(items)} |", flush=True)
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
