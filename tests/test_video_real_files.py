"""load_video on the kinds of files real users have and hostile input makes (issue 31).

Every file is written here, at test time, with PyAV (and a few byte patches where PyAV cannot
produce the real-world quirk directly): raw MPEG-1/2 elementary streams whose header bitrate
misleads FFmpeg's duration estimate, an MPEG program stream, AVI with B-frames (plain and DivX
"packed"), variable-frame-rate mp4/mkv, a stream with a corrupt packet, and phone-style rotated
mp4s. Frame ``k`` of every clip shows ``k`` as eight large bright/dark blocks, so a test can read
back which source frame each returned frame really is.
"""

from __future__ import annotations

import logging
import math
import struct
import sys
from collections.abc import Mapping, Sequence
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from videoccam.constants import DEFAULT_NUM_FRAMES
from videoccam.errors import MediaDecodeError, MediaNotFoundError, SamplingError
from videoccam.processing.video import Video, load_video, sample_indices

SIZE = (64, 48)  # (W, H) of the generated clips

# --- frames that show their own index ------------------------------------------------------------


def paint(index: int, size: tuple[int, int] = SIZE) -> np.ndarray:
    """``uint8 [H, W, 3]``: bit ``b`` of ``index`` (0..255) as block ``b`` of a 2x4 grid, bright
    (235) when set and dark (16) when not; survives MPEG-1 at 64x48 and yuv420 subsampling."""
    width, height = size
    frame = np.full((height, width, 3), 16, dtype=np.uint8)
    block_w, block_h = width // 4, height // 2
    for bit in range(8):
        if index >> bit & 1:
            row, col = divmod(bit, 4)
            frame[row * block_h : (row + 1) * block_h, col * block_w : (col + 1) * block_w] = 235
    return frame


def read_index(frame: np.ndarray) -> int:
    """The index :func:`paint` drew, from the centre of each block."""
    height, width = frame.shape[:2]
    block_w, block_h = width // 4, height // 2
    index = 0
    for bit in range(8):
        row, col = divmod(bit, 4)
        block = frame[
            row * block_h + block_h // 4 : (row + 1) * block_h - block_h // 4,
            col * block_w + block_w // 4 : (col + 1) * block_w - block_w // 4,
        ]
        index |= int(block.mean() > 128) << bit
    return index


def shown(video: Video) -> list[int]:
    return [read_index(frame) for frame in video.frames]


# --- writers -----------------------------------------------------------------------------------


def write_clip(
    path: Path,
    num_frames: int,
    *,
    codec: str = "libx264",
    fmt: str | None = None,
    fps: int = 25,
    gop: int | None = None,
    options: Mapping[str, str] | None = None,
    pts: Sequence[int] | None = None,
    time_base: Fraction | None = None,
    frames: Sequence[np.ndarray] | None = None,
    pix_fmt: str = "yuv420p",
    rotation: int | None = None,
    hflip: bool = False,
) -> Path:
    """Encode ``num_frames`` painted frames (or ``frames``) with PyAV.

    ``pts`` (in ``time_base``, default ``1/fps``) gives each frame's presentation time (variable
    frame rate); ``rotation`` sets the display matrix (degrees counter-clockwise, as FFmpeg's
    ``av_display_rotation_get`` and PyAV's ``VideoFrame.rotation`` report it).
    """
    time_base = time_base or Fraction(1, fps)
    with av.open(str(path), "w", format=fmt) as output:
        stream = output.add_stream(codec, rate=fps, options=dict(options or {}))
        stream.width, stream.height = SIZE
        stream.pix_fmt = pix_fmt
        if gop is not None:
            stream.codec_context.gop_size = gop
        if pts is not None:
            stream.time_base = time_base
        if rotation is not None or hflip:
            stream.set_display_rotation(rotation or 0, hflip=hflip)
        for index in range(num_frames):
            image = frames[index] if frames is not None else paint(index)
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
            frame.pts = index if pts is None else pts[index]
            frame.time_base = time_base
            output.mux(stream.encode(frame))
        output.mux(stream.encode(None))
    return path


