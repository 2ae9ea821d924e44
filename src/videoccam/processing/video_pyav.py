"""PyAV (FFmpeg) video backend: seek to keyframes, decode forward, convert only the kept frames.

How a call works:

1. Open the file (``av.open`` with the call's timeout as FFmpeg's I/O timeout) and pick the first
   video stream. Frame count: ``stream.frames`` for an mp4/mov whose sample table is evenly
   spaced; for every other file the video packets are demuxed (not decoded) once on a second
   handle: their number is the count and their sorted pts the frame table that numbers frames
   (variable frame rates included). Raw streams without timestamps number frames by counting.
2. Sample the wanted indices (:mod:`.video_sampling`).
3. Walk the wanted indices in order. Before each one, decide between decoding forward from where
   the decoder is and seeking: seek when a keyframe lies between the current position and the
   wanted frame and at least ``SEEK_MIN_SAVING`` frames of decoding would be saved (keyframes
   come from the demuxer's index, mp4/mov/avi, or the mkv/webm cues read on the first seek;
   without an index, from the keyframe spacing seen so far). Frames before a wanted one are
   decoded (they are references) but never converted to arrays.
4. A decoded frame's index is its pts's position in the frame table (mp4 with an even sample
   table: ``round((pts - stream_start) * time_base * average_fps)``; AVI: the dts, as FFmpeg's
   guessed pts of packed B-frames are off by one); the first frame whose index is ``>=`` the
   wanted one is kept, so the returned ``indices`` and ``timestamps`` are those of the frames
   really returned. Frames are turned upright as their display matrix says (``autorotate``).
5. A seek that lands after the target (MPEG-TS, B-frame streams) or at the end of the stream is
   retried further back, then from the start; a demuxer that refuses to seek (raw ``.h264``)
   is reopened and decoded forward.
6. A packet the decoder rejects (corrupt data) is skipped and frames are dropped up to the next
   keyframe; a warning names the time range lost, and wanted frames inside it get the next
   decodable frame (another warning lists them).
7. If the stream ends before a wanted index (an mp4 header's frame count was too high, or the
   data after a damage has no keyframe), the last decoded frame is returned in its place (with
   its own index and timestamp) and a warning is logged. No decodable frame at all is an error.
"""

from __future__ import annotations

import bisect
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np

from videoccam.errors import MediaDecodeError, UnsupportedMediaError, VideoCCAMError
from videoccam.processing.video_common import (
    Deadline,
    Video,
    check_frame_size,
    display_matrix_from_bytes,
    orient,
    orientation_from_display_matrix,
    orientation_from_rotate_tag,
    stored_size,
    swaps_axes,
    timeout_error,
)
from videoccam.processing.video_sampling import SamplingSpec
from videoccam.progress import ProgressCallback

logger = logging.getLogger(__name__)

# Seek only when it saves at least this many decoded frames. A seek (demuxer seek, decoder flush,
# refilling FFmpeg's frame threads, then a keyframe) costs as much as decoding 3.3 (720p H.264),
# 3.7 (1080p H.264) or 5.8 (720p VP9) frames (`bench/decode.py --calibrate`, docs/video-input.md).
SEEK_MIN_SAVING = 8
# Assumed keyframe spacing (frames) while neither an index nor two keyframes have been seen.
DEFAULT_GOP = 250
# Seek attempts, each starting further back, before decoding from the start of the stream.
SEEK_RETRIES = 3
INTERPOLATION = "BICUBIC"
# AVFMT_NOTIMESTAMPS: the demuxer has no timestamps of its own (raw elementary streams).
NO_TIMESTAMPS_FLAG = 0x0080
# Demuxer read errors in a row (no good packet between) after which the rest of the file is given up.
MAX_READ_ERRORS = 8


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


