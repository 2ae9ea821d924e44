"""The PyAV backend's view of a file: its video stream, frame count and frame table (from the
sample table or a packet scan), and the display orientation (see :mod:`.video_pyav`)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from videoccam.errors import MediaDecodeError, UnsupportedMediaError
from videoccam.processing.video_common import (
    Deadline,
    check_frame_size,
    display_matrix_from_bytes,
    orientation_from_display_matrix,
    orientation_from_rotate_tag,
)

logger = logging.getLogger(__name__)

# AVFMT_NOTIMESTAMPS: the demuxer has no timestamps of its own (raw elementary streams).
NO_TIMESTAMPS_FLAG = 0x0080


@dataclass
class StreamInfo:
    """What the container says about the video stream, in the units the decoder needs.

    Frame numbers come from one of three sources: ``table`` (the sorted presentation timestamps of
    every frame, read from the packets: exact for any timing, variable frame rates included), the
    constant-rate formula ``round((pts - start_pts) * time_base * fps)`` (mp4/mov whose sample
    table is evenly spaced), or, when ``counted``, the number of frames decoded since the start of
    the stream (streams without real timestamps, such as raw MPEG video or H.264).
    """

    fps: float
    time_base: Fraction
    start_pts: int
    total: int
    duration: float
    width: int
    height: int
    table: np.ndarray | None = None  # int64[total] ascending pts of every frame
    counted: bool = False
    stamp_kind: str = "pts"  # the frame timestamp that names a decoded frame: "pts" or "dts"

    def index_of(self, pts: int) -> int:
        """Frame index of a presentation timestamp."""
        table = self.table
        if table is None:
            return round(float((pts - self.start_pts) * self.time_base) * self.fps)
        pos = int(np.searchsorted(table, pts))
        if pos >= len(table):  # past the last frame the packets announced
            return len(table) - 1 + round(float((pts - int(table[-1])) * self.time_base) * self.fps)
        if pos > 0 and pts - int(table[pos - 1]) < int(table[pos]) - pts:
            pos -= 1  # nearest frame
        if pos == 0 and pts < int(table[0]):
            return round(float((pts - int(table[0])) * self.time_base) * self.fps)
        return pos

    def pts_of(self, index: int) -> int:
        """Presentation timestamp (stream time base) of a frame index."""
        table = self.table
        if table is None:
            return self.start_pts + round(index / self.fps / self.time_base)
        if index < 0:
            return int(table[0]) + round(index / self.fps / self.time_base)
        if index >= len(table):
            return int(table[-1]) + round((index - len(table) + 1) / self.fps / self.time_base)
        return int(table[index])

    def seconds(self, pts: int) -> float:
        return float((pts - self.start_pts) * self.time_base)


def video_stream(container, path: str):
    if not container.streams.video:
        kinds = sorted({s.type for s in container.streams}) or ["none"]
        raise MediaDecodeError(f"{path}: no video stream (streams found: {', '.join(kinds)})")
    stream = container.streams.video[0]
    if stream.codec_context is None:
        raise UnsupportedMediaError(f"{path}: no decoder for the video codec of this file")
    return stream


def stream_info(container, stream, path: str, deadline: Deadline) -> StreamInfo:
    """Frame count, rate and frame numbering of the stream.

    The count is taken from the header only where it is exact: an mp4/mov sample table whose
    timestamps are evenly spaced. Everywhere else (mkv, webm, avi, ts, program streams, raw
    streams, variable frame rates) the packets are counted on a second handle, without decoding,
    and their timestamps kept as the frame table. A duration estimated from the bitrate (raw MPEG
    video: 100 frames looked like 3) or a constant-rate guess on a variable-rate file never
    decides the count.
    """
    width, height = stream.codec_context.width, stream.codec_context.height
    check_frame_size(width, height, path)
    time_base = stream.time_base
    if time_base is None or time_base <= 0:
        raise MediaDecodeError(f"{path}: video stream has no time base")
    start_pts = stream.start_time if stream.start_time is not None else 0
    header_duration = _duration(container, stream)
    fps = _average_fps(stream, header_duration)
    if _sample_table_is_exact(container, stream, fps):
        total = stream.frames
        return StreamInfo(fps, time_base, start_pts, total, header_duration or total / fps, width, height)
    total, stamps = _scan_packets(path, deadline)
    if total <= 0:
        raise MediaDecodeError(f"{path}: video stream has no frames")
    if container.format.flags & NO_TIMESTAMPS_FLAG:
        # Raw streams: timestamps, if any, are invented by FFmpeg's parser; count decoded frames.
        return StreamInfo(fps, time_base, start_pts, total, total / fps, width, height, counted=True)
    if stamps is None:  # some packets without pts: number frames by the stated rate
        return StreamInfo(fps, time_base, start_pts, total, header_duration or total / fps, width, height)
    table = np.sort(stamps)  # [total] presentation order
    span = float((int(table[-1]) - int(table[0])) * time_base)
    step = span / (total - 1) if total > 1 else 1 / fps  # mean frame duration
    duration = span + step
    if span < header_duration <= span + 4 * step:  # the header agrees, and knows the last frame's duration
        duration = header_duration
    if not _evenly_spaced(table, time_base, fps):  # variable frame rate: the stated rate is not the average
        fps = total / duration
    # AVI stores no presentation times: FFmpeg guesses the pts, and with DivX "packed" B-frames
    # the guesses land on the wrong frames, while the dts (the frame slot) stay right.
    stamp_kind = "dts" if "avi" in container.format.name.split(",") else "pts"
    return StreamInfo(
        fps, time_base, int(table[0]), total, duration, width, height, table=table, stamp_kind=stamp_kind
    )


def _evenly_spaced(stamps: np.ndarray, time_base: Fraction, fps: float) -> bool:
    """Whether ``round((t - t0) * time_base * fps)`` numbers the timestamps ``0, 1, 2, ...``."""
    numbers = np.round((stamps - stamps[0]).astype(np.float64) * float(time_base) * fps)
    return bool(np.array_equal(numbers, np.arange(len(stamps))))


def _sample_table_is_exact(container, stream, fps: float) -> bool:
    """mp4/mov: the header's frame count is the sample count, and the index (all samples, at open)
    shows whether they are evenly spaced; then frame numbers follow from timestamps by formula."""
    if "mp4" not in container.format.name.split(",") or stream.frames <= 0:
        return False
    try:
        entries = stream.index_entries  # PyAV >= 17
    except AttributeError:
        return False
    if len(entries) != stream.frames or any(entry.is_discard for entry in entries):
        return False  # edit lists that drop samples, fragmented files: count the packets instead
    stamps = np.fromiter((entry.timestamp for entry in entries), dtype=np.int64, count=len(entries))
    return _evenly_spaced(stamps, stream.time_base, fps)


def _duration(container, stream) -> float:
    """Seconds of the video stream, or of the container when the stream does not say; 0 if unknown."""
    if stream.duration is not None and stream.duration > 0:
        return float(stream.duration * stream.time_base)
    if container.duration is not None and container.duration > 0:
        return container.duration / 1_000_000  # AV_TIME_BASE units
    return 0.0


def _average_fps(stream, duration: float) -> float:
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate is not None and rate > 0:
            return float(rate)
    if stream.frames > 0 and duration > 0:
        return stream.frames / duration
    logger.warning("video stream states no frame rate; assuming 25 fps")
    return 25.0


def _scan_packets(path: str, deadline: Deadline) -> tuple[int, np.ndarray | None]:
    """Frame count and the pts of every frame, from the packets (demuxed, not decoded).

    Uses a second handle on the file, since raw streams (``.h264``) cannot seek back. About 3 us
    per packet plus reading the file once. The timestamps are ``None`` when some packet has no pts.

    Returns:
        The number of frames and ``int64[count]`` their pts in decode order (or ``None``).
    """
    import av

    count, stamps = 0, []
    with av.open(path, timeout=deadline.timeout) as probe:
        for packet in probe.demux(probe.streams.video[0]):
            deadline.check()
            if packet.size <= 0 or packet.is_discard:  # flush packets; samples an edit list drops
                continue
            count += 1
            if stamps is not None:
                if packet.pts is None:
                    stamps = None
                else:
                    stamps.append(packet.pts)
    return count, None if stamps is None else np.array(stamps, dtype=np.int64)


def probe_orientation(path: str, timeout: float | None = None) -> str:
    """How frames of the video at ``path`` are turned for display (see :func:`frame_orientation`),
    from its first decodable frame; ``"none"`` when it cannot be read. For backends that do not
    apply the display matrix themselves (decord)."""
    import av

    try:
        with av.open(path, timeout=timeout) as container:
            stream = container.streams.video[0]
            for frame in container.decode(stream):
                return frame_orientation(frame, stream, path)
    except (av.error.FFmpegError, IndexError, OSError) as err:
        logger.debug("%s: display matrix not read (%s)", path, err)
    return "none"


def frame_orientation(frame, stream, path: str) -> str:
    """How to turn frames for display: the frame's display matrix (FFmpeg attaches the stream's,
    from the mp4 ``tkhd`` box or an H.264 SEI), else an older FFmpeg's ``rotate`` stream tag."""
    try:
        entries = list(frame.side_data)
    except (AttributeError, TypeError):
        entries = []
    for entry in entries:
        kind = getattr(entry.type, "name", str(entry.type))
        if kind.endswith("DISPLAYMATRIX"):
            matrix = display_matrix_from_bytes(bytes(entry))
            if matrix is not None:
                return orientation_from_display_matrix(matrix, path)
    tag = (stream.metadata or {}).get("rotate")
    return orientation_from_rotate_tag(tag, path) if tag else "none"
