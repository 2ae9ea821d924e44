"""``videoccam demo``: a Gradio web demo of the one inference path (:class:`~videoccam.pipeline.Pipeline`).

A video or image upload, a chat box whose answers stream in, multi-turn with the media encoded once
and the KV cache kept (one :class:`~videoccam.session.ChatSession` per browser session, held in a
``gr.State``), panels for generation (max new tokens, temperature, top-p, top-k; temperature 0 is
greedy) and frame sampling (frames, uniform / fps, start / end), and the per-stage timings of the
last answer. A new upload or changed sampling settings start a new session (the media are encoded
again); changed generation settings apply to the next answer of the same session.

The clips of the repository's ``examples/`` folder (with ``examples/questions.json``) are offered as
examples when the folder is found (it is not installed with the package).

The API endpoints have names, for ``gradio_client``: ``/ask`` (question, video, image, the settings;
streams; ``/ask_submit`` is the same from the question box), ``/reset`` (a new conversation about
the same media), ``/new_video`` and ``/new_image`` (the chat cleared when the media change). Gradio's queue
runs one event of each at a time by default, so one model serves the browser sessions in turn.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import logging
import queue
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from videoccam.errors import VideoCCAMError

if TYPE_CHECKING:
    import gradio as gr

    from videoccam.pipeline import Pipeline
    from videoccam.session import ChatSession

logger = logging.getLogger(__name__)

__all__ = ["Conversation", "DemoBackend", "Example", "Generation", "Sampling", "build_demo", "find_examples",
           "load_examples"]

SAMPLE_MODES = ("uniform", "fps")
#: where the repository's examples folder is, seen from this file (src/videoccam/demo.py)
REPO_EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


# --- the examples ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Example:
    """One shipped clip and a question the bundled model answers."""

    video: Path
    question: str
    answer: str


def find_examples(folder: str | Path | None = None) -> Path | None:
    """``folder`` (checked), else the repository's ``examples/`` when this module runs from a checkout.

    Returns None when no folder is given and the repository's is absent (an installed package).

    Raises:
        FileNotFoundError: the given ``folder`` has no ``questions.json``.
    """
    if folder is not None:
        folder = Path(folder)
        if not (folder / "questions.json").is_file():
            raise FileNotFoundError(f"--examples {folder}: no questions.json in it")
        return folder
    return REPO_EXAMPLES if (REPO_EXAMPLES / "questions.json").is_file() else None


def load_examples(folder: Path) -> list[Example]:
    """The examples of ``folder/questions.json`` (a list of ``{"video", "question", "answer"}``).

    Raises:
        ValueError: the file is not such a list (naming the file and the entry), or a video is missing.
    """
    path = folder / "questions.json"
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not JSON ({err})") from None
    if not isinstance(entries, list):
        raise ValueError(f"{path}: expected a list of {{video, question, answer}}")
    examples = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or not all(isinstance(entry.get(k), str) for k in ("video", "question")):
            raise ValueError(f"{path}: entry {i} needs string 'video' and 'question' fields")
        video = folder / entry["video"]
        if not video.is_file():
            raise ValueError(f"{path}: entry {i}: video {video} does not exist")
        examples.append(Example(video, entry["question"], str(entry.get("answer", ""))))
    return examples


# --- the settings ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Sampling:
    """The sampling panel: which frames of a video are decoded (a change starts a new session)."""

    num_frames: int
    sample: str = "uniform"
    fps: float | None = None
    start: float | None = None
    end: float | None = None

    @classmethod
    def from_ui(cls, num_frames: float, sample: str, fps: float | None, start: float | None,
                end: float | None) -> Sampling:
        """The panel's values, checked; blank or 0 start/end mean the clip's own.

        Raises:
            ValueError: naming the field (frames < 1, an unknown mode, fps <= 0 in fps mode, end <= start).
        """
        if num_frames is None or int(num_frames) < 1:
            raise ValueError(f"frames: must be >= 1, got {num_frames}")
        if sample not in SAMPLE_MODES:
            raise ValueError(f"sampling: expected one of {', '.join(SAMPLE_MODES)}, got {sample!r}")
        if sample == "fps" and (fps is None or fps <= 0):
            raise ValueError(f"fps: must be > 0 with fps sampling, got {fps}")
        start = float(start) if start else None
        end = float(end) if end else None
        if (start is not None and start < 0) or (end is not None and end < 0):
            raise ValueError("start / end: seconds must be >= 0")
        if start is not None and end is not None and end <= start:
            raise ValueError(f"end ({end} s) must be after start ({start} s)")
        return cls(int(num_frames), sample, float(fps) if sample == "fps" else None, start, end)

    def video_kwargs(self, size: Any) -> dict[str, Any]:
        """:func:`~videoccam.processing.video.load_video` keyword arguments (``size``: decode at it).

        In fps mode ``num_frames`` caps the frames (``max_frames``), as ``--max-frames`` does in chat."""
        kwargs: dict[str, Any] = {"num_frames": self.num_frames, "sample": self.sample, "start": self.start,
                                  "end": self.end, "size": size}
        if self.sample == "fps":
            kwargs.update(fps=self.fps, max_frames=self.num_frames)
        return kwargs


@dataclass(frozen=True)
class Generation:
    """The generation panel (temperature 0 = greedy; top-p 1 and top-k 0 = off)."""

    max_new_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0

    def generate_kwargs(self) -> dict[str, Any]:
        """``generate`` keyword arguments; the sampling ones only when sampling."""
        if self.max_new_tokens < 1:
            raise ValueError(f"max new tokens: must be >= 1, got {self.max_new_tokens}")
        if self.temperature <= 0:
            return {"max_new_tokens": int(self.max_new_tokens), "do_sample": False}
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top-p: must be in (0, 1], got {self.top_p}")
        return {"max_new_tokens": int(self.max_new_tokens), "do_sample": True, "temperature": float(self.temperature),
                "top_p": float(self.top_p), "top_k": max(int(self.top_k), 0)}


# --- one browser session -------------------------------------------------------------------------------------
@dataclass
class Conversation:
    """What one browser session holds (in ``gr.State``): its chat session, the media and sampling it
    was made for, and the chat as the chat box shows it (``{"role", "content"}`` messages)."""

    key: tuple | None = None
    session: ChatSession | None = None
    messages: list[dict[str, str]] = field(default_factory=list)

    def __deepcopy__(self, memo: dict) -> Conversation:
        # gradio may deep-copy state values; the session holds the shared model, which must never be copied
        return self


class DemoBackend:
    """The demo's logic without its widgets: sessions and streamed answers over one :class:`Pipeline`."""

    def __init__(self, pipe: Pipeline) -> None:
        from videoccam.processing.media import input_size

        self.pipe = pipe
        self.size = input_size(pipe.processor.image_processor)  # decode at the model's input size
        self.default_frames = int(pipe.processor.num_frames)

    def session_for(self, conversation: Conversation, video: str | None, image: str | None,
                    sampling: Sampling) -> tuple[ChatSession, bool]:
        """The conversation's session for these media and sampling, made (media encoded) when they
        differ from its own; returns ``(session, whether it is new)``."""
        key = (video, image, sampling if video else None)
        if conversation.session is not None and conversation.key == key:
            return conversation.session, False
        media, kinds = [], []
        if video:
            media.append(video)
            kinds.append("video")
        if image:
            media.append(image)
            kinds.append("image")
        session = self.pipe.session(media, kinds=kinds, video_kwargs=sampling.video_kwargs(self.size))
        conversation.key, conversation.session, conversation.messages = key, session, []
        logger.info("new session: %s", ", ".join(map(str, media)) or "no media")
        return session, True

    def stream(self, session: ChatSession, question: str, generation: Generation) -> Iterator[str]:
        """The answer as it grows: ``generate`` runs in a thread whose text deltas come through a
        queue; the last item is the finished (stripped) answer. Errors of the thread are raised here.

        Closing the iterator early (the browser left, or Stop was pressed: gradio closes the event's
        generator) stops ``generate`` at its next token and waits for the thread, so the session is
        never used by two threads at once."""
        from transformers import StoppingCriteriaList

        kwargs = generation.generate_kwargs()
        stop = threading.Event()
        kwargs["stopping_criteria"] = StoppingCriteriaList([_StopWhenSet(stop)])
        deltas: queue.Queue[str | None] = queue.Queue()
        outcome: dict[str, Any] = {}

        def work() -> None:
            try:
                outcome["text"] = session.ask(question, on_text=lambda row, delta: deltas.put(delta), **kwargs)
            except BaseException as err:  # handed to the consumer, which raises it
                outcome["error"] = err
            finally:
                deltas.put(None)

        worker = threading.Thread(target=work, name="videoccam-demo-answer", daemon=True)
        worker.start()
        text = ""
        try:
            while (delta := deltas.get()) is not None:
                text += delta
                yield text
        finally:
            stop.set()
            worker.join()
        if "error" in outcome:
            raise outcome["error"]
        yield outcome["text"]