def decode_pyav(path: str, spec: SamplingSpec, size: tuple[int, int] | None, deadline: Deadline,
                progress: ProgressCallback | None = None, autorotate: bool = True) -> Video:
    """Decode the frames ``spec`` picks from the video file at ``path`` (see the module docstring);
    ``progress(kept, wanted)`` after each kept frame; ``autorotate`` turns frames upright as the
    display matrix says (``size`` is then the size after turning)."""
    import av

    try:
        with av.open(path, timeout=deadline.timeout) as container:
            return _decode_container(container, path, spec, size, deadline, progress, autorotate)
    except VideoCCAMError:  # ours already (DecodeTimeoutError is an OSError: keep it out of the catch-all)
        raise
    except av.error.ExitError as err:  # FFmpeg's I/O interrupt fired: the open/read timeout
        raise timeout_error(path, deadline.timeout) from err
    except (av.error.DecoderNotFoundError, av.error.DemuxerNotFoundError, av.error.PatchWelcomeError) as err:
        raise UnsupportedMediaError(f"{path}: unsupported container or codec ({_reason(err)})") from err
    except (av.error.FFmpegError, OSError, RuntimeError, EOFError) as err:
        raise MediaDecodeError(f"{path}: not a readable video file ({_reason(err)})") from err


def _reason(err: Exception) -> str:
    """FFmpeg's message without the file name PyAV appends."""
    strerror = getattr(err, "strerror", None)
    return strerror if isinstance(strerror, str) and strerror else str(err)


def _decode_container(
    container, path: str, spec: SamplingSpec, size: tuple[int, int] | None, deadline: Deadline,
    progress: ProgressCallback | None = None, autorotate: bool = True,
) -> Video:
    stream = _video_stream(container, path)
    stream.thread_type = "AUTO"  # FFmpeg frame + slice threads, thread count = cores
    info = _stream_info(container, stream, path, deadline)
    indices = spec.indices(info.total, info.fps, source=path)  # [T], may repeat (mvbench on short clips)
    wanted, inverse = np.unique(indices, return_inverse=True)  # [U] ascending, [T]
    reader = _Reader(container, stream, info, deadline, path)
    output = _Output(len(wanted), size, info, autorotate, path)
    try:
        frames, got_indices, got_pts = _collect(reader, wanted, output, path, progress)
    finally:
        reader.close()
    return Video(
        frames=frames[inverse] if len(wanted) < len(indices) else frames,
        indices=got_indices[inverse],
        timestamps=np.array([info.seconds(p) for p in got_pts[inverse]], dtype=np.float64),
        fps=info.fps,
        duration=info.duration,
        source=path,
    )


def _video_stream(container, path: str):
    if not container.streams.video:
        kinds = sorted({s.type for s in container.streams}) or ["none"]
        raise MediaDecodeError(f"{path}: no video stream (streams found: {', '.join(kinds)})")
    stream = container.streams.video[0]
    if stream.codec_context is None:
        raise UnsupportedMediaError(f"{path}: no decoder for the video codec of this file")
    return stream


def _stream_info(container, stream, path: str, deadline: Deadline) -> StreamInfo:
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


@dataclass
class _Keyframes:
    """Keyframe indices known so far: from the demuxer's index and from decoded frames."""

    known: list[int] = field(default_factory=lambda: [0])  # a stream starts with a keyframe
    from_index: bool = False

    def refresh_from_index(self, stream, info: StreamInfo) -> None:
        """Read the demuxer index (mp4/mov/avi at open; mkv/webm cues after the first seek)."""
        try:
            entries = stream.index_entries  # PyAV >= 17
        except AttributeError:
            return
        if len(entries) < 2:
            return
        stamps = [e.timestamp for e in entries if e.is_keyframe]
        # Index timestamps are decode times; shift so the first keyframe sits at the stream start.
        shift = info.start_pts - stamps[0] if stamps else 0
        self.known = sorted({info.index_of(t + shift) for t in stamps})
        self.from_index = True

    def saw(self, index: int) -> None:
        if not self.from_index and index > self.known[-1]:
            self.known.append(index)

    def last_at_or_before(self, index: int) -> int | None:
        """Largest keyframe ``<= index``; estimated from the spacing seen when there is no index."""
        pos = bisect.bisect_right(self.known, index)
        found = self.known[pos - 1] if pos > 0 else None
        if self.from_index:
            return found
        # No index: assume keyframes keep the widest spacing seen so far (DEFAULT_GOP until two are seen).
        gop = max(b - a for a, b in zip(self.known, self.known[1:])) if len(self.known) > 1 else DEFAULT_GOP
        last = self.known[-1]
        return last + (index - last) // gop * gop if index > last else found


class _SeekRefused(Exception):
    """The demuxer cannot seek (raw elementary streams, pipes)."""


