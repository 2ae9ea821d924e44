"""An OpenAI chat-completions request body -> what the model needs, checked field by field.

Every refusal is a 400 (:class:`~videoccam.serve.errors.APIError`) whose ``param`` names the field:
``messages[0].content[1].video_url``, ``temperature``, ``mm_processor_kwargs.num_frames``, ...
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from videoccam.serve.errors import bad_request

ROLES = ("system", "user", "assistant")
MEDIA_PARTS = {"image_url": "image", "video_url": "video"}
MM_KEYS = ("num_frames", "fps", "max_frames", "start", "end")


@dataclass
class MediaRef:
    kind: str  # "image" | "video"
    url: str
    param: str  # where it was in the request, for errors


@dataclass
class ChatRequest:
    """A checked request.

    Attributes:
        messages: the conversation with typed parts (``{"type": "text" | "video" | "image"}``), which
            the processor turns into placeholders (text stays text, a typed ``<video>`` included).
        media: the media parts in order.
        generate: ``generate`` options (``max_new_tokens``, ``do_sample``, ``temperature``, ``top_p``).
        stop: stop strings (cut from the answer, as OpenAI does).
        seed: the request's seed (it then runs alone, so the seed is honoured).
        video_kwargs: sampling of the request's videos (``mm_processor_kwargs``).
    """

    model: str
    messages: list[dict[str, Any]]
    media: list[MediaRef] = field(default_factory=list)
    generate: dict[str, Any] = field(default_factory=dict)
    stop: list[str] = field(default_factory=list)
    seed: int | None = None
    stream: bool = False
    include_usage: bool = False
    video_kwargs: dict[str, Any] = field(default_factory=dict)


def _number(body: dict[str, Any], key: str, lo: float, hi: float, integer: bool = False) -> Any:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (integer and not isinstance(value, int)):
        raise bad_request(f"{key} must be {'an integer' if integer else 'a number'}", key)
    if not lo <= value <= hi:
        raise bad_request(f"{key} must be between {lo} and {hi}, got {value}", key)
    return value


def _content(content: Any, where: str, media: list[MediaRef]) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if not isinstance(content, list):
        raise bad_request("content must be a string or a list of parts", where)
    parts = []
    for j, part in enumerate(content):
        param = f"{where}[{j}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            if not isinstance(part.get("text"), str):
                raise bad_request("a text part needs a 'text' string", f"{param}.text")
            parts.append({"type": "text", "text": part["text"]})
        elif kind in MEDIA_PARTS:
            value = part.get(kind)
            url = value.get("url") if isinstance(value, dict) else value
            if not isinstance(url, str) or not url:
                raise bad_request(f"a {kind} part needs {kind}.url", f"{param}.{kind}")
            media.append(MediaRef(MEDIA_PARTS[kind], url, f"{param}.{kind}"))
            parts.append({"type": MEDIA_PARTS[kind]})
            parts.append({"type": "text", "text": "\n"})  # Video-CCAM's "<video>\n{text}" layout
        else:
            raise bad_request(f"unsupported content part type {kind!r} (text, image_url, video_url)", f"{param}.type")
    if parts and parts[-1] == {"type": "text", "text": "\n"}:
        parts.pop()  # nothing follows the last media part
    return parts


def parse_request(body: Any, *, max_frames: int, default_frames: int = 16, max_new_tokens: int = 4096) -> ChatRequest:
    """Check a request body (see the module docstring)."""
    if not isinstance(body, dict):
        raise bad_request("the body must be a JSON object")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise bad_request("messages must be a non-empty list", "messages")
    media: list[MediaRef] = []
    conversation = []
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict) or msg.get("role") not in ROLES:
            raise bad_request(f"each message needs a role, one of {ROLES}", f"messages[{i}].role")
        if msg["role"] != "user" and isinstance(msg.get("content"), list) and any(
                isinstance(p, dict) and p.get("type") in MEDIA_PARTS for p in msg["content"]):
            raise bad_request("media parts go in user messages", f"messages[{i}].content")
        conversation.append({"role": msg["role"], "content": _content(msg.get("content"), f"messages[{i}].content",
                                                                      media)})
    if conversation[-1]["role"] != "user":
        raise bad_request("the last message must be the user's", f"messages[{len(messages) - 1}].role")
    if body.get("n", 1) != 1:
        raise bad_request("only n=1 is supported", "n")
    limit = body.get("max_completion_tokens", body.get("max_tokens"))
    key = "max_completion_tokens" if "max_completion_tokens" in body else "max_tokens"
    tokens = _number({key: limit}, key, 1, max_new_tokens, integer=True) or 256
    temperature = _number(body, "temperature", 0, 2)
    top_p = _number(body, "top_p", 0, 1)
    generate: dict[str, Any] = {"max_new_tokens": tokens}
    if temperature:  # None or 0: greedy
        generate.update(do_sample=True, temperature=float(temperature))
        if top_p is not None:
            generate["top_p"] = float(top_p)
    else:
        generate["do_sample"] = False
    min_tokens = _number(body, "min_tokens", 0, tokens, integer=True)  # vLLM's extra sampling fields
    if body.get("ignore_eos") is not None and not isinstance(body.get("ignore_eos"), bool):
        raise bad_request("ignore_eos must be true or false", "ignore_eos")
    if body.get("ignore_eos"):
        min_tokens = tokens  # a fixed answer length (what serving benchmarks ask for)
    if min_tokens:
        generate["min_new_tokens"] = min_tokens
    stop = body.get("stop") or []
    stop = [stop] if isinstance(stop, str) else stop
    if not isinstance(stop, list) or not all(isinstance(s, str) and s for s in stop) or len(stop) > 4:
        raise bad_request("stop must be a string or a list of up to 4 strings", "stop")
    seed = _number(body, "seed", -(2**63), 2**63 - 1, integer=True)
    options = body.get("stream_options") or {}
    return ChatRequest(model=str(body.get("model") or ""), messages=conversation, media=media, generate=generate,
                       stop=stop, seed=seed, stream=bool(body.get("stream", False)),
                       include_usage=bool(isinstance(options, dict) and options.get("include_usage")),
                       video_kwargs=video_kwargs(body.get("mm_processor_kwargs"), max_frames, default_frames))


def video_kwargs(raw: Any, max_frames: int, default_frames: int = 16) -> dict[str, Any]:
    """``mm_processor_kwargs`` (vLLM's field) -> :func:`load_video` options, capped by ``--max-frames``
    (``num_frames`` defaults to the model's, ``default_frames``)."""
    if raw is None:
        return {"num_frames": min(default_frames, max_frames)}
    if not isinstance(raw, dict):
        raise bad_request("mm_processor_kwargs must be an object", "mm_processor_kwargs")
    unknown = sorted(set(raw) - set(MM_KEYS))
    if unknown:
        raise bad_request(f"unknown key {unknown[0]!r} (known: {', '.join(MM_KEYS)})",
                          f"mm_processor_kwargs.{unknown[0]}")
    checked = {k: _number(raw, k, 0, 10**7, integer=k in ("num_frames", "max_frames")) for k in MM_KEYS}
    for key in ("num_frames", "max_frames"):
        if checked[key] is not None and not 1 <= checked[key] <= max_frames:
            raise bad_request(f"{key} must be between 1 and the server's --max-frames ({max_frames})",
                              f"mm_processor_kwargs.{key}")
    out: dict[str, Any] = {}
    if checked["fps"]:
        out.update(sample="fps", fps=float(checked["fps"]), max_frames=checked["max_frames"] or max_frames)
    else:
        out["num_frames"] = checked["num_frames"] or min(default_frames, max_frames)
    for key in ("start", "end"):
        if checked[key] is not None:
            out[key] = float(checked[key])
    return out
