"""Pieces shared by the video backends: the :class:`Video` result, output sizes and the deadline."""

from __future__ import annotations

import logging
import math
import struct
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from videoccam.errors import ConfigError, DecodeTimeoutError, MediaDecodeError

logger = logging.getLogger(__name__)

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


# --- display orientation (rotation metadata) ---------------------------------------------------

# How a stored frame is turned for display, by the names of FFmpeg's filters (``transpose=``
# cclock, clock, cclock_flip, clock_flip; hflip; vflip; both flips for 180 degrees).
ORIENTATIONS = ("none", "cclock", "clock", "cclock_flip", "clock_flip", "hflip", "vflip", "rotate180")
_SWAPS_AXES = frozenset({"cclock", "clock", "cclock_flip", "clock_flip"})


def orientation_from_display_matrix(matrix: Sequence[int], source: str = "") -> str:
    """The turn that shows a frame upright, from its 3x3 display matrix (FFmpeg's ``int32[9]``,
    16.16 fixed point), decided exactly as the ``ffmpeg`` command line does (``-autorotate``).

    Angles that are not a multiple of 90 degrees are ignored with a warning.
    """
    a, b, _, c, d, *_ = (int(v) for v in matrix)
    scale_x, scale_y = math.hypot(a, c), math.hypot(b, d)
    if scale_x == 0 or scale_y == 0:
        return "none"
    # av_display_rotation_get: the counter-clockwise angle; ffmpeg turns by its negative.
    ccw = -math.degrees(math.atan2(b / scale_y, a / scale_x))
    theta = -round(ccw)
    theta -= 360 * math.floor(theta / 360 + 0.9 / 360)  # into [0, 360)
    if abs(theta - 90) < 1:
        return "cclock_flip" if c > 0 else "clock"
    if abs(theta - 180) < 1:
        flips = ("h" if a < 0 else "") + ("v" if d < 0 else "")
        return {"": "none", "h": "hflip", "v": "vflip", "hv": "rotate180"}[flips]
    if abs(theta - 270) < 1:
        return "clock_flip" if c < 0 else "cclock"
    if abs(theta) > 1 and abs(theta - 360) > 1:
        logger.warning("%s: display rotation of %.1f degrees is not a multiple of 90; ignored", source, theta)
        return "none"
    return "vflip" if d < 0 else "none"


def orientation_from_rotate_tag(value: str, source: str = "") -> str:
    """The turn for the ``rotate`` stream tag of older FFmpeg (degrees clockwise)."""
    try:
        clockwise = float(value)
    except ValueError:
        return "none"
    radians = math.radians(-clockwise)  # av_display_rotation_set(matrix, clockwise)
    cos, sin = round(math.cos(radians) * 65536), round(math.sin(radians) * 65536)
    matrix = [cos, -sin, 0, sin, cos, 0, 0, 0, 1 << 30]
    return orientation_from_display_matrix(matrix, source)


def display_matrix_from_bytes(data: bytes) -> tuple[int, ...] | None:
    """The nine ``int32`` of an ``AV_FRAME_DATA_DISPLAYMATRIX`` side-data buffer (native byte order)."""
    if len(data) < 36:
        return None
    return struct.unpack("=9i", bytes(data[:36]))


def swaps_axes(orientation: str) -> bool:
    """Whether turning for display swaps width and height (90 and 270 degrees)."""
    return orientation in _SWAPS_AXES


def orient(frames: np.ndarray, orientation: str) -> np.ndarray:
    """Turn ``frames`` (``[..., H, W, C]``) for display; a view, not a copy."""
    rows, cols = frames.ndim - 3, frames.ndim - 2
    if orientation == "none":
        return frames
    if orientation == "cclock":
        return np.rot90(frames, 1, axes=(rows, cols))
    if orientation == "clock":
        return np.rot90(frames, -1, axes=(rows, cols))
    if orientation == "cclock_flip":  # a transpose
        return np.swapaxes(frames, rows, cols)
    if orientation == "clock_flip":  # the anti-transpose
        return np.flip(np.swapaxes(frames, rows, cols), axis=(rows, cols))
    if orientation == "hflip":
        return np.flip(frames, axis=cols)
    if orientation == "vflip":
        return np.flip(frames, axis=rows)
    if orientation == "rotate180":
        return np.flip(frames, axis=(rows, cols))
    raise ValueError(f"unknown orientation {orientation!r}; expected one of {ORIENTATIONS}")


def stored_size(size: tuple[int, int], orientation: str) -> tuple[int, int]:
    """``(W, H)`` to convert a stored frame to, so that it is ``size`` once turned for display."""
    return (size[1], size[0]) if swaps_axes(orientation) else size
