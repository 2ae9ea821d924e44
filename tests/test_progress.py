"""Progress of long work: the library reports (done, total) to a callback and prints nothing; the
CLI draws tqdm bars on stderr only when stderr is a terminal and --quiet is not given."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import pytest

from videoccam.cli import main
from videoccam.data import run_data_check
from videoccam.processing.video import load_video
from videoccam.synth import generate_dataset
from videoccam.testing import make_tiny_checkpoint

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
COUNTER = EXAMPLES / "counter.mp4"  # 90 frames at 30 fps


class Calls(list):
    def __call__(self, done: int, total: int) -> None:
        self.append((done, total))


class Terminal(io.StringIO):
    """A stderr that says it is a terminal."""

    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def restore_transformers_output():
    """main() sets transformers' verbosity and bars for the CLI's process; give the next tests theirs."""
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    yield
    hf_logging.set_verbosity(verbosity)
    (hf_logging.enable_progress_bar if bars else hf_logging.disable_progress_bar)()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return make_tiny_checkpoint(tmp_path_factory.mktemp("progress") / "tiny")


@pytest.fixture
def data_file(tmp_path):
    records = [{"id": str(i), "video": str(EXAMPLES / name), "conversations": [
        {"from": "human", "value": "<video>\nwhat ?"}, {"from": "gpt", "value": "that"}]}
        for i, name in enumerate(["first.mp4", "counter.mp4", "missing.mp4"])]
    path = tmp_path / "data.json"
    path.write_text(json.dumps(records))
    return path


def test_load_video_reports_every_kept_frame():
    calls = Calls()
    video = load_video(COUNTER, num_frames=4, progress=calls)
    assert calls == [(0, 4), (1, 4), (2, 4), (3, 4), (4, 4)] and len(video) == 4
    calls.clear()
    load_video(COUNTER, sample="fps", fps=2, start=1, progress=calls)  # frames 30, 45, 60, 75
    assert calls == [(0, 4), (1, 4), (2, 4), (3, 4), (4, 4)]


def test_generate_dataset_reports_clips(tmp_path):
    calls = Calls()
    generate_dataset(tmp_path / "synth", num_train=3, num_test=2, seed=0, progress=calls)
    assert calls == [(0, 5), (3, 5), (5, 5)]  # one chunk per split


def test_run_data_check_reports_records(data_file):
    calls = Calls()
    report = run_data_check(data_file, None, progress=calls)
    assert calls == [(0, 3), (1, 3), (2, 3), (3, 3)]
    assert [p.kind for p in report.problems] == ["missing"]


def test_no_bar_when_stderr_is_not_a_terminal(checkpoint, data_file, tmp_path, capsys):
    """Captured stderr is no terminal: no bar of ours, nor transformers' weight-loading bar."""
    assert main(["data", "check", str(data_file)]) == 1
    assert main(["synth", "--out", str(tmp_path / "synth"), "--train", "2", "--test", "1"]) == 0
    assert main(["chat", "--model", str(checkpoint), "--video", str(COUNTER), "--fps", "30", "--max-new-tokens",
                 "1", "--no-stream", "hi"]) == 0
    assert capsys.readouterr().err == ""


def test_bars_on_a_terminal(checkpoint, data_file, tmp_path, monkeypatch, capsys):
    stderr = Terminal()
    monkeypatch.setattr(sys, "stderr", stderr)
    assert main(["data", "check", str(data_file)]) == 1
    assert "data check: 100%" in stderr.getvalue() and "3/3" in stderr.getvalue()
    assert main(["synth", "--out", str(tmp_path / "synth"), "--train", "2", "--test", "1"]) == 0
    assert "synth: 100%" in stderr.getvalue() and "3/3" in stderr.getvalue()
    # 90 frames to decode (> 64): the decode bar shows at once; 4 frames decode in under a second: none
    assert main(["chat", "--model", str(checkpoint), "--video", str(COUNTER), "--fps", "30", "--max-new-tokens",
                 "1", "--no-stream", "hi"]) == 0
    assert "decode counter.mp4" in stderr.getvalue()
    stderr.seek(0), stderr.truncate()
    assert main(["chat", "--model", str(checkpoint), "--video", str(COUNTER), "--num-frames", "4",
                 "--max-new-tokens", "1", "--no-stream", "hi"]) == 0
    assert "decode" not in stderr.getvalue()
    capsys.readouterr()


def test_quiet_means_no_bars(checkpoint, data_file, tmp_path, monkeypatch):
    stderr = Terminal()
    monkeypatch.setattr(sys, "stderr", stderr)
    assert main(["-q", "data", "check", str(data_file)]) == 1
    assert main(["synth", "-q", "--out", str(tmp_path / "synth"), "--train", "2", "--test", "1"]) == 0
    assert main(["chat", "--quiet", "--model", str(checkpoint), "--video", str(COUNTER), "--fps", "30",
                 "--max-new-tokens", "1", "--no-stream", "hi"]) == 0
    assert stderr.getvalue() == ""
