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

import logging

import numpy as np

from videoccam.errors import MediaDecodeError, UnsupportedMediaError, VideoCCAMError
from videoccam.processing.video_common import (
    Deadline,
    Video,
    timeout_error,
)
from videoccam.processing.video_pyav_reader import (
    SEEK_MIN_SAVING,
    FrameOutput,
    Reader,
    StampsOutOfOrder,
    decode_error_reason,
)
from videoccam.processing.video_pyav_stream import probe_orientation, stream_info, video_stream
from videoccam.processing.video_sampling import SamplingSpec
from videoccam.progress import ProgressCallback

logger = logging.getLogger(__name__)

__all__ = ["SEEK_MIN_SAVING", "decode_pyav", "probe_orientation"]


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
        raise UnsupportedMediaError(f"{path}: unsupported container or codec ({decode_error_reason(err)})") from err
    except (av.error.FFmpegError, OSError, RuntimeError, EOFError) as err:
        raise MediaDecodeError(f"{path}: not a readable video file ({decode_error_reason(err)})") from err


def _decode_container(
    container, path: str, spec: SamplingSpec, size: tuple[int, int] | None, deadline: Deadline,
    progress: ProgressCallback | None = None, autorotate: bool = True,
) -> Video:
    stream = video_stream(container, path)
    stream.thread_type = "AUTO"  # FFmpeg frame + slice threads, thread count = cores
    info = stream_info(container, stream, path, deadline)
    indices = spec.indices(info.total, info.fps, source=path)  # [T], may repeat (mvbench on short clips)
    wanted, inverse = np.unique(indices, return_inverse=True)  # [U] ascending, [T]
    reader = Reader(container, stream, info, deadline, path)
    output = FrameOutput(len(wanted), size, info, autorotate, path)
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


def _collect(
    reader: Reader, wanted: np.ndarray, output: FrameOutput, path: str,
    progress: ProgressCallback | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Decode the ``wanted`` (ascending, unique) frames; start again from the first frame if the
    timestamps turn out not to name the frames (see :meth:`Reader.distrust_stamps`).

    Returns:
        ``uint8[U, H, W, 3]`` frames, ``int64[U]`` their indices, ``int64[U]`` their timestamps.
    """
    while True:
        try:
            return _collect_once(reader, wanted, output, path, progress)
        except StampsOutOfOrder as err:
            reader.distrust_stamps(str(err))


def _collect_once(
    reader: Reader, wanted: np.ndarray, output: FrameOutput, path: str,
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


def _report_stand_ins(reader: Reader, wanted: np.ndarray, got: np.ndarray, path: str) -> None:
    """Warn when wanted frames lay in damaged stretches, naming the frames that replace them."""
    if not reader.damage:
        return
    info = reader.info
    lost = [
        (int(w), int(g))
        for w, g in zip(wanted, got, strict=True)
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
