"""Video and image input: one call from any source to sampled RGB frames with their timestamps.

    video = load_video("clip.mp4", num_frames=16)             # Video-CCAM uniform sampling
    video.frames      # uint8 [16, H, W, 3]
    video.timestamps  # float64 [16], seconds
    video.to_pil()    # what a Hugging Face image processor takes

Sources: a video file (anything FFmpeg reads), a frame folder, a GIF or other image file, a list
of PIL images / arrays, a ``uint8 [T, H, W, 3]`` array, or an existing :class:`Video`. See
``docs/video-input.md`` for the sampling rules, backends and errors.
"""

from __future__ import annotations

import logging
import os
import stat
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from videoccam.constants import DEFAULT_NUM_FRAMES
from videoccam.errors import (
    ConfigError,
    MediaDecodeError,
    MediaNotFoundError,
    SamplingError,
    UnsupportedMediaError,
)
from videoccam.processing.video_common import Deadline, Video, normalize_size, timeout_error
from videoccam.processing.video_images import (
    IMAGE_SUFFIXES,
    load_frame_folder,
    load_frame_list,
    load_image_file,
    resample_video,
)
from videoccam.processing.video_sampling import SAMPLE_MODES, SamplingSpec, sample_indices
from videoccam.progress import ProgressCallback

__all__ = ["BACKENDS", "BACKEND_ENV", "SAMPLE_MODES", "Video", "load_video", "sample_indices"]

logger = logging.getLogger(__name__)

BACKENDS = ("pyav", "decord")
BACKEND_ENV = "VIDEOCCAM_VIDEO_BACKEND"

Source = str | os.PathLike | Video | np.ndarray | Sequence[Image.Image | np.ndarray]


def load_video(
    source: Source,
    *,
    num_frames: int = DEFAULT_NUM_FRAMES,
    sample: str = "uniform",
    fps: float | None = None,
    max_frames: int | None = None,
    start: float | None = None,
    end: float | None = None,
    size: int | tuple[int, int] | None = None,
    timeout: float | None = 60.0,
    backend: str | None = None,
    seed: int | None = None,
    frame_folder_fps: float = 3.0,
    progress: ProgressCallback | None = None,
    autorotate: bool = True,
) -> Video:
    """Sample frames from a video, frame folder, image or in-memory frames.

    Args:
        source: Path to a video file (mp4, webm, avi, mkv, mov, ...), a frame folder (images
            sorted by the last number in their names, so ``10.jpg`` follows ``9.jpg``), a GIF /
            animated PNG / WebP (per-frame durations give the timestamps), a single image (T=1),
            a list of PIL images or ``uint8`` arrays, a ``uint8 [T, H, W, 3]`` array, or a
            :class:`Video` (re-sampled over its own frames).
        num_frames: Frames wanted by ``uniform``, ``random`` and ``mvbench``.
        sample: ``uniform`` (Video-CCAM segment midpoints), ``fps``, ``random`` (one random frame
            per segment, for training) or ``mvbench`` (VideoChat2's MVBench indices); see
            :func:`sample_indices`.
        fps: Output frame rate for ``sample="fps"``.
        max_frames: Cap for ``sample="fps"``; over it, the range is re-sampled uniformly.
        start: Start of the time bounds in seconds (inclusive).
        end: End of the time bounds in seconds (exclusive); may lie past the end of the clip.
        size: Output size. ``int S`` resizes to ``S x S`` (aspect ratio not kept, as SigLIP's
            processor does); ``(W, H)`` resizes to exactly that; ``None`` keeps the source size.
            Video files are resized inside FFmpeg's converter (bicubic), so full-size frames are
            never held; images use PIL bicubic.
        timeout: Seconds before :class:`DecodeTimeoutError`; ``None`` waits forever. Decoding runs
            in a worker thread that checks the deadline at every packet, and the caller gets
            control back at the deadline even if FFmpeg is blocked.
        backend: ``pyav`` (default) or ``decord`` for video files; default from the
            ``VIDEOCCAM_VIDEO_BACKEND`` environment variable, else ``pyav``.
        seed: Seed of ``sample="random"`` (unseeded when ``None``).
        frame_folder_fps: Frame rate of frame folders, single images and in-memory frames
            (MVBench's TVQA folders are 3 fps).
        progress: Called with ``(frames kept, frames wanted)`` while a video file is decoded
            (from ``(0, n)`` to ``(n, n)``; PyAV reports every kept frame, decord only the end),
            from the decoding thread; see :mod:`videoccam.progress`. Nothing is printed either way.
        autorotate: Turn video frames upright as the file's display matrix (rotation metadata:
            phone videos, the mp4 ``tkhd`` matrix) says, as players and ``ffmpeg`` do; ``size``
            is then the size after turning. ``False`` returns frames as stored.

    Returns:
        The sampled frames in time order, with their source indices and timestamps.

    Raises:
        MediaNotFoundError: The path does not exist, or is empty (``""`` is not read as ``"."``).
        MediaDecodeError: The file is empty, truncated, not media, has no video stream or no
            decodable frame, or no frame was sampled (:class:`UnsupportedMediaError` for unknown
            codecs/containers).
        DecodeTimeoutError: Decoding took longer than ``timeout``.
        SamplingError: Bad sampling arguments (the message names the argument).
        ConfigError: Bad ``size``, ``timeout``, ``backend`` or ``autorotate``.
    """
    spec = SamplingSpec(num_frames, sample, fps, max_frames, start, end, seed)
    spec.validate()
    if not isinstance(autorotate, bool):
        raise ConfigError(f"autorotate must be True or False, got {autorotate!r}")
    out_size = normalize_size(size)
    _check_timeout(timeout)
    if not (isinstance(frame_folder_fps, (int, float)) and frame_folder_fps > 0):
        raise SamplingError(f"frame_folder_fps must be a number > 0, got {frame_folder_fps!r}")
    if isinstance(source, Video):
        return _require_frames(resample_video(source, spec, out_size, Deadline(timeout, str(source.source))))
    if isinstance(source, np.ndarray):
        _check_frame_array(source)
        deadline = Deadline(timeout, "<frame array>")
        return _require_frames(load_frame_list(source, spec, out_size, float(frame_folder_fps), deadline))
    if isinstance(source, (list, tuple)):
        deadline = Deadline(timeout, "<frame list>")
        return _require_frames(load_frame_list(source, spec, out_size, float(frame_folder_fps), deadline))
    if not isinstance(source, (str, os.PathLike)):
        raise UnsupportedMediaError(f"cannot load a video from a {type(source).__name__}")
    if isinstance(source, str) and not source.strip():
        # Path("") is Path("."): an empty string would silently read the working directory's images.
        raise MediaNotFoundError(
            f"source is an empty or blank path ({source!r}); give a video file, image or frame folder "
            "(\".\" for the current directory)"
        )
    path = Path(source)
    decode = _video_decoder(backend)

    def work(deadline: Deadline) -> Video:
        folder_fps = float(frame_folder_fps)
        return _load_path(path, spec, out_size, decode, folder_fps, deadline, progress, autorotate)

    return _require_frames(_run_with_timeout(work, timeout, str(path)))