class _StampsOutOfOrder(Exception):
    """Decoded frames came out with timestamps that do not increase: they cannot name the frames."""


@dataclass
class _Damage:
    """A stretch of the stream lost to corrupt data: from ``start`` seconds to the keyframe at
    ``end`` seconds where decoding resumed (``None`` while open, or when the stream ended first)."""

    start: float
    reason: str
    end: float | None = None

    def covers(self, seconds: float) -> bool:
        return self.start - 1e-6 <= seconds and (self.end is None or seconds < self.end - 1e-6)


class _Reader:
    """A decoding position in one stream that can move forward frame by frame or seek."""

    def __init__(self, container, stream, info: StreamInfo, deadline: Deadline, path: str) -> None:
        self.container, self.stream, self.info = container, stream, info
        self._original = container
        self.deadline, self.path = deadline, path
        self.keyframes = _Keyframes()
        self.keyframes.refresh_from_index(stream, info)
        self._frames: Iterator = self._decode()
        self._pushed_back = None
        self.position = -1  # index of the last frame handed out; -1 before the first
        self.seeks = 0
        self.decoded = 0
        # Which frame timestamp names a frame: "pts", else "dts" once the pts came out of order
        # (DivX packed B-frames in AVI); has_timestamps is False when frames are counted instead
        # (no timestamps, or neither kind in order): then never seek.
        self.stamp_kind = info.stamp_kind
        self.has_timestamps = not info.counted
        self._last_stamp: int | None = None  # of the previous frame since the last (re)start
        self.seekable = True  # False once the demuxer refuses a seek (raw streams)
        # Corrupt data: frames are dropped from the damage to the next keyframe (decoders conceal
        # errors by reusing references, so frames in between show another frame's content).
        self.damage: list[_Damage] = []
        self._damaged = False  # inside a damaged stretch: drop frames until a keyframe
        self._last_seconds: float | None = None  # time of the last frame decoded since the last (re)start
        self._restart_seconds = 0.0  # where decoding (re)started: 0, or the time sought to

    def _decode(self) -> Iterator:
        """Decoded frames in presentation order. A packet the decoder rejects is skipped (and the
        frames up to the next keyframe dropped by :meth:`next_frame`); a demuxer read error is
        skipped too, up to ``MAX_READ_ERRORS`` in a row."""
        import av

        read_errors = 0
        while True:
            try:
                for packet in self.container.demux(self.stream):
                    self.deadline.check()
                    read_errors = 0
                    try:
                        frames = packet.decode()
                    except av.error.ExitError:
                        raise
                    except av.error.FFmpegError as err:  # corrupt packet: skip it, resync at a keyframe
                        self._start_damage(self._packet_seconds(packet), _reason(err))
                        if not self.has_timestamps:
                            self.position += 1  # its frame is lost but still counts
                        continue
                    yield from frames
                return
            except av.error.InvalidDataError as err:  # the demuxer hit corrupt data; read on after it
                read_errors += 1
                if read_errors > MAX_READ_ERRORS:
                    logger.warning("%s: stopped decoding at corrupt data (%s)", self.path, _reason(err))
                    return
                self._start_damage(self._next_seconds(), _reason(err))

    def _packet_seconds(self, packet) -> float:
        """Where the frames lost to a rejected packet begin: its own time, or the frame after the
        last one decoded if that is earlier (frame threads report an error a few packets late)."""
        first, second = (packet.pts, packet.dts) if self.stamp_kind == "pts" else (packet.dts, packet.pts)
        stamp = first if first is not None else second
        after_last = self._next_seconds()
        if stamp is None or not self.has_timestamps:
            return after_last
        return min(self.info.seconds(stamp), after_last)

    def _next_seconds(self) -> float:
        """Time of the frame after the last one decoded (the first one lost to damage); before the
        first frame, the start of the stream or the time sought to."""
        if self._last_seconds is None:
            return self._restart_seconds
        return self._last_seconds + 1 / self.info.fps

    def _start_damage(self, seconds: float, reason: str) -> None:
        if not self._damaged:
            self._damaged = True
            self.damage.append(_Damage(max(0.0, seconds), reason))

    def _end_damage(self, seconds: float | None) -> None:
        """The stretch ends at the keyframe at ``seconds`` (``None``: at the end of the stream)."""
        self._damaged = False
        stretch = self.damage[-1]
        stretch.end = seconds
        until = "the end of the stream" if seconds is None else f"{seconds:.3f} s"
        resumed = "" if seconds is None else f"; decoding resumed at the keyframe at {seconds:.3f} s"
        logger.warning(
            "%s: corrupt video data (%s): frames from %.3f s up to %s are lost%s",
            self.path, stretch.reason, stretch.start, until, resumed,
        )

    def next_frame(self):
        """Next decoded frame, its index and its timestamp (stream time base), or
        ``(None, None, None)`` at the end of the stream.

        Raises:
            _StampsOutOfOrder: The frame's timestamp is not after the previous frame's.
        """
        while True:
            frame, self._pushed_back = self._pushed_back, None
            again = frame is not None  # handed out once already (by a seek), its stamp checked then
            if frame is None:
                frame = next(self._frames, None)
            if frame is None:
                if self._damaged:
                    self._end_damage(None)
                return None, None, None
            self.decoded += 1
            first, second = (frame.pts, frame.dts) if self.stamp_kind == "pts" else (frame.dts, frame.pts)
            stamp = first if first is not None else second
            if stamp is None:  # no timestamps at all: count frames (only valid when decoding from the start)
                self.has_timestamps = False
            if not self.has_timestamps:
                index = self.position + 1
                stamp = self.info.pts_of(index)
            else:
                if self._last_stamp is not None and stamp <= self._last_stamp and not again:
                    raise _StampsOutOfOrder(f"{self.stamp_kind} {stamp} after {self._last_stamp}")
                self._last_stamp = stamp
                index = self.info.index_of(stamp)
            self.position = index
            seconds = self.info.seconds(stamp)
            self._last_seconds = seconds
            corrupt = bool(getattr(frame, "is_corrupt", False))  # errors the decoder concealed
            if self._damaged and frame.key_frame and not corrupt:
                self._end_damage(seconds)
            elif corrupt or self._damaged:
                self._start_damage(seconds, "the decoder reported a damaged frame")
                continue  # dropped: until a keyframe it shows concealment, not this frame
            if frame.key_frame:
                self.keyframes.saw(index)
            return frame, index, stamp

    def distrust_stamps(self, reason: str) -> None:
        """Name frames by their dts from now on (by counting once the dts fail too) and go back
        to the start: frames already kept may carry wrong indices."""
        if self.stamp_kind == "pts":
            self.stamp_kind = "dts"
        else:
            self.has_timestamps = False
        self.damage.clear()  # decoding starts over and will meet it again
        self._damaged = False
        logger.debug(
            "%s: frame timestamps out of order (%s); naming frames by %s from the start",
            self.path, reason, self.stamp_kind if self.has_timestamps else "counting",
        )
        self._reopen_or_rewind()

    def worth_seeking(self, target: int) -> bool:
        """Whether seeking saves at least ``SEEK_MIN_SAVING`` decoded frames on the way to ``target``."""
        if not (self.has_timestamps and self.seekable):
            return False
        keyframe = self.keyframes.last_at_or_before(target)
        return keyframe is not None and keyframe - self.position >= SEEK_MIN_SAVING

    def seek(self, target: int) -> None:
        """Seek to the keyframe at or before ``target``; step further back if the demuxer overshoots.

        Seeking by timestamp lands after the target in some containers (MPEG-TS seeks by byte
        position, streams with B-frames index decode times) or at the end of the stream; each
        retry starts twice as far back plus the overshoot, and the last one at the first frame.
        """
        try:
            self._seek_with_retries(target)
        except _SeekRefused as err:
            logger.debug("%s: the demuxer cannot seek (%s); decoding forward from the start", self.path, err)
            self.seekable = False
            self._reopen()  # a refused seek can leave the demuxer at the end of the file
            return
        if not self.has_timestamps:  # positions are only known by counting from the start
            self._rewind()
            return
        if len(self.keyframes.known) < 2 or not self.keyframes.from_index:
            self.keyframes.refresh_from_index(self.stream, self.info)  # mkv/webm cues appear after a seek

    def _seek_with_retries(self, target: int) -> None:
        back = 0
        for attempt in range(SEEK_RETRIES + 1):
            self.deadline.check()
            at = max(0, target - back) if attempt < SEEK_RETRIES else 0
            if at == 0:
                self._rewind()
            else:
                self._seek_pts(self.info.pts_of(at))
            frame, index, _ = self.next_frame()
            if (frame is not None and index <= target) or at == 0:
                self._pushed_back = frame
                self.decoded -= frame is not None
                break
            overshoot = index - target if frame is not None else 0
            logger.debug("%s: seek to frame %d landed on %s; seeking further back", self.path, target, index)
            back = 2 * back + overshoot + max(1, round(self.info.fps))

    def _seek_pts(self, pts: int) -> None:
        self.seeks += 1
        self._checked_seek(pts, stream=self.stream, backward=True, any_frame=False)
        self._restart()
        self._restart_seconds = max(0.0, self.info.seconds(pts))

    def _reopen_or_rewind(self) -> None:
        if self.seekable:
            try:
                self._rewind()
                return
            except _SeekRefused:
                self.seekable = False
        self._reopen()

    def _rewind(self) -> None:
        """Back to the first frame. Seeking to the stream's own start time is not enough in
        MPEG-TS (it can land on the second keyframe), so seek the container to time 0."""
        self.seeks += 1
        self._checked_seek(0)
        self._restart()

    def _reopen(self) -> None:
        """Start again on a fresh handle of the file (the one opened by the caller stays theirs)."""
        import av

        if self.container is not self._original:
            self.container.close()
        self.container = av.open(self.path, timeout=self.deadline.timeout)
        self.stream = self.container.streams.video[0]
        self.stream.thread_type = "AUTO"
        self._restart()

    def close(self) -> None:
        self._close_frames()
        if self.container is not self._original:
            self.container.close()

    def _close_frames(self) -> None:
        """Close the frame generator now. It and ``self`` form a reference cycle; left to the cyclic
        GC, its PyAV frames (and their swscale contexts with slice threads) could be freed later in a
        forked process (a DataLoader worker), where those threads do not exist: a segfault."""
        self._frames.close()
        self._pushed_back = None

    def _checked_seek(self, offset: int, **kwargs) -> None:
        import av

        try:
            self.container.seek(offset, **kwargs)
        except av.error.FFmpegError as err:
            raise _SeekRefused(_reason(err)) from err

    def _restart(self) -> None:
        self._close_frames()
        self._frames = self._decode()
        self._pushed_back = None
        self._last_stamp = None
        self._last_seconds = None
        self._restart_seconds = 0.0
        self.position = -1
        if self._damaged:  # left before its end was seen: forget it (found again if decoded again)
            self._damaged = False
            logger.debug("%s: left damaged data at %.3f s", self.path, self.damage.pop().start)


