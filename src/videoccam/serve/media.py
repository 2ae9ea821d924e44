"""Media parts of a chat request -> decoded media, safely.

A part's URL is one of:

* ``data:<mime>;base64,<data>``: decoded (bad base64: 400) into a temporary file for the decoder,
  removed afterwards;
* a path or ``file://`` URL: only with ``--media-root``; resolved (symlinks and ``..`` included) and
  refused unless it stays under the root;
* ``http(s)://``: only with ``--allow-remote-media``; fetched with a size cap and a timeout, every
  redirect checked (a redirect to another scheme is refused);
* anything else (``ftp:``, ``gopher:``, ...): 400.

Decoding uses :func:`~videoccam.processing.video.load_video` with its timeout; a part that fails
fails its request only (400 naming the part, e.g. ``messages[0].content[1].video_url``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import os
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from videoccam.errors import VideoCCAMError
from videoccam.processing.video import Video, load_video
from videoccam.serve.errors import bad_request

logger = logging.getLogger(__name__)

SUFFIXES = {"video/mp4": ".mp4", "video/webm": ".webm", "video/quicktime": ".mov", "video/x-matroska": ".mkv",
            "video/avi": ".avi", "video/x-msvideo": ".avi", "image/gif": ".gif", "image/png": ".png",
            "image/jpeg": ".jpg", "image/jpg": ".jpg", "image/webp": ".webp", "image/bmp": ".bmp"}


@dataclass
class MediaPolicy:
    """Where media may come from, and how much of it.

    Attributes:
        media_root: local paths must resolve under it; None: no local paths at all.
        allow_remote: fetch http(s) URLs.
        remote_max_bytes: the most a remote file may be.
        remote_timeout_s: connect/read timeout of a fetch (each socket operation).
        remote_total_s: the longest a whole fetch may take (a server that trickles bytes is cut off).
        decode_timeout_s: the decoder's timeout per media part.
        max_frames: the most frames a request may ask for (``num_frames`` / ``max_frames``).
        size: ``(width, height)`` to decode at (the model's input size).
    """

    media_root: Path | None = None
    allow_remote: bool = False
    remote_max_bytes: int = 256 * 2**20
    remote_timeout_s: float = 20.0
    remote_total_s: float = 120.0
    decode_timeout_s: float = 60.0
    max_frames: int = 96
    size: tuple[int, int] | None = None


class _NoOtherSchemes(urllib.request.HTTPRedirectHandler):
    """Follows redirects to http(s) URLs only (urllib alone would follow one to ``ftp:``)."""

    def http_error_302(self, req: Any, fp: Any, code: int, msg: str, headers: Any) -> Any:
        target = urllib.parse.urljoin(req.full_url, headers.get("location") or headers.get("uri") or "")
        if urllib.parse.urlsplit(target).scheme.lower() not in ("http", "https"):
            raise urllib.error.URLError(f"redirect to a non-http(s) URL refused: {target}")
        return super().http_error_302(req, fp, code, msg, headers)

    http_error_301 = http_error_303 = http_error_307 = http_error_308 = http_error_302


def local_path(url: str, policy: MediaPolicy, param: str) -> Path:
    """A path / ``file://`` URL resolved under the media root (400 otherwise, naming ``param``)."""
    if policy.media_root is None:
        raise bad_request("local media paths are disabled (start the server with --media-root DIR)", param)
    is_file_url = urllib.parse.urlsplit(url).scheme.lower() == "file"
    raw = urllib.parse.unquote(urllib.parse.urlsplit(url).path) if is_file_url else url
    if "\x00" in raw:
        raise bad_request(f"{url!r}: a path with a null byte", param)
    root = policy.media_root.resolve()
    path = (root / raw).resolve() if not os.path.isabs(raw) else Path(raw).resolve()
    if not path.is_relative_to(root):
        raise bad_request(f"{url!r} is outside the media root", param)
    if not path.exists():
        raise bad_request(f"{url!r}: no such file under the media root", param)
    return path


def _fetch(url: str, policy: MediaPolicy, param: str, folder: Path) -> Path:
    if not policy.allow_remote:
        raise bad_request("remote media URLs are disabled (start the server with --allow-remote-media)", param)
    opener = urllib.request.build_opener(_NoOtherSchemes)
    try:
        with opener.open(url, timeout=policy.remote_timeout_s) as response:
            declared = response.headers.get("Content-Length", "")
            if declared.isdigit() and int(declared) > policy.remote_max_bytes:
                raise bad_request(f"{url}: larger than {policy.remote_max_bytes} bytes", param)
            suffix = SUFFIXES.get(response.headers.get_content_type(), Path(urllib.parse.urlsplit(url).path).suffix)
            path = folder / f"remote{suffix or '.bin'}"
            size, deadline = 0, time.monotonic() + policy.remote_total_s
            with open(path, "wb") as out:
                while block := response.read(2**16):
                    if time.monotonic() > deadline:
                        raise bad_request(f"{url}: the download took longer than {policy.remote_total_s:g} s", param)
                    size += len(block)
                    if size > policy.remote_max_bytes:
                        raise bad_request(f"{url}: larger than {policy.remote_max_bytes} bytes", param)
                    out.write(block)
    except (urllib.error.URLError, OSError, ValueError) as err:
        raise bad_request(f"{url}: could not be fetched ({err})", param) from None
    return path


def _from_data_url(url: str, param: str, folder: Path) -> Path:
    header, sep, payload = url.partition(",")
    if not sep or not header.endswith(";base64"):
        raise bad_request("a data URL must be data:<mime type>;base64,<data>", param)
    mime = header[len("data:"):-len(";base64")].strip().lower()
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise bad_request("the data URL's payload is not valid base64", param) from None
    if not data:
        raise bad_request("the data URL is empty", param)
    path = folder / f"upload{SUFFIXES.get(mime, '.bin')}"
    path.write_bytes(data)
    return path


class MediaCache:
    """The last ``max_items`` decoded media parts, by content: a data URL by the sha256 of its payload, a
    local file by its resolved path, size and modification time (remote URLs are not cached). Chat
    clients send the whole conversation, media included, with every turn: each turn after the first
    finds its video here (and the batcher finds its visual tokens)."""

    def __init__(self, max_items: int = 64) -> None:
        self.max_items = max_items
        self._items: OrderedDict[str, Video] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0

    def get(self, key: str | None) -> Video | None:
        if key is None:
            return None
        with self._lock:
            video = self._items.get(key)
            if video is not None:
                self._items.move_to_end(key)
                self.hits += 1
            return video

    def put(self, key: str | None, video: Video) -> None:
        if key is None or self.max_items <= 0:
            return
        with self._lock:
            self._items[key] = video
            self._items.move_to_end(key)
            while len(self._items) > self.max_items:
                self._items.popitem(last=False)


def _content_key(url: str, scheme: str, policy: MediaPolicy, param: str) -> str | None:
    if scheme == "data":
        return "data:" + hashlib.sha256(url.encode()).hexdigest()
    if scheme in ("", "file"):
        path = local_path(url, policy, param)
        stat = path.stat()
        return f"file:{path}:{stat.st_size}:{stat.st_mtime_ns}"
    return None


def load_part(url: Any, kind: str, policy: MediaPolicy, param: str, video_kwargs: dict[str, Any],
              cache: MediaCache | None = None) -> tuple[Video, str | None]:
    """Decode one media part (``kind``: ``image`` or ``video``) to a :class:`Video` (an image: one frame);
    with its cache key (None: not cacheable), which the batcher also uses for the visual tokens."""
    if not isinstance(url, str) or not url:
        raise bad_request("expected a URL string", param)
    scheme = urllib.parse.urlsplit(url).scheme.lower()
    if scheme not in ("data", "http", "https", "file", ""):
        raise bad_request(f"unsupported URL scheme {scheme!r} (data:, a path under the media root, or "
                          "http(s) with --allow-remote-media)", param)
    kwargs = {"num_frames": 1} if kind == "image" else dict(video_kwargs)
    source = _content_key(url, scheme, policy, param)
    key = None if source is None else json.dumps([source, kind, kwargs, policy.size], sort_keys=True)
    cached = cache.get(key) if cache is not None else None
    if cached is not None:
        return cached, key
    with tempfile.TemporaryDirectory(prefix="videoccam-serve-") as tmp:
        if scheme == "data":
            path = _from_data_url(url, param, Path(tmp))
        elif scheme in ("http", "https"):
            path = _fetch(url, policy, param, Path(tmp))
        else:
            path = local_path(url, policy, param)
        try:
            video = load_video(path, size=policy.size, timeout=policy.decode_timeout_s, **kwargs)
        except (VideoCCAMError, ValueError, OSError) as err:
            raise bad_request(f"could not decode the {kind}: {err}".replace(str(path), "the media"), param) from None
    if cache is not None:
        cache.put(key, video)
    return video, key