def _load_path(
    path: Path,
    spec: SamplingSpec,
    size: tuple[int, int] | None,
    decode: Callable[..., Video],
    folder_fps: float,
    deadline: Deadline,
    progress: ProgressCallback | None = None,
    autorotate: bool = True,
) -> Video:
    if not path.exists():
        raise MediaNotFoundError(f"{path}: no such file or directory")
    if path.is_dir():
        return load_frame_folder(path, spec, size, folder_fps, deadline)
    if path.is_file() and path.stat().st_size == 0:  # pipes and devices report size 0 too
        raise MediaDecodeError(f"{path}: file is empty (0 bytes)")
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return load_image_file(path, spec, size, folder_fps, deadline)
    return decode(str(path), spec, size, deadline, progress, autorotate=autorotate)


def check_media_path(source: str | os.PathLike) -> None:
    """Refuse at once what cannot be a media file, before anything opens it: a missing path, or a FIFO,
    socket or device (a FIFO blocks its reader, ``/dev/zero`` never ends). A folder (frame folder) and a
    symlink to a regular file pass. :func:`load_video` itself reads a FIFO under its ``timeout``.

    Raises:
        MediaNotFoundError: the path does not exist.
        MediaDecodeError: it is neither a regular file nor a folder, or cannot be examined.
    """
    try:
        info = os.stat(source)  # follows symlinks: a link to a regular file is that file
    except FileNotFoundError:
        raise MediaNotFoundError(f"{source}: no such file or directory") from None
    except OSError as err:
        raise MediaDecodeError(f"{source}: cannot read ({err.strerror or err})") from err
    if not (stat.S_ISREG(info.st_mode) or stat.S_ISDIR(info.st_mode)):
        raise MediaDecodeError(f"{source}: not a regular file (a FIFO, socket or device is not a media file)")


def _video_decoder(backend: str | None) -> Callable[..., Video]:
    """The decode function of the chosen backend (argument, else environment variable, else pyav)."""
    origin = "backend"
    if backend is None and os.environ.get(BACKEND_ENV):
        backend, origin = os.environ[BACKEND_ENV], f"environment variable {BACKEND_ENV}"
    name = (backend or "pyav").strip().lower()
    if name == "pyav":
        from videoccam.processing.video_pyav import decode_pyav

        return decode_pyav
    if name == "decord":
        from videoccam.processing.video_decord import decode_decord, import_decord

        import_decord()  # fail now, with an install hint, rather than inside the worker
        return decode_decord
    raise ConfigError(f"{origin} must be one of {', '.join(BACKENDS)}; got {backend!r}")


def _require_frames(video: Video) -> Video:
    """A video with no frames is an error here, not a crash later inside the vision encoder."""
    if len(video) == 0:
        raise MediaDecodeError(f"{video.source}: no frames were sampled (the source yielded an empty video)")
    return video


def _check_timeout(timeout: float | None) -> None:
    if timeout is not None and not (
        isinstance(timeout, (int, float)) and not isinstance(timeout, bool) and timeout > 0
    ):
        raise ConfigError(f"timeout must be a number of seconds > 0 or None, got {timeout!r}")


def _check_frame_array(frames: np.ndarray) -> None:
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise MediaDecodeError(
            f"<frame array>: expected uint8 [T, H, W, 3], got {frames.dtype} {frames.shape}"
        )


def _run_with_timeout(work: Callable[[Deadline], Video], timeout: float | None, source: str) -> Video:
    """Run ``work`` in a worker thread and give up at the deadline.

    The worker checks the deadline at every packet / frame and stops itself; the caller does not
    wait for it, so even a call blocked inside FFmpeg or decord cannot hang the caller.
    """
    deadline = Deadline(timeout, source)
    if timeout is None:
        return work(deadline)
    outcome: dict[str, object] = {}

    def target() -> None:
        try:
            outcome["video"] = work(deadline)
        except BaseException as err:  # noqa: BLE001 -- any failure is handed to the caller below
            outcome["error"] = err

    worker = threading.Thread(target=target, name="videoccam-decode", daemon=True)
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        deadline.cancel()
        logger.warning(
            "%s: decode timed out after %s s; the worker stops at its next packet", source, timeout
        )
        raise timeout_error(source, timeout)
    if "error" in outcome:
        raise outcome["error"]
    return outcome["video"]
