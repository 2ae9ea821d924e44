"""Media safety of `videoccam serve` (videoccam.serve.media), unit by unit, without a server.

Local paths must resolve under the media root (no `..`, no symlink escape, none at all without a
root); data URLs must be valid base64 and their temporary file is removed; remote URLs are off by
default and, when on, are size-capped, time-limited and never follow a redirect to another scheme.
A local HTTP server on 127.0.0.1 plays the remote host.
"""

from __future__ import annotations

import base64
import contextlib
import http.server
import shutil
import tempfile
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("fastapi")

from videoccam.serve.errors import APIError  # noqa: E402
from videoccam.serve.media import MediaCache, MediaPolicy, load_part, local_path  # noqa: E402

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
PARAM = "messages[0].content[1].video_url"
SMALL = {"num_frames": 2}


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """root/clip.mp4, root/sub/, root/sub/escape.mp4 -> outside/secret.mp4, root/sub/inner.mp4 -> root/clip.mp4."""
    base = tmp_path_factory.mktemp("media")
    root, outside = base / "root", base / "outside"
    (root / "sub").mkdir(parents=True)
    outside.mkdir()
    shutil.copy(EXAMPLES / "first.mp4", root / "clip.mp4")
    shutil.copy(EXAMPLES / "first.mp4", outside / "secret.mp4")
    (root / "sub" / "escape.mp4").symlink_to(outside / "secret.mp4")
    (root / "sub" / "inner.mp4").symlink_to(root / "clip.mp4")
    (root / "sub" / "up").symlink_to(base)  # a folder link out of the root
    return root


def refused(url: str, policy: MediaPolicy, kind: str = "video") -> APIError:
    with pytest.raises(APIError) as info:
        load_part(url, kind, policy, PARAM, SMALL)
    assert info.value.status == 400 and info.value.param == PARAM
    return info.value


@pytest.mark.parametrize("url", [
    "../outside/secret.mp4",
    "sub/../../outside/secret.mp4",
    "sub/escape.mp4",  # a symlink to a file outside
    "sub/up/outside/secret.mp4",  # through a symlinked folder
    "file:///etc/passwd",
    "/etc/passwd",
    "file://localhost/%2e%2e/outside/secret.mp4",
])
def test_paths_outside_the_root_are_refused(tree, url):
    assert "outside the media root" in refused(url, MediaPolicy(media_root=tree)).message


def test_paths_inside_the_root_resolve(tree):
    policy = MediaPolicy(media_root=tree)
    assert local_path("clip.mp4", policy, PARAM) == (tree / "clip.mp4").resolve()
    assert local_path("sub/inner.mp4", policy, PARAM) == (tree / "clip.mp4").resolve()  # a link that stays inside
    assert local_path(f"file://{tree}/sub/../clip.mp4", policy, PARAM) == (tree / "clip.mp4").resolve()
    video, key = load_part("sub/inner.mp4", "video", policy, PARAM, SMALL)
    assert len(video) == 2 and key is not None and str((tree / "clip.mp4").resolve()) in key


def test_no_media_root_means_no_local_paths(tree):
    for url in ("clip.mp4", f"file://{tree}/clip.mp4", str(tree / "clip.mp4")):
        assert "--media-root" in refused(url, MediaPolicy(media_root=None)).message


def test_odd_paths_are_400_not_500(tree):
    policy = MediaPolicy(media_root=tree)
    assert "no such file" in refused("missing.mp4", policy).message
    assert "null" in refused("clip.mp4\x00.txt", policy).message
    assert "could not decode" in refused("sub", policy).message  # a folder is read as frames: none here


def test_data_urls(tree, monkeypatch, tmp_path):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where the upload's temporary file goes
    payload = base64.b64encode((EXAMPLES / "first.mp4").read_bytes()).decode()
    video, key = load_part(f"data:video/mp4;base64,{payload}", "video", MediaPolicy(), PARAM, SMALL)
    assert len(video) == 2 and key.startswith('["data:')
    assert list(tmp_path.iterdir()) == []  # the temporary file is gone
    assert "not valid base64" in refused("data:video/mp4;base64,@@@not base64@@@", MediaPolicy()).message
    assert "not valid base64" in refused("data:video/mp4;base64,abc", MediaPolicy()).message  # bad padding
    assert "data:<mime type>;base64" in refused("data:video/mp4,plain", MediaPolicy()).message
    assert "empty" in refused("data:video/mp4;base64,", MediaPolicy()).message
    assert "could not decode" in refused("data:video/mp4;base64," + base64.b64encode(b"junk").decode(),
                                         MediaPolicy()).message
    assert list(tmp_path.iterdir()) == []  # also after a failed decode


def test_other_schemes_are_refused(tree):
    policy = MediaPolicy(media_root=tree, allow_remote=True)
    for url in ("ftp://example.com/a.mp4", "gopher://example.com/a", "javascript:alert(1)"):
        assert "unsupported URL scheme" in refused(url, policy).message
    refused("", policy)


REDIRECTS = {"/redirect-ok": "/clip.mp4", "/redirect-file": "file:///etc/passwd",
             "/redirect-ftp": "ftp://127.0.0.1/clip.mp4"}


class Handler(http.server.BaseHTTPRequestHandler):
    """/clip.mp4: the clip; /redirect-*: 302 to REDIRECTS; /big: 2 MB; /slow: sleeps past the client's timeout."""

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        if self.path == "/clip.mp4":
            self._send((EXAMPLES / "first.mp4").read_bytes(), "video/mp4")
        elif self.path in REDIRECTS:
            self.send_response(302)
            self.send_header("Location", REDIRECTS[self.path])
            self.end_headers()
        elif self.path == "/big":
            self._send(b"\0" * 2**21, "video/mp4")
        elif self.path == "/slow":
            time.sleep(1.5)
            self._send(b"late", "video/mp4")
        else:
            self.send_error(404)

    def _send(self, data: bytes, mime: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", mime)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        with contextlib.suppress(OSError):  # the client gave up (size cap, timeout)
            self.wfile.write(data)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def remote():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_remote_media_off_by_default(remote):
    assert "--allow-remote-media" in refused(f"{remote}/clip.mp4", MediaPolicy()).message


def test_remote_media_when_allowed(remote):
    policy = MediaPolicy(allow_remote=True, remote_max_bytes=2**20, remote_timeout_s=0.5)
    video, key = load_part(f"{remote}/clip.mp4", "video", policy, PARAM, SMALL)
    assert len(video) == 2 and key is None  # remote media are not cached
    assert len(load_part(f"{remote}/redirect-ok", "video", policy, PARAM, SMALL)[0]) == 2
    for target in ("file", "ftp"):
        assert "non-http(s)" in refused(f"{remote}/redirect-{target}", policy).message
    assert "larger than 1048576 bytes" in refused(f"{remote}/big", policy).message
    start = time.monotonic()
    assert "could not be fetched" in refused(f"{remote}/slow", policy).message
    assert time.monotonic() - start < 1.4
    assert "404" in refused(f"{remote}/nothing", policy).message


def test_media_cache_is_keyed_by_content(tree):
    cache, policy = MediaCache(4), MediaPolicy(media_root=tree)
    first, key = load_part("clip.mp4", "video", policy, PARAM, SMALL, cache)
    again, key2 = load_part("sub/../clip.mp4", "video", policy, PARAM, SMALL, cache)
    assert again is first and key2 == key and cache.hits == 1
    other, key3 = load_part("clip.mp4", "video", policy, PARAM, {"num_frames": 3}, cache)
    assert len(other) == 3 and key3 != key and cache.hits == 1
