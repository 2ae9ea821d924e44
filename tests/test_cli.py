"""The `videoccam` command through its real entry point (a subprocess, as a user runs it)."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "counter.mp4"


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "videoccam.cli", *args], capture_output=True, text=True,
                          timeout=300)


@pytest.fixture(scope="module")
def tc_checkpoint(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "tiny"
    done = run("make-tiny-checkpoint", str(out), "--frame-block-mask", "--temporal-rope", "tc")
    assert done.returncode == 0, done.stderr
    assert Path(done.stdout.strip()) == out and (out / "config.json").exists()
    return out


def test_chat_about_the_bundled_clip_and_an_image(tc_checkpoint, tmp_path):
    image = tmp_path / "frame.png"
    Image.fromarray(np.full((30, 40, 3), 200, np.uint8)).save(image)
    done = run("chat", "--model", str(tc_checkpoint), "--video", str(EXAMPLE), "--image", str(image),
               "--num-frames", "6", "--max-new-tokens", "5", "--temporal-rope", "frame", "what happens ?")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip()


def test_missing_video_is_a_clear_error(tc_checkpoint, tmp_path):
    missing = tmp_path / "nope.mp4"
    done = run("chat", "--model", str(tc_checkpoint), "--video", str(missing), "hi")
    assert done.returncode == 2
    assert "nope.mp4" in done.stderr and "Traceback" not in done.stderr


def test_flash_attention_with_block_mask_is_refused(tc_checkpoint):
    done = run("chat", "--model", str(tc_checkpoint), "--video", str(EXAMPLE), "--attn-implementation",
               "flash_attention_2", "hi")
    assert done.returncode != 0 and "Traceback" not in done.stderr


def test_help():
    for args in ([], ["chat"], ["make-tiny-checkpoint"]):
        assert run(*args, "--help").returncode == 0
