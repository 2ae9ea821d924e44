"""load_video on generated media: every decoded frame must show the index the Video reports."""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from videoccam.errors import (
    ConfigError,
    DecodeTimeoutError,
    MediaDecodeError,
    MediaNotFoundError,
    SamplingError,
    UnsupportedMediaError,
)
from videoccam.processing.video import Video, load_video, sample_indices
from videoccam.testing.media import (
    make_test_frame,
    read_test_pattern,
    write_frame_folder,
    write_test_gif,
    write_test_video,
)

FORMATS = {
    "mp4-h264-keyint10": {"name": "clip.mp4", "codec": "libx264", "keyframe_interval": 10},
    "mp4-h264-bframes": {
        "name": "bframes.mp4",
        "codec": "libx264",
        "keyframe_interval": 20,
        "options": {"preset": "veryfast", "bf": "3"},
    },
    "webm-vp9": {"name": "clip.webm", "codec": "libvpx-vp9", "keyframe_interval": 15},
    "avi-mpeg4": {"name": "clip.avi", "codec": "mpeg4", "keyframe_interval": 12},
    "mkv-h264": {"name": "clip.mkv", "codec": "libx264", "keyframe_interval": 10},
    "mov-h264": {"name": "clip.mov", "codec": "libx264"},
    "ts-h264-bframes": {
        "name": "clip.ts",
        "codec": "libx264",
        "keyframe_interval": 20,
        "options": {"preset": "veryfast", "bf": "3"},
    },
}


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("media")


@pytest.fixture(scope="module", params=sorted(FORMATS))
def clip(request, media) -> Path:
    """A 60-frame, 30 fps, 64x48 clip in each container/codec."""
    spec = dict(FORMATS[request.param])
    return write_test_video(media / spec.pop("name"), num_frames=60, fps=30, **spec)


@pytest.fixture(scope="module")
def long_clip(media) -> Path:
    """300 frames (10 s) with a keyframe every 10 frames: enough to make seeking matter."""
    return write_test_video(media / "long.mp4", num_frames=300, fps=30, keyframe_interval=10)


def patterns(video: Video) -> list[int]:
    return [read_test_pattern(frame) for frame in video.frames]


def decode_stats(caplog) -> tuple[int, int]:
    """(frames decoded, seeks) from the PyAV backend's debug summary of the last call."""
    records = [r for r in caplog.records if r.name.endswith("video_pyav") and "decoded" in r.getMessage()]
    _, _, decoded, seeks = records[-1].args
    return decoded, seeks


# --- video files -------------------------------------------------------------------------------


def test_uniform_frames_show_their_indices(clip):
    video = load_video(clip, num_frames=8)
    expected = sample_indices(60, num_frames=8, sample="uniform", src_fps=30).tolist()
    assert video.indices.tolist() == expected == [3, 11, 18, 26, 33, 41, 48, 56]
    assert patterns(video) == expected
    assert video.frames.shape == (8, 48, 64, 3) and video.frames.dtype == np.uint8
    np.testing.assert_allclose(video.timestamps, np.array(expected) / 30, atol=1e-3)
    assert video.fps == pytest.approx(30)
    assert video.duration == pytest.approx(2.0, abs=0.05)
    assert len(video) == 8 and video.source == str(clip)


def test_all_frames_and_fps_sampling(clip):
    every = load_video(clip, num_frames=100)  # more than the clip has: all 60
    assert patterns(every) == every.indices.tolist() == list(range(60))
    at_5fps = load_video(clip, sample="fps", fps=5)
    assert patterns(at_5fps) == at_5fps.indices.tolist() == list(range(0, 60, 6))


def test_bounds_and_random(clip):
    bounded = load_video(clip, num_frames=4, start=0.5, end=1.5)  # frames [15, 45)
    assert patterns(bounded) == bounded.indices.tolist() == [18, 26, 33, 41]
    jittered = load_video(clip, num_frames=6, sample="random", seed=3)
    assert patterns(jittered) == jittered.indices.tolist()
    assert (
        load_video(clip, num_frames=6, sample="random", seed=3).indices.tolist() == jittered.indices.tolist()
    )


def test_last_frame(clip):
    video = load_video(clip, num_frames=1, start=59 / 30)  # frames [59, 60)
    assert video.indices.tolist() == patterns(video) == [59]


