"""The ``videoccam`` command: a thin map from subcommands to library functions."""

from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:

    from videoccam.processing.processor import VideoCCAMProcessor
    from videoccam.processing.video import Video

logger = logging.getLogger("videoccam")

# a decode of more frames than this shows its bar at once; smaller ones only if they last DECODE_DELAY_S
DECODE_BAR_FRAMES = 64
DECODE_DELAY_S = 1.0


def configure(args: argparse.Namespace) -> None:
    """Before any command: transformers' own bars and logs follow the CLI's (off when stderr is not
    a terminal or with --quiet, so a pipe or a log file gets no bar), and the TC-LLaVA flags are
    checked (:func:`check_temporal_options`) before anything loads."""
    from transformers.utils import logging as hf_logging

    if not show_progress(args):
        hf_logging.disable_progress_bar()
    if args.quiet:
        hf_logging.set_verbosity_error()
    check_temporal_options(args)


def check_temporal_options(args: argparse.Namespace) -> None:
    """``--temporal-rope`` / ``--rope-gamma`` where given, checked by the library.

    The stdlib-only parser does not list the modes (they are
    :data:`videoccam.constants.TEMPORAL_ROPE_MODES`); an unknown mode or a bad gamma raises the
    library's :class:`~videoccam.errors.ConfigError`, which lists them and which the CLI prints as
    one line (exit 2).
    """
    mode, gamma = getattr(args, "temporal_rope", None), getattr(args, "rope_gamma", None)
    if mode is None and gamma is None:
        return
    from videoccam.configuration import VideoCCAMConfig
    from videoccam.positions import decode_step

    decode_step(VideoCCAMConfig.temporal_rope if mode is None else mode,
                VideoCCAMConfig.rope_gamma if gamma is None else gamma)


def show_progress(args: argparse.Namespace) -> bool:
    """Progress bars on stderr: only on a terminal and without ``--quiet``."""
    return not getattr(args, "quiet", False) and sys.stderr.isatty()


class TerminalProgress:
    """A tqdm bar on stderr fed by ``progress(done, total)`` calls (:mod:`videoccam.progress`).

    The bar is made at the first call; ``done == total`` closes it, and the next call starts a new
    one (one bar per video). ``delay``: seconds before it shows (``0``: at once).
    """

    def __init__(self, desc: str, unit: str, *, leave: bool = True, delay: Callable[[int], float] | None = None
                 ) -> None:
        self.desc, self.unit, self.leave = desc, unit, leave
        self._delay = delay or (lambda total: 0.0)
        self._bar = None

    def __call__(self, done: int, total: int) -> None:
        if self._bar is None:
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=self.desc, unit=self.unit, file=sys.stderr, leave=self.leave,
                             delay=self._delay(total), dynamic_ncols=True)
        self._bar.update(done - self._bar.n)
        if done >= total:
            self.close()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def progress_bar(args: argparse.Namespace, desc: str, unit: str, **options) -> TerminalProgress | None:
    """A :class:`TerminalProgress` when bars are wanted (:func:`show_progress`) and tqdm is installed."""
    if not show_progress(args):
        return None
    if importlib.util.find_spec("tqdm") is None:
        logger.debug("no progress bar: tqdm is not installed")
        return None
    return TerminalProgress(desc, unit, **options)


def _decode_delay(total: int) -> float:
    return 0.0 if total > DECODE_BAR_FRAMES else DECODE_DELAY_S


def cmd_chat(args: argparse.Namespace) -> int:
    """Answer questions about videos/images: one question, or a conversation read from stdin."""
    from videoccam.streaming import AnswerStreamer

    pipe = load_pipeline(args)
    processor = pipe.processor
    started = time.perf_counter()
    videos = _load_videos(args, processor)  # before the media are encoded: a bad file fails fast
    prefix = _subtitle_prefix(args.subtitles, videos[0]) if args.subtitles is not None else ""
    media = [*videos, *args.image]
    decode_s = time.perf_counter() - started
    session = pipe.session(  # encodes the media once, for every question; keeps the KV cache between turns
        media, kinds=["video"] * len(videos) + ["image"] * len(args.image))
    if session.encoded is not None:  # the videos were decoded above, before the session
        session.encoded.timings.decode += decode_s
    generate_kwargs = _generate_kwargs(args)

    def answer(question: str) -> None:
        if not session.history:  # the subtitles go with the first question, as the media do
            question = prefix + question
        if args.stream:  # the streamer writes the stripped answer and a newline, as the print below
            session.ask(question, streamer=AnswerStreamer(processor.tokenizer), **generate_kwargs)
        else:
            print(session.ask(question, **generate_kwargs), flush=True)
        if args.timings:
            print(f"[timings] {session.last.timings.format()}", file=sys.stderr, flush=True)

    if args.question is not None:
        answer(args.question)
    if args.interactive or args.question is None:
        for question in _read_questions():
            answer(question)
    return 0


