"""Benchmark: time to first token as the number of frames T grows, CCAM vs all-tokens vs pooled.

Three ways to hand T frames to the same LLM, with the same vision encoder, random weights:

* ``ccam``: the real :class:`VideoCCAMForConditionalGeneration` (SigLIP -> CCAM projector -> LLM):
  Q visual tokens whatever T is.
* ``all-tokens`` (LLaVA style, written here): every patch token of every frame, T x P, through a
  2-layer GELU MLP projector (LLaVA's ``mlp2x_gelu``) straight into the LLM.
* ``pooled`` (LLaVA-Video style, written here): the same MLP, then ``F.avg_pool2d`` 2x2 (ceil mode) on
  each frame's patch grid, as LLaVA-Video pools after its projector: T x ceil(g/2)^2 tokens
  (27x27 -> 14x14 = 196 at the released shape; 16x16 -> 8x8 at the CPU scale).

Time to first token (TTFT) = vision encoder + projector (+ pooling) + LLM prefill of the visual
tokens and a short text prompt, with the KV cache built and the first token's logits produced
(``logits_to_keep=1``). Each stage is timed separately (``torch.cuda.synchronize()`` around stages on
GPU); the row reports the best of ``--repeats`` timed runs after ``--warmup`` untimed ones, and with
``--rounds`` > 1 the best of that many such measurements, the rows taking turns.

    PYTHONPATH=src python bench/frames_scaling.py                        # CPU scale, fp32
    PYTHONPATH=src python bench/frames_scaling.py --device cuda          # released sizes, bf16 (H100)
    PYTHONPATH=src python bench/frames_scaling.py --scale tiny --device cpu --dtype bfloat16  # cuda code path

Peak memory: on CUDA ``torch.cuda.max_memory_allocated`` (reset before each row; weights included)
and its increase over the allocation before the row. On CPU each row runs in a fresh subprocess
that reads its ``ru_maxrss`` after the timed runs; the increase is that peak minus the process's
resident set (``/proc/self/statm``) just before the warmup run, i.e. after imports, model and inputs.
``--in-process`` (used by the test) skips the subprocesses and reports no CPU memory.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

METHODS = ("ccam", "all-tokens", "pooled")
TEXT_BEFORE, TEXT_AFTER = 8, 24  # text tokens around the visual tokens: a system/user header and a question
# fmt: off
SCALES: dict[str, dict] = {
    # SigLIP-SO400M/14-384 (hidden_states[-2]), CCAM as released (Q=1024), a Qwen2.5-7B-shaped LLM
    "released": dict(
        vision=dict(image_size=384, patch_size=14, hidden_size=1152, intermediate_size=4304, num_hidden_layers=27,
                    num_attention_heads=16),
        projector=dict(num_query=1024, hidden_size=1024, num_heads=16, num_key_value_heads=16, intermediate_size=4096),
        text=dict(hidden_size=3584, num_hidden_layers=28, num_attention_heads=28, num_key_value_heads=4,
                  intermediate_size=18944, vocab_size=152064, max_position_embeddings=131072),
    ),
    # what all three methods run on a 2-core CPU at T <= 96: 16x16 = 256 patches per frame, Q = 256
    "cpu": dict(
        vision=dict(image_size=224, patch_size=14, hidden_size=192, intermediate_size=768, num_hidden_layers=4,
                    num_attention_heads=3),
        projector=dict(num_query=256, hidden_size=128, num_heads=4, num_key_value_heads=4, intermediate_size=512),
        text=dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
                  intermediate_size=1024, vocab_size=16384, max_position_embeddings=32768),
    ),
    # the test's micro scale: 4x4 = 16 patches per frame, Q = 8
    "tiny": dict(
        vision=dict(image_size=32, patch_size=8, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                    num_attention_heads=2),
        projector=dict(num_query=8, hidden_size=32, num_heads=4, num_key_value_heads=2, intermediate_size=64),
        text=dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                  intermediate_size=128, vocab_size=512, max_position_embeddings=4096),
    ),
}
# fmt: on


def grid(scale: dict) -> int:
    """Patches per side of a frame: SigLIP truncates 384/14 to 27."""
    return scale["vision"]["image_size"] // scale["vision"]["patch_size"]


def visual_tokens(method: str, scale: dict, frames: int) -> int:
    """Visual tokens the LLM gets for ``frames`` frames."""
    side = grid(scale)
    if method == "ccam":
        return scale["projector"]["num_query"]
    if method == "all-tokens":
        return frames * side * side
    return frames * ((side + 1) // 2) ** 2  # 2x2 average pooling, ceil mode


def build_config(scale: dict):
    from videoccam.configuration import VideoCCAMConfig

    vocab = scale["text"]["vocab_size"]
    vision = {"model_type": "siglip_vision_model", **scale["vision"]}
    text = {"model_type": "qwen2", "tie_word_embeddings": False, "pad_token_id": 0, "eos_token_id": 1,
            **scale["text"]}
    projector = {"cross_hidden_size": vision["hidden_size"], "output_size": text["hidden_size"], "dropout": 0.0,
                 "attention_dropout": 0.0, **scale["projector"]}
    config = VideoCCAMConfig(vision_config=vision, text_config=text, projector_config=projector,
                             image_token_id=vocab - 2, video_token_id=vocab - 1)
    for sub in (config, config.vision_config, config.text_config):
        sub._attn_implementation = "sdpa"
    return config


class Models:
    """The CCAM model and, written here, the baselines' projector: all on one vision tower and one LLM."""

    def __init__(self, scale: dict, device: str, dtype, seed: int = 0) -> None:
        import torch
        from torch import nn

        from videoccam.modeling import VideoCCAMForConditionalGeneration

        self.scale, self.device, self.dtype = scale, torch.device(device), dtype
        torch.manual_seed(seed)
        previous = torch.get_default_dtype()
        torch.set_default_dtype(dtype)
        try:
            with torch.device(device):  # weights are created (and initialised) on the device, in dtype
                self.ccam = VideoCCAMForConditionalGeneration(build_config(scale)).eval()
                dv, d = scale["vision"]["hidden_size"], scale["text"]["hidden_size"]
                # LLaVA's mlp2x_gelu connector, one per baseline
                self.mlp = {m: nn.Sequential(nn.Linear(dv, d), nn.GELU(), nn.Linear(d, d)).eval()
                            for m in ("all-tokens", "pooled")}
        finally:
            torch.set_default_dtype(previous)

    def inputs(self, frames: int, seed: int = 0):
        """``pixel_values [T, 3, H, W]`` and text ids ``[1, TEXT_BEFORE]``, ``[1, TEXT_AFTER]``."""
        import torch

        size = self.scale["vision"]["image_size"]
        gen = torch.Generator().manual_seed(seed)
        pixels = torch.randn(frames, 3, size, size, generator=gen).to(self.device, self.dtype)
        text = torch.randint(2, self.scale["text"]["vocab_size"] - 2, (1, TEXT_BEFORE + TEXT_AFTER), generator=gen)
        text = text.to(self.device)
        return pixels, text[:, :TEXT_BEFORE], text[:, TEXT_BEFORE:]

    def project(self, method: str, feats):
        """Vision features ``[T, P, Dv]`` -> what the LLM gets: a ProjectorOutput (ccam) or ``[T*P', D]``."""
        import torch.nn.functional as F

        if method == "ccam":
            return self.ccam.projector(feats, [feats.shape[0]])  # embeds [1, Q, D]
        x = self.mlp[method](feats)  # [T, P, D]
        if method == "all-tokens":
            return x.reshape(-1, x.shape[-1])  # [T*P, D]
        side = grid(self.scale)
        x = x.transpose(1, 2).reshape(x.shape[0], -1, side, side)  # [T, D, g, g]
        x = F.avg_pool2d(x, kernel_size=2, ceil_mode=True)  # [T, D, ceil(g/2), ceil(g/2)]
        return x.flatten(2).transpose(1, 2).reshape(-1, x.shape[1])  # [T*ceil(g/2)^2, D]

    def prefill(self, method: str, projected, before, after):
        """LLM prefill (KV cache built) -> the first token's logits ``[1, 1, V]``; also the input length."""
        import torch

        if method == "ccam":
            q = projected.embeds.shape[1]
            ids = torch.cat([before, torch.full((1, q), self.ccam.config.video_token_id, device=before.device),
                             after], dim=1)  # [1, TEXT_BEFORE + Q + TEXT_AFTER]
            out = self.ccam(input_ids=ids, visual_embeds=projected, use_cache=True, logits_to_keep=1)
            return out.logits, ids.shape[1]
        embed = self.ccam.get_input_embeddings()
        embeds = torch.cat([embed(before), projected[None].to(self.dtype), embed(after)], dim=1)  # [1, S, D]
        out = self.ccam.language_model(inputs_embeds=embeds, use_cache=True, logits_to_keep=1)
        return out.logits, embeds.shape[1]