def test_long_video_seeks_instead_of_decoding_everything(long_clip, caplog):
    caplog.set_level(logging.DEBUG, logger="videoccam")
    for num_frames in (4, 16, 32):
        video = load_video(long_clip, num_frames=num_frames)
        assert (
            patterns(video)
            == video.indices.tolist()
            == sample_indices(300, num_frames=num_frames, sample="uniform", src_fps=30).tolist()
        )
    load_video(long_clip, num_frames=4)  # 75 frames apart, keyframes every 10
    decoded, seeks = decode_stats(caplog)
    assert seeks >= 3 and decoded <= 4 * 10 + 10  # never more than a keyframe interval per frame
    tail = load_video(long_clip, num_frames=2, start=9.0)
    assert patterns(tail) == tail.indices.tolist() == [277, 292]
    decoded, seeks = decode_stats(caplog)
    assert seeks >= 1 and decoded <= 30


def test_webm_seeks_once_cues_are_known(media, caplog):
    path = write_test_video(
        media / "long.webm", num_frames=240, fps=30, codec="libvpx-vp9", keyframe_interval=20
    )
    caplog.set_level(logging.DEBUG, logger="videoccam")
    video = load_video(path, num_frames=4)
    assert patterns(video) == video.indices.tolist() == [30, 90, 150, 210]
    decoded, seeks = decode_stats(caplog)
    assert seeks >= 2 and decoded < 120


def test_mpegts_seeks_that_overshoot_are_retried(media, caplog):
    # MPEG-TS seeks land up to a keyframe interval after the target (and past the end near it).
    path = write_test_video(
        media / "long.ts",
        num_frames=300,
        fps=30,
        keyframe_interval=20,
        options={"preset": "veryfast", "bf": "3"},
    )
    caplog.set_level(logging.DEBUG, logger="videoccam")
    for wanted in (59, 139, 299):
        video = load_video(path, num_frames=1, start=(wanted - 1) / 30, end=(wanted + 2) / 30)
        assert video.indices.tolist() == patterns(video) == [wanted]
        assert decode_stats(caplog)[0] < 100
    assert any("seeking further back" in r.getMessage() for r in caplog.records)
    video = load_video(path, num_frames=16)
    assert (
        patterns(video)
        == video.indices.tolist()
        == sample_indices(300, num_frames=16, sample="uniform", src_fps=30).tolist()
    )
    assert video.timestamps[0] == pytest.approx(9 / 30)  # relative to the stream start (1.4 s in TS)


def test_raw_h264_without_timestamps_or_seeking(media):
    # A raw elementary stream: no pts, no duration, no frame rate (FFmpeg guesses 25), no seeking.
    path = write_test_video(
        media / "raw.h264", num_frames=300, fps=30, keyframe_interval=20, container="h264"
    )
    video = load_video(path, num_frames=4)
    assert patterns(video) == video.indices.tolist() == [37, 112, 187, 262]  # frames counted from packets
    assert video.fps == 25 and video.duration == pytest.approx(12)
    tail = load_video(path, num_frames=2, start=11)  # [275, 300) at 25 fps: would seek, is refused
    assert patterns(tail) == tail.indices.tolist() == [281, 293]


def test_fractional_frame_rate(media):
    path = write_test_video(media / "ntsc.mp4", num_frames=90, fps=30000 / 1001, keyframe_interval=30)
    video = load_video(path, num_frames=5)
    assert patterns(video) == video.indices.tolist() == [9, 27, 45, 63, 81]
    np.testing.assert_allclose(video.timestamps, video.indices * 1001 / 30000, atol=1e-4)
    assert video.fps == pytest.approx(30000 / 1001)


@pytest.mark.parametrize(("size", "shape"), [(32, (32, 32)), ((40, 24), (24, 40)), ((128, 96), (96, 128))])
def test_resize_inside_ffmpeg(long_clip, size, shape):
    video = load_video(long_clip, num_frames=3, size=size)
    assert video.frames.shape == (3, *shape, 3)
    assert patterns(video) == video.indices.tolist()


