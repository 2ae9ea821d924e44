"""``videoccam demo``: a Gradio web app to chat about a video or an image, in the spirit of Video-CCAM's
``web_demo.py``.

Upload a video or an image (or pick one of the shipped examples), ask, and the answer streams in.
Follow-up questions keep the conversation: the media are encoded once and the KV cache is kept
between turns (:class:`~videoccam.session.ChatSession`); a new upload or new sampling settings start
a new conversation. Side panels set generation (max new tokens, temperature, top-p, top-k) and
sampling (frames, uniform / fps, start / end); the last answer's per-stage timings are shown.

The endpoints have API names for ``gradio_client``: ``/chat`` (question, video, image, history,
settings... -> history, timings) and ``/clear``.
"""

from __future__ import annotations

import inspect
import json
import logging
import queue
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gradio as gr

if TYPE_CHECKING:
    from videoccam.pipeline import Pipeline
    from videoccam.session import ChatSession

logger = logging.getLogger(__name__)

TITLE = "videoccam: ask about a video"


def find_examples() -> list[list[str]]:
    """``[[video path, question], ...]`` from the repository's ``examples/`` (not installed with the
    package: found next to the source tree when it is there)."""
    folder = Path(__file__).resolve().parents[2] / "examples"
    listing = folder / "questions.json"
    if not listing.is_file():
        return []
    return [[str(folder / e["video"]), e["question"]] for e in json.loads(listing.read_text())
            if (folder / e["video"]).is_file()]


def generation_kwargs(max_new_tokens: float, temperature: float, top_p: float, top_k: float) -> dict[str, Any]:
    """The panel's generation settings as ``generate`` options (temperature 0: greedy)."""
    if temperature <= 0:
        return {"max_new_tokens": int(max_new_tokens), "do_sample": False}
    return {"max_new_tokens": int(max_new_tokens), "do_sample": True, "temperature": float(temperature),
            "top_p": float(top_p), "top_k": int(top_k)}


def video_kwargs(frames: float, sample: str, fps: float, start: float | None, end: float | None) -> dict[str, Any]:
    """The panel's sampling settings as :func:`~videoccam.processing.video.load_video` options."""
    kwargs: dict[str, Any] = {"sample": sample}
    if sample == "fps":
        kwargs.update(fps=float(fps), max_frames=int(frames))
    else:
        kwargs["num_frames"] = int(frames)
    if start:
        kwargs["start"] = float(start)
    if end:
        kwargs["end"] = float(end)
    return kwargs


def _media_path(value: Any) -> str | None:
    """A Video / Image component's value (a path, or a dict with one) -> the path."""
    if isinstance(value, dict):
        value = value.get("video") or value.get("path") or value.get("image")
        if isinstance(value, dict):
            value = value.get("path")
    return str(value) if value else None


class DemoChat:
    """The app's logic, apart from the UI (one :class:`ChatSession` per browser session, in ``gr.State``)."""

    def __init__(self, pipe: Pipeline) -> None:
        self.pipe = pipe
        self.lock = threading.Lock()  # one generation at a time: the model is not thread-safe

    def session_for(self, state: dict[str, Any] | None, video: str | None, image: str | None,
                    sampling: dict[str, Any]) -> tuple[ChatSession, dict[str, Any]]:
        """The browser session's chat, new when the media or the sampling changed."""
        key = json.dumps([video, image, sampling], sort_keys=True)
        if state and state.get("key") == key:
            return state["session"], state
        media, kinds = [], []
        if video:
            media.append(video)
            kinds.append("video")
        if image:
            media.append(image)
            kinds.append("image")
        session = self.pipe.session(media, kinds=kinds, video_kwargs=sampling)
        return session, {"key": key, "session": session}

    def respond(self, question: str, video: Any, image: Any, history: list[dict[str, str]] | None,
                state: dict[str, Any] | None, max_new_tokens: float, temperature: float, top_p: float, top_k: float,
                frames: float, sample: str, fps: float, start: float | None, end: float | None,
                ) -> Iterator[tuple[list[dict[str, str]], dict[str, Any] | None, str, str]]:
        """Stream the answer into the chat: yields (history, state, timings markdown, cleared question box)."""
        history = list(history or [])
        question = (question or "").strip()
        if not question:
            yield history, state, "Type a question.", ""
            return
        video_path, image_path = _media_path(video), _media_path(image)
        sampling = video_kwargs(frames, sample, fps, start, end)
        fresh = not state or state.get("key") != json.dumps([video_path, image_path, sampling], sort_keys=True)
        if fresh:
            history = []  # new media or sampling: a new conversation
        history += [{"role": "user", "content": question}, {"role": "assistant", "content": ""}]
        yield history, state, "…", ""
        deltas: queue.Queue = queue.Queue()
        outcome: dict[str, Any] = {}

        def work() -> None:
            try:
                with self.lock:
                    session, new_state = self.session_for(state, video_path, image_path, sampling)
                    session.ask(question, on_text=lambda row, delta: deltas.put(delta),
                                **generation_kwargs(max_new_tokens, temperature, top_p, top_k))
                    outcome.update(session=session, state=new_state)
            except Exception as err:  # noqa: BLE001 - shown in the chat
                outcome["error"] = err
            finally:
                deltas.put(None)

        threading.Thread(target=work, daemon=True).start()
        while (delta := deltas.get()) is not None:
            history[-1]["content"] += delta
            yield history, state, "…", ""
        if "error" in outcome:
            history[-1]["content"] = f"⚠️ {outcome['error']}"
            yield history, state, "", ""
            return
        session = outcome["session"]
        history[-1]["content"] = session.last.text
        yield history, outcome["state"], timings_markdown(session), ""


