"""The FastAPI app of ``videoccam serve``: OpenAI's chat-completions API with video.

Routes: ``POST /v1/chat/completions`` (plain or ``stream: true`` server-sent events ending in
``data: [DONE]``), ``GET /v1/models``, ``GET /health``. Each completion carries the answer's
per-stage timings in the extra field ``videoccam.timings`` (on the last chunk when streaming).
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
import uuid
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from videoccam.processing.media import input_size
from videoccam.serve.batcher import Batcher, Job, finished
from videoccam.serve.errors import APIError, bad_request
from videoccam.serve.media import MediaCache, MediaPolicy, load_part
from videoccam.serve.requests import ChatRequest, parse_request

if TYPE_CHECKING:
    from videoccam.pipeline import Pipeline

logger = logging.getLogger(__name__)


@dataclass
class ServeSettings:
    """``videoccam serve``'s options (see docs/serving.md)."""

    model_name: str = "videoccam"
    media_root: Path | None = None
    allow_remote_media: bool = False
    max_batch_size: int = 8
    max_queue: int = 64
    max_frames: int = 96
    max_body_mb: float = 64.0
    api_key: str | None = None
    batch_window_s: float = 0.01
    decode_workers: int = 4
    media_cache_items: int = 64


class StopTrimmer:
    """Streamed text with OpenAI's ``stop`` rule: the answer ends before the first stop string (which
    is not sent); text that could still begin a stop string is held back until it cannot."""

    def __init__(self, stops: list[str]) -> None:
        self.stops, self.text, self.sent, self.stopped = stops, "", 0, False

    def feed(self, delta: str) -> str:
        if self.stopped:
            return ""
        self.text += delta
        cut = min((i for i in (self.text.find(s) for s in self.stops) if i != -1), default=-1)
        if cut != -1:
            self.stopped, self.text = True, self.text[:cut]
            out, self.sent = self.text[self.sent:], len(self.text)
            return out
        hold = max((len(s) - 1 for s in self.stops), default=0)
        safe = max(self.sent, len(self.text) - hold)
        out, self.sent = self.text[self.sent:safe], safe
        return out

    def final(self, text: str) -> str:
        """The whole answer cut at the first stop string."""
        cuts = [i for i in (text.find(s) for s in self.stops) if i != -1]
        return text[:min(cuts)] if cuts else text

    def flush(self) -> str:
        out, self.sent = self.text[self.sent:], len(self.text)
        return out


