"""The ``videoccam`` command: a thin map from subcommands to library functions."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

logger = logging.getLogger("videoccam")


def cmd_chat(args: argparse.Namespace) -> int:
    """Answer questions about videos/images: one question, or a conversation read from stdin."""
    import torch
    from transformers import AutoProcessor

    from videoccam.assets import default_model_path
    from videoccam.configuration import temporal_overrides
    from videoccam.modeling import VideoCCAMForConditionalGeneration
    from videoccam.session import AnswerStreamer, ChatSession

    model_path = args.model if args.model is not None else str(default_model_path())
    model = VideoCCAMForConditionalGeneration.from_pretrained(
        model_path, dtype=getattr(torch, args.dtype), device_map=args.device,
        attn_implementation=args.attn_implementation, **temporal_overrides(args),
    )
    processor = AutoProcessor.from_pretrained(model_path)
    model.eval()
    session = ChatSession(  # decodes and encodes the media once, for every question
        model, processor, [*args.video, *args.image], kinds=["video"] * len(args.video) + ["image"] * len(args.image),
        video_kwargs={"num_frames": args.num_frames, "sample": args.sample},
    )
    generate_kwargs = _generate_kwargs(args)

    def answer(question: str) -> None:
        if args.stream:  # the streamer writes the stripped answer and a newline, as the print below
            session.ask(question, streamer=AnswerStreamer(processor.tokenizer), **generate_kwargs)
        else:
            print(session.ask(question, **generate_kwargs).strip(), flush=True)

    if args.question is not None:
        answer(args.question)
    if args.interactive or args.question is None:
        for question in _read_questions():
            answer(question)
    return 0


def _generate_kwargs(args: argparse.Namespace) -> dict:
    """Sampling flags -> generate kwargs (temperature 0 = greedy; top-p only applies when sampling)."""
    if args.temperature <= 0:
        return {"max_new_tokens": args.max_new_tokens, "do_sample": False}
    kwargs = {"max_new_tokens": args.max_new_tokens, "do_sample": True, "temperature": args.temperature}
    if args.top_p is not None:
        kwargs["top_p"] = args.top_p
    return kwargs


def _probability(text: str) -> float:
    """argparse type: a float in (0, 1]."""
    value = float(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {value}")
    return value


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
    final = train(config, resume=args.resume)
    if int(os.environ.get("RANK", "0")) == 0:
        print(final)
    return 0


def cmd_data_check(args: argparse.Namespace) -> int:
    """Check a LLaVA JSON/JSONL training file: one line per problem; exit 1 if any, 0 if clean."""
    from videoccam.train.data import run_data_check

    processor = None
    if args.model is not None:
        from transformers import AutoProcessor

        processor = AutoProcessor.from_pretrained(args.model)
    elif args.max_length is not None:
        print("videoccam data check: error: --max-length needs --model (its tokenizer counts the tokens)",
              file=sys.stderr)
        return 2
    report = run_data_check(args.file, processor, media_root=args.media_root, max_length=args.max_length,
                            num_frames=args.num_frames, decode=not args.no_decode)
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
                     turn_weights=dict(args.turn_weight), also_ask=args.also_ask)
    print(args.out)
    return 0


def _family_weight(text: str) -> tuple[str, float]:
    """One ``--turn-weight FAMILY=W`` as ``(family, W)``; the generator checks the family and the weight."""
    family, _, weight = text.partition("=")
    try:
        return family, float(weight)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected FAMILY=W, e.g. direction=5") from None


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


def _add_temporal_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("TC-LLaVA temporal options (see docs/temporal-options.md)")
    group.add_argument("--frame-block-mask", action=argparse.BooleanOptionalAction, default=None,
                       help="frame-wise block-causal attention in the LLM at prefill")
    group.add_argument("--temporal-rope", choices=["none", "tc", "frame"], default=None,
                       help="temporal-aware dual RoPE mode")
    group.add_argument("--rope-gamma", type=float, default=None, help="gamma of the temporal RoPE")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="videoccam", description="Video-CCAM video-language models.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", required=True)

    chat = sub.add_parser("chat", help=cmd_chat.__doc__)
    chat.add_argument("question", nargs="?", default=None,
                      help="the question; without it, questions are read from stdin (interactive mode)")
    chat.add_argument("-i", "--interactive", action="store_true",
                      help="after QUESTION (if given), keep reading questions from stdin, one a line, with the "
                      "conversation's history, until EOF, an empty line or 'exit'; the media are encoded once")
    chat.add_argument("--model", default=None,
                      help="checkpoint folder, or hub id where the hub is reachable (default: the bundled model)")
    chat.add_argument("--video", action="append", default=[], help="video file or frame folder (repeatable)")
    chat.add_argument("--image", action="append", default=[], help="image file (repeatable)")
    chat.add_argument("--num-frames", type=int, default=16, help="frames sampled per video (default 16)")
    chat.add_argument("--sample", default="uniform", choices=["uniform", "fps", "random"])
    chat.add_argument("--max-new-tokens", type=int, default=256)
    chat.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    chat.add_argument("--top-p", type=_probability, default=None,
                      help="nucleus sampling threshold, with --temperature > 0 (default: the model's)")
    chat.add_argument("--stream", action=argparse.BooleanOptionalAction, default=True,
                      help="print the answer as it is generated (default); --no-stream prints it when done")
    chat.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    chat.add_argument("--device", default="cpu", help="device_map for from_pretrained: cpu, cuda, auto")
    chat.add_argument("--attn-implementation", default="sdpa",
                      choices=["sdpa", "eager", "flex_attention", "flash_attention_2"])
    _add_temporal_flags(chat)
    chat.set_defaults(func=cmd_chat)

    tiny = sub.add_parser("make-tiny-checkpoint", help=cmd_make_tiny_checkpoint.__doc__)
    tiny.add_argument("out")
    tiny.add_argument("--text-family", default="qwen2", choices=["qwen2", "llama", "phi3"])
    tiny.add_argument("--seed", type=int, default=0)
    _add_temporal_flags(tiny)
    tiny.set_defaults(func=cmd_make_tiny_checkpoint)
    trainer = sub.add_parser("train", help=cmd_train.__doc__)
    trainer.add_argument("config", nargs="?", help="YAML config file or shipped config name")
    trainer.add_argument("overrides", nargs="*", help="section.key=value overrides, e.g. optim.lr=2e-4")
    trainer.add_argument("--resume", nargs="?", const="latest", default=None,
                         help="continue from the newest checkpoint of output.dir (or the given checkpoint folder)")
    trainer.add_argument("--list-configs", action="store_true", help="list the shipped configs and exit")
    trainer.set_defaults(func=cmd_train)

    data = sub.add_parser("data", help="training data tools")
    data_check = data.add_subparsers(dest="data_command", required=True).add_parser(
        "check", help=cmd_data_check.__doc__, description=cmd_data_check.__doc__)
    data_check.add_argument("file", help="LLaVA-format .json (a list of records) or .jsonl file")
    data_check.add_argument("--media-root", help="folder of relative media paths (default: the file's folder)")
    data_check.add_argument("--model", help="checkpoint folder (or hub id) whose processor counts tokens; "
                            "without it, token lengths are not checked")
    data_check.add_argument("--max-length", type=int, help="report records over N tokens (needs --model)")
    data_check.add_argument("--num-frames", type=int, default=16, help="frames decoded per video (default 16)")
    data_check.add_argument("--no-decode", action="store_true", help="only check that media files exist")
    data_check.set_defaults(func=cmd_data_check)

    from videoccam.synth.dataset import TRAIN_QUESTIONS
    from videoccam.synth.families import FAMILIES, TRAIN_ONLY_FAMILIES
    from videoccam.synth.stills import WHERE_MODES

    synth = sub.add_parser("synth", help=cmd_synth.__doc__, description="See docs/synthetic-world.md.")
    synth.add_argument("--out", required=True, help="output folder (the media root of the JSON files)")
    synth.add_argument("--train", type=int, default=4000, help="training samples (default 4000)")
    synth.add_argument("--test", type=int, default=600, help="test samples (default 600)")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--size", type=int, default=64, help="frame side in pixels (default 64)")
    synth.add_argument("--frames", type=int, default=64, help="frames per clip (default 64)")
    synth.add_argument("--beats", type=int, default=16, help="beats per clip; frames must be a multiple")
    synth.add_argument("--fps", type=float, default=8.0)
    synth.add_argument("--families", nargs="+", choices=FAMILIES, default=list(FAMILIES))
    synth.add_argument("--workers", type=int, default=1, help="encoding processes (default 1)")
    synth.add_argument("--stills-where", choices=WHERE_MODES, default="side",
                       help="what the stage-1 stills ask about where objects are: 'side' (default recipe: the "
                            "side of one object) or 'both' (long recipe: side and height of every object, "
                            "weighted 10)")
    synth.add_argument("--train-questions", choices=TRAIN_QUESTIONS, default="all",
                       help="what a training clip asks: 'all' (default: its own question, then every other "
                            "order question its scene answers) or 'one' (its own question only); test clips "
                            "always ask one")
    synth.add_argument("--turn-weight", action="append", default=[], type=_family_weight, metavar="FAMILY=W",
                       help="loss weight W of the training clips' answers of FAMILY (repeatable; default 1, "
                            "no weight written), e.g. --turn-weight direction=5 --turn-weight reverse=5; "
                            "optim.turn_weight_ratio sets for how many steps weights act")
    synth.add_argument("--also-ask", action="append", default=[], choices=TRAIN_ONLY_FAMILIES, metavar="FAMILY",
                       help="a training-only question that training clips also ask (repeatable): 'before', "
                            "for every flash but the first, which flash came right before it; never a test "
                            "question")
    synth.set_defaults(func=cmd_synth)

    from videoccam.synth.ablation import CONFIG, STAGE1_CONFIG, VARIANTS

    ablate = sub.add_parser("ablate", help=cmd_ablate.__doc__, description=cmd_ablate.__doc__)
    ablate.add_argument("--data", required=True, help="a `videoccam synth` output folder")
    ablate.add_argument("--out", required=True, help="runs, predictions, results.json and results.md go here")
    ablate.add_argument("--variants", nargs="+", choices=list(VARIANTS), help="default: all five")
    ablate.add_argument("--frames", nargs="+", type=int, default=[16, 32, 64], help="evaluation frame counts")
    ablate.add_argument("--seeds", nargs="+", type=int, default=[0], help="training seeds (default 0)")
    ablate.add_argument("--config", default=CONFIG, help=f"stage-2 training config (default {CONFIG})")
    ablate.add_argument("--stage1-config", default=STAGE1_CONFIG,
                        help=f"stage-1 config, trained once per seed on stills.json (default {STAGE1_CONFIG}; "
                             "'none': train --config alone, which must then build its own model)")
    ablate.add_argument("--stage1-data", help="the `videoccam synth` folder whose stills.json stage 1 trains on "
                                              "(default --data)")
    ablate.add_argument("--limit", type=int, help="evaluate only the first N test questions")
    ablate.add_argument("--workers", type=int, default=2,
                        help="processes that decode, then train and evaluate variants side by side (default 2)")
    ablate.add_argument("overrides", nargs="*", help="config overrides for every variant, e.g. optim.epochs=2; those that shape "
                        "the model (model.text_config.*, model.vision_config.*, model.projector.num_query, ...) "
                        "go to stage 1, which builds it")
    ablate.set_defaults(func=cmd_ablate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    func: Callable[[argparse.Namespace], int] = args.func
    from videoccam.errors import VideoCCAMError

    try:
        return func(args)
    except (VideoCCAMError, ValueError, OSError, ImportError) as err:  # bad input: a message, not a traceback
        print(f"videoccam {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