def timings_markdown(session: ChatSession) -> str:
    t = session.last.timings
    rows = [("decode", t.decode), ("preprocess", t.preprocess), ("vision encoder", t.vision),
            ("projector", t.projector),
            ("prefill (first token)", t.prefill), ("generate", t.generate)]
    lines = ["| stage | seconds |", "|---|---|", *[f"| {name} | {value:.3f} |" for name, value in rows]]
    lines.append(f"| tokens | {t.prompt_tokens} prompt, {t.new_tokens} new"
                 + (f", {t.tokens_per_s:.1f}/s" if t.tokens_per_s else "") + " |")
    lines.append(f"| KV cache | {session.reused_tokens} prompt tokens reused |")
    return "\n".join(lines)


def build_demo(pipe: Pipeline) -> gr.Blocks:
    """The Gradio app."""
    chat = DemoChat(pipe)
    messages = {"type": "messages"} if "type" in inspect.signature(gr.Chatbot.__init__).parameters else {}
    with gr.Blocks(title=TITLE) as demo:
        label = "the bundled model" if Path(str(pipe.model_path)).parts[-2:] == ("assets", "default_model") else (
            f"`{pipe.model_path}`")
        gr.Markdown(f"# {TITLE}\nModel: {label}. Upload a video or an image, then ask; follow-up "
                    "questions keep the conversation (the media are encoded once, the KV cache is reused).")
        state = gr.State(None)
        with gr.Row():
            with gr.Column(scale=2):
                video = gr.Video(label="video", sources=["upload"])
                image = gr.Image(label="image", type="filepath", sources=["upload"])
                with gr.Accordion("sampling", open=False):
                    frames = gr.Slider(1, 96, value=pipe.processor.num_frames, step=1, label="frames (max with fps)")
                    sample = gr.Radio(["uniform", "fps"], value="uniform", label="sampling")
                    fps = gr.Number(1.0, label="frames per second (fps sampling)")
                    start = gr.Number(None, label="start (s)")
                    end = gr.Number(None, label="end (s)")
                with gr.Accordion("generation", open=False):
                    max_new_tokens = gr.Slider(1, 1024, value=256, step=1, label="max new tokens")
                    temperature = gr.Slider(0.0, 2.0, value=0.0, step=0.05, label="temperature (0 = greedy)")
                    top_p = gr.Slider(0.0, 1.0, value=1.0, step=0.01, label="top-p")
                    top_k = gr.Slider(0, 200, value=50, step=1, label="top-k")
            with gr.Column(scale=3):
                chatbot = gr.Chatbot(label="conversation", height=420, **messages)
                question = gr.Textbox(label="question", placeholder="which colour flashed first ?")
                with gr.Row():
                    send = gr.Button("ask", variant="primary")
                    clear = gr.Button("new conversation")
                timings = gr.Markdown("", label="timings of the last answer")
        examples = find_examples()
        if examples:
            gr.Examples(examples, inputs=[video, question], label="examples (the bundled model knows these)")
        inputs = [question, video, image, chatbot, state, max_new_tokens, temperature, top_p, top_k, frames, sample,
                  fps, start, end]
        outputs = [chatbot, state, timings, question]
        send.click(chat.respond, inputs, outputs, api_name="chat")
        question.submit(chat.respond, inputs, outputs, api_name=False)
        clear.click(lambda: ([], None, ""), None, [chatbot, state, timings], api_name="clear")
    return demo
