"""Which frames to keep: the sampling rules of Video-CCAM, as a pure function of the frame count.

All rules work on 0-based frame indices ``[0, total)`` of the source and return them in
ascending order. Time bounds ``[start, end)`` in seconds are first turned into a frame range
``[s, e)`` with ``s = round(start * src_fps)`` and ``e = min(total, round(end * src_fps))`` (the
MVBench convention; ``round`` is Python's, half to even), so a bound past the end of the clip is
clipped to it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from videoccam.errors import SamplingError

SAMPLE_MODES = ("uniform", "fps", "random", "mvbench")


def linspace_int(start: int, end: int, steps: int) -> np.ndarray:
    """``torch.linspace(start, end, steps, dtype=torch.int64)`` without torch, bit for bit.

    torch computes the points in float64, the first half forwards from ``start`` and the second
    half backwards from ``end``, then truncates to int. Its float rounding sometimes gives one
    less than the exact ``floor(start + i * (end - start) / (steps - 1))`` (e.g. point 50 of
    ``linspace(0, 110, 101)`` is 54, not 55); Video-CCAM's evaluation uses torch, so we copy it.

    Returns:
        ``int64[steps]``.
    """
    if steps == 1:
        return np.array([start], dtype=np.int64)
    step = (float(end) - float(start)) / (steps - 1)
    i = np.arange(steps, dtype=np.float64)
    halfway = steps // 2
    points = np.where(i < halfway, start + step * i, end - step * (steps - i - 1))  # [steps]
    return np.trunc(points).astype(np.int64)


def _check_positive_int(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise SamplingError(f"{name} must be an integer >= 1, got {value!r}")


def _check_positive_float(name: str, value: float) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float, np.number))
        or not (math.isfinite(value) and value > 0)
    ):
        raise SamplingError(f"{name} must be a finite number > 0, got {value!r}")


def frame_range(total: int, src_fps: float, start: float | None, end: float | None) -> tuple[int, int]:
    """Frame range ``[s, e)`` covered by the time bounds ``[start, end)`` seconds.

    Raises:
        SamplingError: ``start < 0``, ``start >= end``, or ``start`` at or past the end of the clip.
    """
    duration = total / src_fps
    if start is not None and (not math.isfinite(start) or start < 0):
        raise SamplingError(f"start must be a finite number of seconds >= 0, got {start!r}")
    if end is not None and (math.isnan(end) or end <= (start or 0.0)):
        raise SamplingError(f"start ({start or 0.0} s) must be before end ({end} s)")
    first = 0 if start is None else round(start * src_fps)
    if first >= total:
        raise SamplingError(
            f"start ({start} s) is at or past the end of the clip ({duration:.3f} s, {total} frames)"
        )
    last = total if end is None or end == math.inf else min(total, round(end * src_fps))
    return first, max(last, first + 1)


def uniform_in_range(first: int, stop: int, num_frames: int) -> np.ndarray:
    """Video-CCAM ``uniform_indices`` on ``[first, stop)``: floor-midpoints of integer segments.

    If ``num_frames < stop - first``: boundaries ``b = linspace_int(first, stop, num_frames + 1)``
    and frame ``i`` is ``(b[i] + b[i + 1]) // 2``. Otherwise every frame of the range.
    """
    length = stop - first
    if num_frames >= length:
        return np.arange(first, stop, dtype=np.int64)
    bounds = linspace_int(first, stop, num_frames + 1)  # [n + 1]
    return (bounds[:-1] + bounds[1:]) // 2  # [n]


def _random_in_range(first: int, stop: int, num_frames: int, rng: np.random.Generator) -> np.ndarray:
    """One uniformly random frame inside each of the ``uniform`` segments."""
    if num_frames >= stop - first:
        return np.arange(first, stop, dtype=np.int64)
    bounds = linspace_int(first, stop, num_frames + 1)  # [n + 1]
    high = np.maximum(bounds[1:], bounds[:-1] + 1)  # [n], exclusive upper ends
    return rng.integers(bounds[:-1], high).astype(np.int64)  # [n]


def _fps_in_range(first: int, stop: int, src_fps: float, fps: float, max_frames: int | None) -> np.ndarray:
    """Frames at ``fps`` from ``first``; re-sampled uniformly over the range when over ``max_frames``."""
    step = src_fps / fps  # may overflow to inf for a denormal fps: then only the first frame
    if step <= 1:
        indices = np.arange(first, stop, dtype=np.int64)
    else:
        count = max(1, math.ceil((stop - first) / step))  # the range's first frame at least
        points = first + step * np.arange(1, count)  # [m - 1], after the first (no inf * 0)
        indices = np.unique(np.concatenate([[first], np.round(points)]).astype(np.int64))
        indices = indices[indices < stop]
    if max_frames is not None and len(indices) > max_frames:
        return uniform_in_range(first, stop, max_frames)
    return indices


def _mvbench(
    total: int, num_frames: int, src_fps: float, start: float | None, end: float | None, first_index: int
) -> np.ndarray:
    """VideoChat2's MVBench ``get_index``, with indices shifted to 0-based positions."""
    max_frame = total - 1 + first_index
    start_idx = first_index if start is None else max(first_index, round(start * src_fps))
    end_idx = max_frame if end is None else min(round(end * src_fps), max_frame)
    seg = float(end_idx - start_idx) / num_frames
    numbers = np.array(
        [int(start_idx + seg / 2 + np.round(seg * i)) for i in range(num_frames)], dtype=np.int64
    )
    return np.clip(numbers - first_index, 0, total - 1)


