"""Benchmark: time to first token against frames, CCAM's fixed Q tokens vs the peers' token budgets.

    PYTHONPATH=src python bench/frames_scaling.py                          # CPU, scaled configuration
    PYTHONPATH=src python bench/frames_scaling.py --device cuda            # released sizes, bf16, SDPA

At T frames, with the same vision encoder and the same LLM (random weights), three ways to feed the LLM:

* ``ccam``: the CCAM projector, Q visual tokens whatever T (this library's model);
* ``all-tokens``: LLaVA-style, T x P patch tokens through a 2-layer MLP projector;
* ``pooled``: LLaVA-Video style, each frame's patch grid 2x2 average-pooled (T x P/4 tokens), then the MLP.

Each row runs in a fresh process (so its peak memory is its own): vision encoder, projector, then
the LLM prefill of the visual tokens plus a 32-token text prompt up to the first token's logits;
the median of ``--repeats`` after a warm-up. Peak memory is CUDA's max allocated on a GPU, the
process's peak RSS on CPU (weights included). A row whose LLM input exceeds ``--max-llm-tokens``
is not run (CPU), and one that runs out of memory says so: both are results. The baselines'
projectors are written here, not in the library.

Shapes: ``--device cuda`` uses SigLIP-SO400M/14-384 (27x27 = 729 patches, width 1152, 27 layers)
and a Qwen2.5-7B-shaped LLM (3584 wide, 28 layers, 28/4 heads, 18944 MLP), Q = 1024, bf16. The CPU
configuration is scaled so all three fit: a 4-layer 256-wide SigLIP at 112 px / patch 14 (8x8 = 64
patches), a 4-layer 512-wide Qwen2 LLM, Q = 96 (the released Q/P ratio, 1024/729 = 1.4), float32.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

METHODS = ("ccam", "all-tokens", "pooled")
TEXT_TOKENS = 32
SCALES = {
    "cpu": {"image": 112, "patch": 14, "vision": dict(hidden_size=256, intermediate_size=1024, num_hidden_layers=4,
                                                      num_attention_heads=4),
            "text": dict(hidden_size=512, intermediate_size=1408, num_hidden_layers=4, num_attention_heads=8,
                         num_key_value_heads=2, vocab_size=32000),
            "q": 96, "projector": dict(hidden_size=256, num_heads=4, num_key_value_heads=4, intermediate_size=1024,
                                       num_layers=2)},
    "released": {"image": 384, "patch": 14, "vision": dict(hidden_size=1152, intermediate_size=4304,
                                                           num_hidden_layers=27, num_attention_heads=16),
                 "text": dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
                              num_attention_heads=28, num_key_value_heads=4, vocab_size=152064),
                 "q": 1024, "projector": dict(hidden_size=1024, num_heads=16, num_key_value_heads=16,
                                              intermediate_size=4096, num_layers=2)},
    "micro": {"image": 28, "patch": 14, "vision": dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                                       num_attention_heads=2),
              "text": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=1, num_attention_heads=4,
                           num_key_value_heads=2, vocab_size=1000),
              "q": 4, "projector": dict(hidden_size=32, num_heads=4, num_key_value_heads=4, intermediate_size=64,
                                        num_layers=1)},
}


def build(scale: str, device: torch.device, dtype: torch.dtype):
    """The CCAM model at ``scale`` (random weights), built on ``device``."""
    from videoccam.configuration import VideoCCAMConfig
    from videoccam.modeling import VideoCCAMForConditionalGeneration

    s = SCALES[scale]
    config = VideoCCAMConfig(
        vision_config={"model_type": "siglip_vision_model", "image_size": s["image"], "patch_size": s["patch"],
                       **s["vision"]},
        text_config={"model_type": "qwen2", "max_position_embeddings": 131072, **s["text"]},
        projector_config={"num_query": s["q"], "cross_hidden_size": s["vision"]["hidden_size"],
                          "output_size": s["text"]["hidden_size"], **s["projector"]},
        image_token_id=1, video_token_id=2)
    config.text_config._attn_implementation = "sdpa"
    torch.manual_seed(0)
    with torch.device(device):
        model = VideoCCAMForConditionalGeneration(config).to(dtype).eval()
    return model


def visual_tokens(model, method: str, feats: torch.Tensor, mlp: nn.Module) -> torch.Tensor:
    """``[T, P, Dv]`` vision features -> ``[1, N, D]`` LLM inputs by ``method``."""
    t, p, dv = feats.shape
    if method == "ccam":
        return model.projector(feats, [t]).embeds  # [1, Q, D]
    if method == "pooled":
        g = int(p ** 0.5)
        grid = feats.transpose(1, 2).reshape(t, dv, g, g)  # [T, Dv, g, g]
        feats = F.avg_pool2d(grid, 2, ceil_mode=True).flatten(2).transpose(1, 2)  # [T, ceil(g/2)^2, Dv]
    return mlp(feats.reshape(1, -1, dv))  # [1, T*P', D]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


@torch.no_grad()
def run_row(scale: str, method: str, frames: int, device: torch.device, dtype: torch.dtype, repeats: int) -> dict:
    model = build(scale, device, dtype)
    s = SCALES[scale]
    dv, d = s["vision"]["hidden_size"], s["text"]["hidden_size"]
    mlp = nn.Sequential(nn.Linear(dv, d), nn.GELU(), nn.Linear(d, d)).to(device, dtype)
    pixels = torch.randn(frames, 3, s["image"], s["image"], device=device, dtype=dtype)
    text = torch.randint(3, s["text"]["vocab_size"], (1, TEXT_TOKENS), device=device)
    times: dict[str, list[float]] = {"vision": [], "projector": [], "prefill": []}
    length = 0
    for k in range(repeats + 1):  # the first is a warm-up
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        sync(device)
        t0 = time.perf_counter()
        feats = model.encode_frames(pixels)  # [T, P, Dv]
        sync(device)
        t1 = time.perf_counter()
        visual = visual_tokens(model, method, feats, mlp)  # [1, N, D]
        sync(device)
        t2 = time.perf_counter()
        embeds = torch.cat([visual.to(dtype), model.get_input_embeddings()(text)], dim=1)  # [1, N + 32, D]
        length = embeds.shape[1]
        model.language_model(inputs_embeds=embeds, use_cache=True, logits_to_keep=1)
        sync(device)
        t3 = time.perf_counter()
        if k:
            for name, value in zip(times, (t1 - t0, t2 - t1, t3 - t2), strict=True):
                times[name].append(value)
    row = {name: statistics.median(v) for name, v in times.items()}
    row["ttft"] = row["vision"] + row["projector"] + row["prefill"]
    row["llm_tokens"] = length
    if device.type == "cuda":
        row["peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
    else:
        row["peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return row


def llm_tokens(scale: str, method: str, frames: int) -> int:
    s = SCALES[scale]
    g = s["image"] // s["patch"]
    per_frame = {"ccam": None, "all-tokens": g * g, "pooled": ((g + 1) // 2) ** 2}[method]
    return (s["q"] if per_frame is None else frames * per_frame) + TEXT_TOKENS


def row_in_subprocess(args: argparse.Namespace, method: str, frames: int) -> dict:
    cmd = [sys.executable, __file__, "--row", method, str(frames), "--device", args.device, "--scale", args.scale,
           "--repeats", str(args.repeats)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=args.row_timeout)
    if done.returncode != 0:
        oom = "out of memory" in done.stderr.lower() or done.returncode in (-9, 137)
        return {"error": "out of memory" if oom else done.stderr.strip().splitlines()[-1][:200]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def table(rows: list[dict], frames: list[int]) -> str:
    lines = ["| T | method | LLM input tokens | vision (s) | projector (s) | prefill (s) | time to first token (s) | "
             "peak memory (MB) |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['frames']} | {r['method']} | {r['llm_tokens']} | {r['error']} | | | | |")
        else:
            lines.append(f"| {r['frames']} | {r['method']} | {r['llm_tokens']} | {r['vision']:.3f} | "
                         f"{r['projector']:.4f} | {r['prefill']:.3f} | {r['ttft']:.3f} | {r['peak_mb']:.0f} |")
    lines += ["", "| T | CCAM / all-tokens (time to first token) | CCAM / pooled |", "|---|---|---|"]
    by = {(r["method"], r["frames"]): r for r in rows}
    for t in frames:
        ccam = by.get(("ccam", t), {})
        cells = []
        for other in ("all-tokens", "pooled"):
            o = by.get((other, t), {})
            cells.append(f"{ccam['ttft'] / o['ttft']:.3f}" if "ttft" in ccam and "ttft" in o else
                         f"({o.get('error', 'n/a')})")
        lines.append(f"| {t} | {cells[0]} | {cells[1]} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--scale", default=None, choices=list(SCALES), help="default: released on cuda, cpu on cpu")
    parser.add_argument("--frames", default="8,16,32,64,96")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--max-llm-tokens", type=int, default=None,
                        help="rows with a longer LLM input are not run (default: 8192 on CPU, none on GPU)")
    parser.add_argument("--row-timeout", type=float, default=600)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--row", nargs=2, metavar=("METHOD", "T"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.scale = args.scale or ("released" if args.device == "cuda" else "cpu")
    device = torch.device(args.device)
    dtype = torch.bfloat16 if args.device == "cuda" else torch.float32
    if args.row:
        print(json.dumps(run_row(args.scale, args.row[0], int(args.row[1]), device, dtype, args.repeats)))
        return {}
    cap = args.max_llm_tokens if args.max_llm_tokens is not None else (8192 if args.device == "cpu" else None)
    frames = [int(f) for f in args.frames.split(",")]
    rows = []
    for t in frames:
        for method in METHODS:
            n = llm_tokens(args.scale, method, t)
            if cap is not None and n > cap:
                row = {"error": f"not run: {n} LLM tokens > --max-llm-tokens {cap}"}
            else:
                row = row_in_subprocess(args, method, t)
            rows.append({"frames": t, "method": method, "llm_tokens": n, **row})
            print(f"T={t} {method}: {row}", file=sys.stderr, flush=True)
    s = SCALES[args.scale]
    header = (f"# frames scaling: {args.scale} scale on {args.device} ({platform.processor() or platform.machine()}, "
              f"torch {torch.__version__}, {torch.get_num_threads()} threads, {dtype}); vision {s['image']} px / "
              f"patch {s['patch']} ({(s['image'] // s['patch']) ** 2} patches), width {s['vision']['hidden_size']}; "
              f"LLM width {s['text']['hidden_size']} x {s['text']['num_hidden_layers']} layers; Q = {s['q']}")
    print(header)
    print(table(rows, frames))
    result = {"header": header, "scale": args.scale, "device": args.device, "rows": rows}
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    main()