class _StopWhenSet:
    """A ``generate`` stopping criterion: every row is done once ``event`` is set."""

    def __init__(self, event: threading.Event) -> None:
        self.event = event

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool,  # [B]
                          device=input_ids.device)


def timings_panel(session: ChatSession | None) -> tuple[str, dict[str, Any]]:
    """The timings panel of the session's last answer: a markdown table and its JSON record."""
    if session is None or session.last is None:
        return "*No answer yet.*", {}
    timings = session.last.timings
    record = {**timings.to_dict(), "reused_tokens": session.reused_tokens}
    rows = [f"| {name} | {getattr(timings, name):.3f} s |" for name in
            ("decode", "preprocess", "vision", "projector", "prefill", "generate")]
    speed = f"{timings.tokens_per_s:.1f} tok/s" if timings.tokens_per_s is not None else "n/a"
    lines = ["| stage | time |", "|---|---|", *rows,
             f"| first token | {timings.time_to_first_token:.3f} s |",
             "", f"{timings.prompt_tokens} prompt tokens ({session.reused_tokens} reused from the KV cache), "
             f"{timings.new_tokens} new, {speed}"]
    return "\n".join(lines), record


# --- the page ------------------------------------------------------------------------------------------------
def _messages_kwargs(gr_module: Any) -> dict[str, Any]:
    """``type="messages"`` where the Chatbot still has a ``type`` (gradio 4.44 / 5; gradio 6 has only messages)."""
    return {"type": "messages"} if "type" in inspect.signature(gr_module.Chatbot.__init__).parameters else {}


