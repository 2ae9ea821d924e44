"""Decoded clips kept in memory: a :class:`FrameCache` that whoever needs it creates, fills and passes on.

    cache = FrameCache()
    cache.warm_pixels(clips, 16, "uniform", processor, workers=2)     # decode + resize in a process pool
    dataset = LlavaDataset("train.json", processor, sample="uniform", frame_cache=cache)

A process forked after the cache is filled (a DataLoader worker, one of ``videoccam ablate``'s
trainings) sees it copy on write; what a forked process adds stays in that process. The arrays are
numpy, not torch: the ablation fills its cache in a process that forks its trainers later, and a
process that ran torch's OpenMP thread pool cannot safely fork one that uses it again.
See ``docs/training-data.md``, "Frame cache".
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
import torch

from videoccam.errors import MediaError
from videoccam.processing.processor import VideoCCAMProcessor
from videoccam.processing.video import load_video

__all__ = ["FrameCache"]

logger = logging.getLogger(__name__)


class FrameCache:
    """Clips decoded once per process (and the processes it forks later), in two stores.

    * :meth:`frames`: ``load_video(...).frames``, uint8 ``[T, H, W, 3]``, per (path, frame count,
      sampling, ``video_kwargs``) — what evaluation feeds the processor.
    * :meth:`pixels`: ``processor.preprocess_media`` of a clip's frames, ``[T, 3, S, S]``, exactly,
      per (path, frame count, sampling, ``video_kwargs``, image-processor settings) — what a training
      sample needs. It keeps the image processor's resize alone, as uint8 (a quarter of the float
      pixels; the decoded full-size frames are not kept), and each call only rescales and normalises
      it. Whether that split gives the processor's own pixels bit for bit is checked on the first
      clip of each image-processor setting; where it does not, the float pixels are kept instead.

    Only deterministic frame sampling (``"uniform"``, ``"fps"``, ``"mvbench"``) makes sense here:
    a cached clip always gives the same frames. Stored arrays are read-only.

    Args:
        float_pixels: keep the processor's float pixels, never the uint8 resize (four times the
            memory; for comparison, as in ``bench/frame_cache.py``).
    """

    def __init__(self, *, float_pixels: bool = False) -> None:
        self._frames: dict[tuple, np.ndarray] = {}
        self._pixels: dict[tuple, np.ndarray] = {}
        self._uint8_exact: dict[str, bool] = {}  # per image-processor setting: is the uint8 split exact?
        self.float_pixels = float_pixels

    def __len__(self) -> int:
        """Clips stored, in both stores."""
        return len(self._frames) + len(self._pixels)

    @property
    def nbytes(self) -> int:
        """Memory the stored arrays take."""
        return sum(a.nbytes for store in (self._frames, self._pixels) for a in store.values())

    @property
    def uint8_exact(self) -> Mapping[str, bool]:
        """Per image-processor setting (its JSON) checked so far: whether its uint8 resize, rescaled and
        normalised, gives its pixels bit for bit (read-only view)."""
        return MappingProxyType(self._uint8_exact)

    def pixel_arrays(self) -> list[np.ndarray]:
        """What the pixel store keeps, one array per clip: uint8 or float32 ``[T, 3, S, S]``."""
        return list(self._pixels.values())

    def frames(self, path: str | Path, num_frames: int, sample: str,
               video_kwargs: dict[str, Any] | None = None) -> np.ndarray:
        """``load_video(path, num_frames, sample, **video_kwargs).frames`` (uint8 ``[T, H, W, 3]``),
        decoded on the first call with these arguments (read-only)."""
        kwargs = dict(video_kwargs or {})
        key = _clip_key(path, num_frames, sample, kwargs)
        frames = self._frames.get(key)
        if frames is None:
            frames = load_video(path, num_frames=num_frames, sample=sample, **kwargs).frames
            frames.setflags(write=False)
            self._frames[key] = frames
        return frames

    def pixels(self, path: str | Path, num_frames: int, sample: str, processor: VideoCCAMProcessor,
               video_kwargs: dict[str, Any] | None = None, *, processor_key: str | None = None) -> torch.Tensor:
        """``processor.preprocess_media`` of the clip's frames (``[T, 3, S, S]``), exactly; the clip is
        decoded and resized on the first call only (:meth:`warm_pixels` does it ahead, in parallel).

        ``processor_key``: ``processor.image_processor.to_json_string()``, for callers that compute it
        once instead of on every call.
        """
        kwargs = dict(video_kwargs or {})
        image_processor = processor.image_processor
        if processor_key is None:
            processor_key = image_processor.to_json_string()
        key = (*_clip_key(path, num_frames, sample, kwargs), processor_key)
        stored = self._pixels.get(key)
        if stored is None:
            frames = load_video(path, num_frames=num_frames, sample=sample, **kwargs).frames  # [T, H, W, 3]
            stored, exact = _compact(image_processor, frames, self._verdict(processor_key))
            self._store_pixels(key, stored, processor_key, exact)
        pixels = _finished(image_processor, stored) if stored.dtype == np.uint8 else stored.copy()  # [T, 3, S, S]
        return torch.from_numpy(pixels)

    def warm_frames(self, paths: Sequence[str | Path], num_frames: int, sample: str,
                    video_kwargs: dict[str, Any] | None = None, workers: int = 2) -> None:
        """Decode ``paths`` into the :meth:`frames` store with a pool of ``workers`` processes (clips that
        fail are left out: whoever loads them reports them)."""
        kwargs = dict(video_kwargs or {})
        for path, frames, _ in _pool_map(paths, num_frames, sample, kwargs, None, workers):
            frames.setflags(write=False)
            self._frames[_clip_key(path, num_frames, sample, kwargs)] = frames

    def warm_pixels(self, paths: Sequence[str | Path], num_frames: int, sample: str, processor: VideoCCAMProcessor,
                    video_kwargs: dict[str, Any] | None = None, workers: int = 2) -> None:
        """Decode and resize ``paths`` into the :meth:`pixels` store with a pool of ``workers``
        processes, for the datasets given this cache in this process and in those it forks later
        (clips that fail are left out: the dataset reports them when it loads them)."""
        kwargs = dict(video_kwargs or {})
        image_processor = processor.image_processor
        processor_key = image_processor.to_json_string()
        paths = list(paths)
        if paths and self._verdict(processor_key) is None:  # settle exactness here, once, not in every worker
            with contextlib.suppress(MediaError, OSError):  # then each clip in the pool checks it instead
                self.pixels(paths[0], num_frames, sample, processor, kwargs, processor_key=processor_key)
        compact = (image_processor, self._verdict(processor_key))
        for path, stored, exact in _pool_map(paths, num_frames, sample, kwargs, compact, workers):
            key = (*_clip_key(path, num_frames, sample, kwargs), processor_key)
            self._store_pixels(key, stored, processor_key, exact)

    def _verdict(self, processor_key: str) -> bool | None:
        """Whether this setting's uint8 split is exact: known, forced off, or ``None`` (not checked yet)."""
        return False if self.float_pixels else self._uint8_exact.get(processor_key)

    def _store_pixels(self, key: tuple, stored: np.ndarray, processor_key: str, exact: bool) -> None:
        if processor_key not in self._uint8_exact and not self.float_pixels:
            self._uint8_exact[processor_key] = exact
            if not exact:
                logger.info("frame cache: this image processor's resize is not exact in uint8; "
                            "caching float pixels")
        stored.setflags(write=False)
        self._pixels[key] = stored