def load_pipeline(args: argparse.Namespace):
    """The :class:`~videoccam.pipeline.Pipeline` of ``--model`` (default: the bundled model) with the
    loading flags (``--device`` / ``--device-map``, ``--dtype``, ``--attn-implementation``, TC options);
    the device and accelerate are checked before anything loads, with the flags' names in the errors."""
    from videoccam.configuration import temporal_overrides
    from videoccam.pipeline import Pipeline, require_accelerate

    device_map = getattr(args, "device_map", None)
    if device_map is not None:
        require_accelerate(device_map, "--device-map", "--device")
        device = None
    else:
        device = resolve_device(args.device)
    pipe = Pipeline.from_pretrained(args.model, device=device if device is not None else "auto",
                                    dtype=args.dtype, attn_implementation=args.attn_implementation,
                                    device_map=device_map, **temporal_overrides(args))
    return pipe


def video_kwargs(args: argparse.Namespace, processor: VideoCCAMProcessor) -> dict:
    """The chat's video flags as :func:`~videoccam.processing.video.load_video` keyword arguments.

    ``--num-frames`` defaults to the model's processor setting (its ``num_frames``). ``--size``
    defaults to the model's input size (its image processor's ``size``), so frames are resized while
    decoding and a 720p video is never held at full size; ``--size source`` keeps it.
    """
    from videoccam.processing.media import input_size

    num_frames = processor.num_frames if args.num_frames is None else args.num_frames
    kwargs = {"num_frames": num_frames, "sample": args.sample, "start": args.start, "end": args.end}
    if args.sample == "fps":
        kwargs.update(fps=args.fps, max_frames=args.max_frames)
    kwargs["size"] = None if args.size == "source" else args.size if args.size is not None else input_size(
        processor.image_processor)
    return kwargs


def _load_videos(args: argparse.Namespace, processor: VideoCCAMProcessor) -> list[Video]:
    """Decode every ``--video`` once, with the sampling flags (the sampled frames' times logged)."""
    from videoccam.processing.video import load_video

    kwargs = video_kwargs(args, processor)
    videos = []
    for path in args.video:
        progress = progress_bar(args, f"decode {Path(path).name}", "frame", leave=False, delay=_decode_delay)
        video = load_video(path, **kwargs, progress=progress)
        logger.info("%s: %d frames of %dx%d at %s s", path, len(video), video.frames.shape[2], video.frames.shape[1],
                    ", ".join(f"{t:.2f}" for t in video.timestamps))
        videos.append(video)
    return videos


def _subtitle_prefix(path: str, video: Video) -> str:
    """The Video-MME subtitle block of the lines shown at the video's sampled frames."""
    from videoccam.processing.subtitles import load_subtitles, subtitle_prompt

    lines = load_subtitles(path, video.timestamps)
    logger.info("%s: %d of %d sampled frames have a subtitle line", path, sum(map(bool, lines)), len(lines))
    return subtitle_prompt(lines)


def resolve_device(name: str):
    """``--device`` as a torch device (:func:`videoccam.devices.resolve_device`, errors naming the flag)."""
    from videoccam.devices import resolve_device as resolve

    return resolve(name, "--device")


def _generate_kwargs(args: argparse.Namespace) -> dict:
    """Sampling flags -> generate kwargs (temperature 0 = greedy; top-p only applies when sampling)."""
    if args.temperature <= 0:
        return {"max_new_tokens": args.max_new_tokens, "do_sample": False}
    kwargs = {"max_new_tokens": args.max_new_tokens, "do_sample": True, "temperature": args.temperature}
    if args.top_p is not None:
        kwargs["top_p"] = args.top_p
    return kwargs


