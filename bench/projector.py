"""CCAM projector forward: time and peak memory against the frame count T.

The projector has one implementation (padded batch, boolean mask, one SDPA call per block); the mask-free
streaming path this bench used to compare it with was removed (docs/experiments/2026-12-05-projector-decision.md).

Released Video-CCAM size (reference/video-ccam.md 1.2): Q=1024 queries of width 1024, 16 heads,
SwiGLU 4096, SigLIP tokens P=729 x Dv=1152 per frame, output 3584; one block.
Each measurement runs in a fresh subprocess (peak RSS is per process), forward only, no grad.

    python bench/projector.py                      # CPU fp32: T = 16, 32, 96
    python bench/projector.py --frames 16 96 --device cuda --dtype bfloat16

Prints a markdown table with one row per T.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

CONFIG = dict(num_query=1024, hidden_size=1024, cross_hidden_size=1152, num_heads=16, num_key_value_heads=16,
              intermediate_size=4096, output_size=3584, dropout=0.0, attention_dropout=0.0)
TOKENS_PER_FRAME = 729


def measure(frames: int, device: str, dtype: str, repeats: int) -> dict:
    """Runs in the child process."""
    import resource

    import torch

    from videoccam.configuration import CCAMProjectorConfig
    from videoccam.projector import CCAMProjector

    torch.manual_seed(0)
    dt = getattr(torch, dtype)
    proj = CCAMProjector(CCAMProjectorConfig(**CONFIG)).to(device, dt).eval()
    visual = torch.randn(frames, TOKENS_PER_FRAME, CONFIG["cross_hidden_size"], device=device, dtype=dt)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    times = []
    with torch.no_grad():
        for _ in range(repeats):
            sync()
            start = time.perf_counter()
            proj(visual, [frames])
            sync()
            times.append(time.perf_counter() - start)
    peak = (torch.cuda.max_memory_allocated() / 2**20 if device.startswith("cuda")
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return {"frames": frames, "seconds": min(times), "peak_mib": peak,
            "base_mib": base_rss / 1024}


def run_child(args: argparse.Namespace, frames: int) -> dict | None:
    cmd = [sys.executable, __file__, "--child", str(frames), "--device", args.device, "--dtype", args.dtype,
           "--repeats", str(args.repeats)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        print(f"  T={frames} failed: {proc.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, nargs="+", default=[16, 32, 96])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--child", type=int, metavar="FRAMES", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child, args.device, args.dtype, args.repeats)))
        return
    rows = {}
    for t in args.frames:
        print(f"measuring T={t} ...", file=sys.stderr, flush=True)
        rows[t] = run_child(args, t)
    print(f"\nCCAM projector forward, Q=1024, P=729, Dv=1152, D=1024, {args.device} {args.dtype}\n")
    print("| T | time (ms) | peak memory (MiB) |")
    print("|---|---|---|")
    for t, r in rows.items():
        if r is not None:
            print(f"| {t} | {1000 * r['seconds']:.1f} | {r['peak_mib']:.0f} |")


if __name__ == "__main__":
    main()