def x264(keyint: int, **extra: str) -> dict[str, str]:
    """libx264 options: a keyframe exactly every ``keyint`` frames."""
    return {"preset": "ultrafast", "x264-params": f"keyint={keyint}:min-keyint={keyint}:scenecut=0", **extra}


def set_mpeg_sequence_bitrate(path: Path, bits_per_second: int) -> int:
    """Rewrite the 18-bit ``bit_rate_value`` (units of 400 bit/s) of every MPEG-1/2 sequence
    header, as some encoders write a peak rate far above the real one. Returns the headers changed."""
    data = bytearray(path.read_bytes())
    value = min(0x3FFFE, math.ceil(bits_per_second / 400))
    changed, at = 0, data.find(b"\x00\x00\x01\xb3")
    while at >= 0:
        # after the start code: 12 bits width, 12 bits height, 4 aspect, 4 frame rate, 18 bit rate
        data[at + 8] = value >> 10
        data[at + 9] = (value >> 2) & 0xFF
        data[at + 10] = ((value & 3) << 6) | (data[at + 10] & 0x3F)
        changed += 1
        at = data.find(b"\x00\x00\x01\xb3", at + 4)
    path.write_bytes(bytes(data))
    return changed


# A "not coded" MPEG-4 VOP (P type, time increment 0 of 5 bits, vop_coded = 0): the placeholder a
# DivX encoder writes in the frame slot after a packed P+B chunk.
N_VOP = b"\x00\x00\x01\xb6\x50\x4f"
DIVX_PACKED_USER_DATA = b"\x00\x00\x01\xb2DivX503b1393p"


def write_packed_avi(
    path: Path, num_frames: int, *, fps: int = 25, gop: int = 12, repeat_vol: bool = True
) -> Path:
    """MPEG-4 ASP with one B-frame between references, stored as DivX "packed B-frames": each
    reference frame shares an AVI chunk with the B-frame shown before it, and the next chunk holds
    an N-VOP. PyAV's AVI muxer cannot pack, so the packets are encoded first and packed here.
    ``repeat_vol`` repeats the stream headers (with the DivX "packed" mark) at every keyframe;
    without them FFmpeg forgets the packing after a seek and drops the B-frames."""
    encoder = av.CodecContext.create("mpeg4", "w")
    encoder.width, encoder.height = SIZE
    encoder.pix_fmt = "yuv420p"
    encoder.time_base = Fraction(1, fps)
    encoder.framerate = Fraction(fps)
    encoder.gop_size = gop
    encoder.max_b_frames = 1
    encoder.open()
    packets: list[tuple[bytes, int, bool]] = []  # decode order: (data, pts, keyframe)
    for index in range(num_frames):
        frame = av.VideoFrame.from_ndarray(paint(index), format="rgb24")
        frame.pts, frame.time_base = index, Fraction(1, fps)
        packets += [(bytes(p), p.pts, p.is_keyframe) for p in encoder.encode(frame)]
    packets += [(bytes(p), p.pts, p.is_keyframe) for p in encoder.encode(None)]
    first = packets[0][0]
    vop = first.find(b"\x00\x00\x01\xb6")  # DivX user data goes after the VOL header
    headers = first[:vop] + DIVX_PACKED_USER_DATA
    vop_start = b"\x00\x00\x01\xb6"
    packets = [
        (headers + data[data.find(vop_start):] if key and (at == 0 or repeat_vol) else data, pts, key)
        for at, (data, pts, key) in enumerate(packets)
    ]
    chunks: list[tuple[bytes, bool]] = []
    at = 0
    while at < len(packets):
        data, pts, key = packets[at]
        if at + 1 < len(packets) and packets[at + 1][1] < pts:  # a B-frame shown before this reference
            chunks += [(data + packets[at + 1][0], key), (N_VOP, False)]
            at += 2
        else:
            chunks.append((data, key))
            at += 1
    assert len(chunks) == num_frames
    with av.open(str(path), "w", format="avi") as output:
        stream = output.add_stream("mpeg4", rate=fps)
        stream.width, stream.height = SIZE
        stream.pix_fmt = "yuv420p"
        for slot, (data, key) in enumerate(chunks):
            packet = av.Packet(data)
            packet.stream = stream
            packet.pts = packet.dts = slot
            packet.time_base = Fraction(1, fps)
            packet.is_keyframe = key
            output.mux(packet)
    return path