def _faststart(source: Path, target: Path) -> Path:
    """Remux an mp4 with its index (moov) before the data, as streaming sites serve them."""
    with av.open(str(source)) as src, av.open(str(target), "w", options={"movflags": "faststart"}) as dst:
        stream = dst.add_stream_from_template(src.streams.video[0])
        for packet in src.demux(src.streams.video[0]):
            if packet.dts is not None:
                packet.stream = stream
                dst.mux(packet)
    return target


def test_missing_frames_at_the_end_repeat_the_last_decoded_frame(media, caplog):
    # The index is at the front, so the cut file's header still says 60 frames (2 s); containers
    # whose frames are counted from the packets (mkv, ...) never ask for the missing ones.
    written = write_test_video(media / "whole-moov-last.mp4", num_frames=60, fps=30, keyframe_interval=10)
    whole = _faststart(written, media / "whole.mp4")
    cut = media / "cut.mp4"
    cut.write_bytes(whole.read_bytes()[: int(whole.stat().st_size * 0.6)])  # header still says 2 s
    with caplog.at_level(logging.WARNING, logger="videoccam"):
        video = load_video(cut, num_frames=8)
    assert patterns(video) == video.indices.tolist()
    assert video.indices[0] == 3 and video.indices[-1] < 56  # the last wanted frames do not exist
    assert video.indices[-1] == video.indices[-2]  # stand-ins repeat the last decoded frame
    assert any("repeating the last frame" in r.getMessage() for r in caplog.records)


# --- other sources -----------------------------------------------------------------------------


def test_frame_folder_sorts_numerically(media):
    folder = write_frame_folder(media / "unpadded", 12, start_index=1, digits=0)  # 1.jpg ... 12.jpg
    (folder / "notes.txt").write_text("not a frame")
    video = load_video(folder, num_frames=12)
    assert patterns(video) == video.indices.tolist() == list(range(12))
    assert video.fps == 3.0 and video.duration == pytest.approx(4.0)
    np.testing.assert_allclose(video.timestamps, np.arange(12) / 3)


def test_mvbench_frame_folder_with_bounds(media):
    folder = write_frame_folder(media / "tvqa", 30)  # 00001.jpg ... 00030.jpg, 3 fps
    video = load_video(folder, num_frames=4, sample="mvbench", start=2, end=8)
    # VideoChat2 opens 00008, 00012, 00017, 00022.jpg: positions 7, 11, 16, 21.
    assert video.indices.tolist() == [7, 11, 16, 21] == patterns(video)
    uniform = load_video(folder, num_frames=4, start=2, end=8, size=32)  # frames [6, 24)
    assert patterns(uniform) == uniform.indices.tolist() == [8, 12, 17, 21]


def test_gif_timestamps_follow_frame_durations(media):
    durations = [100, 200, 50, 300, 100, 100, 250, 100]
    path = write_test_gif(media / "anim.gif", num_frames=8, durations_ms=durations)
    video = load_video(path, num_frames=8)
    assert patterns(video) == video.indices.tolist() == list(range(8))
    np.testing.assert_allclose(video.timestamps, np.concatenate([[0], np.cumsum(durations)[:-1]]) / 1000)
    assert video.duration == pytest.approx(1.2)
    assert video.fps == pytest.approx(8 / 1.2)
    assert patterns(load_video(path, num_frames=3, size=32)) == [1, 3, 6]


def test_single_image(media):
    path = media / "still.png"
    Image.fromarray(make_test_frame(41, (64, 48))).save(path)
    video = load_video(path)
    assert len(video) == 1 and patterns(video) == [41] and video.indices.tolist() == [0]
    assert video.timestamps.tolist() == [0.0]
    assert load_video(path, size=(32, 40)).frames.shape == (1, 40, 32, 3)


def test_in_memory_frames():
    arrays = [make_test_frame(k, (64, 48)) for k in range(20)]
    from_arrays = load_video(arrays, num_frames=4, frame_folder_fps=10)
    assert patterns(from_arrays) == from_arrays.indices.tolist() == [2, 7, 12, 17]
    np.testing.assert_allclose(from_arrays.timestamps, [0.2, 0.7, 1.2, 1.7])
    from_pil = load_video([Image.fromarray(a) for a in arrays], num_frames=4, size=32)
    assert patterns(from_pil) == [2, 7, 12, 17] and from_pil.frames.shape == (4, 32, 32, 3)
    stacked = load_video(np.stack(arrays), num_frames=20)
    np.testing.assert_array_equal(stacked.frames, np.stack(arrays))
    gray_and_rgba = load_video([arrays[0][..., 0], np.dstack([arrays[1], np.full((48, 64), 255, np.uint8)])])
    assert gray_and_rgba.frames.shape == (2, 48, 64, 3)
    assert read_test_pattern(gray_and_rgba.frames[1]) == 1
    with pytest.raises(MediaDecodeError, match="uint8"):
        load_video([np.zeros((4, 4, 3), dtype=np.float32)])
    with pytest.raises(MediaDecodeError, match="no frames"):
        load_video([])


