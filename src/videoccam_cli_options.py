"""The options of each ``videoccam`` subcommand, importing only the standard library.

:mod:`videoccam_cli` builds the parser from these: each ``add_*`` function adds one subcommand's
options (only the invoked subcommand's are added, so ``synth`` / ``ablate``, whose option lists
come from the library, import it only when they are the command). Options whose valid values or
defaults the library owns take them from it when it runs: ``--temporal-rope`` is checked by
``videoccam`` (the modes are :data:`videoccam.constants.TEMPORAL_ROPE_MODES`), and ``--num-frames``
left out means the model's processor setting.
"""

from __future__ import annotations

import argparse
import re
from functools import partial

__all__ = ["add_ablate", "add_chat", "add_data", "add_make_tiny_checkpoint", "add_synth", "add_train",
           "common_flags"]


# --- argument types --------------------------------------------------------------------------------------
def _number(text: str, kind: type) -> float:
    try:
        return kind(text)
    except ValueError:
        expected = "an integer" if kind is int else "a number"
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None


def _probability(text: str) -> float:
    """argparse type: a float in (0, 1]."""
    value = _number(text, float)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {value}")
    return value


def _positive_float(text: str) -> float:
    value = _number(text, float)
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number > 0, got {text}")
    return value


def _seconds(text: str) -> float:
    value = _number(text, float)
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number of seconds >= 0, got {text}")
    return value


def _positive_int(text: str) -> int:
    value = _number(text, int)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text}")
    return value


def _frame_size(text: str) -> int | tuple[int, int] | str:
    """argparse type of ``--size``: ``S`` (S x S), ``WxH``, or ``source`` (no resize at decode time)."""
    if text.strip().lower() == "source":
        return "source"
    match = re.fullmatch(r"\s*(\d+)\s*(?:[xX]\s*(\d+)\s*)?", text)
    sides = [int(g) for g in match.groups() if g is not None] if match else []
    if not sides or min(sides) < 1:
        raise argparse.ArgumentTypeError(f"expected S, WxH (pixels >= 1) or 'source', got {text!r}")
    return sides[0] if len(sides) == 1 else (sides[0], sides[1])


def _family_weight(text: str) -> tuple[str, float]:
    """One ``--turn-weight FAMILY=W`` as ``(family, W)``; the generator checks the family and the weight."""
    family, _, weight = text.partition("=")
    try:
        return family, float(weight)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected FAMILY=W, e.g. direction=5") from None


# --- subcommands --------------------------------------------------------------------------------------
def _add_temporal_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("TC-LLaVA temporal options (see docs/temporal-options.md)")
    group.add_argument("--frame-block-mask", action=argparse.BooleanOptionalAction, default=None,
                       help="frame-wise block-causal attention in the LLM at prefill")
    group.add_argument("--temporal-rope", default=None, metavar="MODE",
                       help="temporal-aware dual RoPE mode, one of videoccam.constants.TEMPORAL_ROPE_MODES "
                       "(the library checks it)")
    group.add_argument("--rope-gamma", type=float, default=None, help="gamma of the temporal RoPE")


def add_model_flags(parser: argparse.ArgumentParser, model_help: str | None = None) -> None:
    """``--model`` and the loading flags (dtype, device, device map, attention, TC options) of every
    command that runs a model (chat, eval, serve, demo)."""
    parser.add_argument("--model", default=None, help=model_help or (
        "checkpoint folder, or hub id where the hub is reachable (default: the bundled model)"))
    runtime = parser.add_argument_group("model loading")
    runtime.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    runtime.add_argument("--device", default="auto",
                         help="auto (default: cuda if available, then mps, then cpu), cpu, cuda, cuda:1, mps")
    runtime.add_argument("--device-map", default=None, metavar="MAP",
                         help="spread the model over devices with transformers' device_map (e.g. auto; needs "
                         "the accelerate package); replaces --device")
    runtime.add_argument("--attn-implementation", default="sdpa",
                         choices=["sdpa", "eager", "flex_attention", "flash_attention_2"])
    _add_temporal_flags(parser)