def _rss_mib() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def cpu_name() -> str:
    """The CPU's model name from /proc/cpuinfo (``platform.processor()`` is empty on Linux)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def measure_row(models: Models, method: str, frames: int, repeats: int, warmup: int = 1) -> dict:
    """``warmup`` untimed runs, then ``repeats`` timed runs; the best run's TTFT and its stage split."""
    import torch

    cuda = models.device.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    pixels, before, after = models.inputs(frames)
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated() / 2**20
    else:
        base = _rss_mib()
    runs = []
    with torch.inference_mode():
        for _ in range(warmup + repeats):
            sync()
            t0 = time.perf_counter()
            feats = models.ccam.encode_frames(pixels)  # [T, P, Dv]
            sync()
            t1 = time.perf_counter()
            projected = models.project(method, feats)
            sync()
            t2 = time.perf_counter()
            logits, length = models.prefill(method, projected, before, after)
            sync()
            t3 = time.perf_counter()
            runs.append({"vision_s": t1 - t0, "projector_s": t2 - t1, "prefill_s": t3 - t2, "ttft_s": t3 - t0})
            del feats, projected, logits
    best = min(runs[warmup:], key=lambda r: r["ttft_s"])
    if cuda:
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB -> MiB on Linux
    return {"method": method, "frames": frames, "status": "ok", "llm_tokens": length, **best,
            "peak_mib": peak, "peak_increase_mib": peak - base}


