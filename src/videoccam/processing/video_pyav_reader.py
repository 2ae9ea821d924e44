"""The PyAV backend's decoding walk: seek or decode forward to each wanted frame, skip corrupt
packets, and convert the kept frames (see :mod:`.video_pyav` for the whole procedure)."""

from __future__ import annotations

import bisect
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
from av.video.reformatter import VideoReformatter

from videoccam.processing.video_common import (
    Deadline,
    orient,
    stored_size,
    swaps_axes,
)
from videoccam.processing.video_pyav_stream import StreamInfo, frame_orientation

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
# Demuxer read errors in a row (no good packet between) after which the rest of the file is given up.
MAX_READ_ERRORS = 8


def decode_error_reason(err: Exception) -> str:
    """FFmpeg's message without the file name PyAV appends."""
    strerror = getattr(err, "strerror", None)
    return strerror if isinstance(strerror, str) and strerror else str(err)


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
        spacings = [b - a for a, b in zip(self.known, self.known[1:], strict=False)]  # consecutive keyframes
        gop = max(spacings) if spacings else DEFAULT_GOP
        last = self.known[-1]
        return last + (index - last) // gop * gop if index > last else found


class _SeekRefused(Exception):
    """The demuxer cannot seek (raw elementary streams, pipes)."""


class StampsOutOfOrder(Exception):
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


class Reader:
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
                        self._start_damage(self._packet_seconds(packet), decode_error_reason(err))
                        if not self.has_timestamps:
                            self.position += 1  # its frame is lost but still counts
                        continue
                    yield from frames
                return
            except av.error.InvalidDataError as err:  # the demuxer hit corrupt data; read on after it
                read_errors += 1
                if read_errors > MAX_READ_ERRORS:
                    logger.warning("%s: stopped decoding at corrupt data (%s)", self.path, decode_error_reason(err))
                    return
                self._start_damage(self._next_seconds(), decode_error_reason(err))

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
            StampsOutOfOrder: The frame's timestamp is not after the previous frame's.
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
                    raise StampsOutOfOrder(f"{self.stamp_kind} {stamp} after {self._last_stamp}")
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
            raise _SeekRefused(decode_error_reason(err)) from err

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


class FrameOutput:
    """The returned ``uint8[U, H, W, 3]`` array, allocated at the first kept frame, whose display
    matrix decides the turn applied to every frame (stored frames are converted, and resized
    inside FFmpeg's converter, at the size that becomes ``(W, H)`` once turned).

    One converter (``VideoReformatter``, an swscale context that may own slice threads) serves
    every frame and is freed with this object. ``frame.to_ndarray(width=...)`` would instead attach
    a converter to each decoded frame; a frame that ends up in a reference cycle (reading its
    ``side_data`` makes one, in PyAV) would then carry those threads to the cyclic GC, which may run
    in a forked process (a DataLoader worker, the ablation's trainings) where they do not exist:
    the child hangs or crashes freeing it.
    """

    def __init__(self, count: int, size: tuple[int, int] | None, info: StreamInfo, autorotate: bool,
                 path: str) -> None:
        self.count, self.size, self.info, self.autorotate, self.path = count, size, info, autorotate, path
        self.frames: np.ndarray | None = None
        self.orientation = "none"
        self._convert_size = (info.width, info.height)
        self._converter = VideoReformatter()

    def convert(self, frame, stream) -> np.ndarray:
        """``frame`` as an upright ``uint8[H, W, 3]`` RGB array (a view when turned)."""
        if self.frames is None:
            self._allocate(frame, stream)
        width, height = self._convert_size
        converted = self._converter.reformat(frame, format="rgb24", width=width, height=height,
                                             interpolation=INTERPOLATION)
        array = converted.to_ndarray()  # [H, W, 3]
        return orient(array, self.orientation)

    def _allocate(self, frame, stream) -> None:
        if self.autorotate:
            self.orientation = frame_orientation(frame, stream, self.path)
        stored = (self.info.width, self.info.height)
        shown = self.size or ((stored[1], stored[0]) if swaps_axes(self.orientation) else stored)
        self._convert_size = stored_size(shown, self.orientation)
        if self.orientation != "none":
            logger.debug("%s: display matrix applied (%s)", self.path, self.orientation)
        self.frames = np.empty((self.count, shown[1], shown[0], 3), dtype=np.uint8)  # [U, H, W, 3]