def test_video_is_resampled_keeping_source_indices(long_clip):
    dense = load_video(long_clip, num_frames=32)
    sparse = load_video(dense, num_frames=8, size=32)
    assert sparse.frames.shape == (8, 32, 32, 3)
    assert set(sparse.indices.tolist()) <= set(dense.indices.tolist())
    assert patterns(sparse) == sparse.indices.tolist()
    assert sparse.fps == dense.fps and sparse.duration == dense.duration
    pil = sparse.to_pil()
    assert len(pil) == 8 and pil[0].size == (32, 32) and pil[0].mode == "RGB"


# --- backends ----------------------------------------------------------------------------------


def test_decord_backend_matches_pyav(long_clip, monkeypatch):
    pytest.importorskip("decord")
    ours = load_video(long_clip, num_frames=8)
    theirs = load_video(long_clip, num_frames=8, backend="decord")
    assert theirs.indices.tolist() == ours.indices.tolist() == patterns(theirs)
    np.testing.assert_allclose(theirs.timestamps, ours.timestamps, atol=1e-3)
    monkeypatch.setenv("VIDEOCCAM_VIDEO_BACKEND", "decord")
    resized = load_video(long_clip, num_frames=8, size=(40, 24))
    assert resized.frames.shape == (8, 24, 40, 3) and patterns(resized) == ours.indices.tolist()


def test_backend_choice_errors(long_clip, monkeypatch):
    with pytest.raises(ConfigError, match="backend"):
        load_video(long_clip, backend="gstreamer")
    monkeypatch.setenv("VIDEOCCAM_VIDEO_BACKEND", "opencv")
    with pytest.raises(ConfigError, match="VIDEOCCAM_VIDEO_BACKEND"):
        load_video(long_clip)
    assert load_video(long_clip, backend="pyav", num_frames=2).indices.tolist() == [75, 225]


# --- errors ------------------------------------------------------------------------------------


def _audio_only(path: Path) -> Path:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=16000)
        for i in range(8):
            frame = av.AudioFrame.from_ndarray(
                np.zeros((1, 1024), dtype=np.float32), format="fltp", layout="mono"
            )
            frame.sample_rate, frame.pts = 16000, i * 1024
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def _bad_file(kind: str, media: Path, long_clip: Path) -> Path:
    if kind == "zero-byte":
        path = media / "empty.mp4"
        path.write_bytes(b"")
    elif kind == "truncated-mp4":  # moov is written last, so the cut file has no index
        path = media / "truncated.mp4"
        path.write_bytes(long_clip.read_bytes()[: long_clip.stat().st_size // 2])
    elif kind == "text-as-mp4":
        path = media / "notes.mp4"
        path.write_text("this is not a video\n" * 50)
    elif kind == "audio-only":
        path = _audio_only(media / "speech.m4a")
    elif kind == "corrupt-png":
        path = media / "broken.png"
        path.write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(200))
    elif kind == "truncated-jpg":
        path = media / "cut.jpg"
        Image.fromarray(make_test_frame(3, (64, 48))).save(media / "full.jpg")
        path.write_bytes((media / "full.jpg").read_bytes()[:300])
    return path


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        ("zero-byte", "empty"),
        ("truncated-mp4", "not a readable video"),
        ("text-as-mp4", "not a readable video"),
        ("audio-only", "no video stream"),
        ("corrupt-png", "image"),
        ("truncated-jpg", "image"),
    ],
)
def test_bad_files_raise_media_decode_error_naming_the_file(kind, reason, media, long_clip):
    path = _bad_file(kind, media, long_clip)
    with pytest.raises(MediaDecodeError, match=reason) as caught:
        load_video(path)
    assert str(path) in str(caught.value)


