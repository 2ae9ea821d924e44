"""The ``videoccam`` command: its parser and entry point, importing only the standard library.

This module lives outside the ``videoccam`` package on purpose: ``import videoccam`` imports torch
and transformers (it registers the model with the Auto classes), which takes seconds. Here
``videoccam --help``, ``videoccam chat --help`` and ``videoccam --version`` import nothing of
videoccam, torch or transformers. Only the invoked subcommand's options are added to the parser,
so the commands whose options list library constants (``synth``, ``ablate``) import them only
when they are the command. Each subcommand's options are in :mod:`videoccam_cli_options` (also
standard-library only); the commands themselves are in :mod:`videoccam.cli`, imported only to
run one.
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

from videoccam_cli_options import (
    add_ablate,
    add_chat,
    add_data,
    add_demo,
    add_eval,
    add_make_tiny_checkpoint,
    add_serve,
    add_synth,
    add_train,
    common_flags,
)

__all__ = ["COMMANDS", "build_parser", "main", "missing_module_message"]

PROG = "videoccam"
IMPLEMENTATION = "videoccam.cli"  # the module holding the cmd_* functions


@dataclass(frozen=True)
class Command:
    """One subcommand: its help, how to add its options, and the ``videoccam.cli`` function that runs it."""

    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    func: str | None  # None: the command has subcommands, which set their own
    description: str | None = None


COMMANDS: tuple[Command, ...] = (
    Command("chat", "Answer questions about videos/images: one question, or a conversation read from stdin.",
            add_chat, "cmd_chat"),
    Command("eval", "Evaluate a model on MVBench, Video-MME, MLVU, VideoVista, the open-ended QA sets or the "
            "synthetic world; or re-score a predictions file (eval score).", add_eval, "cmd_eval",
            "See docs/evaluation.md for each benchmark's folder layout and what its numbers mean."),
    Command("serve", "Serve the model over an OpenAI-compatible HTTP API (chat completions with video).", add_serve,
            "cmd_serve", "See docs/serving.md."),
    Command("demo", "A web demo (Gradio): upload a video or an image and chat about it.", add_demo, "cmd_demo",
            "See docs/demo.md."),
    Command("make-tiny-checkpoint",
            "Write a tiny random-weight checkpoint (for trying the pipeline; its answers are noise).",
            add_make_tiny_checkpoint, "cmd_make_tiny_checkpoint"),
    Command("train", "Train a model (stage align or instruct) from a YAML config; run under torchrun for several "
            "processes.", add_train, "cmd_train"),
    Command("data", "training data tools", add_data, None),
    Command("synth", "Generate the synthetic temporal benchmark: mp4 clips, LLaVA-format JSON and a word-level "
            "tokenizer.", add_synth, "cmd_synth", "See docs/synthetic-world.md."),
    Command("ablate", "Train and evaluate plain cross-attention vs CCAM vs CCAM + TC-LLaVA options on the synthetic "
            "world.", add_ablate, "cmd_ablate"),
)


# --- the parser -----------------------------------------------------------------------------------------
class _VersionAction(argparse.Action):
    """``--version``: ``videoccam X.Y.Z`` from the installed distribution's metadata."""

    def __init__(self, option_strings: Sequence[str], dest: str = argparse.SUPPRESS,
                 default: object = argparse.SUPPRESS, help: str | None = None) -> None:
        super().__init__(option_strings, dest, nargs=0, default=default, help=help)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: object,
                 option_string: str | None = None) -> None:
        from importlib.metadata import PackageNotFoundError, version

        try:
            text = f"{PROG} {version(PROG)}"
        except PackageNotFoundError:
            text = f"{PROG} (version unknown: the distribution is not installed)"
        print(text)
        parser.exit()


def build_parser(commands: Collection[str] | None = None) -> argparse.ArgumentParser:
    """The ``videoccam`` parser.

    Args:
        commands: the subcommands whose options are added (every subcommand is listed either way);
            ``None``: all of them. ``main`` passes only the invoked one, so that ``--help`` and
            ``chat`` never import the constants of ``synth`` / ``ablate`` (or the library).
    """
    parser = argparse.ArgumentParser(prog=PROG, description="Video-CCAM video-language models.",
                                     parents=[common_flags(top=True)])
    parser.add_argument("--version", action=_VersionAction, help="print the version and exit")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        child = sub.add_parser(command.name, help=command.help, description=command.description or command.help,
                               parents=[common_flags()])
        child.set_defaults(func=command.func, prog_name=child.prog, check=None)
        if commands is None or command.name in commands:
            command.add_arguments(child)
    return parser