def create_app(pipe: Pipeline, settings: ServeSettings) -> FastAPI:
    """The app (its batcher's model thread starts now; it stops with the app)."""
    batcher = Batcher(pipe, max_batch_size=settings.max_batch_size, max_queue=settings.max_queue,
                      window_s=settings.batch_window_s)
    decoders = ThreadPoolExecutor(settings.decode_workers, thread_name_prefix="videoccam-decode")
    media_cache = MediaCache(settings.media_cache_items)
    policy = MediaPolicy(media_root=settings.media_root, allow_remote=settings.allow_remote_media,
                         max_frames=settings.max_frames, size=input_size(pipe.processor.image_processor))
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        batcher.close()  # waiting requests get 503; the model thread ends
        decoders.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(title="videoccam", version="1", lifespan=lifespan)
    started = time.time()

    @app.exception_handler(APIError)
    async def api_error(request: Request, err: APIError) -> JSONResponse:
        return JSONResponse(err.body(), status_code=err.status)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, err: StarletteHTTPException) -> JSONResponse:  # unknown route, method
        return JSONResponse(APIError(err.status_code, str(err.detail)).body(), status_code=err.status_code,
                            headers=getattr(err, "headers", None))

    @app.exception_handler(Exception)
    async def server_error(request: Request, err: Exception) -> JSONResponse:  # a bug: logged, OpenAI's format
        logger.exception("%s %s failed", request.method, request.url.path)
        return JSONResponse(APIError(500, f"internal error: {type(err).__name__}").body(), status_code=500)

    def check_key(request: Request) -> None:
        if settings.api_key is None:
            return
        given = request.headers.get("authorization", "")
        if not secrets.compare_digest(given.encode(), f"Bearer {settings.api_key}".encode()):
            raise APIError(401, "missing or wrong API key (Authorization: Bearer KEY)", code="invalid_api_key")

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "model": settings.model_name, "waiting": batcher.waiting, "running": batcher.running}

    @app.get("/v1/models")
    async def models(request: Request) -> dict[str, Any]:
        check_key(request)
        return {"object": "list", "data": [{"id": settings.model_name, "object": "model", "created": int(started),
                                            "owned_by": "videoccam"}]}

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Any:
        check_key(request)
        batcher.check_admission()  # a full queue refuses before the body is read
        body = await read_body(request, settings.max_body_mb)
        req = parse_request(body, max_frames=settings.max_frames, default_frames=pipe.processor.num_frames)
        if req.model and req.model != settings.model_name:
            raise APIError(404, f"the model {req.model!r} does not exist (this server has {settings.model_name!r})",
                           "model", "model_not_found")
        batcher.reserve()  # a full queue refuses at once, before any decoding
        try:
            job = await make_job(req)
        except BaseException:
            batcher.release()
            raise
        batcher.submit(job)
        ident, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        if req.stream:
            return StreamingResponse(stream(request, job, req, ident, created), media_type="text/event-stream")
        answer = await wait_for(request, job)
        text = StopTrimmer(req.stop).final(answer.text)
        finish = "stop" if text != answer.text else answer.finish_reason
        return {"id": ident, "object": "chat.completion", "created": created, "model": settings.model_name,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}],
                "usage": finished(answer), "videoccam": {"timings": answer.timings.to_dict()}}

    async def make_job(req: ChatRequest) -> Job:
        loop = asyncio.get_running_loop()
        t0 = time.perf_counter()
        loaded = await asyncio.gather(*(loop.run_in_executor(decoders, load_part, ref.url, ref.kind, policy,
                                                             ref.param, req.video_kwargs, media_cache)
                                        for ref in req.media))
        job = Job(req.messages, [video for video, _ in loaded], [ref.kind for ref in req.media],
                  [key for _, key in loaded], req.generate, req.seed, loop)
        job.decode_s = time.perf_counter() - t0 if req.media else 0.0
        return job

    async def wait_for(request: Request, job: Job) -> Any:
        while True:
            try:
                kind, value = await asyncio.wait_for(job.events.get(), timeout=0.25)
            except asyncio.TimeoutError:
                if await request.is_disconnected():
                    batcher.cancel(job)
                    raise APIError(499, "the client went away") from None
                continue
            if kind == "done":
                return value
            if kind == "error":
                raise value

    async def stream(request: Request, job: Job, req: ChatRequest, ident: str, created: int) -> AsyncIterator[str]:
        trimmer = StopTrimmer(req.stop)

        def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> str:
            payload = {"id": ident, "object": "chat.completion.chunk", "created": created,
                       "model": settings.model_name,
                       "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **extra}
            return f"data: {json.dumps(payload)}\n\n"

        try:
            yield chunk({"role": "assistant", "content": ""})
            while True:
                kind, value = await job.events.get()
                texts = []
                while kind == "text":  # the deltas that queued up meanwhile go as one chunk
                    texts.append(value)
                    if job.events.empty():
                        break
                    kind, value = job.events.get_nowait()
                out = trimmer.feed("".join(texts)) if texts else ""
                if out:
                    yield chunk({"content": out})
                if kind == "text":
                    continue
                if kind == "error":
                    yield f"data: {json.dumps(value.body())}\n\n"
                    break
                else:
                    rest = trimmer.flush() if not trimmer.stopped else ""
                    if rest:
                        yield chunk({"content": rest})
                    finish = "stop" if trimmer.stopped else value.finish_reason
                    extra = {"videoccam": {"timings": value.timings.to_dict()}}
                    if req.include_usage:
                        extra["usage"] = finished(value)
                    yield chunk({}, finish, **extra)
                    break
            yield "data: [DONE]\n\n"
        finally:  # the client went away (the generator is closed) or the answer is complete
            batcher.cancel(job)

    app.state.batcher = batcher
    return app


async def read_body(request: Request, max_mb: float) -> Any:
    """The JSON body, refused with 413 past ``max_mb`` (counted while reading, whatever the headers say)."""
    limit = int(max_mb * 2**20)
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise APIError(413, f"the request body is larger than --max-body-mb ({max_mb:g} MB)")
    data = bytearray()
    async for block in request.stream():
        data += block
        if len(data) > limit:
            raise APIError(413, f"the request body is larger than --max-body-mb ({max_mb:g} MB)")
    try:
        return json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise bad_request(f"the body is not JSON ({err})") from None
