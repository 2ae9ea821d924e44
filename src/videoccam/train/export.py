"""The final output of a run.

Default: a complete ``from_pretrained`` folder (LoRA merged into the weights, processor included).
With ``stage.save_adapter``: an adapter folder (:mod:`videoccam.train.adapter_folder`: the PEFT
adapters, the projector, the model config, the processor and ``base.yaml``, the ``model`` section that
rebuilds the frozen base). Either form loads back with :func:`videoccam.train.build.load_trained`.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from torch import nn
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

from videoccam.modeling import VideoCCAMForConditionalGeneration
from videoccam.processing.processor import VideoCCAMProcessor
from videoccam.train.adapter_folder import write_adapter_folder
from videoccam.train.build import apply_stage, build_model, unwrap_lora
from videoccam.train.checkpoint import writing
from videoccam.train.config import TrainConfig, config_to_dict
from videoccam.train.distributed import DistContext

logger = logging.getLogger(__name__)


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
        with writing(tmp, cleanup=tmp):  # a full disk names the folder; no half-written final is left
            if tmp.exists():
                shutil.rmtree(tmp)
            wrappers = unwrap_lora(model, merge=not config.stage.save_adapter)
            if config.stage.save_adapter:
                write_adapter_folder(tmp, model, wrappers, config_to_dict(config)["model"])
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
