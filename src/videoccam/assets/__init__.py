"""Data shipped inside the package: the bundled default model of ``videoccam chat``.

``default_model/`` holds a complete checkpoint folder (``config.json``, ``model.safetensors``,
tokenizer files, ``processor_config.json``, ...), loadable with ``from_pretrained``. It is
installed with the package (``[tool.setuptools.package-data]`` in ``pyproject.toml``).
"""

from __future__ import annotations

from pathlib import Path

from videoccam.errors import ModelNotFoundError

DEFAULT_MODEL_DIR = Path(__file__).resolve().parent / "default_model"
# what from_pretrained needs for the model and AutoProcessor for the processor
REQUIRED_FILES = ("config.json", "processor_config.json", "tokenizer_config.json")
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json")


def default_model_path() -> Path:
    """The folder of the bundled default model.

    Raises:
        ModelNotFoundError: naming the folder, when it is missing or lacks a file the model or
            processor needs (the bundled model is not part of every build).
    """
    path = DEFAULT_MODEL_DIR
    hint = "pass a checkpoint folder or hub id instead (videoccam chat --model DIR)"
    if not path.is_dir():
        raise ModelNotFoundError(f"no bundled default model: {path} does not exist; {hint}")
    missing = [name for name in REQUIRED_FILES if not (path / name).is_file()]
    if not any((path / name).is_file() for name in WEIGHT_FILES):
        missing.append(" or ".join(WEIGHT_FILES))
    if missing:
        raise ModelNotFoundError(f"the bundled default model in {path} is incomplete (missing {', '.join(missing)}); "
                                 f"{hint}")
    return path
