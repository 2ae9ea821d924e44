"""Benchmark: sampled-frame decoding, ours (PyAV, keyframe seeking) vs decord vs decode-everything.

    PYTHONPATH=src python bench/decode.py --cache /tmp/videoccam-bench        # all, 5 repeats
    PYTHONPATH=src python bench/decode.py --cache /tmp/videoccam-bench --calibrate

Generates (once, into --cache; a temporary folder when not given) synthetic videos made with
``videoccam.testing.media`` (4x4 coloured blocks, ``preset=ultrafast``):

* ``h264_720p_10min.mp4``: 1280x720, 30 fps, 10 min (18,000 frames), a keyframe every 250 frames;
* ``h264_1080p_2min.mp4``: 1920x1080, 30 fps, 2 min, x264's default keyframe placement;
* ``vp9_720p_1min.webm``: 1280x720, 30 fps, 1 min, VP9, a keyframe every 120 frames.

For 16, 32 and 96 uniform frames, each method runs in a fresh Python process (so peak RSS is its
own) ``--repeats`` times, the methods taking turns; the table shows the median decode wall time
(imports excluded) and the median peak RSS of the process. Methods:

* ``ours``: ``load_video(path, num_frames=T)`` (default timeout, so the worker thread is included);
* ``ours@384``: the same with ``size=384``, resized inside FFmpeg's converter;
* ``decord``: ``VideoReader(path, ctx=cpu(0)).get_batch(indices).asnumpy()``, same indices;
* ``naive``: PyAV decodes every frame in order (FFmpeg threads on), converting only the wanted ones,
  and stops after the last wanted frame.

``--calibrate`` measures what a seek costs in decoded-frame equivalents, the number behind
``SEEK_MIN_SAVING`` in ``video_pyav_reader.py``.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

VIDEOS = {
    "h264_720p_10min.mp4": {
        "seconds": 600,
        "size": (1280, 720),
        "codec": "libx264",
        "keyframe_interval": 250,
    },
    "h264_1080p_2min.mp4": {
        "seconds": 120,
        "size": (1920, 1080),
        "codec": "libx264",
        "keyframe_interval": None,
    },
    "vp9_720p_1min.webm": {
        "seconds": 60,
        "size": (1280, 720),
        "codec": "libvpx-vp9",
        "keyframe_interval": 120,
    },
}
FPS = 30
METHODS = ("ours", "ours@384", "decord", "naive")


def generate(cache: Path, minutes_720p: float | None) -> dict[str, Path]:
    from videoccam.testing.media import write_test_video

    paths = {}
    for name, spec in VIDEOS.items():
        seconds = spec["seconds"] if minutes_720p is None or "10min" not in name else round(minutes_720p * 60)
        path = cache / name
        paths[name] = path
        if path.exists() and path.with_suffix(".done").exists():
            continue
        began = time.perf_counter()
        write_test_video(
            path,
            num_frames=seconds * FPS,
            fps=FPS,
            size=spec["size"],
            codec=spec["codec"],
            keyframe_interval=spec["keyframe_interval"],
        )
        path.with_suffix(".done").write_text("")
        took = time.perf_counter() - began
        print(
            f"generated {name}: {seconds * FPS} frames in {took:.1f} s "
            f"({path.stat().st_size / 2**20:.1f} MiB)"
        )
    return paths


# --- one measurement, in a fresh process -------------------------------------------------------


def _uniform(path: str, num_frames: int) -> list[int]:
    import av

    from videoccam.processing.video_sampling import sample_indices

    with av.open(path) as container:
        stream = container.streams.video[0]
        total = stream.frames or round(container.duration / 1e6 * float(stream.average_rate))
        return sample_indices(
            total, num_frames=num_frames, sample="uniform", src_fps=float(stream.average_rate)
        ).tolist()


def _run_ours(path: str, num_frames: int, size: int | None):
    from videoccam.processing.video import load_video

    return load_video(path, num_frames=num_frames, size=size).frames


def _run_decord(path: str, indices: list[int]):
    import decord

    reader = decord.VideoReader(path, ctx=decord.cpu(0))
    return reader.get_batch(indices).asnumpy()


def _run_naive(path: str, indices: list[int]):
    import av
    import numpy as np

    wanted, kept = set(indices), []
    with av.open(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for position, frame in enumerate(container.decode(stream)):
            if position in wanted:
                kept.append(frame.to_ndarray(format="rgb24"))
            if position >= indices[-1]:
                break
    return np.stack(kept)


def worker(method: str, path: str, num_frames: int) -> None:
    """Run one method once and print JSON: decode seconds, peak RSS, returned shape."""
    import av  # noqa: F401  (imports are not timed)
    import numpy as np  # noqa: F401

    import videoccam.processing.video  # noqa: F401

    indices = _uniform(path, num_frames) if method in ("decord", "naive") else None
    if method == "decord":
        import decord  # noqa: F401
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    began = time.perf_counter()
    if method == "ours":
        frames = _run_ours(path, num_frames, None)
    elif method == "ours@384":
        frames = _run_ours(path, num_frames, 384)
    elif method == "decord":
        frames = _run_decord(path, indices)
    else:
        frames = _run_naive(path, indices)
    seconds = time.perf_counter() - began
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB -> MiB on Linux
    print(
        json.dumps({"seconds": seconds, "peak_mib": peak, "base_mib": base_rss, "shape": list(frames.shape)})
    )


def run_once(method: str, path: Path, num_frames: int) -> dict:
    done = subprocess.run(
        [sys.executable, __file__, "--worker", method, str(path), str(num_frames)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure(methods: tuple[str, ...], path: Path, num_frames: int, repeats: int) -> dict[str, dict]:
    """Medians over ``repeats`` rounds; each round runs every method once, so that slow spells of
    a shared machine hit all methods alike."""
    runs: dict[str, list[dict]] = {m: [] for m in methods}
    for _ in range(repeats):
        for method in methods:
            runs[method].append(run_once(method, path, num_frames))
    return {m: _summary(r) for m, r in runs.items()}


def _summary(runs: list[dict]) -> dict:
    return {
        "seconds": statistics.median(r["seconds"] for r in runs),
        "peak_mib": statistics.median(r["peak_mib"] for r in runs),
        "base_mib": statistics.median(r["base_mib"] for r in runs),
        "shape": runs[0]["shape"],
    }


# --- calibration of the seek heuristic ---------------------------------------------------------


def calibrate(path: Path, samples: int = 12) -> None:
    """Seconds per forward-decoded frame vs per seek (+ first frame), in frame equivalents."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        frames = container.decode(stream)
        next(frames)
        began = time.perf_counter()
        for _ in range(300):
            next(frames)
        per_frame = (time.perf_counter() - began) / 300
        keyframes = [e.timestamp for e in stream.index_entries if e.is_keyframe] or [0]
        picks = keyframes[1 :: max(1, len(keyframes) // samples)][:samples] if len(keyframes) > 1 else []
        if not picks:  # mkv/webm: cues arrive with the first seek
            container.seek(0, stream=stream, backward=True)
            keyframes = [e.timestamp for e in stream.index_entries if e.is_keyframe]
            picks = keyframes[1 :: max(1, len(keyframes) // samples)][:samples]
        began = time.perf_counter()
        for pts in picks:
            container.seek(pts, stream=stream, backward=True)
            next(container.decode(stream))
        per_seek = (time.perf_counter() - began) / max(1, len(picks))
    print(
        f"{path.name}: {per_frame * 1e3:.2f} ms per decoded frame, "
        f"{per_seek * 1e3:.2f} ms per seek + first frame "
        f"= {per_seek / per_frame:.1f} frames"
    )


# --- report ------------------------------------------------------------------------------------


def table(results: dict) -> str:
    lines = [
        (
            "| video | T | ours s | ours@384 s | decord s | naive s | ours/decord | ours/naive "
            "| ours MiB | ours@384 MiB | decord MiB | naive MiB | frames MiB |"
        ),
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for (name, num_frames), row in results.items():
        shape = row["ours"]["shape"]
        frames_mib = shape[0] * shape[1] * shape[2] * shape[3] / 2**20
        cells = [name, str(num_frames)]
        cells += [f"{row[m]['seconds']:.2f}" if m in row else "n/a" for m in METHODS]
        cells.append(f"{row['ours']['seconds'] / row['decord']['seconds']:.2f}" if "decord" in row else "n/a")
        cells.append(f"{row['ours']['seconds'] / row['naive']['seconds']:.3f}")
        cells += [f"{row[m]['peak_mib']:.0f}" if m in row else "n/a" for m in METHODS]
        cells.append(f"{frames_mib:.0f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--cache", type=Path, help="folder for the generated videos (kept; default: a temp dir)"
    )
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--frames", type=int, nargs="+", default=[16, 32, 96])
    parser.add_argument("--minutes-720p", type=float, help="shorter 720p video (default: 10 minutes)")
    parser.add_argument("--calibrate", action="store_true", help="measure the cost of a seek, then stop")
    parser.add_argument("--worker", nargs=3, metavar=("METHOD", "PATH", "T"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker[0], args.worker[1], int(args.worker[2]))
        return
    with tempfile.TemporaryDirectory() as scratch:
        cache = args.cache or Path(scratch)
        cache.mkdir(parents=True, exist_ok=True)
        paths = generate(cache, args.minutes_720p)
        if args.calibrate:
            for path in paths.values():
                calibrate(path)
            return
        try:
            import decord  # noqa: F401

            methods = METHODS
        except ImportError:
            print("decord is not installed: its columns are n/a")
            methods = tuple(m for m in METHODS if m != "decord")
        results = {}
        for name, path in paths.items():
            for num_frames in args.frames:
                row = measure(methods, path, num_frames, args.repeats)
                results[(name, num_frames)] = row
                print(
                    f"{name} T={num_frames}: "
                    + ", ".join(f"{m} {r['seconds']:.2f}s/{r['peak_mib']:.0f}MiB" for m, r in row.items()),
                    flush=True,
                )
        print()
        print(table(results))


if __name__ == "__main__":
    main()