def _clip_key(path: str | Path, num_frames: int, sample: str, kwargs: dict[str, Any]) -> tuple:
    return (str(path), num_frames, sample, tuple(sorted((k, repr(v)) for k, v in kwargs.items())))


def _processed(image_processor: Any, frames: np.ndarray | list[np.ndarray], **options: Any) -> np.ndarray:
    """``image_processor`` on ``frames`` (``[T, H, W, 3]``) with ``options``, stacked: ``[T, 3, S, S]``."""
    return np.stack(image_processor(images=list(frames), **options)["pixel_values"])


def _resized(image_processor: Any, frames: np.ndarray) -> np.ndarray:
    """The image processor's resize alone: ``[T, 3, S, S]`` (uint8 for PIL backends)."""
    return _processed(image_processor, frames, do_rescale=False, do_normalize=False)


def _finished(image_processor: Any, resized: np.ndarray) -> np.ndarray:
    """Rescale and normalise of :func:`_resized` frames: the processor's float ``[T, 3, S, S]`` pixels."""
    return _processed(image_processor, resized.transpose(0, 2, 3, 1), do_resize=False)  # from [T, S, S, 3]


def _compact(image_processor: Any, frames: np.ndarray, exact: bool | None) -> tuple[np.ndarray, bool]:
    """What the pixel store keeps of one clip's frames (uint8 ``[T, H, W, 3]``), and whether the uint8
    split is exact: the uint8 resize ``[T, 3, S, S]`` when finishing it gives the processor's own
    pixels exactly (checked here when ``exact`` is None), otherwise the float pixels themselves."""
    if exact is False:
        return _processed(image_processor, frames), False  # [T, 3, S, S]
    resized = _resized(image_processor, frames)  # [T, 3, S, S]
    if exact is None:
        full = _processed(image_processor, frames)  # [T, 3, S, S]
        finished = _finished(image_processor, resized) if resized.dtype == np.uint8 else None
        exact = finished is not None and finished.dtype == full.dtype and np.array_equal(finished, full)
        if not exact:
            return full, False
    return resized, True


def _pool_map(paths: Sequence[str | Path], num_frames: int, sample: str, kwargs: dict[str, Any],
              compact: tuple | None, workers: int) -> Iterator[tuple[str, np.ndarray, bool | None]]:
    """``(path, *_decode_or_none(path, ...))`` for each distinct path that decodes, from a process pool."""
    todo = list(dict.fromkeys(map(str, paths)))
    n = len(todo)
    with ProcessPoolExecutor(max_workers=workers) as pool:
        results = pool.map(_decode_or_none, todo, [num_frames] * n, [sample] * n, [kwargs] * n, [compact] * n,
                           chunksize=32)
        for path, result in zip(todo, results, strict=True):
            if result is not None:
                yield path, *result


def _decode_or_none(path: str, num_frames: int, sample: str, kwargs: dict[str, Any],
                    compact: tuple | None) -> tuple[np.ndarray, bool | None] | None:
    """A clip's frames (``compact`` None) or what the pixel store keeps of them (``compact``: the image
    processor and the known verdict on its uint8 split), with the verdict; ``None`` when it cannot be decoded."""
    try:
        frames = load_video(path, num_frames=num_frames, sample=sample, **kwargs).frames  # [T, H, W, 3]
    except (MediaError, OSError):
        return None
    if compact is None:
        return frames, None
    image_processor, exact = compact
    return _compact(image_processor, frames, exact)
