"""Frame sequences that are not video files: frame folders, GIFs, single images, in-memory frames.

All of them are a list of ``total`` frames with known timestamps; the sampling rules pick
indices from it exactly as for a video file, and only the picked frames are read from disk.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from videoccam.errors import MediaDecodeError
from videoccam.processing.video_common import Deadline, Video, check_frame_size, resize_pil
from videoccam.processing.video_sampling import SamplingSpec

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif"})
# Display time of a GIF frame that states none (or 0 ms), as web browsers do.
GIF_DEFAULT_DURATION_MS = 100
_NUMBER = re.compile(r"\d+")


def _open_image(path: Path) -> Image.Image:
    try:
        image = Image.open(path)
    except UnidentifiedImageError as err:
        raise MediaDecodeError(f"{path}: not a readable image") from err
    except Image.DecompressionBombError as err:  # PIL's guard (Image.MAX_IMAGE_PIXELS): a bad sample
        raise MediaDecodeError(f"{path}: image too large ({err})") from err
    except OSError as err:
        raise MediaDecodeError(f"{path}: cannot read image ({err})") from err
    check_frame_size(image.width, image.height, str(path))
    return image


def _as_rgb_array(image: Image.Image, size: tuple[int, int] | None, source: str) -> np.ndarray:
    """Decode and convert one PIL image; truncated or corrupt data becomes a MediaDecodeError."""
    try:
        return resize_pil(image, size)
    except (OSError, ValueError, Image.DecompressionBombError) as err:
        raise MediaDecodeError(f"{source}: cannot decode image data ({err})") from err


def _sequence(
    total: int,
    fps: float,
    timestamps: np.ndarray,
    duration: float,
    read: Callable[[int, tuple[int, int] | None], np.ndarray],
    spec: SamplingSpec,
    size: tuple[int, int] | None,
    deadline: Deadline,
    source: str,
    first_index: int = 0,
) -> Video:
    """Sample ``total`` frames and read the picked ones with ``read(index, size)``.

    Frames of differing sizes are resized to the first picked frame's size when ``size`` is None.
    """
    indices = spec.indices(total, fps, first_index=first_index, source=source)  # [T]
    frames = []
    for index in indices:
        deadline.check()
        frame = read(int(index), size)  # [H, W, 3]
        if size is None:
            size = (frame.shape[1], frame.shape[0])
        frames.append(frame)
    return Video(
        frames=np.stack(frames),  # [T, H, W, 3]
        indices=indices.astype(np.int64),
        timestamps=timestamps[indices].astype(np.float64),
        fps=fps,
        duration=duration,
        source=source,
    )


def _numeric_key(path: Path) -> tuple[int, int, str]:
    """Sort key: the last number in the file name, so ``10.jpg`` follows ``9.jpg``; then the name."""
    numbers = _NUMBER.findall(path.stem)
    return (0, int(numbers[-1]), path.name) if numbers else (1, 0, path.name)


def list_frame_folder(directory: Path) -> list[Path]:
    """Image files of a frame folder in numeric order (other files are ignored)."""
    files = [p for p in directory.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    return sorted(files, key=_numeric_key)


def load_frame_folder(
    directory: Path, spec: SamplingSpec, size: tuple[int, int] | None, fps: float, deadline: Deadline
) -> Video:
    """A folder of images, one frame each, ``fps`` frames per second (MVBench TVQA: 3)."""
    files = list_frame_folder(directory)
    if not files:
        raise MediaDecodeError(
            f"{directory}: frame folder has no image files ({', '.join(sorted(IMAGE_SUFFIXES))})"
        )

    def read(index: int, out_size: tuple[int, int] | None) -> np.ndarray:
        with _open_image(files[index]) as image:
            return _as_rgb_array(image, out_size, str(files[index]))

    stamps = np.arange(len(files), dtype=np.float64) / fps  # [N]
    # mvbench numbers folder frames from 1 (00001.jpg), as VideoChat2's reader does.
    first = 1 if spec.sample == "mvbench" else 0
    return _sequence(
        len(files),
        fps,
        stamps,
        len(files) / fps,
        read,
        spec,
        size,
        deadline,
        str(directory),
        first_index=first,
    )


def load_image_file(
    path: Path, spec: SamplingSpec, size: tuple[int, int] | None, fps: float, deadline: Deadline
) -> Video:
    """A single image (T=1), or an animated GIF / PNG / WebP with its own frame durations."""
    with _open_image(path) as image:
        count = getattr(image, "n_frames", 1)  # PIL sets n_frames only on multi-frame formats
        if count > 1:
            return _load_animation(image, count, path, spec, size, deadline)
        stamps = np.zeros(1, dtype=np.float64)
        frame = _as_rgb_array(image, size, str(path))
    return _sequence(1, fps, stamps, 1 / fps, lambda index, out: frame, spec, size, deadline, str(path))


def _load_animation(
    image: Image.Image,
    count: int,
    path: Path,
    spec: SamplingSpec,
    size: tuple[int, int] | None,
    deadline: Deadline,
) -> Video:
    """Frames of an animated image; timestamps from each frame's own duration.

    The sampling rules turn seconds into frames with the average fps (as Video-CCAM's demo does);
    the returned timestamps are the real start times of the frames.
    """
    durations = np.empty(count, dtype=np.float64)  # [N] seconds
    for index in range(count):
        deadline.check()
        _seek(image, index, path)
        stated = image.info.get("duration") or 0  # per-frame metadata, absent on some frames
        durations[index] = (stated if stated > 0 else GIF_DEFAULT_DURATION_MS) / 1000.0
    stamps = np.concatenate([[0.0], np.cumsum(durations)[:-1]])  # [N] start time of each frame
    fps = count / float(durations.sum())

    def read(index: int, out_size: tuple[int, int] | None) -> np.ndarray:
        _seek(image, index, path)
        return _as_rgb_array(image, out_size, str(path))

    return _sequence(count, fps, stamps, float(durations.sum()), read, spec, size, deadline, str(path))


def _seek(image: Image.Image, index: int, path: Path) -> None:
    try:
        image.seek(index)
    except (EOFError, OSError, ValueError) as err:
        raise MediaDecodeError(f"{path}: cannot decode animation frame {index} ({err})") from err


def load_frame_list(
    items: Sequence[Image.Image | np.ndarray] | np.ndarray,
    spec: SamplingSpec,
    size: tuple[int, int] | None,
    fps: float,
    deadline: Deadline,
) -> Video:
    """In-memory frames: PIL images, ``uint8`` arrays ``[H, W, 3]`` / ``[H, W]`` / ``[H, W, 4]``,
    or one ``uint8`` array ``[T, H, W, 3]``."""
    source = f"<{len(items)} in-memory frames>"
    if len(items) == 0:
        raise MediaDecodeError(f"{source}: no frames")

    def read(index: int, out_size: tuple[int, int] | None) -> np.ndarray:
        return _item_to_rgb(items[index], index, out_size)

    stamps = np.arange(len(items), dtype=np.float64) / fps  # [N]
    return _sequence(len(items), fps, stamps, len(items) / fps, read, spec, size, deadline, source)


def _item_to_rgb(item: Image.Image | np.ndarray, index: int, size: tuple[int, int] | None) -> np.ndarray:
    if isinstance(item, Image.Image):
        return resize_pil(item, size)
    if not isinstance(item, np.ndarray):
        raise MediaDecodeError(
            f"in-memory frame {index}: expected a PIL image or numpy array, got {type(item).__name__}"
        )
    if (
        item.dtype != np.uint8
        or item.ndim not in (2, 3)
        or (item.ndim == 3 and item.shape[2] not in (1, 3, 4))
    ):
        raise MediaDecodeError(
            f"in-memory frame {index}: expected uint8 [H, W, 3] (or [H, W], [H, W, 4]), "
            f"got {item.dtype} {item.shape}"
        )
    if item.ndim == 3 and item.shape[2] == 3 and (size is None or size == (item.shape[1], item.shape[0])):
        return np.ascontiguousarray(item)
    return resize_pil(
        Image.fromarray(item.squeeze(-1) if item.ndim == 3 and item.shape[2] == 1 else item), size
    )


def resample_video(
    video: Video, spec: SamplingSpec, size: tuple[int, int] | None, deadline: Deadline
) -> Video:
    """Re-sample an existing :class:`Video` over its own frames.

    Its frames are treated as evenly spaced at ``len(video) / video.duration`` fps (``video.fps``
    if the duration is 0); the picked frames keep their source indices and timestamps.
    """
    count = len(video)
    fps = count / video.duration if video.duration > 0 else video.fps
    picks = spec.indices(count, fps, source=str(video.source))  # [T] positions in video
    frames = video.frames[picks]  # [T, H, W, 3]
    if size is not None and size != (frames.shape[2], frames.shape[1]):
        deadline.check()
        frames = np.stack([resize_pil(Image.fromarray(f), size) for f in frames])
    return Video(
        frames=frames,
        indices=video.indices[picks],
        timestamps=video.timestamps[picks],
        fps=video.fps,
        duration=video.duration,
        source=video.source,
    )