def run_rows(args: argparse.Namespace, scale: dict) -> list[dict]:
    import torch

    dtype = getattr(torch, args.dtype)
    isolate = args.device == "cpu" and not args.in_process
    models = None if isolate else Models(scale, args.device, dtype)
    best: dict[tuple[str, int], dict] = {}
    for round_ in range(args.rounds):  # rows take turns, so a busy spell of a shared machine hits all alike
        for frames in args.frames:
            for method in METHODS:
                row = measure_one(args, models, isolate, scale, method, frames, round_)
                kept = best.get((method, frames))
                if kept is None or (row["status"] == "ok" and (kept["status"] != "ok" or
                                                               row["ttft_s"] < kept["ttft_s"])):
                    best[(method, frames)] = row
    return list(best.values())


def measure_one(args: argparse.Namespace, models: Models | None, isolate: bool, scale: dict, method: str,
                frames: int, round_: int) -> dict:
    """One row once: its measurement, or why it did not run (over the token cap, OOM, a failed child)."""
    import torch

    length = visual_tokens(method, scale, frames) + TEXT_BEFORE + TEXT_AFTER
    row = {"method": method, "frames": frames, "llm_tokens": length}
    print(f"round {round_ + 1}/{args.rounds}: {method} T={frames} ({length} LLM tokens) ...", file=sys.stderr,
          flush=True)
    if args.max_llm_tokens and length > args.max_llm_tokens:
        return {**row, "status": f"over cap ({length} > --max-llm-tokens {args.max_llm_tokens}), not run"}
    if isolate:
        return run_child(args, method, frames, row)
    try:
        row = measure_row(models, method, frames, args.repeats, args.warmup)
    except torch.OutOfMemoryError as err:
        return {**row, "status": f"OOM ({str(err).splitlines()[0][:80]})"}
    if not args.keep_memory:
        row.update(peak_mib=None, peak_increase_mib=None)
    return row


