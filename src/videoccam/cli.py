"""The ``videoccam`` command: a thin map from subcommands to library functions."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence

logger = logging.getLogger("videoccam")


def cmd_chat(args: argparse.Namespace) -> int:
    """Answer one question about the given videos/images."""
    import torch
    from transformers import AutoProcessor

    from videoccam.modeling import VideoCCAMForConditionalGeneration

    dtype = getattr(torch, args.dtype)
    model = VideoCCAMForConditionalGeneration.from_pretrained(
        args.model, dtype=dtype, device_map=args.device, attn_implementation=args.attn_implementation,
        **_temporal_overrides(args),
    )
    processor = AutoProcessor.from_pretrained(args.model)
    model.eval()
    items = [*args.video, *args.image]
    placeholders = "".join(
        f"{processor.video_token}\n" for _ in args.video) + "".join(f"{processor.image_token}\n" for _ in args.image)
    messages = [{"role": "user", "content": placeholders + args.question}]
    answer = model.chat(
        messages, items, processor, video_kwargs={"num_frames": args.num_frames, "sample": args.sample},
        max_new_tokens=args.max_new_tokens, do_sample=args.temperature > 0,
        temperature=args.temperature if args.temperature > 0 else None,
    )[0]
    print(answer.strip())
    return 0


def cmd_make_tiny_checkpoint(args: argparse.Namespace) -> int:
    """Write a tiny random-weight checkpoint (for trying the pipeline; its answers are noise)."""
    from videoccam.testing import make_tiny_checkpoint

    path = make_tiny_checkpoint(args.out, text_family=args.text_family, seed=args.seed, **_temporal_overrides(args))
    print(path)
    return 0


def cmd_synth(args: argparse.Namespace) -> int:
    """Generate the synthetic temporal benchmark: mp4 clips, LLaVA-format JSON and a word-level tokenizer."""
    from videoccam.synth import WorldConfig, generate_dataset

    config = WorldConfig.from_frames(size=args.size, num_frames=args.frames, num_beats=args.beats, fps=args.fps)
    generate_dataset(args.out, args.train, args.test, args.seed, config=config, families=args.families,
                     workers=args.workers)
    print(args.out)
    return 0


def _temporal_overrides(args: argparse.Namespace) -> dict:
    """TC-LLaVA options given on the command line (absent ones keep the checkpoint's config)."""
    given = {"frame_block_mask": args.frame_block_mask, "temporal_rope": args.temporal_rope,
             "rope_gamma": args.rope_gamma}
    return {key: value for key, value in given.items() if value is not None}


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
    chat.add_argument("question")
    chat.add_argument("--model", required=True, help="checkpoint folder (or hub id where the hub is reachable)")
    chat.add_argument("--video", action="append", default=[], help="video file or frame folder (repeatable)")
    chat.add_argument("--image", action="append", default=[], help="image file (repeatable)")
    chat.add_argument("--num-frames", type=int, default=16, help="frames sampled per video (default 16)")
    chat.add_argument("--sample", default="uniform", choices=["uniform", "fps", "random"])
    chat.add_argument("--max-new-tokens", type=int, default=256)
    chat.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
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

    from videoccam.synth.families import FAMILIES

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
    synth.set_defaults(func=cmd_synth)
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


if __name__ == "__main__":
    sys.exit(main())
