"""Unclear errors that hostile input found (issue 31): each must name the file or field, through the
CLI with exit code 2 (1 for `data check`'s findings) and one line, never a traceback or a hang."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from videoccam.cli import main
from videoccam.testing import make_tiny_checkpoint


def _one_line_error(capsys, *needles: str) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    for needle in needles:
        assert needle in err, (needle, err)
    return err


@pytest.fixture
def checkpoint(tmp_path) -> Path:
    return make_tiny_checkpoint(tmp_path / "model")


def _image(path: Path, size: tuple[int, int] = (40, 48)) -> Path:
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (*size, 3), dtype=np.uint8)).save(path)
    return path


def _chat(model: Path | str, *media: str) -> int:
    return main(["chat", "--model", str(model), *media, "--max-new-tokens", "1", "hi"])


# PIL's decompression-bomb guard: a bad sample, named, wherever it happens

def test_a_decompression_bomb_in_chat_names_the_file(checkpoint, tmp_path, monkeypatch, capsys):
    bomb = _image(tmp_path / "bomb.png", (100, 100))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 10,000 px > 2 x 1,000: PIL raises
    assert _chat(checkpoint, "--image", str(bomb)) == 2
    _one_line_error(capsys, "bomb.png")


def _records(root: Path, media: list[str]) -> Path:
    """LLaVA records, one per media file: a ``video`` record for ``.mp4`` names, else an ``image`` one."""
    def record(i: int, name: str) -> dict:
        kind = "video" if name.endswith(".mp4") else "image"
        return {"id": f"s{i}", kind: name, "conversations": [
            {"from": "human", "value": f"<{kind}>\ndescribe ."}, {"from": "gpt", "value": "a red square"}]}

    data = root / "data.json"
    data.write_text(json.dumps([record(i, name) for i, name in enumerate(media)]))
    return data


def test_data_check_reports_a_bomb_and_goes_on(tmp_path, monkeypatch, capsys):
    _image(tmp_path / "bomb.png", (100, 100))
    _image(tmp_path / "ok.png", (20, 20))
    data = _records(tmp_path, ["bomb.png", "missing.png", "ok.png"])
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    assert main(["data", "check", str(data)]) == 1
    out = capsys.readouterr().out
    assert "bomb.png" in out and "missing.png" in out and "3 records, 2 problems" in out


# bounded reads: a FIFO or a character device is not a media file

@pytest.mark.parametrize("name", ["pipe.mp4", "pipe.png", "/dev/zero"])
def test_data_check_refuses_non_regular_files_at_once(tmp_path, name):
    if name.startswith("pipe"):
        os.mkfifo(tmp_path / name)
    data = _records(tmp_path, [name])
    done = subprocess.run([sys.executable, "-m", "videoccam.cli", "data", "check", str(data)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr
    assert name in done.stdout and "not a regular file" in done.stdout


# model folders: each fault names the file or field

@pytest.mark.parametrize("size", [0, 100])
def test_a_truncated_weights_file_is_named(checkpoint, capsys, size):
    weights = checkpoint / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:size])
    assert _chat(checkpoint) == 2
    _one_line_error(capsys, str(weights))


def _edit_config(checkpoint: Path, **projector: object) -> Path:
    config = json.loads((checkpoint / "config.json").read_text())
    top = {k: projector.pop(k) for k in list(projector) if k == "vision_select_layer"}
    config["projector_config"].update(projector)
    config.update(top)
    (checkpoint / "config.json").write_text(json.dumps(config))
    return checkpoint / "config.json"


def test_a_num_query_that_disagrees_with_the_weights_is_named(checkpoint, capsys):
    """Fixed by the processor taking Q from config.json: the processor_config.json beside it disagrees."""
    _edit_config(checkpoint, num_query=4)
    assert _chat(checkpoint) == 2
    _one_line_error(capsys, "num_query", "config.json")


def test_a_num_query_of_the_wrong_type_is_named(checkpoint, capsys):
    _edit_config(checkpoint, num_query="eight")
    assert _chat(checkpoint) == 2
    _one_line_error(capsys, "num_query", "'eight'")


def test_a_vision_select_layer_out_of_range_is_named_at_load(checkpoint, capsys):
    from videoccam.errors import ConfigError
    from videoccam.modeling import VideoCCAMForConditionalGeneration

    _edit_config(checkpoint, vision_select_layer=99)
    with pytest.raises(ConfigError, match="vision_select_layer"):
        VideoCCAMForConditionalGeneration.from_pretrained(checkpoint)
    assert _chat(checkpoint) == 2
    _one_line_error(capsys, "vision_select_layer", "99")


@pytest.mark.parametrize("kind", ["missing", "file"])
def test_a_model_that_is_not_a_folder_is_named(tmp_path, capsys, kind):
    model = tmp_path / "nope"
    if kind == "file":
        model.write_text("not a model")
    assert _chat(model) == 2
    err = _one_line_error(capsys, str(model))
    assert "Repo id" not in err


def test_a_folder_without_config_json_is_named(checkpoint, capsys):
    (checkpoint / "config.json").unlink()
    assert _chat(checkpoint) == 2
    err = _one_line_error(capsys, "config.json")
    assert "width" not in err


def test_a_missing_tokenizer_is_named(checkpoint, capsys):
    (checkpoint / "tokenizer.json").unlink()
    assert _chat(checkpoint) == 2
    err = _one_line_error(capsys, "tokenizer.json")
    assert "sentencepiece" not in err.lower()


def test_a_symlink_loop_is_named_as_such(checkpoint, tmp_path, capsys):
    loop = tmp_path / "loop.mp4"
    loop.symlink_to(loop)
    assert _chat(checkpoint, "--video", str(loop)) == 2
    _one_line_error(capsys, "loop.mp4", "symlink")


# training: a full disk is named, with the file being written

@pytest.fixture
def small_disk(tmp_path):
    """A 256 KiB tmpfs: room for a run folder's config, not for its checkpoints (needs mount rights)."""
    mount = tmp_path / "small-disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_while_saving_names_the_disk_and_the_file(tmp_path, small_disk, capsys):
    _image(tmp_path / "ok.png")
    data = _records(tmp_path, ["ok.png", "ok.png"])
    run = small_disk / "run"
    code = main(["train", "tiny-align", f"data.train={data}", f"output.dir={run}", "optim.max_steps=2",
                 "output.save_every=1"])
    assert code == 2
    _one_line_error(capsys, os.strerror(errno.ENOSPC), str(run))


# usage errors: exit 2 before any work

@pytest.mark.parametrize("argv", [
    ["ablate", "--data", "d", "--out", "o", "--frames", "0"],
    ["ablate", "--data", "d", "--out", "o", "--seeds", "0", "--frames", "16", "-4"],
    ["data", "check", "x.json", "--num-frames", "0"],
])
def test_frame_counts_below_one_are_usage_errors(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    _one_line_error(capsys, "must be an integer >= 1")
