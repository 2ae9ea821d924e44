"""Training throughput of the tiny CPU config: 1 process vs 2 processes (torchrun, gloo), same global batch.

    python bench/train_throughput.py [--steps 30] [--global-batch 8] [--frames 8]
    python bench/train_throughput.py --compile    # 1 process, eager vs engine.compile=true

Writes a small LLaVA dataset (generated clips), runs the tiny instruct stage (tiny-instruct's LoRA stage on
tiny-align's from-scratch model: `videoccam train tiny-align` + INSTRUCT's overrides) once with one
process (micro-batch = global batch) and once under `torchrun --nproc_per_node=2` (micro-batch = half),
and prints samples/s and tokens/s (wall time per step, data loading included; median over steps after
the first 5) and the ratio 2-proc / 1-proc. With ``--compile`` it runs one process twice instead,
eager and with ``engine.compile=true``, and also prints the first 5 steps' wall time, where the
compilation happens.
Each process uses one intra-op thread, so 2 processes use 2 cores and 1 process uses 1.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path


def make_data(root: Path, n: int) -> None:
    from videoccam.testing import make_tiny_tokenizer
    from videoccam.testing.media import write_test_video

    make_tiny_tokenizer().save_pretrained(root / "tok")
    records = []
    for i in range(n):
        write_test_video(root / f"v{i}.mp4", num_frames=32, fps=10)
        records.append({"id": str(i), "video": f"v{i}.mp4", "conversations": [
            {"from": "human", "value": "<video>\nwhat happens in the video ?"},
            {"from": "gpt", "value": "the red square moves left then the blue circle appears"}]})
    (root / "data.json").write_text(json.dumps(records))


# tiny-instruct's stage on a model built from scratch (the shipped tiny-instruct starts from tiny-align's output)
INSTRUCT = ["stage.name=instruct", "stage.train_llm=lora", "stage.llm_lora={r: 8, alpha: 16, dropout: 0.0}"]


def run(root: Path, nproc: int, steps: int, global_batch: int, frames: int, compile_: bool = False) -> dict[str, float]:
    out = root / f"run{nproc}-{'compiled' if compile_ else 'eager'}"
    args = ["tiny-align", *INSTRUCT, f"model.tokenizer={root / 'tok'}", f"data.train={root / 'data.json'}",
            f"output.dir={out}", f"optim.max_steps={steps}", f"optim.micro_batch_size={global_batch // nproc}",
            f"data.num_frames={frames}", "output.save_every=0", f"engine.compile={str(compile_).lower()}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"}
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
    cmd = [*(launcher if nproc > 1 else [sys.executable]), "-m", "videoccam.cli", "train", *args]
    subprocess.run(cmd, env=env, check=True, capture_output=True)
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    steps_log = [r for r in log if "loss" in r]
    return {"samples_per_s": statistics.median(r["samples_per_s"] for r in steps_log[5:]),
            "tokens_per_s": statistics.median(r["tokens_per_s"] for r in steps_log[5:]),
            "first_5_s": sum(r["step_time_s"] for r in steps_log[:5])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--global-batch", type=int, default=8)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--compile", action="store_true", help="one process, eager vs engine.compile=true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        make_data(root, n=args.global_batch * 4)
        if args.compile:
            eager = run(root, 1, args.steps, args.global_batch, args.frames)
            compiled = run(root, 1, args.steps, args.global_batch, args.frames, compile_=True)
            print(f"tiny-instruct, 1 process, global batch {args.global_batch}, {args.frames} frames, "
                  f"{args.steps} steps, CPU")
            print("| engine.compile | first 5 steps (s) | samples/s after | tokens/s after |\n|---|---|---|---|")
            for name, r in (("false", eager), ("true", compiled)):
                print(f"| {name} | {r['first_5_s']:.1f} | {r['samples_per_s']:.1f} | {r['tokens_per_s']:.0f} |")
            print(f"ratio compiled/eager (samples/s after the first 5 steps): "
                  f"{compiled['samples_per_s'] / eager['samples_per_s']:.2f}")
            return
        one = run(root, 1, args.steps, args.global_batch, args.frames)
        two = run(root, 2, args.steps, args.global_batch, args.frames)
    print(f"tiny-instruct, global batch {args.global_batch}, {args.frames} frames, {args.steps} steps, CPU")
    print("| processes | samples/s | tokens/s |\n|---|---|---|")
    print(f"| 1 | {one['samples_per_s']:.1f} | {one['tokens_per_s']:.0f} |")
    print(f"| 2 | {two['samples_per_s']:.1f} | {two['tokens_per_s']:.0f} |")
    print(f"ratio 2/1: {two['samples_per_s'] / one['samples_per_s']:.2f}")


if __name__ == "__main__":
    main()