def run_child(args: argparse.Namespace, method: str, frames: int, row: dict) -> dict:
    cmd = [sys.executable, __file__, "--child", method, str(frames), "--scale", args.scale, "--device", args.device,
           "--dtype", args.dtype, "--repeats", str(args.repeats), "--warmup", str(args.warmup)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no stderr"])[-1][:100]
        why = "killed (out of memory?)" if proc.returncode < 0 else f"failed: {last}"
        return {**row, "status": why}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _cell(value, fmt: str) -> str:
    return "n/a" if value is None else format(value, fmt)


def table(rows: list[dict]) -> str:
    """Markdown: one line per (T, method), then the CCAM/baseline TTFT ratios per T."""
    lines = ["| T | method | LLM input tokens | TTFT (s) | vision (s) | projector (s) | prefill (s) "
             "| peak memory (MiB) | peak increase (MiB) | status |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ok = r["status"] == "ok"
        cells = [str(r["frames"]), r["method"], str(r["llm_tokens"])]
        cells += [_cell(r.get(k) if ok else None, ".3f") for k in ("ttft_s", "vision_s", "projector_s", "prefill_s")]
        cells += [_cell(r.get(k) if ok else None, ".0f") for k in ("peak_mib", "peak_increase_mib")]
        cells.append(r["status"])
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "| T | CCAM/all-tokens TTFT | CCAM/pooled TTFT |", "|---|---|---|"]
    for frames, ratio in ratios(rows).items():
        lines.append(f"| {frames} | {_cell(ratio['all-tokens'], '.3f')} | {_cell(ratio['pooled'], '.3f')} |")
    return "\n".join(lines)


def ratios(rows: list[dict]) -> dict[int, dict[str, float | None]]:
    """TTFT of CCAM over each baseline's, per T (None where either row did not run)."""
    ttft = {(r["method"], r["frames"]): r["ttft_s"] for r in rows if r["status"] == "ok"}
    out = {}
    for frames in dict.fromkeys(r["frames"] for r in rows):
        ccam = ttft.get(("ccam", frames))
        out[frames] = {b: (ccam / ttft[(b, frames)] if ccam and (b, frames) in ttft else None)
                       for b in ("all-tokens", "pooled")}
    return out


def header(args: argparse.Namespace, scale: dict) -> str:
    v, p, t = scale["vision"], scale["projector"], scale["text"]
    side, pooled = grid(scale), (grid(scale) + 1) // 2
    return (
        f"frames scaling, scale={args.scale}, device={args.device}, dtype={args.dtype}, SDPA, random weights, "
        f"best of {args.rounds} round(s) x {args.repeats} run(s), {args.warmup} warmup each\n"
        f"vision: SigLIP {v['image_size']}px/patch {v['patch_size']} -> {side}x{side}={side * side} patches, "
        f"hidden {v['hidden_size']}, {v['num_hidden_layers']} layers (hidden_states[-2])\n"
        f"CCAM: Q={p['num_query']}, width {p['hidden_size']}, {p['num_heads']} heads; baselines: 2-layer GELU MLP, "
        f"pooled {pooled}x{pooled}={pooled * pooled} tokens/frame\n"
        f"LLM: Qwen2, hidden {t['hidden_size']}, {t['num_hidden_layers']} layers, {t['num_attention_heads']} heads / "
        f"{t['num_key_value_heads']} kv, intermediate {t['intermediate_size']}, vocab {t['vocab_size']}; "
        f"text prompt {TEXT_BEFORE}+{TEXT_AFTER} tokens"
    )


def targets(rows: list[dict]) -> str:
    """The issue's targets at the largest T: CCAM TTFT <= 1/10 of all-tokens and <= 1/2 of pooled."""
    frames = max(r["frames"] for r in rows)
    ratio = ratios(rows)[frames]
    parts = []
    for base, limit in (("all-tokens", 0.1), ("pooled", 0.5)):
        got = ratio[base]
        verdict = "not measured" if got is None else ("met" if got <= limit else "NOT met")
        parts.append(f"CCAM/{base} at T={frames}: {_cell(got, '.3f')} (target <= {limit}) {verdict}")
    return "targets (stated for the released shape on GPU): " + "; ".join(parts)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--scale", choices=sorted(SCALES), help="default: released on cuda, cpu on cpu")
    parser.add_argument("--dtype", help="default: bfloat16 on cuda, float32 on cpu")
    parser.add_argument("--frames", default="8,16,32,64,96", help="comma-separated T values")
    parser.add_argument("--repeats", type=int, help="timed runs per row (default 3 cuda, 2 cpu)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="measure every row this many times, rows taking turns; the best round is kept")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs per row before the timed ones")
    parser.add_argument("--max-llm-tokens", type=int,
                        help="rows whose LLM input is longer are not run (default: 32768 on cpu, none on cuda)")
    parser.add_argument("--in-process", action="store_true", help="cpu: no subprocess per row (no memory column)")
    parser.add_argument("--out", type=Path, help="write rows, config, device and versions as JSON here")
    parser.add_argument("--child", nargs=2, metavar=("METHOD", "FRAMES"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    cuda = args.device.startswith("cuda")
    args.scale = args.scale or ("released" if cuda else "cpu")
    args.dtype = args.dtype or ("bfloat16" if cuda else "float32")
    args.repeats = args.repeats or (3 if cuda else 2)
    if args.max_llm_tokens is None:
        args.max_llm_tokens = 0 if cuda else 32768
    args.frames = [int(f) for f in args.frames.split(",")]
    args.keep_memory = cuda  # in-process CPU rows share one process: their ru_maxrss is not theirs
    return args


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark, print the table; returns what ``--out`` writes."""
    args = parse_args(argv)
    scale = SCALES[args.scale]
    if args.child:
        import torch

        models = Models(scale, args.device, getattr(torch, args.dtype))
        print(json.dumps(measure_row(models, args.child[0], int(args.child[1]), args.repeats, args.warmup)))
        return {}
    import torch
    import transformers

    rows = run_rows(args, scale)
    device = torch.cuda.get_device_name() if args.device.startswith("cuda") else f"{cpu_name()}, {os.cpu_count()} cores"
    print("\n" + header(args, scale) + "\n")
    print(table(rows))
    print("\n" + targets(rows))
    result = {"rows": rows, "config": {"scale": args.scale, **scale, "text_tokens": TEXT_BEFORE + TEXT_AFTER},
              "device": device, "cpu_count": os.cpu_count(), "dtype": args.dtype, "repeats": args.repeats,
              "rounds": args.rounds, "warmup": args.warmup, "torch": torch.__version__,
              "transformers": transformers.__version__}
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        main()
