"""Benchmark: the training frame cache (:class:`~videoccam.data.FrameCache`), per sample and per clip of memory.

    PYTHONPATH=src python bench/frame_cache.py                        # a fresh 600-clip synthetic world
    PYTHONPATH=src python bench/frame_cache.py --data data/synth-where --clips 2000

Loads the first ``--clips`` samples of a ``videoccam synth`` folder's ``train.json`` through
:class:`~videoccam.data.LlavaDataset` (16 uniform frames, the bundled model's processor, 32x32
pixels) three ways, one epoch each, ``--repeats`` times, taking turns, and prints the median time
per sample, the memory the cache keeps per clip, and the speed-up over decoding:

* ``decode``: no frame cache; every sample decodes its clip and preprocesses the frames;
* ``cache, float pixels``: the processor's float32 pixels cached (``FrameCache(float_pixels=True)``,
  what the cache keeps for a
  processor whose resize does not round-trip through uint8 exactly; the cache before kept these
  and the decoded frames besides);
* ``cache, uint8 resize``: the processor's resized frames cached as uint8 (the default), each sample
  rescaling and normalising them.

The caches are filled first by ``FrameCache.warm_pixels`` with ``--workers`` processes (its time is
printed too), and every cached sample is checked against the decoded one, bit for bit.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import torch

from videoccam.data import FrameCache, LlavaDataset, read_records
from videoccam.synth import generate_dataset


def epoch_seconds(dataset: LlavaDataset) -> float:
    t0 = time.perf_counter()
    for i in range(len(dataset)):
        dataset[i]
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, help="a `videoccam synth` folder (default: a fresh one in a temp folder)")
    parser.add_argument("--clips", type=int, default=600, help="training samples to load (default 600)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2, help="processes that warm the cache")
    args = parser.parse_args()
    torch.set_num_threads(1)

    from transformers import AutoProcessor

    from videoccam.assets import default_model_path

    processor = AutoProcessor.from_pretrained(default_model_path())
    with tempfile.TemporaryDirectory() as tmp:
        root = args.data
        if root is None:
            root = Path(tmp) / "world"
            generate_dataset(root, num_train=args.clips, num_test=6, seed=0, workers=args.workers)
        subset = Path(tmp) / "train.jsonl"
        records = read_records(root / "train.json")[:args.clips]
        subset.write_text("".join(json.dumps(r) + "\n" for r in records))
        clips = [root / r["video"] for r in records]

        def dataset(cache: FrameCache | None) -> LlavaDataset:
            return LlavaDataset(subset, processor, media_root=root, num_frames=16, sample="uniform",
                                frame_cache=cache)

        plain = dataset(None)
        caches: dict[str, FrameCache] = {}
        warm_s: dict[str, float] = {}
        for name, float_pixels in (("cache, float pixels", True), ("cache, uint8 resize", False)):
            caches[name] = FrameCache(float_pixels=float_pixels)
            t0 = time.perf_counter()
            caches[name].warm_pixels(clips, 16, "uniform", processor, workers=args.workers)
            warm_s[name] = time.perf_counter() - t0
        for name, cache in caches.items():  # the cache gives the decoded samples' pixels exactly
            cached = dataset(cache)
            for i in range(0, len(records), max(1, len(records) // 50)):
                assert torch.equal(cached[i].pixel_values, plain[i].pixel_values), (name, i)

        times: dict[str, list[float]] = {"decode": [], **{name: [] for name in caches}}
        for _ in range(args.repeats):
            times["decode"].append(epoch_seconds(plain))
            for name, cache in caches.items():
                times[name].append(epoch_seconds(dataset(cache)))

    n = len(records)
    base = statistics.median(times["decode"]) / n
    print(f"{n} samples of {root}, 16 frames, one thread; median of {args.repeats} epochs\n")
    print("| method | ms per sample | cache per clip | cache for 60000 clips | warm | speed-up |")
    print("|---|---|---|---|---|---|")
    for name, runs in times.items():
        per = statistics.median(runs) / n
        if name == "decode":
            kept, total, warm = "-", "-", "-"
        else:
            size = caches[name].nbytes / len(caches[name])
            kept, total, warm = f"{size / 1e3:.0f} KB", f"{size * 60000 / 1e9:.1f} GB", f"{warm_s[name]:.1f} s"
        print(f"| {name} | {per * 1e3:.2f} | {kept} | {total} | {warm} | {base / per:.2f}x |")


if __name__ == "__main__":
    main()