def sample_indices(
    total: int,
    *,
    num_frames: int,
    sample: str,
    src_fps: float,
    fps: float | None = None,
    max_frames: int | None = None,
    start: float | None = None,
    end: float | None = None,
    rng: np.random.Generator | None = None,
    first_index: int = 0,
) -> np.ndarray:
    """Indices of the frames to keep out of ``total``.

    Rules (``[s, e)`` is the frame range of the time bounds, see the module docstring):

    * ``uniform`` (Video-CCAM ``eval/utils.uniform_indices``): if ``num_frames < e - s``, split the
      range at ``b = int(linspace(s, e, num_frames + 1))`` (computed exactly as torch does) and
      take each segment's floor-midpoint ``(b[i] + b[i+1]) // 2``; otherwise all frames, so fewer
      than ``num_frames`` come back. Note that this is *not* always ``int(s + seg*i + seg/2)``
      with ``seg = (e - s) / num_frames``: the boundaries are truncated before the midpoint is
      taken, which moves about one index in four by -1 (e.g. total 2999, 128 frames).
    * ``fps``: frames ``round(s + k * src_fps / fps)`` for ``k = 0, 1, ...`` while below ``e``
      (half to even, as ``torch.round``); all frames when ``fps >= src_fps``. If more than
      ``max_frames`` result, the range is re-sampled with ``uniform`` to ``max_frames`` instead
      (the Video-CCAM web demo's behaviour; its evaluation code truncated, which we never do).
    * ``random`` (training jitter): one frame drawn uniformly inside each ``uniform`` segment;
      all frames when there are not more than ``num_frames``.
    * ``mvbench``: VideoChat2's MVBench ``get_index``, which Video-CCAM's MVBench evaluation uses:
      ``start_idx = max(first_index, round(start * src_fps))``,
      ``end_idx = min(round(end * src_fps), total - 1 + first_index)``,
      ``seg = (end_idx - start_idx) / num_frames`` and frame ``i`` is
      ``int(start_idx + seg / 2 + round(seg * i))`` minus ``first_index``. Always ``num_frames``
      indices (repeated when the clip is short). Frame folders use ``first_index=1``.

    Args:
        total: Number of frames of the source (>= 1).
        num_frames: Frames wanted by ``uniform``, ``random`` and ``mvbench``.
        sample: One of ``uniform``, ``fps``, ``random``, ``mvbench``.
        src_fps: Frame rate of the source, used to turn seconds into frames.
        fps: Output frame rate; required by ``fps`` and refused by the other rules.
        max_frames: Cap for ``fps``; refused by the other rules.
        start: Start of the time bounds, seconds (inclusive).
        end: End of the time bounds, seconds (exclusive); may lie past the end of the clip.
        rng: Random generator for ``random`` (a fresh unseeded one when ``None``).
        first_index: Number of the source's first frame in ``mvbench``'s own numbering.

    Returns:
        ``int64[T]`` ascending indices into ``[0, total)``.

    Raises:
        SamplingError: An argument is out of range or does not fit the rule; the message names it.
    """
    _check_args(total, num_frames, sample, src_fps, fps, max_frames)
    if sample == "mvbench":
        frame_range(total, src_fps, start, end)  # validates the bounds
        picked = _mvbench(total, num_frames, src_fps, start, end, first_index)
    else:
        first, stop = frame_range(total, src_fps, start, end)
        if sample == "uniform":
            picked = uniform_in_range(first, stop, num_frames)
        elif sample == "random":
            rng = rng if rng is not None else np.random.default_rng()
            picked = _random_in_range(first, stop, num_frames, rng)
        else:
            assert fps is not None  # checked by _check_args
            picked = _fps_in_range(first, stop, src_fps, fps, max_frames)
    if len(picked) == 0:  # no rule should get here; a video without frames must never leave this module
        raise SamplingError(
            f"sample={sample!r} selected no frames out of {total} (src_fps={src_fps}, fps={fps}, "
            f"start={start}, end={end})"
        )
    return picked


