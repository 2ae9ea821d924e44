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
import logging
import os
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from videoccam.errors import VideoCCAMError
from videoccam.processing.video import Video, load_video
from videoccam.serve.errors import APIError, bad_request

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
        remote_timeout_s: connect/read timeout of a fetch.
        decode_timeout_s: the decoder's timeout per media part.
        max_frames: the most frames a request may ask for (``num_frames`` / ``max_frames``).
        size: ``(width, height)`` to decode at (the model's input size).
    """

    media_root: Path | None = None
    allow_remote: bool = False
    remote_max_bytes: int = 256 * 2**20
    remote_timeout_s: float = 20.0
    decode_timeout_s: float = 60.0
    max_frames: int = 96
    size: tuple[int, int] | None = None


class _NoOtherSchemes(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req: Any, fp: Any, code: int, msg: str, headers: Any, newurl: str) -> Any:
        if urllib.parse.urlsplit(newurl).scheme not in ("http", "https"):
            raise urllib.error.URLError(f"redirect to a non-http(s) URL refused: {newurl}")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def local_path(url: str, policy: MediaPolicy, param: str) -> Path:
    """A path / ``file://`` URL resolved under the media root (400 otherwise, naming ``param``)."""
    if policy.media_root is None:
        raise bad_request("local media paths are disabled (start the server with --media-root DIR)", param)
    raw = urllib.parse.unquote(urllib.parse.urlsplit(url).path) if url.startswith("file:") else url
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
            suffix = SUFFIXES.get(response.headers.get_content_type(), Path(urllib.parse.urlsplit(url).path).suffix)
            path = folder / f"remote{suffix or '.bin'}"
            size = 0
            with open(path, "wb") as out:
                while block := response.read(2**20):
                    size += len(block)
                    if size > policy.remote_max_bytes:
                        raise APIError(413, f"{url}: larger than {policy.remote_max_bytes} bytes", param)
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


def load_part(url: Any, kind: str, policy: MediaPolicy, param: str, video_kwargs: dict[str, Any]) -> Video:
    """Decode one media part (``kind``: ``image`` or ``video``) to a :class:`Video` (an image: one frame)."""
    if not isinstance(url, str) or not url:
        raise bad_request("expected a URL string", param)
    scheme = urllib.parse.urlsplit(url).scheme.lower()
    with tempfile.TemporaryDirectory(prefix="videoccam-serve-") as tmp:
        if scheme == "data":
            path = _from_data_url(url, param, Path(tmp))
        elif scheme in ("http", "https"):
            path = _fetch(url, policy, param, Path(tmp))
        elif scheme in ("", "file") or (len(scheme) == 1 and os.name == "nt"):
            path = local_path(url, policy, param)
        else:
            raise bad_request(f"unsupported URL scheme {scheme!r} (data:, a path under the media root, or "
                              "http(s) with --allow-remote-media)", param)
        kwargs = {"num_frames": 1} if kind == "image" else dict(video_kwargs)
        try:
            video = load_video(path, size=policy.size, timeout=policy.decode_timeout_s, **kwargs)
        except (VideoCCAMError, ValueError, OSError) as err:
            raise bad_request(f"could not decode the {kind}: {err}".replace(str(path), "the media"), param) from None
        return video