def add_chat(chat: argparse.ArgumentParser) -> None:
    chat.add_argument("question", nargs="?", default=None,
                      help="the question; without it, questions are read from stdin (interactive mode)")
    chat.add_argument("-i", "--interactive", action="store_true",
                      help="after QUESTION (if given), keep reading questions from stdin, one a line, with the "
                      "conversation's history, until EOF, an empty line or 'exit'; the media are encoded once")
    chat.add_argument("--video", action="append", default=[], help="video file or frame folder (repeatable)")
    chat.add_argument("--image", action="append", default=[], help="image file (repeatable)")

    video = chat.add_argument_group("video sampling (see docs/video-input.md)")
    video.add_argument("--num-frames", type=_positive_int, default=None,
                       help="frames sampled per video by --sample uniform/random (default: the model's, "
                       "num_frames in its processor_config.json)")
    video.add_argument("--sample", default=None, choices=["uniform", "fps", "random"],
                       help="uniform: segment midpoints (default); fps: --fps frames a second; random: one "
                       "random frame per segment")
    video.add_argument("--fps", type=_positive_float, default=None,
                       help="frames a second to sample (implies --sample fps)")
    video.add_argument("--max-frames", type=_positive_int, default=None,
                       help="with --fps: at most N frames; over it, the range is re-sampled uniformly to N")
    video.add_argument("--start", type=_seconds, default=None, help="sample from this time on (seconds)")
    video.add_argument("--end", type=_seconds, default=None, help="sample before this time (seconds)")
    video.add_argument("--size", type=_frame_size, default=None, metavar="S|WxH|source",
                       help="resize frames while decoding to S x S or W x H pixels; 'source' keeps the video's "
                       "size (default: the model's input size, from its image-processor config)")
    video.add_argument("--subtitles", default=None, metavar="FILE",
                       help="subtitle file (.srt, .ass, .vtt) of the one --video: the lines shown at the sampled "
                       "frames go before the first question, as in Video-MME")

    gen = chat.add_argument_group("generation")
    gen.add_argument("--max-new-tokens", type=_positive_int, default=256)
    gen.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    gen.add_argument("--top-p", type=_probability, default=None,
                     help="nucleus sampling threshold, with --temperature > 0 (default: the model's)")
    gen.add_argument("--stream", action=argparse.BooleanOptionalAction, default=True,
                     help="print the answer as it is generated (default); --no-stream prints it when done")
    gen.add_argument("--timings", action="store_true",
                     help="after each answer, print its per-stage timings to stderr (decode, preprocess, vision, "
                     "projector, prefill, generate; tokens/s; peak memory)")

    add_model_flags(chat)
    chat.set_defaults(check=partial(_check_chat, chat))


