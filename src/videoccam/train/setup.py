"""What a run is set up from: its starting point (fresh or a checkpoint), the model, the data, the optimiser.

Each function raises :class:`~videoccam.errors.ConfigError` on a bad config, model source or data
file before anything is written to the run folder (see :func:`videoccam.train.train`).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader
from transformers import get_scheduler

from videoccam.data import FrameCache, LlavaDataset, ResumableBatchSampler, collate
from videoccam.errors import ConfigError
from videoccam.hf_compat import enable_activation_checkpointing
from videoccam.processing.processor import VideoCCAMProcessor
from videoccam.train.build import apply_stage, build_model, format_summary, trainable_summary
from videoccam.train.checkpoint import list_checkpoints
from videoccam.train.config import OptimSettings, TrainConfig, config_to_dict
from videoccam.train.distributed import DistContext
from videoccam.train.run_folder import CONFIG_FILE, check_checkpoint_run, check_run_folder
from videoccam.train.run_log import check_tensorboard

__all__ = ["TrainData", "check_start", "setup_data", "setup_model", "setup_optimizer"]

logger = logging.getLogger(__name__)


def check_start(run_dir: Path, config: TrainConfig, resume: bool | str | None, overwrite: bool) -> Path | None:
    """Whether the run may start in ``run_dir``, and from where: the checkpoint to resume from (None:
    from scratch). Changes nothing on disk (see :mod:`videoccam.train.run_folder`)."""
    check_run_folder(run_dir, resume=bool(resume), overwrite=overwrite)
    resume_from = _find_resume(run_dir, resume)
    if resume_from is not None:
        _check_resume_config(run_dir, config)
        check_checkpoint_run(resume_from, run_dir)
    check_tensorboard(config)
    return resume_from


def _find_resume(run_dir: Path, resume: bool | str | None) -> Path | None:
    if not resume:
        return None
    if isinstance(resume, str) and resume not in ("latest", "auto"):
        path = Path(resume)
        if not path.is_dir():
            raise ConfigError(f"--resume: checkpoint folder not found: {path}")
        return path
    found = list_checkpoints(run_dir)
    if not found:
        logger.info("no checkpoint in %s: starting from step 0", run_dir / "checkpoints")
        return None
    return found[-1]


def _check_resume_config(run_dir: Path, config: TrainConfig) -> None:
    """A resume must use the config that wrote the checkpoints (output options may change)."""
    saved_path = run_dir / CONFIG_FILE
    if not saved_path.is_file():
        return
    import yaml

    saved = yaml.safe_load(saved_path.read_text())
    current = config_to_dict(config)
    changed = []
    for section, values in current.items():
        if section == "output":
            continue
        if not isinstance(values, dict):  # a list section (callbacks): compared whole
            if saved.get(section, []) != values:
                changed.append(section)
            continue
        changed += [f"{section}.{key}" for key in values if saved.get(section, {}).get(key) != values[key]]
    if changed:
        raise ConfigError(f"cannot resume {run_dir}: the config differs from the saved one in {', '.join(changed)}")


def setup_model(config: TrainConfig, ctx: DistContext) -> tuple[nn.Module, VideoCCAMProcessor]:
    """The model to train, its stage's parameters trainable, on this rank's device, in train mode."""
    model, processor = build_model(config.model, config.data.num_frames)
    apply_stage(model, config.stage)
    if ctx.is_main:
        logger.info("trainable parameters (stage %s):\n%s", config.stage.name, format_summary(trainable_summary(model)))
    if config.engine.gradient_checkpointing:
        enable_activation_checkpointing(model)
    model.to(ctx.device)
    model.train()
    return model, processor


@dataclass
class TrainData:
    """The training samples and their order for this rank."""

    dataset: LlavaDataset
    sampler: ResumableBatchSampler
    loader: DataLoader  # yields Batch
    total_steps: int  # optimizer steps of the run (optim.max_steps, or optim.epochs of the data)


def setup_data(config: TrainConfig, ctx: DistContext, processor: VideoCCAMProcessor,
               frame_cache: FrameCache | None) -> TrainData:
    """``data.train`` as this rank's batches; ``frame_cache`` is used with ``data.cache_frames`` (a new
    one when None)."""
    data, opt = config.data, config.optim
    data_path = Path(data.train)
    if not data.cache_frames:
        frame_cache = None
    elif frame_cache is None:
        frame_cache = FrameCache()
    dataset = LlavaDataset(
        data_path, processor, media_root=Path(data.media_root) if data.media_root else data_path.parent,
        num_frames=data.num_frames, sample=data.sample, max_length=data.max_length, seed=data.seed,
        frame_cache=frame_cache,
    )
    sampler = ResumableBatchSampler(
        dataset.lengths, opt.micro_batch_size, num_replicas=ctx.world_size, rank=ctx.rank,
        grad_accum=opt.grad_accum, seed=data.seed, group_by_length=data.group_by_length,
    )
    steps_per_epoch = len(sampler) // opt.grad_accum
    if steps_per_epoch == 0:
        raise ConfigError(f"data.train: {len(dataset)} samples make no full global batch of "
                          f"{opt.micro_batch_size * opt.grad_accum * ctx.world_size} (micro_batch_size x "
                          "grad_accum x processes)")
    loader = DataLoader(
        dataset, batch_sampler=sampler, num_workers=data.num_workers,
        collate_fn=partial(collate, pad_token_id=processor.tokenizer.pad_token_id),
        persistent_workers=False,
    )
    return TrainData(dataset, sampler, loader, opt.max_steps or opt.epochs * steps_per_epoch)


def setup_optimizer(model: nn.Module, opt: OptimSettings, total_steps: int) -> tuple[torch.optim.Optimizer, Any]:
    """AdamW over the trainable parameters (no weight decay on biases and norms) and its lr schedule,
    stepped every optimizer step. Seeds torch with ``optim.seed`` first (dropout and the like)."""
    torch.manual_seed(opt.seed)
    optimizer = torch.optim.AdamW(_param_groups(model, opt.weight_decay), lr=opt.lr, betas=opt.betas, eps=opt.eps)
    try:
        scheduler = get_scheduler(opt.schedule, optimizer, num_warmup_steps=math.ceil(opt.warmup_ratio * total_steps),
                                  num_training_steps=total_steps, scheduler_specific_kwargs=opt.schedule_kwargs)
    except (TypeError, ValueError) as err:  # e.g. warmup_stable_decay without num_decay_steps
        raise ConfigError(f"optim.schedule={opt.schedule} with optim.schedule_kwargs={opt.schedule_kwargs}: "
                          f"{err}") from err
    return optimizer, scheduler


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    decay, no_decay = [], []
    for _, param in model.named_parameters():
        if param.requires_grad:
            (decay if param.ndim >= 2 else no_decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
