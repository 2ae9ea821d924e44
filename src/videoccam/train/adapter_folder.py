"""The adapter form of a run's final folder (``stage.save_adapter``): its file names, writing and reading.

A folder holds the PEFT adapters (``adapters/language_model``, ``adapters/vision_model``), the
projector weights (``projector.safetensors``), the model config, the processor and ``base.yaml``: the
``model`` section of the run's config, which rebuilds the frozen base the adapters go on.
:func:`videoccam.train.export.save_final` writes it through :func:`write_adapter_folder`;
:func:`videoccam.train.build.load_trained` (and ``build_model`` with such a ``model.checkpoint``)
rebuilds the base and reads the rest back through :func:`read_base_settings` and :func:`attach_adapters`.
This module imports neither of them, so the writer and the reader share it without an import cycle.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from safetensors.torch import load_file, save_file

from videoccam.train.config import ModelSettings, build_settings

if TYPE_CHECKING:
    from torch import nn

    from videoccam.modeling import VideoCCAMForConditionalGeneration

BASE_FILE = "base.yaml"
PROJECTOR_FILE = "projector.safetensors"
ADAPTERS_DIR = "adapters"
ADAPTED_COMPONENTS = ("language_model", "vision_model")


def is_adapter_folder(path: str | Path) -> bool:
    """Whether ``path`` is an adapter folder (it has a ``base.yaml``), not a complete checkpoint."""
    return (Path(path) / BASE_FILE).is_file()


def write_adapter_folder(folder: Path, model: VideoCCAMForConditionalGeneration, wrappers: dict[str, nn.Module],
                         base: dict[str, Any]) -> None:
    """Write the adapters of ``wrappers`` (PEFT models by component name), the projector, the model config
    and ``base`` (the run's ``model`` section, as a dict) into ``folder``; the caller adds the processor."""
    for name, wrapper in wrappers.items():
        wrapper.save_pretrained(folder / ADAPTERS_DIR / name)
    save_file({k: v.contiguous() for k, v in model.projector.state_dict().items()}, folder / PROJECTOR_FILE)
    model.config.save_pretrained(folder)
    (folder / BASE_FILE).write_text(yaml.safe_dump(base, sort_keys=False))


def read_base_settings(path: str | Path) -> ModelSettings:
    """The :class:`~videoccam.train.config.ModelSettings` that rebuild the folder's frozen base."""
    base = Path(path) / BASE_FILE
    return build_settings(ModelSettings, yaml.safe_load(base.read_text()), f"{base}")


def attach_adapters(model: VideoCCAMForConditionalGeneration, path: str | Path) -> VideoCCAMForConditionalGeneration:
    """Load the folder's projector weights into ``model`` (its rebuilt base) and merge its adapters."""
    from peft import PeftModel

    path = Path(path)
    model.projector.load_state_dict(load_file(path / PROJECTOR_FILE))
    for name in ADAPTED_COMPONENTS:
        adapter = path / ADAPTERS_DIR / name
        if adapter.is_dir():
            setattr(model, name, PeftModel.from_pretrained(getattr(model, name), adapter).merge_and_unload())
    return model
