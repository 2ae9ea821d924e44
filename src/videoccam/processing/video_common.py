"""Pieces shared by the video backends: the :class:`Video` result, output sizes and the deadline."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import numpy as np
from PIL import Image

from videoccam.errors import ConfigError, DecodeTimeoutError, MediaDecodeError

# Largest accepted frame side, in pixels; anything bigger is treated as a corrupt header.
MAX_SIDE = 16384


@dataclass
class Video:
    """Sampled frames of one video, image or frame sequence.

    Shapes: ``T`` frames of ``H x W`` pixels.

    Attributes:
        frames: ``uint8[T, H, W, 3]`` RGB frames.
        indices: ``int64[T]`` 0-based index of each frame in the source (frame folders: the
            position in numeric file order, so MVBench's ``00001.jpg`` is index 0).
        timestamps: ``float64[T]`` presentation time of each frame in seconds, from the start of
            the source's video stream.
        fps: Average frame rate of the source (frame folders and in-memory frames: the given fps).
        duration: Length of the source in seconds.
        source: Path or a short description, for error messages.
    """

    frames: np.ndarray
    indices: np.ndarray
    timestamps: np.ndarray
    fps: float
    duration: float
    source: str | None = None

    def __post_init__(self) -> None:
        count = len(self.frames)
        if self.frames.ndim != 4 or self.frames.shape[-1] != 3 or self.frames.dtype != np.uint8:
            raise ValueError(
                f"Video.frames must be uint8 [T, H, W, 3], got {self.frames.dtype} {self.frames.shape}"
            )
        if self.indices.shape != (count,) or self.timestamps.shape != (count,):
            raise ValueError(
                f"Video.indices {self.indices.shape} and timestamps {self.timestamps.shape} "
                f"must have shape ({count},)"
            )

    def __len__(self) -> int:
        return len(self.frames)

    def to_pil(self) -> list[Image.Image]:
        """The frames as RGB PIL images (the form Hugging Face image processors take)."""
        return [Image.fromarray(frame) for frame in self.frames]


def normalize_size(size: int | tuple[int, int] | None) -> tuple[int, int] | None:
    """Output ``(W, H)`` from the ``size`` argument of ``load_video``.

    ``int S`` means ``S x S`` (a square resize, as SigLIP's processor does, aspect ratio not
    kept); ``(W, H)`` is exact; ``None`` keeps the source size.
    """
    if size is None:
        return None
    pair = (size, size) if isinstance(size, (int, np.integer)) and not isinstance(size, bool) else size
    if (
        not isinstance(pair, (tuple, list))
        or len(pair) != 2
        or not all(
            isinstance(v, (int, np.integer)) and not isinstance(v, bool) and 0 < v <= MAX_SIDE for v in pair
        )
    ):
        raise ConfigError(
            f"size must be an int S (S x S) or a (width, height) pair in [1, {MAX_SIDE}], got {size!r}"
        )
    return int(pair[0]), int(pair[1])


def check_frame_size(width: int, height: int, source: str) -> None:
    """Refuse zero or absurd frame sizes, which only corrupt headers produce."""
    if not (0 < width <= MAX_SIDE and 0 < height <= MAX_SIDE):
        raise MediaDecodeError(f"{source}: unusable frame size {width}x{height} (corrupt header?)")


def resize_pil(image: Image.Image, size: tuple[int, int] | None) -> np.ndarray:
    """RGB array of ``image``, resized to ``size = (W, H)`` with bicubic filtering when given."""
    image = image.convert("RGB")
    if size is not None and image.size != size:
        image = image.resize(size, Image.Resampling.BICUBIC)
    return np.asarray(image, dtype=np.uint8)


class Deadline:
    """Wall-clock deadline checked by decode loops; also cancelled by the caller on timeout."""

    def __init__(self, timeout: float | None, source: str) -> None:
        self.source = source
        self.timeout = timeout
        self._end = None if timeout is None else time.monotonic() + timeout
        self._cancelled = threading.Event()

    def cancel(self) -> None:
        self._cancelled.set()

    def check(self) -> None:
        """Raise :class:`DecodeTimeoutError` once the deadline has passed or the call was cancelled."""
        if self._cancelled.is_set() or (self._end is not None and time.monotonic() > self._end):
            raise timeout_error(self.source, self.timeout)


def timeout_error(source: str, timeout: float | None) -> DecodeTimeoutError:
    return DecodeTimeoutError(f"{source}: decoding took longer than the timeout of {timeout} s")
