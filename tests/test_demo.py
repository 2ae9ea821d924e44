"""`videoccam demo` through its real entry point: driven with `gradio_client`, and seen by headless Chromium."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

gradio_client = pytest.importorskip("gradio_client")

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
SETTINGS = [16, 0.0, 1.0, 50, 16, "uniform", 1.0, None, None]  # max new tokens, temperature, top-p, top-k, sampling


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def demo_url():
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "videoccam", "demo", "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}/"
    try:
        for _ in range(600):
            assert proc.poll() is None, proc.stdout.read()
            try:
                with urllib.request.urlopen(url, timeout=1):
                    break
            except OSError:
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def text_of(message: dict) -> str:
    content = message["content"]
    return content if isinstance(content, str) else "".join(part.get("text", "") for part in content)


def test_the_bundled_model_answers_and_a_second_turn_reuses_the_kv_cache(demo_url):
    client = gradio_client.Client(demo_url, verbose=False)
    video = gradio_client.handle_file(str(EXAMPLES / "first.mp4"))
    history, timings, box = client.predict("which colour flashed first ?", video, None, [], *SETTINGS, api_name="/chat")
    assert [m["role"] for m in history] == ["user", "assistant"] and text_of(history[-1]) == "green"
    assert "| vision encoder |" in timings and "| KV cache | 0 prompt tokens reused |" in timings and box == ""
    history, timings, _ = client.predict("how many objects are there ?", video, None, history, *SETTINGS,
                                         api_name="/chat")
    assert len(history) == 4 and text_of(history[-1])
    reused = int(timings.split("| KV cache | ")[1].split(" ")[0])
    assert reused > 32  # the first turn's media and question were not prefilled again
    history, timings, _ = client.predict("", video, None, history, *SETTINGS, api_name="/chat")
    assert timings == "Type a question." and len(history) == 4


@pytest.mark.skipif(shutil.which("chromium") is None, reason="headless Chromium is not installed "
                    "(apt-get install chromium)")
def test_screenshot_in_headless_chromium_is_not_blank(demo_url, tmp_path):
    from PIL import Image

    shot = tmp_path / "demo.png"
    subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    f"--screenshot={shot}", "--window-size=1280,900", "--virtual-time-budget=15000", demo_url],
                   capture_output=True, timeout=120, check=True)
    image = Image.open(shot).convert("RGB")
    colours = image.getcolors(maxcolors=1 << 20)
    assert image.size == (1280, 900) and colours is not None and len(colours) > 50  # a rendered page, not blank
    page = urllib.request.urlopen(demo_url, timeout=10).read().decode()
    assert "videoccam" in page
