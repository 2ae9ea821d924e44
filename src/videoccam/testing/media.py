"""Synthetic test media whose every frame shows its own index.

Frame ``k`` is a 4x4 grid of coloured blocks; block ``b`` (row-major, top-left first) is bright when
bit ``b`` of ``k`` is set and dark otherwise, so ``k`` in ``[0, 65535]`` can be read back with
:func:`read_test_pattern`. The blocks are large (a quarter of the frame on each side) and differ in
luma by about 180 levels, so the number survives lossy codecs, yuv420 chroma subsampling, palette
quantisation (GIF), JPEG, and resizing down to 32x32.

Used by the tests (of decoding, sampling, the processor, training) and by anyone who needs a
video whose frame indices can be asserted after decoding::

    path = write_test_video(tmp_path / "clip.mp4", num_frames=60, fps=30, keyframe_interval=10)
    video = load_video(path, num_frames=8)
    assert [read_test_pattern(f) for f in video.frames] == video.indices.tolist()

:func:`write_video` is the general encoder underneath: any ``uint8`` RGB frames to any
FFmpeg codec and container (the synthetic world of :mod:`videoccam.synth` writes its clips
with it).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from fractions import Fraction
from pathlib import Path

import numpy as np
from PIL import Image

GRID = 4
MAX_PATTERN = 2 ** (GRID * GRID) - 1

# Bright ("bit set") and dark ("bit clear") colours, cycled over the blocks so frames look coloured.
# Every bright colour has luma > 190, every dark one < 70; read_test_pattern thresholds at 128.
_BRIGHT = np.array([[255, 255, 255], [255, 230, 90], [120, 240, 255], [255, 170, 230]], dtype=np.uint8)
_DARK = np.array([[0, 0, 0], [90, 20, 20], [20, 60, 20], [30, 30, 110]], dtype=np.uint8)
_LUMA = np.array([0.299, 0.587, 0.114])
# RGB [0, 255] -> limited-range BT.601 Y'CbCr offsets from (16, 128, 128), the matrix swscale
# inverts by default.
_BT601 = np.array([[65.481, 128.553, 24.966], [-37.797, -74.203, 112.0], [112.0, -93.786, -18.214]]) / 255.0

# Default codec options per encoder: fast settings, since test media only needs to be valid.
_FAST_OPTIONS: dict[str, dict[str, str]] = {
    "libx264": {"preset": "ultrafast"},
    "libx265": {"preset": "ultrafast", "x265-params": "log-level=error"},
    "libvpx-vp9": {"deadline": "realtime", "cpu-used": "8", "row-mt": "1"},
    "libvpx": {"deadline": "realtime", "cpu-used": "8"},
}
_CONTAINER_BY_SUFFIX = {
    ".mkv": "matroska",
    ".webm": "webm",
    ".mp4": "mp4",
    ".mov": "mov",
    ".avi": "avi",
    ".ts": "mpegts",
}


def pattern_cells(index: int) -> np.ndarray:
    """Colours of the 4x4 blocks that encode ``index``.

    Args:
        index: The number to encode, in ``[0, 65535]``.

    Returns:
        ``uint8[4, 4, 3]`` RGB colour of each block.
    """
    if not 0 <= index <= MAX_PATTERN:
        raise ValueError(f"test pattern index must be in [0, {MAX_PATTERN}], got {index}")
    bits = (index >> np.arange(GRID * GRID)) & 1  # [16], bit b of index
    palette = np.arange(GRID * GRID) % len(_BRIGHT)  # [16]
    cells = np.where(bits[:, None] == 1, _BRIGHT[palette], _DARK[palette])  # [16, 3]
    return cells.reshape(GRID, GRID, 3)  # [4, 4, 3]


def make_test_frame(index: int, size: tuple[int, int]) -> np.ndarray:
    """RGB frame of ``size = (W, H)`` showing ``index`` as a block pattern.

    Returns:
        ``uint8[H, W, 3]``.
    """
    return _upsample(pattern_cells(index), size)  # [H, W, 3]


def _upsample(cells: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Blow a ``[4, 4, ...]`` grid up to ``[H, W, ...]`` (block ``r`` covers rows with ``y*4//H == r``)."""
    width, height = size
    row_counts = np.bincount(np.arange(height) * GRID // height, minlength=GRID)  # [4]
    col_counts = np.bincount(np.arange(width) * GRID // width, minlength=GRID)  # [4]
    return np.repeat(np.repeat(cells, row_counts, axis=0), col_counts, axis=1)  # [H, W, ...]


def _yuv420p_frame(index: int, size: tuple[int, int]) -> np.ndarray:
    """The test frame directly as yuv420p planes (BT.601 limited range), skipping an RGB->YUV pass.

    Returns:
        ``uint8[H * 3 // 2, W]``: the Y plane, then U and V, as ``VideoFrame.from_ndarray`` wants.
    """
    width, height = size
    rgb = pattern_cells(index).astype(np.float64)  # [4, 4, 3]
    yuv = np.clip(np.rint(rgb @ _BT601.T + np.array([16.0, 128.0, 128.0])), 0, 255).astype(
        np.uint8
    )  # [4, 4, 3]
    luma = _upsample(yuv[..., 0], size)  # [H, W]
    chroma_u = _upsample(yuv[..., 1], (width // 2, height // 2))  # [H/2, W/2]
    chroma_v = _upsample(yuv[..., 2], (width // 2, height // 2))  # [H/2, W/2]
    chroma = np.concatenate([chroma_u.reshape(-1), chroma_v.reshape(-1)]).reshape(
        height // 2, width
    )  # [H/2, W]
    return np.concatenate([luma, chroma], axis=0)  # [H * 3/2, W]


def read_test_pattern(frame: np.ndarray) -> int:
    """Decode the index shown by a frame made with :func:`make_test_frame`.

    Only the central half of each block is read, so block edges blurred by compression or
    resizing do not matter.

    Args:
        frame: ``uint8[H, W, 3]`` RGB frame (any size down to about 32x32).

    Returns:
        The encoded index.
    """
    frame = np.asarray(frame)
    if frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f"expected an RGB frame [H, W, 3], got shape {frame.shape}")
    height, width = frame.shape[:2]
    luma = frame.astype(np.float64) @ _LUMA  # [H, W]
    value = 0
    for bit in range(GRID * GRID):
        row, col = divmod(bit, GRID)
        y0, y1 = _central_half(row, height)
        x0, x1 = _central_half(col, width)
        if luma[y0:y1, x0:x1].mean() > 128:
            value |= 1 << bit
    return value


def _central_half(block: int, extent: int) -> tuple[int, int]:
    """Pixel range [lo, hi) of the central half of a block along one axis."""
    lo = block * extent / GRID
    span = extent / GRID
    start = int(lo + span / 4)
    return start, max(start + 1, int(lo + 3 * span / 4))


def write_test_video(
    path: str | Path,
    *,
    num_frames: int,
    fps: float,
    size: tuple[int, int] = (64, 48),
    codec: str = "libx264",
    container: str | None = None,
    keyframe_interval: int | None = None,
    pix_fmt: str = "yuv420p",
    options: Mapping[str, str] | None = None,
) -> Path:
    """Encode a video whose frame ``k`` shows ``k`` (see :func:`read_test_pattern`).

    Args:
        path: Output file; its suffix picks the container unless ``container`` is given.
        num_frames: Number of frames (at most 65536).
        fps: Frame rate; fractional rates such as 29.97 are kept exactly as ``30000/1001``.
        size: ``(W, H)``; even numbers for yuv420p.
        codec: FFmpeg encoder name: ``libx264``, ``libvpx-vp9``, ``mpeg4``, ``ffv1``, ...
        container: FFmpeg muxer name (``mp4``, ``webm``, ``avi``, ``matroska``, ``mov``, ``mpegts``).
        keyframe_interval: Exact distance between keyframes (scene-cut detection is off), or
            ``None`` for the encoder's default.
        pix_fmt: Pixel format of the encoded stream.
        options: Extra encoder options; they override the fast defaults (``preset=ultrafast`` for
            x264, ``deadline=realtime`` for VP9).

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    direct_yuv = pix_fmt == "yuv420p" and size[0] % 2 == 0 and size[1] % 2 == 0
    if direct_yuv:
        frames = (_yuv420p_frame(index, size) for index in range(num_frames))
    else:
        frames = (make_test_frame(index, size) for index in range(num_frames))
    return write_video(
        path, frames, fps, codec=codec, container=container, keyframe_interval=keyframe_interval,
        pix_fmt=pix_fmt, frame_format="yuv420p" if direct_yuv else "rgb24", options=options,
    )


def write_video(
    path: str | Path,
    frames: Iterable[np.ndarray],
    fps: float,
    *,
    codec: str = "libx264",
    container: str | None = None,
    keyframe_interval: int | None = None,
    pix_fmt: str = "yuv420p",
    frame_format: str = "rgb24",
    options: Mapping[str, str] | None = None,
) -> Path:
    """Encode ``frames`` into a video file with PyAV, one frame per ``1 / fps`` seconds.

    Args:
        path: Output file (parents are created); its suffix picks the container unless
            ``container`` is given.
        frames: ``uint8`` frames, all the same size: ``[H, W, 3]`` RGB for ``frame_format="rgb24"``,
            or ``[H * 3 / 2, W]`` planes (Y, then U, then V) for ``frame_format="yuv420p"``.
        fps: Frame rate; fractional rates such as 29.97 are kept exactly as ``30000/1001``.
        codec: FFmpeg encoder name: ``libx264``, ``libvpx-vp9``, ``mpeg4``, ``ffv1``, ...
        container: FFmpeg muxer name (``mp4``, ``webm``, ``avi``, ``matroska``, ``mov``, ``mpegts``).
        keyframe_interval: Exact distance between keyframes (scene-cut detection is off), or
            ``None`` for the encoder's default.
        pix_fmt: Pixel format of the encoded stream; even frame sizes for yuv420p.
        frame_format: Layout of the arrays in ``frames`` (``"rgb24"`` or ``"yuv420p"``).
        options: Extra encoder options; they override the fast defaults (``preset=ultrafast`` for
            x264, ``deadline=realtime`` for VP9).

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        ValueError: ``frames`` is empty, or a frame has the wrong shape or dtype.
    """
    import av  # PyAV is an optional dependency (the ``video`` extra)

    if frame_format not in ("rgb24", "yuv420p"):
        raise ValueError(f"frame_format must be 'rgb24' or 'yuv420p', got {frame_format!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if container is None:
        container = _CONTAINER_BY_SUFFIX.get(path.suffix.lower())
    rate = Fraction(fps).limit_denominator(1001)
    iterator = iter(frames)
    first = next(iterator, None)
    if first is None:
        raise ValueError("write_video needs at least one frame")
    size = _frame_size(first, frame_format)
    time_base = 1 / rate
    with av.open(str(path), mode="w", format=container) as output:
        stream = output.add_stream(
            codec, rate=rate, options=_codec_options(codec, keyframe_interval, options)
        )
        stream.width, stream.height = size
        stream.pix_fmt = pix_fmt
        if keyframe_interval is not None:
            stream.codec_context.gop_size = keyframe_interval
        for index, array in enumerate(itertools.chain([first], iterator)):
            if _frame_size(array, frame_format) != size:
                raise ValueError(f"frame {index} has shape {array.shape}; frame 0 was {first.shape}")
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(array), format=frame_format)
            frame.pts = index
            frame.time_base = time_base
            output.mux(stream.encode(frame))
        output.mux(stream.encode(None))
    return path


def _frame_size(array: np.ndarray, frame_format: str) -> tuple[int, int]:
    """``(W, H)`` of one frame array in ``frame_format``, checking its shape and dtype."""
    if array.dtype != np.uint8:
        raise ValueError(f"frames must be uint8, got {array.dtype}")
    if frame_format == "rgb24":
        if array.ndim != 3 or array.shape[2] != 3:
            raise ValueError(f"an rgb24 frame must be [H, W, 3], got shape {array.shape}")
        return array.shape[1], array.shape[0]
    if array.ndim != 2 or array.shape[0] % 3 != 0:
        raise ValueError(f"a yuv420p frame must be [H * 3 / 2, W] planes, got shape {array.shape}")
    return array.shape[1], array.shape[0] * 2 // 3


def _codec_options(
    codec: str, keyframe_interval: int | None, options: Mapping[str, str] | None
) -> dict[str, str]:
    """Encoder options: fast defaults, exact keyframe spacing when asked, then the caller's."""
    merged = dict(_FAST_OPTIONS.get(codec, {}))
    if keyframe_interval is not None:
        if codec == "libx264":
            interval = str(keyframe_interval)
            merged["x264-params"] = f"keyint={interval}:min-keyint={interval}:scenecut=0"
        elif codec.startswith("libvpx"):
            merged["keyint_min"] = str(keyframe_interval)
    merged.update(options or {})
    return merged


def write_test_gif(
    path: str | Path,
    *,
    num_frames: int,
    durations_ms: int | Sequence[int] = 100,
    size: tuple[int, int] = (64, 48),
) -> Path:
    """Write an animated GIF whose frame ``k`` shows ``k``.

    Args:
        path: Output file.
        num_frames: Number of frames.
        durations_ms: Display time of every frame, or one per frame (GIF stores 10 ms units, so use
            multiples of 10 to get them back exactly).
        size: ``(W, H)``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    durations = [durations_ms] * num_frames if isinstance(durations_ms, int) else list(durations_ms)
    if len(durations) != num_frames:
        raise ValueError(f"durations_ms has {len(durations)} entries for {num_frames} frames")
    images = [Image.fromarray(make_test_frame(k, size)) for k in range(num_frames)]
    images[0].save(path, save_all=True, append_images=images[1:], duration=durations, loop=0, optimize=False)
    return path


def write_frame_folder(
    directory: str | Path,
    n: int,
    start_index: int = 1,
    digits: int = 5,
    ext: str = "jpg",
    size: tuple[int, int] = (64, 48),
) -> Path:
    """Write ``n`` images named like MVBench's frame folders (``00001.jpg``, ``00002.jpg``, ...).

    The image at position ``k`` (0-based, in numeric file order) shows ``k``, which is the index
    :func:`~videoccam.processing.video.load_video` reports for it.

    Args:
        directory: Folder to create (parents included).
        n: Number of images.
        start_index: Number in the first file name (MVBench: 1).
        digits: Zero-padding of the numbers (``digits=0`` for no padding: ``1.jpg ... 10.jpg``).
        ext: Image file extension, which picks the format.
        size: ``(W, H)``.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for k in range(n):
        Image.fromarray(make_test_frame(k, size)).save(directory / f"{start_index + k:0{digits}d}.{ext}")
    return directory