def test_unknown_codec_is_unsupported(media):
    clip = write_test_video(media / "fmp4.avi", num_frames=10, fps=10, codec="mpeg4")
    path = media / "unknown-codec.avi"
    path.write_bytes(clip.read_bytes().replace(b"FMP4", b"QQQQ"))  # a FourCC no decoder knows
    with pytest.raises(UnsupportedMediaError, match="unknown-codec.avi"):
        load_video(path)


def test_missing_path_and_empty_folder(media):
    missing = media / "nope.mp4"
    with pytest.raises(MediaNotFoundError, match="nope.mp4") as caught:
        load_video(missing)
    assert isinstance(caught.value, FileNotFoundError)
    empty = media / "no-frames"
    empty.mkdir()
    with pytest.raises(MediaDecodeError, match="no image files"):
        load_video(empty)


@pytest.mark.parametrize(
    ("kwargs", "error", "name"),
    [
        ({"num_frames": 0}, SamplingError, "num_frames"),
        ({"sample": "middle"}, SamplingError, "sample"),
        ({"start": 2.0, "end": 1.0}, SamplingError, "start"),
        ({"start": 30.0}, SamplingError, "start"),  # past the 10 s clip
        ({"sample": "fps"}, SamplingError, "fps"),
        ({"size": 0}, ConfigError, "size"),
        ({"size": (64, 48, 3)}, ConfigError, "size"),
        ({"timeout": 0}, ConfigError, "timeout"),
        ({"frame_folder_fps": 0}, SamplingError, "frame_folder_fps"),
    ],
)
def test_bad_arguments(long_clip, kwargs, error, name):
    with pytest.raises(error, match=name):
        load_video(long_clip, **kwargs)


def test_unsupported_source_type():
    with pytest.raises(UnsupportedMediaError, match="dict"):
        load_video({"video": "x.mp4"})


# --- timeouts ----------------------------------------------------------------------------------


def test_tiny_timeout_raises(media):
    path = write_test_video(media / "big.mp4", num_frames=240, fps=30, size=(320, 240), keyframe_interval=240)
    began = time.monotonic()
    with pytest.raises(DecodeTimeoutError, match="big.mp4"):
        load_video(path, num_frames=240, timeout=0.005)
    assert time.monotonic() - began < 2
    assert len(load_video(path, num_frames=240, timeout=None)) == 240


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_blocked_open_cannot_hang(tmp_path):
    fifo = tmp_path / "stalled.mp4"
    os.mkfifo(fifo)  # opening it for reading blocks until a writer shows up: a stalled source

    def unblock() -> None:
        """Play the missing writer, so that neither a broken timeout nor the abandoned worker hangs."""
        with contextlib.suppress(OSError):  # no reader left: nothing is blocked
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))

    watchdog = threading.Timer(10, unblock)
    watchdog.start()
    began = time.monotonic()
    try:
        with pytest.raises(DecodeTimeoutError, match="stalled.mp4"):
            load_video(fifo, timeout=0.5)
        assert time.monotonic() - began < 3
    finally:
        watchdog.cancel()
        unblock()
    for worker in [t for t in threading.enumerate() if t.name == "videoccam-decode"]:
        worker.join(timeout=5)
        assert not worker.is_alive()


FORKED_CHILD_FREES_DECODER_GARBAGE = textwrap.dedent("""
    import gc
    import os
    from videoccam.processing.video import load_video

    gc.collect()
    gc.disable()  # whatever decoding leaves to the cyclic GC stays for the child
    load_video({path!r}, num_frames=6, size=(40, 24))  # resized: converted by swscale, which has threads
    pid = os.fork()
    if pid == 0:
        gc.collect()
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    print("child exit", os.waitstatus_to_exitcode(status))
""")


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_can_collect_what_decoding_left(tmp_path):
    """Decoding may leave PyAV frames in reference cycles (reading a frame's side data makes one), but
    no converter with threads hangs on them: a forked child's GC (a DataLoader worker) frees them."""
    path = write_test_video(tmp_path / "clip.mp4", num_frames=24, fps=8)
    code = FORKED_CHILD_FREES_DECODER_GARBAGE.format(path=str(path))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "child exit 0"