def _read_questions() -> Iterator[str]:
    """Questions from stdin, one a line, until EOF, an empty line, "exit" or "quit".

    On a terminal the prompt ``> `` is shown (with line editing); piped input gets no prompt.
    """
    tty = sys.stdin.isatty()
    while True:
        if tty:
            try:
                line = input("> ")
            except EOFError:
                print()
                return
        else:
            line = sys.stdin.readline()
            if not line:
                return
        question = line.strip()
        if not question or question.lower() in ("exit", "quit"):
            return
        yield question


def cmd_eval(args: argparse.Namespace) -> int:
    """Evaluate on a benchmark (or re-score predictions): exit 0 when every question was answered, 1
    when some failed (they are recorded in predictions.jsonl and counted apart in results.json)."""
    from pathlib import Path

    from videoccam.eval.harness import EvalRequest, run_benchmark, score_predictions

    judge = _judge(args)
    if args.target[0] == "score":
        results = score_predictions(args.target[1], Path(args.predictions), Path(args.out), judge=judge,
                                    protocol=args.protocol)
        print((Path(args.out) / "results.md").read_text(), end="")
        return 1 if results["failed"] else 0
    request = EvalRequest(
        benchmark=args.target[0], data=Path(args.data), out=Path(args.out), num_frames=args.num_frames,
        subtitles=args.subtitles, batch_size=args.batch_size, workers=args.workers, limit=args.limit,
        resume=args.resume, protocol=args.protocol, seed=args.seed, command=" ".join(["videoccam", *sys.argv[1:]]),
        judge=judge, progress=lambda desc: progress_bar(args, desc, "question"))
    from videoccam.eval.benchmarks import get_benchmark

    get_benchmark(request.benchmark)  # an unknown name fails before the model loads
    pipe = load_pipeline(args)
    runs = run_benchmark(pipe, request)
    for results in runs:
        out = Path(args.out) if len(runs) == 1 else Path(args.out) / f"frames-{results['num_frames']}"
        print((out / "results.md").read_text(), end="")
    if len(runs) > 1:
        print((Path(args.out) / "sweep.md").read_text(), end="")
    return 1 if any(r["failed"] for r in runs) else 0


def _judge(args: argparse.Namespace):
    """The LLM judge of ``--judge-url`` / ``--judge-model`` (its cache in ``--out``), or None."""
    if args.judge_url is None:
        return None
    from pathlib import Path

    from videoccam.eval.judge import Judge

    return Judge(args.judge_url, args.judge_model, api_key_env=args.judge_key_env,
                 cache_path=Path(args.out) / "judge_cache.jsonl")


def cmd_serve(args: argparse.Namespace) -> int:
    """Serve the model over HTTP until interrupted (uvicorn)."""
    from pathlib import Path

    import uvicorn

    from videoccam.serve.app import ServeSettings, create_app

    media_root = None
    if args.media_root is not None:
        media_root = Path(args.media_root)
        if not media_root.is_dir():
            raise ValueError(f"--media-root {args.media_root}: no such folder")
    settings = ServeSettings(model_name=args.model_name, media_root=media_root,
                             allow_remote_media=args.allow_remote_media, max_batch_size=args.max_batch_size,
                             max_queue=args.max_queue, max_frames=args.max_frames, max_body_mb=args.max_body_mb,
                             api_key=args.api_key or os.environ.get("VIDEOCCAM_API_KEY") or None,
                             batch_window_s=args.batch_window_ms / 1000)
    pipe = load_pipeline(args)
    threads = args.threads or (max(1, (os.cpu_count() or 1) - 1) if pipe.device.type == "cpu" else None)
    if threads is not None:  # with every core in the model's thread pool, streaming stalls it on a small CPU
        import torch

        torch.set_num_threads(threads)
        logger.info("model operations on %d CPU threads", threads)
    app = create_app(pipe, settings)
    sys.setswitchinterval(0.001)  # the event loop gets the GIL back from the model thread within 1 ms
    logger.warning("serving %s on http://%s:%d/v1 (media root: %s; remote media: %s)", settings.model_name, args.host,
                   args.port, media_root or "none", "on" if settings.allow_remote_media else "off")
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning" if not args.verbose else "info")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Serve the Gradio web demo (:mod:`videoccam.demo`) of ``--model`` until interrupted."""
    import gradio  # noqa: F401  (before the model loads: a missing 'demo' extra fails fast)

    from videoccam.demo import find_examples, launch_demo

    examples = find_examples(args.examples)  # a bad --examples fails before the model loads
    pipe = load_pipeline(args)
    logger.warning("demo on http://%s:%d", args.host, args.port)
    launch_demo(pipe, host=args.host, port=args.port, share=args.share, examples=examples, quiet=not args.verbose)
    return 0


