"""Subtitle lines at sampled timestamps, Video-MME style."""

from __future__ import annotations

import numpy as np
import pysubs2
import pytest

from videoccam.errors import MediaDecodeError, MediaNotFoundError
from videoccam.processing.subtitles import load_subtitles, subtitle_prompt

SRT = """1
00:00:01,000 --> 00:00:02,500
<font color="white" size=".72c">Hello <i>there</i></font>
second line

2
00:00:02,500 --> 00:00:04,000
<b>Bold</b>   move

3
00:00:03,000 --> 00:00:05,000
overlapping cue

4
00:00:08,000 --> 00:00:09,000
after a gap
"""

ASS = """[Script Info]
ScriptType: v4.00+
PlayResX: 384
PlayResY: 288

[V4+ Styles]
Format: Name, Fontname, Fontsize, PrimaryColour, Bold, Italic, Alignment
Style: Default,Arial,20,&H00FFFFFF,0,0,2

[Events]
Format: Layer, Start, End, Style, Name, MarginL, MarginR, MarginV, Effect, Text
Comment: 0,0:00:00.00,0:00:10.00,Default,,0,0,0,,a comment is never shown
Dialogue: 0,0:00:00.50,0:00:02.00,Default,,0,0,0,,{\\an8}{\\i1}Top{\\i0} line\\Nand more
Dialogue: 0,0:00:02.00,0:00:03.00,Default,,0,0,0,,plain\\hspace
Dialogue: 0,0:00:03.00,0:00:04.00,Default,,0,0,0,,<i>html</i> in ASS, 1<2
"""

VTT = """WEBVTT

00:00:00.000 --> 00:00:01.000
web <c.yellow>video</c> text
"""


@pytest.fixture
def srt(tmp_path):
    path = tmp_path / "video.srt"
    path.write_text(SRT, encoding="utf-8")
    return path


def video_ccam_subtitles(path, indices, fps):
    """Video-CCAM eval/utils.load_subtitle, kept per frame (before the join)."""
    subs = pysubs2.load(str(path), encoding="utf-8")
    lines = []
    for idx in indices:
        cur_time = pysubs2.make_time(fps=fps, frames=idx)
        text = ""
        for sub in subs:
            if sub.end < cur_time:
                continue
            if sub.start < cur_time:
                text = sub.text.replace("\\N", " ")
            break
        lines.append(text)
    return lines


def test_srt_lines_at_timestamps(srt):
    times = [0.0, 1.0, 1.001, 2.0, 2.5, 2.501, 3.5, 4.5, 6.0, 8.5, 9.0, 9.5]
    assert load_subtitles(srt, times) == [
        "",  # before the first cue
        "",  # start is exclusive: start < t
        "Hello there second line",  # font and italic tags stripped, line break -> space
        "Hello there second line",
        "Hello there second line",  # end is inclusive: t <= end, and the first cue wins
        "Bold move",  # runs of spaces collapsed
        "Bold move",  # overlapping cues: the first in file order
        "overlapping cue",
        "",  # gap
        "after a gap",
        "after a gap",
        "",
    ]


def test_matches_video_ccam_cue_selection(srt):
    # Same cue at every sampled frame (Video-CCAM keeps the ASS tags pysubs2 converts <i> into).
    fps, indices = 30.0, np.arange(0, 300, 7)
    ours = load_subtitles(srt, indices / fps)
    theirs = video_ccam_subtitles(srt, indices, fps)
    assert [bool(line) for line in ours] == [bool(line) for line in theirs]
    assert [line for line in ours if line] == [
        line.replace("{\\i1}", "")
        .replace("{\\i0}", "")
        .replace("{\\b1}", "")
        .replace("{\\b0}", "")
        .replace("   ", " ")
        for line in theirs
        if line
    ]


def test_ass_and_vtt(tmp_path):
    ass = tmp_path / "video.ass"
    ass.write_text(ASS, encoding="utf-8")
    assert load_subtitles(ass, np.array([0.25, 1.0, 2.5, 3.5, 5.0])) == [
        "",
        "Top line and more",
        "plain space",
        "html in ASS, 1<2",  # HTML tags are stripped in ASS too; a lone "<" is text
        "",
    ]
    vtt = tmp_path / "video.vtt"
    vtt.write_text(VTT, encoding="utf-8")
    assert load_subtitles(vtt, [0.5]) == ["web video text"]


def test_latin1_file(tmp_path):
    path = tmp_path / "old.srt"
    path.write_bytes("1\n00:00:00,000 --> 00:00:02,000\nCafé crème\n".encode("latin-1"))
    assert load_subtitles(path, [1.0]) == ["Café crème"]


def test_missing_and_unreadable(tmp_path):
    with pytest.raises(MediaNotFoundError, match="nope.srt"):
        load_subtitles(tmp_path / "nope.srt", [1.0])
    garbage = tmp_path / "garbage.srt"
    garbage.write_bytes(b"\x00\x01 definitely not subtitles \xff" * 10)
    with pytest.raises(MediaDecodeError, match="garbage.srt"):
        load_subtitles(garbage, [1.0])


def test_empty_timestamps(srt):
    assert load_subtitles(srt, []) == []


def test_subtitle_prompt_is_the_video_mme_block():
    header = "This video's subtitles are listed below:\n"
    assert subtitle_prompt(["Hi.", "", "Hi.", "Bye."]) == header + "Hi.\nHi.\nBye.\n"  # repeats kept, gaps dropped
    assert subtitle_prompt(["", ""]) == subtitle_prompt([]) == header + "\n"  # no line: an empty line