def _invoked_command(argv: Sequence[str]) -> str | None:
    """The subcommand in ``argv``: its first positional argument (the global flags take no value)."""
    return next((arg for arg in argv if not arg.startswith("-")), None)


# --- missing optional dependencies ------------------------------------------------------------------------
# import names that differ from the distribution names in pyproject.toml
_IMPORT_NAMES = {"pyyaml": "yaml", "pillow": "PIL"}
# the extra to name when a module belongs to several, by command
_PREFERRED_EXTRA = {"chat": "video", "train": "train", "data": "train", "synth": "train", "ablate": "train",
                    "eval": "eval", "serve": "serve", "demo": "demo"}
_REQUIREMENT = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")
_EXTRA_MARKER = re.compile(r"""extra\s*==\s*["']([^"']+)["']""")


def _import_name(distribution: str) -> str:
    name = distribution.lower().replace("-", "_").replace(".", "_")
    return _IMPORT_NAMES.get(name, name)


def _requirements() -> list[tuple[str, str | None]]:
    """``(import name, extra or None)`` for each requirement of the installed distribution."""
    from importlib.metadata import PackageNotFoundError, requires

    try:
        lines = requires(PROG) or []
    except PackageNotFoundError:
        return []
    found = []
    for line in lines:
        name = _REQUIREMENT.match(line)
        if name:
            extra = _EXTRA_MARKER.search(line)
            found.append((_import_name(name.group(1)), extra.group(1) if extra else None))
    return found


def missing_module_message(module: str, command: str | None = None) -> str | None:
    """What to install when importing ``module`` (e.g. ``peft``, ``yaml.constructor``) failed.

    Reads the extras of the installed ``videoccam`` distribution (``pyproject.toml``'s
    ``[project.optional-dependencies]``). Where several extras hold the module, the one of
    ``command`` wins (chat: ``video``; train, data, synth, ablate: ``train``), else the first one
    that is not ``dev``.

    Returns:
        e.g. ``this command needs the 'train' extra: pip install "videoccam[train]" (missing module:
        peft)``, or None when the module is not a requirement of videoccam.
    """
    top = module.split(".")[0]
    places = [extra for name, extra in _requirements() if name == top]
    if not places:
        return None
    if None in places:  # a core dependency: the installation is broken or was done without dependencies
        return f"videoccam needs {top}, which is not installed: pip install \"{PROG}\" (missing module: {top})"
    preferred = _PREFERRED_EXTRA.get(command or "")
    extras = list(dict.fromkeys(places))
    extra = preferred if preferred in extras else next((e for e in extras if e != "dev"), extras[0])
    return f"this command needs the '{extra}' extra: pip install \"{PROG}[{extra}]\" (missing module: {top})"


def _error_message(err: BaseException, command: str | None) -> str | None:
    """The one-line message of an expected failure (bad input, a missing extra), or None for a bug."""
    if isinstance(err, ModuleNotFoundError) and err.name:  # not "cannot import name": that is a version mismatch
        hint = missing_module_message(err.name, command)
        if hint is not None:
            return hint
    errors = sys.modules.get("videoccam.errors")  # loaded whenever a command has run
    expected = (ValueError, OSError, ImportError) + ((errors.VideoCCAMError,) if errors is not None else ())
    return str(err) if isinstance(err, expected) else None


# --- entry point ----------------------------------------------------------------------------------------------
def main(argv: Sequence[str] | None = None) -> int:
    """Run ``videoccam`` with ``argv`` (default ``sys.argv[1:]``); returns the exit code.

    Bad input and missing optional packages end with one line ``videoccam CMD: error: ...`` on
    stderr and exit code 2 (argparse's own errors exit 2 too); Ctrl-C exits 130.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    command = _invoked_command(argv)
    parser = build_parser([command] if command else [])
    args = parser.parse_args(argv)
    if args.check is not None:
        args.check(args)
    level = logging.INFO if args.verbose else logging.ERROR if args.quiet else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(message)s")
    try:
        from importlib import import_module

        implementation = import_module(IMPLEMENTATION)
        implementation.configure(args)
        return getattr(implementation, args.func)(args)
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 130
    except Exception as err:  # expected failures get one line (_error_message), the rest re-raise
        message = _error_message(err, args.command)
        if message is None:
            raise
        print(f"{args.prog_name}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