def set_mp4_rotation(path: Path, degrees_ccw: int) -> None:
    """Write the display matrix of a counter-clockwise rotation into the mp4's ``tkhd`` box, as
    phones do (what PyAV's ``set_display_rotation`` does at write time)."""
    data = bytearray(path.read_bytes())
    box = data.find(b"tkhd") - 4
    assert box >= 0, "no tkhd box"
    version = data[box + 8]
    matrix_at = box + (60 if version == 1 else 48)
    cos, sin = round(math.cos(math.radians(degrees_ccw))), round(math.sin(math.radians(degrees_ccw)))
    matrix = [cos << 16, -sin << 16, 0, sin << 16, cos << 16, 0, 0, 0, 1 << 30]
    data[matrix_at : matrix_at + 36] = struct.pack(">9i", *matrix)
    path.write_bytes(bytes(data))


def uniform(total: int, num_frames: int = DEFAULT_NUM_FRAMES) -> list[int]:
    return sample_indices(total, num_frames=num_frames, sample="uniform", src_fps=25).tolist()


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("real")


# --- (4) frame selection: the frame count is counted, indices name the frames returned -----------


@pytest.mark.parametrize(
    ("name", "codec", "fmt"),
    [
        ("clip.mpg", "mpeg1video", "mpeg1video"),  # raw MPEG-1 video named like a program stream
        ("clip.m2v", "mpeg2video", "mpeg2video"),
        ("clip.mpv", "mpeg2video", "mpeg2video"),
    ],
)
def test_raw_mpeg_elementary_streams_are_counted_not_estimated(media, name, codec, fmt):
    # No container, no timestamps: FFmpeg estimates the duration from the header bitrate. A peak
    # rate in the header (here 8x the real one) made 100 frames look like 3, as in Debian's default.mpv.
    path = write_clip(media / name, 100, codec=codec, fmt=fmt, gop=12)
    set_mpeg_sequence_bitrate(path, path.stat().st_size * 8 * 8 // 4)  # 4 s of video, 8x the rate
    video = load_video(path)
    assert len(video) == DEFAULT_NUM_FRAMES
    assert video.indices.tolist() == shown(video) == uniform(100)
    np.testing.assert_allclose(video.timestamps, video.indices / 25, atol=1e-6)
    assert video.fps == 25 and video.duration == pytest.approx(4.0)


def test_mpeg_program_stream_frame_count_is_counted(media):
    # MPEG-PS: FFmpeg's duration estimate said 3.0 s for 4 s of video, so the last second was never sampled.
    path = write_clip(media / "program.mpg", 100, codec="mpeg2video", fmt="mpeg", gop=12)
    video = load_video(path)
    assert video.indices.tolist() == shown(video) == uniform(100)
    np.testing.assert_allclose(video.timestamps, video.indices / 25, atol=1e-3)
    assert video.duration == pytest.approx(4.0, abs=0.05)


def test_avi_with_b_frames_labels_the_frames_returned(media):
    path = write_clip(media / "bframes.avi", 100, codec="mpeg4", fmt="avi", gop=12, options={"bf": "2"})
    video = load_video(path)
    assert video.indices.tolist() == shown(video) == uniform(100)
    np.testing.assert_allclose(video.timestamps, video.indices / 25, atol=1e-6)
    every = load_video(path, num_frames=100)
    assert every.indices.tolist() == shown(every) == list(range(100))


def test_avi_with_packed_b_frames_labels_the_frames_returned(media):
    path = write_packed_avi(media / "packed.avi", 100)
    video = load_video(path)
    assert video.indices.tolist() == shown(video) == uniform(100)
    np.testing.assert_allclose(video.timestamps, video.indices / 25, atol=1e-6)
    every = load_video(path, num_frames=100)
    assert every.indices.tolist() == shown(every) == list(range(100))
    tail = load_video(path, num_frames=3, start=3.0)  # frames [75, 100), reached by seeking
    assert tail.indices.tolist() == shown(tail) == [79, 87, 95]
    # Stream headers only at the start: after a seek FFmpeg drops the B-frames (odd frames here),
    # so a wanted B-frame comes back as the next frame, and says so.
    once = write_packed_avi(media / "packed-once.avi", 100, repeat_vol=False)
    assert load_video(once).indices.tolist() == shown(load_video(once)) == uniform(100)
    tail = load_video(once, num_frames=3, start=3.0)
    assert tail.indices.tolist() == shown(tail) == [80, 88, 96]


def test_truncated_mkv_samples_only_the_frames_that_exist(media, caplog):
    # The mkv header still says 4 s; the packets say how many frames survived the cut.
    whole = write_clip(media / "whole.mkv", 100, options=x264(10))
    cut = media / "cut.mkv"
    cut.write_bytes(whole.read_bytes()[: int(whole.stat().st_size * 0.6)])
    with caplog.at_level(logging.WARNING, logger="videoccam"):
        video = load_video(cut)
    assert video.indices.tolist() == shown(video)
    assert len(set(video.indices.tolist())) == DEFAULT_NUM_FRAMES  # no stand-ins for missing frames
    assert 40 < video.indices[-1] < 70
    assert not any("repeating the last frame" in r.getMessage() for r in caplog.records)


# Irregular frame durations (1, 1, 2, 3 or 5 ticks of 1/30 s): a variable-frame-rate clip.
VFR_STEPS = np.random.default_rng(0).choice([1, 1, 2, 3, 5], size=99)
VFR_PTS = np.concatenate([[0], np.cumsum(VFR_STEPS)]).tolist()  # [100], in 1/30 s


@pytest.mark.parametrize(
    ("name", "fmt", "options"),
    [
        ("vfr.mp4", "mp4", x264(10)),
        ("vfr-bframes.mp4", "mp4", x264(10, bf="2")),
        ("vfr.mkv", "matroska", x264(10)),
    ],
)
def test_variable_frame_rate_indices_are_source_frame_numbers(media, name, fmt, options):
    path = write_clip(
        media / name, 100, fmt=fmt, fps=30, options=options, pts=VFR_PTS, time_base=Fraction(1, 30)
    )
    video = load_video(path)
    assert video.indices.tolist() == shown(video) == uniform(100)  # frame numbers, no duplicates
    np.testing.assert_allclose(video.timestamps, np.array(VFR_PTS)[video.indices] / 30, atol=2e-3)
    assert video.duration == pytest.approx((VFR_PTS[-1] + 1) / 30, abs=0.1)
    every = load_video(path, num_frames=100)
    assert every.indices.tolist() == shown(every) == list(range(100))


# --- (5) a corrupt packet costs its GOP, not the rest of the video -------------------------------


def _corrupt_packet(path: Path, frame_index: int) -> Path:
    """A copy of ``path`` with a quarter of the bytes of frame ``frame_index``'s packet flipped."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        packets = sorted((p.pts, p.pos, p.size) for p in container.demux(stream) if p.size)
    _, pos, size = packets[frame_index]
    data = bytearray(path.read_bytes())
    for at in range(pos + size // 4, pos + size // 2):
        data[at] ^= 0xFF
    bad = path.with_name("corrupt-" + path.name)
    bad.write_bytes(bytes(data))
    return bad


@pytest.mark.parametrize(
    ("name", "codec", "options"),
    [
        ("gop10.webm", "libvpx-vp9", {"deadline": "realtime", "cpu-used": "8"}),
        ("gop10.mp4", "libx264", x264(10)),
    ],
)
def test_corrupt_packet_skips_to_the_next_keyframe(media, caplog, name, codec, options):
    # 160 frames, a keyframe every 10; frame 73's packet is damaged, so frames 73-79 cannot be
    # trusted. The 16 uniform frames are 5, 15, ..., 155: only 75 lies in the damaged GOP.
    clean = write_clip(media / name, 160, codec=codec, gop=10, options=options)
    bad = _corrupt_packet(clean, 73)
    with caplog.at_level(logging.WARNING, logger="videoccam"):
        video = load_video(bad)
    wanted = uniform(160)
    assert wanted[7] == 75
    assert shown(video) == video.indices.tolist()  # every frame returned is the frame it claims
    assert video.indices.tolist() == wanted[:7] + [80] + wanted[8:]  # 75 lost: the next keyframe stands in
    messages = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    lost = [m for m in messages if "corrupt" in m]
    assert lost and str(bad) in lost[0] and "2.920 s" in lost[0] and "3.200 s" in lost[0], messages
    assert any("stand" in m and str(bad) in m for m in messages), messages  # the substitution is told


def test_corrupt_last_gop_is_reported_to_the_end_of_the_stream(media, caplog):
    clean = write_clip(media / "tail.webm", 60, codec="libvpx-vp9", gop=10,
                       options={"deadline": "realtime", "cpu-used": "8"})
    bad = _corrupt_packet(clean, 55)
    with caplog.at_level(logging.WARNING, logger="videoccam"):
        video = load_video(bad, num_frames=6)  # 5, 15, ..., 55
    assert shown(video) == video.indices.tolist()
    assert video.indices.tolist()[:5] == [5, 15, 25, 35, 45]
    assert video.indices[5] < 55  # nothing decodable after 54
    messages = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert any(str(bad) in m and "2.200 s up to the end of the stream" in m for m in messages), messages
    assert any(str(bad) in m and "repeating the last frame" in m for m in messages), messages


# --- (6) rotation metadata is applied --------------------------------------------------------------


def _asymmetric_frames(count: int) -> list[np.ndarray]:
    rng = np.random.default_rng(5)
    return [rng.integers(0, 256, (SIZE[1], SIZE[0], 3), dtype=np.uint8) for _ in range(count)]


# Degrees counter-clockwise (FFmpeg's display-matrix convention) -> how the stored frame is shown.
DISPLAY = {
    90: lambda a: np.rot90(a, 1),  # a phone held upright, camera sensor landscape
    270: lambda a: np.rot90(a, -1),
    180: lambda a: a[::-1, ::-1],
}


@pytest.mark.parametrize(
    ("degrees", "how"), [(90, "pyav"), (270, "pyav"), (180, "pyav"), (90, "tkhd"), (270, "tkhd")]
)
def test_rotation_metadata_is_applied(media, degrees, how):
    frames = _asymmetric_frames(5)
    path = media / f"rot{degrees}-{how}.mp4"
    lossless = {"preset": "ultrafast", "qp": "0"}
    if how == "pyav":
        write_clip(path, 5, codec="libx264rgb", fmt="mp4", options=lossless, pix_fmt="rgb24",
                   frames=frames, rotation=degrees)
    else:  # written upright, then the matrix patched into the file as a phone writes it
        write_clip(path, 5, codec="libx264rgb", fmt="mp4", options=lossless, pix_fmt="rgb24", frames=frames)
        set_mp4_rotation(path, degrees)
    video = load_video(path, num_frames=5)
    expected = np.stack([DISPLAY[degrees](f) for f in frames])
    assert video.frames.shape == expected.shape
    np.testing.assert_array_equal(video.frames, expected)
    stored = load_video(path, num_frames=5, autorotate=False)
    np.testing.assert_array_equal(stored.frames, np.stack(frames))


class _FakeDecord:
    """Just enough of decord's API, decoding with PyAV and, like decord, ignoring rotation."""

    class DECORDError(Exception):
        pass

    @staticmethod
    def cpu(index: int) -> int:
        return index

    class VideoReader:
        def __init__(self, path: str, ctx: int = 0, num_threads: int = 0, width: int = -1, height: int = -1):
            with av.open(path) as container:
                stream = container.streams.video[0]
                size = {} if width < 0 else {"width": width, "height": height}
                self.frames = [f.to_ndarray(format="rgb24", **size) for f in container.decode(stream)]
                self.fps = float(stream.average_rate)

        def __len__(self) -> int:
            return len(self.frames)

        def get_avg_fps(self) -> float:
            return self.fps

        def get_batch(self, indices):
            frames = np.stack([self.frames[i] for i in indices])
            return type("Batch", (), {"asnumpy": lambda self: frames})()

        def get_frame_timestamp(self, indices):
            stamps = np.asarray(indices, dtype=np.float64)[..., None] / self.fps
            return np.concatenate([stamps, stamps + 1 / self.fps], axis=-1)


def test_decord_backend_applies_rotation_too(media, monkeypatch):
    monkeypatch.setitem(sys.modules, "decord", _FakeDecord)
    frames = _asymmetric_frames(3)
    path = write_clip(media / "decord-portrait.mp4", 3, codec="libx264rgb", fmt="mp4", pix_fmt="rgb24",
                      options={"preset": "ultrafast", "qp": "0"}, frames=frames, rotation=90)
    video = load_video(path, num_frames=3, backend="decord")
    np.testing.assert_array_equal(video.frames, np.stack([np.rot90(f, 1) for f in frames]))
    assert load_video(path, num_frames=3, backend="decord", size=(24, 32)).frames.shape == (3, 32, 24, 3)
    stored = load_video(path, num_frames=3, backend="decord", autorotate=False)
    np.testing.assert_array_equal(stored.frames, np.stack(frames))


def test_rotation_with_resize_and_flip(media):
    frames = _asymmetric_frames(3)
    lossless = {"preset": "ultrafast", "qp": "0"}
    portrait = write_clip(media / "portrait.mp4", 3, codec="libx264rgb", fmt="mp4", options=lossless,
                          pix_fmt="rgb24", frames=frames, rotation=90)
    resized = load_video(portrait, num_frames=3, size=(24, 32))  # (W, H) of the displayed frame
    assert resized.frames.shape == (3, 32, 24, 3)
    upright = [Image.fromarray(np.ascontiguousarray(np.rot90(f, 1))) for f in frames]
    reference = np.stack([np.asarray(i.resize((24, 32), Image.Resampling.BICUBIC)) for i in upright])
    assert np.abs(resized.frames.astype(int) - reference).mean() < 12
    assert load_video(portrait, num_frames=1, size=32).frames.shape == (1, 32, 32, 3)
    mirrored = write_clip(media / "mirror.mp4", 3, codec="libx264rgb", fmt="mp4", options=lossless,
                          pix_fmt="rgb24", frames=frames, hflip=True)
    mirror_image = np.stack([f[:, ::-1] for f in frames])
    np.testing.assert_array_equal(load_video(mirrored, num_frames=3).frames, mirror_image)


# --- (9) arguments that used to slip through -------------------------------------------------------


def test_empty_path_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a frame folder here would be read if "" meant "."
    Image.fromarray(paint(1)).save(tmp_path / "00001.png")
    with pytest.raises(MediaNotFoundError, match="source") as caught:
        load_video("")
    assert "empty" in str(caught.value)
    assert len(load_video(".")) == 1  # the current directory itself, asked for explicitly


@pytest.mark.parametrize("fps", [1e-300, 5e-324, 1e-9])
def test_tiny_fps_still_gives_a_frame(media, fps):
    path = write_clip(media / "short.mp4", 30, options=x264(10))
    video = load_video(path, sample="fps", fps=fps)
    assert video.indices.tolist() == shown(video) == [0]


@pytest.mark.parametrize("fps", [0, -1.0, float("nan"), float("inf"), -float("inf")])
def test_bad_fps_is_refused(media, fps):
    path = write_clip(media / "short.mp4", 30, options=x264(10))
    with pytest.raises(SamplingError, match="fps"):
        load_video(path, sample="fps", fps=fps)


def test_a_video_without_frames_is_an_error_naming_the_file(media, monkeypatch):
    path = write_clip(media / "short.mp4", 30, options=x264(10))
    import videoccam.processing.video_sampling as sampling

    # Whatever rule or bug yields no indices, the loader refuses to hand back an empty video.
    monkeypatch.setattr(sampling, "uniform_in_range", lambda first, stop, n: np.empty(0, dtype=np.int64))
    with pytest.raises((SamplingError, MediaDecodeError), match="short.mp4"):
        load_video(path)
