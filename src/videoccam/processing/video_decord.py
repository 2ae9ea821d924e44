"""Optional decord backend (``pip install decord``), imported only when chosen.

decord resizes inside its own FFmpeg filter graph (``VideoReader(width=, height=)``) and fetches
the sampled frames with ``get_batch``. It runs as one C++ call, so a timeout returns control to
the caller on time but cannot stop decord's own work; that thread finishes in the background.
decord ignores rotation metadata, so the display matrix is read with PyAV (first frame) and
applied here, as the PyAV backend does.
"""

from __future__ import annotations

import numpy as np

from videoccam.errors import ConfigError, MediaDecodeError
from videoccam.processing.video_common import Deadline, Video, orient, stored_size
from videoccam.processing.video_sampling import SamplingSpec
from videoccam.progress import ProgressCallback


def import_decord():
    try:
        import decord
    except ImportError as err:
        raise ConfigError("backend 'decord' needs the decord package (pip install decord)") from err
    return decord


def decode_decord(path: str, spec: SamplingSpec, size: tuple[int, int] | None, deadline: Deadline,
                  progress: ProgressCallback | None = None, autorotate: bool = True) -> Video:
    """Decode the frames ``spec`` picks from ``path`` with decord (``progress`` hears of the end only:
    decord fetches every frame in one call); ``autorotate`` as for the PyAV backend."""
    decord = import_decord()
    orientation = "none"
    if autorotate:
        from videoccam.processing.video_pyav import probe_orientation

        try:
            orientation = probe_orientation(path, deadline.timeout)
        except ImportError:  # no PyAV (it is part of the video extra): frames as decord gives them
            orientation = "none"
    stored = None if size is None else stored_size(size, orientation)
    resize = {} if stored is None else {"width": stored[0], "height": stored[1]}
    try:
        reader = decord.VideoReader(path, ctx=decord.cpu(0), num_threads=0, **resize)
        total, fps = len(reader), float(reader.get_avg_fps())
        if total < 1:
            raise MediaDecodeError(f"{path}: video stream has no frames")
        indices = spec.indices(total, fps, source=path)  # [T]
        wanted, inverse = np.unique(indices, return_inverse=True)  # [U], [T]
        deadline.check()
        frames = reader.get_batch(wanted.tolist()).asnumpy()  # [U, H, W, 3]
        stamps = reader.get_frame_timestamp(wanted.tolist())[:, 0]  # [U], start time of each frame
        duration = float(reader.get_frame_timestamp(total - 1)[1])
    except decord.DECORDError as err:
        raise MediaDecodeError(f"{path}: decord cannot read this video ({str(err).splitlines()[0]})") from err
    deadline.check()
    if progress is not None:
        progress(len(wanted), len(wanted))
    return Video(
        frames=np.ascontiguousarray(orient(frames, orientation)[inverse]),
        indices=wanted[inverse].astype(np.int64),
        timestamps=stamps[inverse].astype(np.float64),
        fps=fps,
        duration=duration,
        source=path,
    )