def _check_args(
    total: int, num_frames: int, sample: str, src_fps: float, fps: float | None, max_frames: int | None
) -> None:
    if sample not in SAMPLE_MODES:
        raise SamplingError(f"sample must be one of {', '.join(SAMPLE_MODES)}; got {sample!r}")
    _check_positive_int("total", total)
    _check_positive_int("num_frames", num_frames)
    _check_positive_float("src_fps", src_fps)
    if sample == "fps":
        if fps is None:
            raise SamplingError("sample='fps' needs fps (the output frame rate)")
        _check_positive_float("fps", fps)
        if max_frames is not None:
            _check_positive_int("max_frames", max_frames)
    elif fps is not None or max_frames is not None:
        raise SamplingError(f"fps and max_frames only apply to sample='fps', not sample={sample!r}")


@dataclass(frozen=True)
class SamplingSpec:
    """The sampling arguments of one :func:`load_video` call, applied once the frame count is known."""

    num_frames: int
    sample: str
    fps: float | None = None
    max_frames: int | None = None
    start: float | None = None
    end: float | None = None
    seed: int | None = None

    def validate(self) -> None:
        """Check the arguments before any file is opened (the frame count is not needed)."""
        _check_args(1, self.num_frames, self.sample, 1.0, self.fps, self.max_frames)
        frame_range(2**62, 1.0, self.start, self.end)

    def indices(
        self, total: int, src_fps: float, first_index: int = 0, source: str | None = None
    ) -> np.ndarray:
        """:func:`sample_indices` for a source of ``total`` frames at ``src_fps``; a
        :class:`SamplingError` names ``source`` when given."""
        rng = np.random.default_rng(self.seed) if self.sample == "random" else None
        try:
            return sample_indices(
                total,
                num_frames=self.num_frames,
                sample=self.sample,
                src_fps=src_fps,
                fps=self.fps,
                max_frames=self.max_frames,
                start=self.start,
                end=self.end,
                rng=rng,
                first_index=first_index,
            )
        except SamplingError as err:
            if source is None:
                raise
            raise SamplingError(f"{source}: {err}") from err
