"""The final output of a run, and loading it back.

Default: a complete ``from_pretrained`` folder (LoRA merged into the weights, processor included).
With ``stage.save_adapter``: the PEFT adapters (``adapters/language_model``, ``adapters/vision_model``),
the projector (``projector.safetensors``), the model config, the processor, and ``base.yaml`` (the
``model`` section that rebuilds the frozen base), loaded by :func:`load_trained`.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import yaml
from safetensors.torch import load_file, save_file
from torch import nn
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

from videoccam.modeling import VideoCCAMForConditionalGeneration
from videoccam.processing.processor import VideoCCAMProcessor
from videoccam.train.build import apply_stage, build_model, unwrap_lora
from videoccam.train.config import ModelSettings, TrainConfig, build_settings, config_to_dict
from videoccam.train.distributed import DistContext

logger = logging.getLogger(__name__)

BASE_FILE = "base.yaml"
PROJECTOR_FILE = "projector.safetensors"
ADAPTERS_DIR = "adapters"


def save_final(run_dir: Path, wrapped: nn.Module, model: VideoCCAMForConditionalGeneration,
               processor: VideoCCAMProcessor, config: TrainConfig, ctx: DistContext) -> Path:
    """Write ``<run_dir>/final`` on rank 0 (every rank must call: FSDP gathers the full weights)."""
    final = run_dir / "final"
    if config.engine.strategy == "fsdp" and ctx.distributed:
        full = get_model_state_dict(wrapped, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        if ctx.is_main:  # a plain CPU copy of the model to hold the gathered weights
            model, _ = build_model(config.model, config.data.num_frames)
            apply_stage(model, config.stage)
            model.load_state_dict(full)
    if ctx.is_main:
        model = model.to("cpu").eval()
        tmp = run_dir / ".tmp-final"
        if tmp.exists():
            shutil.rmtree(tmp)
        wrappers = unwrap_lora(model, merge=not config.stage.save_adapter)
        if config.stage.save_adapter:
            for name, wrapper in wrappers.items():
                wrapper.save_pretrained(tmp / ADAPTERS_DIR / name)
            save_file({k: v.contiguous() for k, v in model.projector.state_dict().items()}, tmp / PROJECTOR_FILE)
            model.config.save_pretrained(tmp)
            (tmp / BASE_FILE).write_text(yaml.safe_dump(config_to_dict(config)["model"], sort_keys=False))
        else:
            model.generation_config.update(**processor.generation_defaults())  # stop at the template's end of turn
            model.save_pretrained(tmp)
        processor.save_pretrained(tmp)
        shutil.copy(run_dir / "config.yaml", tmp / "train_config.yaml")
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
        logger.info("final model written to %s (%s)", final, "adapters" if config.stage.save_adapter else "merged")
    ctx.barrier()
    return final


def load_trained(path: str | Path, **kwargs) -> tuple[VideoCCAMForConditionalGeneration, VideoCCAMProcessor]:
    """Load a run's final folder: a full checkpoint, or adapters on top of their rebuilt base.

    ``kwargs`` go to ``from_pretrained`` for full checkpoints (dtype, device_map, TC options, ...).
    """
    from transformers import AutoProcessor

    path = Path(path)
    if not (path / BASE_FILE).is_file():
        return (VideoCCAMForConditionalGeneration.from_pretrained(path, **kwargs),
                AutoProcessor.from_pretrained(path))
    from peft import PeftModel

    settings = build_settings(ModelSettings, yaml.safe_load((path / BASE_FILE).read_text()), f"{path / BASE_FILE}")
    model, _ = build_model(settings)
    model.projector.load_state_dict(load_file(path / PROJECTOR_FILE))
    for name in ("language_model", "vision_model"):
        adapter = path / ADAPTERS_DIR / name
        if adapter.is_dir():
            setattr(model, name, PeftModel.from_pretrained(getattr(model, name), adapter).merge_and_unload())
    return model.eval(), AutoProcessor.from_pretrained(path)