def cmd_make_tiny_checkpoint(args: argparse.Namespace) -> int:
    """Write a tiny random-weight checkpoint (for trying the pipeline; its answers are noise)."""
    from videoccam.configuration import temporal_overrides
    from videoccam.testing import make_tiny_checkpoint

    path = make_tiny_checkpoint(args.out, text_family=args.text_family, seed=args.seed, **temporal_overrides(args))
    print(path)
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    """Train a model (stage align or instruct) from a YAML config; run under torchrun for several processes."""
    from videoccam.configs import resolve_config, shipped_configs

    if args.list_configs:
        for name, path in shipped_configs().items():
            print(f"{name}\t{path}")
        return 0
    if args.config is None:
        raise ValueError("a CONFIG (a YAML file or a shipped config name; see --list-configs) is required")
    from videoccam.train import load_config, train

    config = load_config(resolve_config(args.config), args.overrides)
    final = train(config, resume=args.resume, overwrite=args.overwrite)
    if int(os.environ.get("RANK", "0")) == 0:
        print(final)
    return 0


def cmd_data_check(args: argparse.Namespace) -> int:
    """Check a LLaVA JSON/JSONL training file: one line per problem; exit 1 if any, 0 if clean."""
    from videoccam.data import run_data_check

    processor = None
    if args.model is not None:
        from transformers import AutoProcessor

        processor = AutoProcessor.from_pretrained(args.model)
    elif args.max_length is not None:
        print("videoccam data check: error: --max-length needs --model (its tokenizer counts the tokens)",
              file=sys.stderr)
        return 2
    if args.num_frames is not None:
        num_frames = args.num_frames
    else:  # the model's processor setting, else the library's default
        from videoccam.constants import DEFAULT_NUM_FRAMES

        num_frames = processor.num_frames if processor is not None else DEFAULT_NUM_FRAMES
    report = run_data_check(args.file, processor, media_root=args.media_root, max_length=args.max_length,
                            num_frames=num_frames, decode=not args.no_decode,
                            progress=progress_bar(args, "data check", "record"))
    for p in report.problems:
        print(f"{args.file}:{p.line}: {p.kind}: {p.message}" + ("" if p.id is None else f" (id {p.id})"))
    counts = ", ".join(f"{kind} {n}" for kind, n in sorted(report.counts().items()))
    print(f"{args.file}: {report.num_records} records, {len(report.problems)} problems" + (
        f" ({counts})" if counts else ""))
    return 1 if report.problems else 0


def cmd_synth(args: argparse.Namespace) -> int:
    """Generate the synthetic temporal benchmark: mp4 clips, LLaVA-format JSON and a word-level tokenizer."""
    from videoccam.synth import WorldConfig, generate_dataset

    config = WorldConfig.from_frames(size=args.size, num_frames=args.frames, num_beats=args.beats, fps=args.fps)
    generate_dataset(args.out, args.train, args.test, args.seed, config=config, families=args.families,
                     workers=args.workers, stills_where=args.stills_where, train_questions=args.train_questions,
                     turn_weights=dict(args.turn_weight), also_ask=args.also_ask,
                     progress=progress_bar(args, "synth", "clip"))
    print(args.out)
    return 0


def cmd_ablate(args: argparse.Namespace) -> int:
    """Train and evaluate plain cross-attention vs CCAM vs CCAM + TC-LLaVA options on the synthetic world."""
    from videoccam.synth.ablation import VARIANTS, run_ablation

    variants = args.variants or list(VARIANTS)
    summary = run_ablation(args.data, args.out, variants=variants, frames=args.frames, seeds=args.seeds,
                           config=args.config, overrides=args.overrides, limit=args.limit,
                           stage1_config=None if args.stage1_config == "none" else args.stage1_config,
                           stage1_data=args.stage1_data,
                           workers=args.workers)
    print((Path(args.out) / "results.md").read_text(), end="")
    print(f"wall time {summary['wall_s'] / 60:.1f} min; results in {args.out}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """The ``videoccam`` command (:func:`videoccam_cli.main`, which owns the parser and error handling)."""
    from videoccam_cli import main as run

    return run(argv)


if __name__ == "__main__":
    sys.exit(main())
