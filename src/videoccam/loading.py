"""Checks of a local model folder before transformers reads it, so that each fault names the path.

transformers' own errors for a bad folder are unclear: a missing folder or a file passed as a model
becomes "Repo id must be in the form ..." (it is taken for a hub id), a folder without ``config.json``
fails on a default config's sizes, a missing ``tokenizer.json`` asks for sentencepiece, and a truncated
``model.safetensors`` says "header too small" without the file. A string that is not an existing path
and looks like a hub id (``org/name``) is left to the hub, as before.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from videoccam.errors import ModelFileError, ModelNotFoundError

CONFIG_FILE = "config.json"
TOKENIZER_FILE = "tokenizer.json"
WEIGHTS_FILE = "model.safetensors"
WEIGHTS_INDEX = "model.safetensors.index.json"
# a hub repo id: "name" or "org/name" (letters, digits, "-", "_", "."), not a path such as /x, ./x or ~/x
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?")
# tokenizer files other than tokenizer.json that transformers can build a tokenizer from
_SLOW_TOKENIZER_FILES = ("tokenizer.model", "vocab.json", "spiece.model", "sentencepiece.bpe.model")


def local_model_folder(source: str | os.PathLike, subfolder: str = "", need_config: bool = True) -> Path | None:
    """The local folder ``source`` names, or None for a hub id (a string that is no existing path and
    looks like ``org/name``).

    Raises:
        ModelNotFoundError: ``source`` is a file, or a missing path that cannot be a hub id; or the
            folder has no ``config.json`` (unless ``need_config`` is False: the config was given).
    """
    path = Path(os.fspath(source)).expanduser()
    if not path.exists():
        text = os.fspath(source)
        if isinstance(source, str) and _HUB_ID.fullmatch(text) and not text.startswith("."):
            return None
        raise ModelNotFoundError(f"{text}: no such model folder")
    if not path.is_dir():
        raise ModelNotFoundError(f"{source}: is a file, not a model folder (give the folder that holds "
                                 f"{CONFIG_FILE}, the weights and the tokenizer)")
    folder = path / subfolder if subfolder else path
    if need_config and not (folder / CONFIG_FILE).is_file():
        raise ModelNotFoundError(f"{folder / CONFIG_FILE}: missing; {folder} is not a model folder")
    return folder


def check_weights(folder: Path) -> None:
    """Raise :class:`ModelFileError` naming a ``.safetensors`` file of ``folder`` that is empty or whose
    header or data are cut short (a file that is absent is left to transformers)."""
    from safetensors import SafetensorError, safe_open

    index = folder / WEIGHTS_INDEX
    if index.is_file():
        try:
            names = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
        except (ValueError, KeyError, TypeError, AttributeError) as err:
            raise ModelFileError(f"{index}: not a safetensors index ({err})") from None
        files = [folder / name for name in names]
    else:
        files = [folder / WEIGHTS_FILE]
    for file in files:
        if not file.is_file():
            continue
        if file.stat().st_size == 0:
            raise ModelFileError(f"{file}: empty (0 bytes); the weights file is missing its contents")
        try:
            with safe_open(str(file), framework="pt"):
                pass
        except SafetensorError as err:
            raise ModelFileError(f"{file}: not a readable safetensors file, truncated or corrupt ({err})") from None


def check_tokenizer(folder: Path) -> None:
    """Raise :class:`ModelNotFoundError` naming ``tokenizer.json`` when ``folder`` holds no tokenizer file."""
    if not (folder / TOKENIZER_FILE).is_file() and not any((folder / f).is_file() for f in _SLOW_TOKENIZER_FILES):
        raise ModelNotFoundError(f"{folder / TOKENIZER_FILE}: missing; the model folder has no tokenizer")