class _Output:
    """The returned ``uint8[U, H, W, 3]`` array, allocated at the first kept frame, whose display
    matrix decides the turn applied to every frame (stored frames are converted, and resized
    inside FFmpeg's converter, at the size that becomes ``(W, H)`` once turned)."""

    def __init__(self, count: int, size: tuple[int, int] | None, info: StreamInfo, autorotate: bool,
                 path: str) -> None:
        self.count, self.size, self.info, self.autorotate, self.path = count, size, info, autorotate, path
        self.frames: np.ndarray | None = None
        self.orientation = "none"
        self._convert_size = (info.width, info.height)

    def convert(self, frame, stream) -> np.ndarray:
        """``frame`` as an upright ``uint8[H, W, 3]`` RGB array (a view when turned)."""
        if self.frames is None:
            self._allocate(frame, stream)
        width, height = self._convert_size
        array = frame.to_ndarray(format="rgb24", width=width, height=height, interpolation=INTERPOLATION)
        return orient(array, self.orientation)

    def _allocate(self, frame, stream) -> None:
        if self.autorotate:
            self.orientation = _frame_orientation(frame, stream, self.path)
        stored = (self.info.width, self.info.height)
        shown = self.size or ((stored[1], stored[0]) if swaps_axes(self.orientation) else stored)
        self._convert_size = stored_size(shown, self.orientation)
        if self.orientation != "none":
            logger.debug("%s: display matrix applied (%s)", self.path, self.orientation)
        self.frames = np.empty((self.count, shown[1], shown[0], 3), dtype=np.uint8)  # [U, H, W, 3]