def build_demo(pipe: Pipeline, examples: Path | None = None, *, title: str = "Video-CCAM") -> gr.Blocks:
    """The Gradio app over ``pipe``; ``examples``: a folder with ``questions.json`` (None: no examples)."""
    import gradio as gr

    backend = DemoBackend(pipe)
    shown = load_examples(examples) if examples is not None else []

    def ask(question: str, video: str | None, image: str | None, max_new_tokens: float, temperature: float,
            top_p: float, top_k: float, num_frames: float, sample: str, fps: float | None, start: float | None,
            end: float | None, conversation: Conversation | None) -> Iterator[tuple]:
        conversation = conversation if isinstance(conversation, Conversation) else Conversation()
        if not question or not question.strip():
            raise gr.Error("Type a question first.")
        try:
            sampling = Sampling.from_ui(num_frames, sample, fps, start, end)
            generation = Generation(int(max_new_tokens), float(temperature), float(top_p), int(top_k))
            generation.generate_kwargs()  # checked before the media are encoded
            session, _ = backend.session_for(conversation, video, image, sampling)
            history = conversation.messages
            with contextlib.closing(backend.stream(session, question, generation)) as answers:
                for text in answers:
                    # kept as it grows: a stopped answer stays in the chat as in the session's history
                    conversation.messages = [*history, {"role": "user", "content": question},
                                             {"role": "assistant", "content": text}]
                    yield "", conversation.messages, conversation, "*Answering...*", {}
        except (ValueError, OSError, VideoCCAMError) as err:
            raise gr.Error(str(err)) from err
        yield "", conversation.messages, conversation, *timings_panel(session)

    def reset(conversation: Conversation | None) -> tuple:
        if isinstance(conversation, Conversation) and conversation.session is not None:
            conversation.session.reset()  # the encoded media stay
            conversation.messages = []
        return [], conversation, *timings_panel(None)

    def new_media(conversation: Conversation | None) -> tuple:
        return [], Conversation(), *timings_panel(None)

    with gr.Blocks(title=f"{title} demo", analytics_enabled=False) as demo:
        bundled = Path(str(pipe.model_path)).parts[-2:] == ("assets", "default_model")
        model = "the bundled tiny model" if bundled else f"`{pipe.model_path}`"
        gr.Markdown(f"# {title}\nModel: {model}. Ask about a video or an image: the media are encoded once, "
                    "follow-up questions reuse the KV cache. Temperature 0 answers greedily.")
        state = gr.State(None)
        question = gr.Textbox(label="Question", placeholder="which colour flashed first ?", render=False)
        with gr.Row():
            with gr.Column(scale=2):
                video = gr.Video(label="Video", sources=["upload"], height=240)
                image = gr.Image(label="Image (optional, after the video)", type="filepath", sources=["upload"],
                                 height=120)
                with gr.Accordion("Sampling (a change starts a new session)", open=False):
                    num_frames = gr.Slider(1, 128, value=backend.default_frames, step=1, label="Frames",
                                           info="uniform: frames sampled; fps: at most this many")
                    sample = gr.Radio(list(SAMPLE_MODES), value="uniform", label="Sampling")
                    fps = gr.Number(1.0, label="Frames per second (fps sampling)", minimum=0)
                    with gr.Row():
                        start = gr.Number(0, label="Start (s)", minimum=0)
                        end = gr.Number(0, label="End (s, 0 = the end)", minimum=0)
                with gr.Accordion("Generation", open=False):
                    max_new_tokens = gr.Slider(1, 1024, value=256, step=1, label="Max new tokens")
                    temperature = gr.Slider(0, 2, value=0, step=0.05, label="Temperature (0 = greedy)")
                    top_p = gr.Slider(0.05, 1, value=1, step=0.05, label="Top-p")
                    top_k = gr.Slider(0, 200, value=0, step=1, label="Top-k (0 = off)")
                if shown:
                    gr.Examples([[str(e.video), e.question] for e in shown], inputs=[video, question],
                                label="Examples (the bundled model answers these)")
                else:
                    gr.Markdown("*No examples: the repository's `examples/` folder was not found (it is not "
                                "installed with the package); run from a checkout or pass `--examples DIR`.*")
            with gr.Column(scale=3):
                chatbot = gr.Chatbot(label="Chat", height=380, **_messages_kwargs(gr))
                question.render()
                with gr.Row():
                    send = gr.Button("Send", variant="primary")
                    stop = gr.Button("Stop")
                    clear = gr.Button("New conversation")
                with gr.Accordion("Timings of the last answer", open=True):
                    timings_md = gr.Markdown("*No answer yet.*", label="Timings")
                    timings_json = gr.JSON(label="Timings (JSON)")

        inputs = [question, video, image, max_new_tokens, temperature, top_p, top_k, num_frames, sample, fps, start,
                  end, state]
        outputs = [question, chatbot, state, timings_md, timings_json]
        asking = [send.click(ask, inputs, outputs, api_name="ask"),
                  question.submit(ask, inputs, outputs, api_name="ask_submit")]
        stop.click(None, None, None, cancels=asking)  # closes the generator: generate stops (DemoBackend.stream)
        clear.click(reset, [state], [chatbot, state, timings_md, timings_json], api_name="reset")
        for media in (video, image):
            media.change(new_media, [state], [chatbot, state, timings_md, timings_json],
                         api_name=f"new_{'video' if media is video else 'image'}")
    return demo


def launch_demo(pipe: Pipeline, *, host: str = "127.0.0.1", port: int = 7860, share: bool = False,
                examples: str | Path | None = None, allowed: Sequence[str] = (), quiet: bool = False) -> None:
    """Build the app (:func:`build_demo`) and serve it until interrupted."""
    folder = find_examples(examples)
    if folder is None:
        logger.warning("no examples: the repository's examples/ folder was not found (pass --examples DIR)")
    demo = build_demo(pipe, folder)
    paths = [str(folder), *allowed] if folder is not None else list(allowed)
    demo.queue().launch(server_name=host, server_port=port, share=share, allowed_paths=paths,
                          show_error=True, quiet=quiet)
