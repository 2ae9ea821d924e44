"""`videoccam demo` through its real entry point: a subprocess serving the Gradio app, driven by
gradio_client (the named API endpoints) and by headless Chromium (a screenshot of the page, and the
page itself clicked: the first example, Send, the answer shown)."""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytest.importorskip("gradio")
gradio_client = pytest.importorskip("gradio_client")

from videoccam.demo import Generation, Sampling, find_examples, load_examples  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "first.mp4"
QUESTION = "which colour flashed first ?"
STAGES = ("decode", "preprocess", "vision", "projector", "prefill", "generate")
TOOL = ROOT / "tools" / "demo_screenshot.py"


def _tool():
    spec = importlib.util.spec_from_file_location("demo_screenshot", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def demo_url(tmp_path_factory):
    """`python -m videoccam_cli demo` (the console script's module) on a free port, until the module ends."""
    port = _free_port()
    log = tmp_path_factory.mktemp("demo") / "demo.log"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
           "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    with log.open("w") as out:
        server = subprocess.Popen([sys.executable, "-m", "videoccam_cli", "demo", "--port", str(port), "--device",
                                   "cpu"], stdout=out, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 180
        while True:
            if server.poll() is not None:
                pytest.fail(f"videoccam demo exited {server.returncode}: {log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(url, timeout=5) as reply:
                    if reply.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"videoccam demo did not serve {url} in 180 s: {log.read_text()[-2000:]}")
            time.sleep(0.5)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def _ask(client, question: str = QUESTION, **settings):
    """One /ask call: (every streamed output, the final one)."""
    job = client.submit(question=question, video=gradio_client.handle_file(str(EXAMPLE)), image=None,
                        api_name="/ask", **settings)
    final = job.result(timeout=120)
    return job.outputs(), final


def _texts(chat: list[dict]) -> list[tuple[str, str]]:
    """(role, text) of each chat message (gradio 6 gives content as typed parts; 4/5 as a string)."""
    out = []
    for message in chat:
        content = message["content"]
        text = content if isinstance(content, str) else "".join(p.get("text", "") for p in content)
        out.append((message["role"], text))
    return out


# --- through the server ----------------------------------------------------------------------------------
def test_ask_about_the_first_example_answers_green_with_timings(demo_url):
    client = gradio_client.Client(demo_url, verbose=False)
    outputs, (question, chat, timings_md, timings) = _ask(client)
    assert question == ""  # the question box is cleared
    assert _texts(chat) == [("user", QUESTION), ("assistant", "green")]
    streamed = [out for out in outputs if out[2] == "*Answering...*"]  # yielded while generating
    assert streamed and _texts(streamed[0][1])[-1][0] == "assistant" and len(outputs) > len(streamed)
    assert timings["prompt_tokens"] == 42 and timings["new_tokens"] == 2 and timings["reused_tokens"] == 0
    assert all(timings[stage] > 0 for stage in STAGES)  # a new session: the media were decoded and encoded
    assert "42 prompt tokens (0 reused from the KV cache), 2 new" in timings_md
    page = urllib.request.urlopen(demo_url, timeout=10).read().decode()
    assert "Model: the bundled tiny model" in page  # the header names the model


def test_second_turn_reuses_the_kv_cache_and_the_encoded_media(demo_url):
    client = gradio_client.Client(demo_url, verbose=False)
    _ask(client)
    _, (_, chat, timings_md, timings) = _ask(client, "and which colour flashed first ?")
    assert _texts(chat)[1:] == [("assistant", "green"), ("user", "and which colour flashed first ?"),
                                ("assistant", "green")]
    assert timings["reused_tokens"] == 43 and timings["prompt_tokens"] == 55
    assert timings["decode"] == timings["vision"] == timings["projector"] == 0  # not encoded again
    assert "(43 reused from the KV cache)" in timings_md


def test_reset_and_changed_sampling_start_afresh(demo_url):
    client = gradio_client.Client(demo_url, verbose=False)
    _ask(client)
    chat, timings_md, timings = client.predict(api_name="/reset")
    assert chat == [] and timings_md == "*No answer yet.*"
    _, (_, chat, _, timings) = _ask(client)  # the same media: not encoded again, but a fresh conversation
    assert len(chat) == 2 and timings["reused_tokens"] == 0 and timings["vision"] == 0
    _, (_, chat, _, timings) = _ask(client, num_frames=8)  # new sampling: a new session, encoded again
    assert _texts(chat) == [("user", QUESTION), ("assistant", "green")]
    assert timings["reused_tokens"] == 0 and timings["decode"] > 0 and timings["prompt_tokens"] == 42


def test_bad_settings_are_shown_as_errors_naming_the_field(demo_url):
    client = gradio_client.Client(demo_url, verbose=False)
    with pytest.raises(gradio_client.exceptions.AppError, match=r"end \(1.0 s\) must be after start \(2.0 s\)"):
        _ask(client, start=2, end=1)
    with pytest.raises(gradio_client.exceptions.AppError, match="Type a question first"):
        _ask(client, question="  ")


def test_screenshot_of_the_page_is_not_blank(demo_url, tmp_path):
    tool = _tool()
    if tool.find_browser() is None:
        pytest.skip("no Chromium on PATH (apt-get install -y chromium)")
    from PIL import Image

    shot = tool.plain_screenshot(demo_url, tmp_path / "page.png")
    image = Image.open(shot).convert("RGB")
    assert image.size == (1280, 900)
    assert len(image.getcolors(1 << 24)) > 50  # text, buttons and example thumbnails, not an empty page


def test_in_the_browser_the_first_example_is_answered_green(demo_url, tmp_path):
    tool = _tool()
    if tool.find_browser() is None:
        pytest.skip("no Chromium on PATH (apt-get install -y chromium)")
    from PIL import Image

    answer = tool.answered_screenshot(demo_url, tmp_path / "answered.png", expect="green")
    assert answer.strip() == "green"
    image = Image.open(tmp_path / "answered.png").convert("RGB")
    assert image.width == 1280 and len(image.getcolors(1 << 24)) > 50


# --- the parts, without a server ----------------------------------------------------------------------------
def test_settings_are_checked_with_the_field_named():
    assert Sampling.from_ui(16, "uniform", 1.0, 0, 0).video_kwargs((32, 32)) == {
        "num_frames": 16, "sample": "uniform", "start": None, "end": None, "size": (32, 32)}
    assert Sampling.from_ui(8, "fps", 2, 1, 3).video_kwargs(None) == {
        "num_frames": 8, "sample": "fps", "start": 1.0, "end": 3.0, "size": None, "fps": 2.0, "max_frames": 8}
    for args, message in [((0, "uniform", 1, 0, 0), "frames"), ((8, "random", 1, 0, 0), "sampling"),
                          ((8, "fps", 0, 0, 0), "fps"), ((8, "uniform", 1, 3, 2), "end")]:
        with pytest.raises(ValueError, match=message):
            Sampling.from_ui(*args)
    assert Generation(64, 0.0, 0.9, 5).generate_kwargs() == {"max_new_tokens": 64, "do_sample": False}
    assert Generation(64, 0.7, 0.9, 5).generate_kwargs() == {"max_new_tokens": 64, "do_sample": True,
                                                             "temperature": 0.7, "top_p": 0.9, "top_k": 5}
    with pytest.raises(ValueError, match="top-p"):
        Generation(64, 0.7, 0.0, 5).generate_kwargs()


def test_examples_are_the_repository_s_and_bad_files_are_named(tmp_path):
    shipped = load_examples(find_examples())
    assert (shipped[0].video.name, shipped[0].question, shipped[0].answer) == ("first.mp4", QUESTION, "green")
    with pytest.raises(FileNotFoundError, match="no questions.json"):
        find_examples(tmp_path)
    (tmp_path / "questions.json").write_text("[{\"video\": \"gone.mp4\", \"question\": \"q\"}]")
    with pytest.raises(ValueError, match=r"questions.json: entry 0: video .*gone.mp4 does not exist"):
        load_examples(find_examples(tmp_path))
    (tmp_path / "questions.json").write_text("{not json")
    with pytest.raises(ValueError, match="questions.json: not JSON"):
        load_examples(tmp_path)
    assert json.loads((ROOT / "examples" / "questions.json").read_text())[0]["answer"] == "green"


def test_the_demo_command_s_flags():
    from videoccam_cli import build_parser

    args = build_parser(["demo"]).parse_args(["demo", "--port", "7999", "--share", "--dtype", "bfloat16"])
    assert (args.func, args.host, args.port, args.share, args.model, args.dtype) == (
        "cmd_demo", "127.0.0.1", 7999, True, None, "bfloat16")
    done = subprocess.run([sys.executable, "-m", "videoccam_cli", "demo", "--port", "70000"], capture_output=True,
                          text=True, timeout=60, check=False,
                          env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    assert done.returncode == 2 and "must be a port number 1..65535, got 70000" in done.stderr


class _FakeSession:
    """Stands in for a ChatSession: streams "x" deltas until ``generate``'s stopping criteria say stop."""

    def __init__(self) -> None:
        self.steps = 0

    def ask(self, question, *, on_text, stopping_criteria, **kwargs):
        import torch

        ids = torch.zeros(1, 3, dtype=torch.long)
        while not bool(stopping_criteria[0](ids, None)[0]) and self.steps < 10_000:
            self.steps += 1
            on_text(0, "x")
            time.sleep(0.001)
        return "x" * self.steps


def test_stream_yields_the_growing_answer_and_closing_it_stops_generate():
    from videoccam.demo import DemoBackend

    backend = DemoBackend.__new__(DemoBackend)  # stream() needs no pipeline
    session = _FakeSession()
    answers = backend.stream(session, "q", Generation(8))
    assert [next(answers) for _ in range(3)] == ["x", "xx", "xxx"]
    answers.close()  # what gradio does on Stop or a closed page
    steps = session.steps
    time.sleep(0.05)
    assert 3 <= steps < 10_000 and session.steps == steps  # the thread stopped and was joined


def test_without_gradio_the_command_names_the_demo_extra():
    code = ("import sys; sys.modules['gradio'] = None\n"
            "from videoccam_cli import main; sys.exit(main(['demo', '--port', '7999']))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False,
                          env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    assert done.returncode == 2
    assert "needs the 'demo' extra: pip install \"videoccam[demo]\" (missing module: gradio)" in done.stderr