def _check_chat(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Flag combinations argparse cannot check by itself (``parser.error``: exit 2, naming the flag)."""
    if args.sample is None:
        args.sample = "fps" if args.fps is not None else "uniform"
    if args.sample == "fps" and args.fps is None:
        parser.error("--sample fps needs --fps (frames a second)")
    if args.sample != "fps" and args.fps is not None:
        parser.error(f"--fps applies to --sample fps, not --sample {args.sample}")
    if args.max_frames is not None and args.sample != "fps":
        parser.error("--max-frames applies to --fps sampling (use --num-frames with --sample uniform/random)")
    if args.start is not None and args.end is not None and args.end <= args.start:
        parser.error(f"--end ({args.end} s) must be after --start ({args.start} s)")
    if args.subtitles is not None and len(args.video) != 1:
        parser.error(f"--subtitles needs exactly one --video (got {len(args.video)})")
    if args.device_map is not None and args.device != "auto":
        parser.error("--device-map replaces --device: give one of them")


def add_eval(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("target", nargs="+", metavar="BENCHMARK",
                        help="the benchmark to run (mvbench, videomme, mlvu, videovista, msvd-qa, msrvtt-qa, tgif-qa, "
                        "activitynet-qa, synth), or 'score BENCHMARK' to re-score a predictions file without a model")
    parser.add_argument("--data", required=True, help="the benchmark's folder, in its official layout "
                        "(docs/evaluation.md)")
    parser.add_argument("--out", required=True, help="predictions.jsonl, results.json/.md, manifest.json and the "
                        "official files go here (one sub-folder per frame count when several are given)")
    parser.add_argument("--predictions", default=None, help="eval score: the predictions.jsonl to re-score")
    parser.add_argument("--num-frames", nargs="+", type=_positive_int, default=[],
                        help="frames per video; several give a sweep (default: the benchmark's Video-CCAM count)")
    parser.add_argument("--subtitles", action="store_true", help="Video-MME's with-subtitles setting")
    parser.add_argument("--batch-size", type=_positive_int, default=8, help="questions per generate (default 8)")
    parser.add_argument("--workers", type=int, default=2, help="background decoding threads (default 2; 0: none)")
    parser.add_argument("--limit", type=_positive_int, default=None, help="only the first N questions")
    parser.add_argument("--resume", action="store_true",
                        help="continue a killed run in the same --out: answered questions are kept, not asked again")
    parser.add_argument("--protocol", default="videoccam", choices=["videoccam"],
                        help="prompts and frame counts (default: Video-CCAM's)")
    parser.add_argument("--seed", type=int, default=0, help="recorded in the manifest; generation is greedy")
    judge = parser.add_argument_group("LLM judge (MLVU generation tasks, open-ended QA)")
    judge.add_argument("--judge-url", default=None, help="an OpenAI-compatible endpoint, e.g. https://api.openai.com/v1")
    judge.add_argument("--judge-model", default=None, help="the judge model, e.g. gpt-4-turbo (MLVU) or "
                       "gpt-3.5-turbo (VideoChatGPT QA); recorded in the manifest")
    judge.add_argument("--judge-key-env", default="OPENAI_API_KEY",
                       help="the environment variable holding the judge's API key (default OPENAI_API_KEY)")
    add_model_flags(parser)
    parser.set_defaults(check=partial(_check_eval, parser))


def _check_eval(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    target = args.target
    if target[0] == "score":
        if len(target) != 2:
            parser.error("eval score takes one BENCHMARK: videoccam eval score BENCHMARK --data ROOT "
                         "--predictions FILE --out DIR")
        if args.predictions is None:
            parser.error("eval score needs --predictions FILE")
    elif len(target) != 1:
        parser.error(f"one BENCHMARK, got {' '.join(target)}")
    elif args.predictions is not None:
        parser.error("--predictions applies to 'eval score'")
    if (args.judge_url is None) != (args.judge_model is None):
        parser.error("--judge-url and --judge-model go together")
    if args.device_map is not None and args.device != "auto":
        parser.error("--device-map replaces --device: give one of them")


def add_serve(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: this machine only)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--model-name", default="videoccam", help="the id of the model in the API (default videoccam)")
    parser.add_argument("--media-root", default=None, metavar="DIR",
                        help="local media paths (and file:// URLs) must resolve under DIR; without it, none are read")
    parser.add_argument("--allow-remote-media", action="store_true",
                        help="fetch http(s) media URLs (size-capped, with a timeout; off by default)")
    parser.add_argument("--max-batch-size", type=_positive_int, default=8,
                        help="requests answered together in one generate (1: no batching)")
    parser.add_argument("--max-queue", type=_positive_int, default=64,
                        help="requests that may wait; more are refused at once with 429")
    parser.add_argument("--max-frames", type=_positive_int, default=96, help="the most frames a request may ask for")
    parser.add_argument("--max-body-mb", type=_positive_float, default=64.0, help="the largest request body (413)")
    parser.add_argument("--api-key", default=None,
                        help="require 'Authorization: Bearer KEY' (default: the VIDEOCCAM_API_KEY variable, else none)")
    parser.add_argument("--batch-window-ms", type=_positive_float, default=10.0,
                        help="how long the first request of a batch waits for others (default 10 ms)")
    parser.add_argument("--threads", type=_positive_int, default=None,
                        help="CPU threads of the model's operations (torch.set_num_threads); default on CPU: all "
                        "cores but one, which the event loop keeps (streaming, admission, /health)")
    add_model_flags(parser)


def _port(text: str) -> int:
    value = _number(text, int)
    if not 0 < value < 65536:
        raise argparse.ArgumentTypeError(f"must be a port number 1..65535, got {text}")
    return value


def add_demo(demo: argparse.ArgumentParser) -> None:
    """``videoccam demo``: the Gradio web demo (videoccam/demo.py)."""
    demo.add_argument("--host", default="127.0.0.1", help="address to serve on (default 127.0.0.1; 0.0.0.0: every "
                      "interface)")
    demo.add_argument("--port", type=_port, default=7860, help="port (default 7860)")
    demo.add_argument("--share", action="store_true", help="also open a public gradio.live link (needs the internet)")
    demo.add_argument("--examples", default=None, metavar="DIR",
                      help="a folder with questions.json and its clips, shown as examples (default: the "
                      "repository's examples/ when run from a checkout; none when installed)")
    add_model_flags(demo)
    demo.set_defaults(check=partial(_check_demo, demo))


def _check_demo(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.device_map is not None and args.device != "auto":
        parser.error("--device-map replaces --device: give one of them")


def add_make_tiny_checkpoint(tiny: argparse.ArgumentParser) -> None:
    tiny.add_argument("out")
    tiny.add_argument("--text-family", default="qwen2", choices=["qwen2", "llama", "phi3"])
    tiny.add_argument("--seed", type=int, default=0)
    _add_temporal_flags(tiny)


def add_train(trainer: argparse.ArgumentParser) -> None:
    trainer.add_argument("config", nargs="?", help="YAML config file or shipped config name")
    trainer.add_argument("overrides", nargs="*", help="section.key=value overrides, e.g. optim.lr=2e-4")
    trainer.add_argument("--resume", nargs="?", const="latest", default=None,
                         help="continue from the newest checkpoint of output.dir (or the given checkpoint folder)")
    trainer.add_argument("--overwrite", action="store_true",
                         help="start afresh in an output.dir that already holds a run (its files are replaced); "
                         "without it or --resume such a folder is refused")
    trainer.add_argument("--list-configs", action="store_true", help="list the shipped configs and exit")


def add_data(data: argparse.ArgumentParser) -> None:
    help_check = "Check a LLaVA JSON/JSONL training file: one line per problem; exit 1 if any, 0 if clean."
    check = data.add_subparsers(dest="data_command", required=True, metavar="COMMAND").add_parser(
        "check", help=help_check, description=help_check, parents=[common_flags()])
    check.add_argument("file", help="LLaVA-format .json (a list of records) or .jsonl file")
    check.add_argument("--media-root", help="folder of relative media paths (default: the file's folder)")
    check.add_argument("--model", help="checkpoint folder (or hub id) whose processor counts tokens; "
                       "without it, token lengths are not checked")
    check.add_argument("--max-length", type=int, help="report records over N tokens (needs --model)")
    check.add_argument("--num-frames", type=_positive_int, default=None,
                       help="frames decoded per video (default: the --model processor's num_frames, else the "
                       "library's default, videoccam.constants.DEFAULT_NUM_FRAMES)")
    check.add_argument("--no-decode", action="store_true", help="only check that media files exist")
    check.set_defaults(func="cmd_data_check", prog_name=check.prog)


def add_synth(synth: argparse.ArgumentParser) -> None:
    from videoccam.synth.dataset import TRAIN_QUESTIONS
    from videoccam.synth.families import FAMILIES, TRAIN_ONLY_FAMILIES
    from videoccam.synth.stills import WHERE_MODES
    from videoccam.synth.world import WorldConfig

    synth.add_argument("--out", required=True, help="output folder (the media root of the JSON files)")
    synth.add_argument("--train", type=int, default=4000, help="training samples (default 4000)")
    synth.add_argument("--test", type=int, default=600, help="test samples (default 600)")
    synth.add_argument("--seed", type=int, default=0)
    world = WorldConfig()  # the world's defaults
    synth.add_argument("--size", type=int, default=world.size,
                       help="frame side in pixels (default %(default)s)")
    synth.add_argument("--frames", type=int, default=world.num_frames,
                       help="frames per clip (default %(default)s)")
    synth.add_argument("--beats", type=int, default=world.num_beats,
                       help="beats per clip; frames must be a multiple (default %(default)s)")
    synth.add_argument("--fps", type=float, default=world.fps)
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
                            "the training configs' TurnWeightSchedule callback sets for how many steps weights act")
    synth.add_argument("--also-ask", action="append", default=[], choices=TRAIN_ONLY_FAMILIES, metavar="FAMILY",
                       help="a training-only question that training clips also ask (repeatable): 'before', "
                            "for every flash but the first, which flash came right before it; never a test "
                            "question")


def add_ablate(ablate: argparse.ArgumentParser) -> None:
    from videoccam.synth.ablation import CONFIG, STAGE1_CONFIG, VARIANTS

    ablate.add_argument("--data", required=True, help="a `videoccam synth` output folder")
    ablate.add_argument("--out", required=True, help="runs, predictions, results.json and results.md go here")
    ablate.add_argument("--variants", nargs="+", choices=list(VARIANTS), help="default: all five")
    ablate.add_argument("--frames", nargs="+", type=_positive_int, default=[16, 32, 64], help="evaluation frame counts")
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
    ablate.add_argument("overrides", nargs="*", help="config overrides for every variant, e.g. optim.epochs=2; those "
                        "that shape the model (model.text_config.*, model.vision_config.*, model.projector.num_query, "
                        "...) go to stage 1, which builds it")


def common_flags(top: bool = False) -> argparse.ArgumentParser:
    """``-v/--verbose`` and ``-q/--quiet``, accepted before and after the subcommand.

    On subcommands their default is SUPPRESS, so a flag given before the subcommand is not reset."""
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_mutually_exclusive_group()
    default = {"default": False} if top else {"default": argparse.SUPPRESS}
    group.add_argument("-v", "--verbose", action="store_true", help="log at INFO level", **default)
    group.add_argument("-q", "--quiet", action="store_true",
                       help="no progress bars, and log errors only", **default)
    return parent