def probe_orientation(path: str, timeout: float | None = None) -> str:
    """How frames of the video at ``path`` are turned for display (see :func:`_frame_orientation`),
    from its first decodable frame; ``"none"`` when it cannot be read. For backends that do not
    apply the display matrix themselves (decord)."""
    import av

    try:
        with av.open(path, timeout=timeout) as container:
            stream = container.streams.video[0]
            for frame in container.decode(stream):
                return _frame_orientation(frame, stream, path)
    except (av.error.FFmpegError, IndexError, OSError) as err:
        logger.debug("%s: display matrix not read (%s)", path, err)
    return "none"


def _frame_orientation(frame, stream, path: str) -> str:
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


def _collect(
    reader: _Reader, wanted: np.ndarray, output: _Output, path: str,
    progress: ProgressCallback | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Decode the ``wanted`` (ascending, unique) frames; start again from the first frame if the
    timestamps turn out not to name the frames (see :meth:`_Reader.distrust_stamps`).

    Returns:
        ``uint8[U, H, W, 3]`` frames, ``int64[U]`` their indices, ``int64[U]`` their timestamps.
    """
    while True:
        try:
            return _collect_once(reader, wanted, output, path, progress)
        except _StampsOutOfOrder as err:
            reader.distrust_stamps(str(err))


def _collect_once(
    reader: _Reader, wanted: np.ndarray, output: _Output, path: str,
    progress: ProgressCallback | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    got_indices = np.empty(len(wanted), dtype=np.int64)
    got_pts = np.empty(len(wanted), dtype=np.int64)
    slot, last, sought = 0, None, -1  # next wanted slot; last decoded (frame, index, stamp); last seek target
    report = progress if progress is not None else lambda done, total: None
    report(0, len(wanted))
    while slot < len(wanted):
        target = int(wanted[slot])
        if target != sought and target - reader.position > 1 and reader.worth_seeking(target):
            reader.seek(target)  # once per target: if it lands early, decode forward from there
            sought = target
        frame, index, stamp = reader.next_frame()
        if frame is None:
            break
        last = (frame, index, stamp)
        if index < target:
            continue  # decoded as a reference only: never converted
        array = output.convert(frame, reader.stream)  # [H, W, 3]
        while slot < len(wanted) and wanted[slot] <= index:
            output.frames[slot], got_indices[slot], got_pts[slot] = array, index, stamp
            slot += 1
        report(slot, len(wanted))
    logger.debug("%s: %d frames kept, %d decoded, %d seeks", path, slot, reader.decoded, reader.seeks)
    _report_stand_ins(reader, wanted[:slot], got_indices[:slot], path)
    if slot < len(wanted):
        _fill_from_last(output, reader.stream, got_indices, got_pts, slot, last, wanted, path)
        report(len(wanted), len(wanted))
    return output.frames, got_indices, got_pts


def _report_stand_ins(reader: _Reader, wanted: np.ndarray, got: np.ndarray, path: str) -> None:
    """Warn when wanted frames lay in damaged stretches, naming the frames that replace them."""
    if not reader.damage:
        return
    info = reader.info
    lost = [
        (int(w), int(g))
        for w, g in zip(wanted, got)
        if g > w and any(d.covers(info.seconds(info.pts_of(int(w)))) for d in reader.damage)
    ]
    if lost:
        logger.warning(
            "%s: %d of %d wanted frames lay in corrupt data; the next decodable frame stands in "
            "for each, with its own index and timestamp (wanted -> returned: %s)",
            path, len(lost), len(wanted), ", ".join(f"{w} -> {g}" for w, g in lost),
        )


def _fill_from_last(output, stream, got_indices, got_pts, slot, last, wanted, path) -> None:
    """Stand the last decoded frame in for wanted frames past the real end of the stream."""
    if last is None:
        raise MediaDecodeError(f"{path}: no decodable video frames")
    frame, index, stamp = last
    logger.warning(
        "%s: stream ended at frame %d, before wanted frame %d; repeating the last frame for %d of %d frames",
        path,
        index,
        int(wanted[slot]),
        len(wanted) - slot,
        len(wanted),
    )
    array = output.convert(frame, stream)
    output.frames[slot:] = array
    got_indices[slot:] = index
    got_pts[slot:] = stamp
