"""`videoccam serve` through its real entry point, with the official `openai` client.

One server process per configuration (module-scoped), on a free 127.0.0.1 port, with the bundled
model: it answers the examples' questions, so answers can be checked literally.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

openai = pytest.importorskip("openai")

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
QUESTION = "which colour flashed first ?"
GREEDY = {"temperature": 0, "max_tokens": 8}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, *args: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen([sys.executable, "-m", "videoccam", "serve", "--port", str(self.port), *args],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.proc.stdout.read()
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.1)
        raise TimeoutError("the server did not start")

    def client(self, **kwargs) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=kwargs.pop("api_key", "none"), max_retries=0,
                             **kwargs)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


@pytest.fixture(scope="module")
def media_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("media")
    shutil.copy(EXAMPLES / "first.mp4", root / "first.mp4")
    (root / "inside").mkdir()
    secret = tmp_path_factory.mktemp("outside") / "secret.mp4"
    shutil.copy(EXAMPLES / "first.mp4", secret)
    (root / "inside" / "escape.mp4").symlink_to(secret)
    return root


@pytest.fixture(scope="module")
def server(media_root):
    srv = Server("--media-root", str(media_root), "--max-body-mb", "0.5")
    yield srv
    srv.stop()


def video_part(url: str) -> dict:
    return {"type": "video_url", "video_url": {"url": url}}


def ask(client, url: str, question: str = QUESTION, **kwargs):
    content = [video_part(url), {"type": "text", "text": question}]
    return client.chat.completions.create(model="videoccam", messages=[{"role": "user", "content": content}],
                                          **{**GREEDY, **kwargs})


def data_url(path: Path) -> str:
    return "data:video/mp4;base64," + base64.b64encode(path.read_bytes()).decode()


def test_plain_streaming_data_url_and_path(server):
    client = server.client()
    plain = ask(client, "first.mp4")
    assert plain.choices[0].message.content == "green" and plain.choices[0].finish_reason == "stop"
    assert plain.usage.completion_tokens == 2 and plain.usage.prompt_tokens > 32
    timings = plain.model_extra["videoccam"]["timings"]
    assert timings["decode"] > 0 and timings["vision"] > 0 and timings["prefill"] > 0
    assert ask(client, data_url(EXAMPLES / "first.mp4")).choices[0].message.content == "green"
    chunks = list(client.chat.completions.create(
        model="videoccam", stream=True, stream_options={"include_usage": True},
        messages=[{"role": "user", "content": [video_part("file://" + str(Path(server_media(server)) / "first.mp4")),
                                               {"type": "text", "text": QUESTION}]}], **GREEDY))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "green" and chunks[-1].choices[0].finish_reason == "stop" and chunks[-1].usage.total_tokens > 0


def server_media(server) -> str:
    args = server.proc.args
    return args[args.index("--media-root") + 1]


def test_per_request_num_frames(server):
    client = server.client()
    for frames in (4, 32):
        answer = ask(client, "first.mp4", extra_body={"mm_processor_kwargs": {"num_frames": frames}})
        assert answer.choices[0].message.content == "green"
    with pytest.raises(openai.BadRequestError, match="--max-frames") as info:
        ask(client, "first.mp4", extra_body={"mm_processor_kwargs": {"num_frames": 500}})
    assert info.value.body["param"] == "mm_processor_kwargs.num_frames"


def test_eight_concurrent_clients_get_the_sequential_answers(server):
    questions = [QUESTION, "how many objects are there ?", "which colours appear ?",
                 "is the clip played forward or reversed ?"] * 2
    client = server.client()
    sequential = [ask(client, "first.mp4", q).choices[0].message.content for q in questions]
    results: dict[int, str] = {}

    def run(k: int) -> None:
        results[k] = ask(server.client(), "first.mp4", questions[k]).choices[0].message.content

    threads = [threading.Thread(target=run, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert [results[k] for k in range(8)] == sequential


@pytest.mark.parametrize(("url", "message"), [
    ("../outside.mp4", "outside the media root"),
    ("inside/escape.mp4", "outside the media root"),  # a symlink that leaves the root
    ("https://example.com/clip.mp4", "remote media URLs are disabled"),
    ("ftp://example.com/clip.mp4", "unsupported URL scheme"),
    ("data:video/mp4;base64,@@not-base64@@", "not valid base64"),
    ("nothing.mp4", "no such file"),
])
def test_media_refusals_name_the_part(server, url, message):
    with pytest.raises(openai.BadRequestError, match=message) as info:
        ask(server.client(), url)
    assert info.value.body["param"] == "messages[0].content[0].video_url"


def test_other_refusals(server):
    client = server.client()
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        client.chat.completions.create(model="gpt-4", messages=[{"role": "user", "content": "hi"}], **GREEDY)
    big = data_url(EXAMPLES / "counter.mp4") * 40  # > 0.5 MB
    with pytest.raises(openai.APIStatusError) as info:
        ask(client, big)
    assert info.value.status_code == 413
    with pytest.raises(openai.BadRequestError, match="n=1"):
        client.chat.completions.create(model="videoccam", n=2, messages=[{"role": "user", "content": "hi"}])
    models = client.models.list()
    assert [m.id for m in models.data] == ["videoccam"]
    for method, route, status in (("GET", "/v1/nothing", 404), ("GET", "/v1/chat/completions", 405)):
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(urllib.request.Request(f"{server.url}{route}", method=method), timeout=5)
        assert info.value.code == status and set(json.loads(info.value.read())["error"]) == {
            "message", "type", "param", "code"}


def test_api_key_and_a_full_queue():
    """--api-key: 401 without it; --max-queue 1 --max-batch-size 1: a burst gets 429 at once, the others
    complete, /health answers throughout."""
    srv = Server("--api-key", "s3cret", "--max-queue", "1", "--max-batch-size", "1", "--media-root", str(EXAMPLES))
    try:
        with pytest.raises(openai.AuthenticationError):
            srv.client().models.list()
        client = srv.client(api_key="s3cret")
        assert client.models.list().data[0].id == "videoccam"
        outcomes: list[tuple[str, float]] = []

        def run() -> None:
            start = time.monotonic()
            try:
                ask(srv.client(api_key="s3cret"), "counter.mp4", max_tokens=200,
                    extra_body={"mm_processor_kwargs": {"num_frames": 64}})
                outcomes.append(("ok", time.monotonic() - start))
            except openai.RateLimitError:
                outcomes.append(("429", time.monotonic() - start))

        threads = [threading.Thread(target=run) for _ in range(6)]
        for t in threads:
            t.start()
        with urllib.request.urlopen(f"{srv.url}/health", timeout=5) as r:
            assert json.loads(r.read())["status"] == "ok"
        for t in threads:
            t.join(120)
        refused = [s for kind, s in outcomes if kind == "429"]
        assert len(outcomes) == 6 and refused and all(s < 1.0 for s in refused)
        assert any(kind == "ok" for kind, _ in outcomes)
    finally:
        srv.stop()


def test_typed_placeholder_text_stays_text(server):
    """A user who types "<video>" in the text gets it as text, not as a second media slot."""
    answer = ask(server.client(), "first.mp4", question="<video> " + QUESTION)
    assert answer.choices[0].finish_reason in ("stop", "length")


@pytest.mark.skipif(os.name == "nt", reason="POSIX signals")
def test_serve_fails_fast_on_a_missing_media_root(tmp_path):
    done = subprocess.run([sys.executable, "-m", "videoccam", "serve", "--media-root", str(tmp_path / "nope")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "--media-root" in done.stderr and "no such folder" in done.stderr


def health(server) -> dict:
    with urllib.request.urlopen(f"{server.url}/health", timeout=5) as r:
        return json.loads(r.read())


def test_a_client_that_goes_away_frees_its_slot(server):
    """While a long answer holds the model thread, a streaming and a plain request wait; their clients
    hang up: both leave the queue at once (/health's waiting count drops to 0) and the long one completes."""
    import http.client

    slow = {"model": "videoccam", "max_tokens": 400, "ignore_eos": True,  # long enough to outlast the hang-ups
            "messages": [{"role": "user", "content": [video_part("first.mp4"), {"type": "text", "text": QUESTION}]}]}
    done: dict[str, object] = {}

    def long_answer() -> None:
        done["answer"] = server.client().chat.completions.create(
            **{k: v for k, v in slow.items() if k != "ignore_eos"}, extra_body={"ignore_eos": True})

    worker = threading.Thread(target=long_answer)
    worker.start()
    deadline = time.monotonic() + 30
    while health(server)["running"] == 0:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    conns = []
    for stream in (True, False):
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        conn.request("POST", "/v1/chat/completions", json.dumps({**slow, "stream": stream, "max_tokens": 4}),
                     {"Content-Type": "application/json"})
        conns.append(conn)
    first_line = conns[0].getresponse().readline()  # the role chunk comes at once, before the answer
    assert first_line.startswith(b"data: ") and b'"role": "assistant"' in first_line
    while health(server)["waiting"] < 2:  # both queued behind the long answer
        assert time.monotonic() < deadline
        time.sleep(0.02)
    for conn in conns:
        conn.sock.shutdown(socket.SHUT_RDWR)
        conn.close()
    while (state := health(server))["waiting"] > 0:
        assert time.monotonic() < deadline, state
        time.sleep(0.02)
    assert state["running"] == 1  # freed while the long answer still runs
    worker.join(60)
    answer = done["answer"]
    assert answer.usage.completion_tokens == 400 and answer.choices[0].finish_reason == "length"


def test_stop_strings_and_seeds(server):
    client = server.client()
    cut = ask(client, "first.mp4", stop=["ee"])
    assert cut.choices[0].message.content == "gr" and cut.choices[0].finish_reason == "stop"
    chunks = list(client.chat.completions.create(
        model="videoccam", stream=True, stop="een",
        messages=[{"role": "user", "content": [video_part("first.mp4"), {"type": "text", "text": QUESTION}]}],
        **GREEDY))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "gr"
    sampled = {seed: [ask(client, "first.mp4", "say something", temperature=2.0, top_p=1.0, seed=seed,
                          max_tokens=6).choices[0].message.content for _ in range(2)] for seed in (1, 2, 3)}
    assert all(a == b for a, b in sampled.values())  # a seed gives the same answer again
    assert len({a for a, _ in sampled.values()}) > 1, sampled  # and the seeds differ
