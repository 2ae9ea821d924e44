"""CCAM projector: streaming (production) path vs dense-mask (reference) path.

Released Video-CCAM size (reference/video-ccam.md 1.2): Q=1024 queries of width 1024, 16 heads,
SwiGLU 4096, SigLIP tokens P=729 x Dv=1152 per frame, output 3584; one block.
Each measurement runs in a fresh subprocess (peak RSS is per process), forward only, no grad.

    python bench/projector.py                      # CPU fp32: T = 16, 32, 96
    python bench/projector.py --frames 16 96 --device cuda --dtype bfloat16

Prints a markdown table and the streaming/dense ratios for each T measured by both paths.
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


def measure(path: str, frames: int, device: str, dtype: str, repeats: int) -> dict:
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
            proj(visual, [frames], path=path)
            sync()
            times.append(time.perf_counter() - start)
    peak = (torch.cuda.max_memory_allocated() / 2**20 if device.startswith("cuda")
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return {"path": path, "frames": frames, "seconds": min(times), "peak_mib": peak,
            "base_mib": base_rss / 1024}


def run_child(args: argparse.Namespace, path: str, frames: int) -> dict | None:
    cmd = [sys.executable, __file__, "--child", path, str(frames), "--device", args.device, "--dtype", args.dtype,
           "--repeats", str(args.repeats)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        print(f"  {path} T={frames} failed: {proc.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, nargs="+", default=[16, 32, 96])
    parser.add_argument("--dense-max-frames", type=int, default=96,
                        help="skip the dense path above this T (its [H, Q, T*P] scores may not fit)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--child", nargs=2, metavar=("PATH", "FRAMES"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child[0], int(args.child[1]), args.device, args.dtype, args.repeats)))
        return
    rows = {}
    for t in args.frames:
        for path in ("streaming", "dense"):
            if path == "dense" and t > args.dense_max_frames:
                continue
            print(f"measuring {path} T={t} ...", file=sys.stderr, flush=True)
            rows[(path, t)] = run_child(args, path, t)
    print(f"\nCCAM projector forward, Q=1024, P=729, Dv=1152, D=1024, {args.device} {args.dtype}\n")
    print("| T | path | time (ms) | peak memory (MiB) | streaming/dense time | streaming/dense memory |")
    print("|---|---|---|---|---|---|")
    for t in args.frames:
        fast, dense = rows.get(("streaming", t)), rows.get(("dense", t))
        for r in (fast, dense):
            if r is None:
                continue
            ratio_t = ratio_m = ""
            if r is fast and dense is not None:
                ratio_t = f"{fast['seconds'] / dense['seconds']:.2f}"
                ratio_m = f"{fast['peak_mib'] / dense['peak_mib']:.2f}"
            print(f"| {t} | {r['path']} | {1000 * r['seconds']:.1f} | {r['peak_mib']:.0f} | {ratio_t} | {ratio_m} |")


if __name__ == "__main__":
    main()
