"""The training loop: one function, :func:`train`, run as is or under ``torchrun``.

Loss normalisation: every micro-batch's loss is the SUM of its token losses divided by the number of
labelled tokens in the whole optimizer step (all micro-batches of all ranks) over the world size;
DDP/FSDP average gradients over ranks, so the step's gradient is that of the mean token loss of the
global batch, whatever the split over processes and accumulation steps. That is what makes one
process with micro-batch 4 and two processes with micro-batch 2 train the same weights.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import math
import resource
import time
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader
from transformers import get_scheduler

from videoccam.data import Batch, FrameCache, LlavaDataset, ResumableBatchSampler, collate
from videoccam.errors import ConfigError
from videoccam.hf_compat import enable_activation_checkpointing
from videoccam.processing.processor import IGNORE_INDEX
from videoccam.train.build import apply_stage, build_model, format_summary, trainable_summary
from videoccam.train.checkpoint import list_checkpoints, load_checkpoint, save_checkpoint, set_rng_state
from videoccam.train.config import TrainConfig, config_to_dict
from videoccam.train.distributed import (
    DistContext,
    compile_blocks,
    setup_distributed,
    teardown_distributed,
    wrap_model,
)
from videoccam.train.export import save_final
from videoccam.train.run_folder import (
    CONFIG_FILE,
    LOG_FILE,
    TENSORBOARD_DIR,
    check_checkpoint_run,
    check_run_folder,
    prepare_run_folder,
    read_run_id,
)

logger = logging.getLogger(__name__)


@dataclass
class TrainState:
    """Counters that a resume restores (with the sampler's position)."""

    step: int = 0  # optimizer steps done
    epoch: int = 0
    samples: int = 0  # samples trained on, all ranks
    tokens: int = 0  # labelled tokens, all ranks
    skipped: int = 0  # samples skipped for bad media / length, all ranks


def _autocast(config: TrainConfig, device: torch.device) -> contextlib.AbstractContextManager:
    if config.engine.precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    decay, no_decay = [], []
    for _, param in model.named_parameters():
        if param.requires_grad:
            (decay if param.ndim >= 2 else no_decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _to_device(batch: Batch, device: torch.device) -> dict[str, Any]:
    keys = ("input_ids", "attention_mask", "labels", "loss_weights", "pixel_values", "frame_counts")
    return {k: getattr(batch, k).to(device) if getattr(batch, k) is not None else None for k in keys}


def _labelled_tokens(batch: Batch) -> int:
    """Tokens that carry loss after the causal shift (what HF's loss counts)."""
    if batch.empty:
        return 0
    return int((batch.labels[:, 1:] != IGNORE_INDEX).sum())


def _loss_mass(batch: Batch, labelled_tokens: int) -> float:
    """What the loss is normalised by: the labelled tokens (``labelled_tokens``, from
    :func:`_labelled_tokens`), each counted with its turn's loss weight."""
    if batch.empty or batch.loss_weights is None:
        return float(labelled_tokens)
    return float(batch.loss_weights[:, 1:].sum())


def _weighted_loss(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor,
                   num_items: torch.Tensor) -> torch.Tensor:
    """HF's causal-LM loss with per-token weights: sum of weight x cross-entropy over the shifted
    tokens, divided by ``num_items`` (weights are 0 where the label is IGNORE_INDEX)."""
    logits = logits[:, :-1].float()  # [B, S-1, V]: position t predicts token t + 1
    losses = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1),
                                         ignore_index=IGNORE_INDEX, reduction="none")  # [B * (S-1)]
    return (losses * weights[:, 1:].reshape(-1)).sum() / num_items


def _memory_mib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


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
    changed = [f"{section}.{key}" for section in current if section != "output"
               for key in current[section] if saved.get(section, {}).get(key) != current[section][key]]
    if changed:
        raise ConfigError(f"cannot resume {run_dir}: the config differs from the saved one in {', '.join(changed)}")


def _check_tensorboard(config: TrainConfig) -> None:
    """``output.tensorboard`` needs its package: found out before the run folder is written."""
    if config.output.tensorboard:
        try:
            import torch.utils.tensorboard  # noqa: F401
        except ImportError as err:
            raise ConfigError("output.tensorboard=true needs the tensorboard package "
                              "(pip install tensorboard)") from err


class _Logger:
    """Rank-0 JSONL log (+ optional TensorBoard)."""

    def __init__(self, run_dir: Path, config: TrainConfig, ctx: DistContext) -> None:
        self.active = ctx.is_main
        self.file = None
        self.tb = None
        if not self.active:
            return
        self.file = (run_dir / LOG_FILE).open("a")
        if config.output.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(run_dir / TENSORBOARD_DIR))

    def log(self, record: dict[str, Any]) -> None:
        if not self.active:
            return
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()
        if self.tb is not None:
            for key, value in record.items():
                if key != "step" and isinstance(value, (int, float)):
                    self.tb.add_scalar(key, value, record["step"])

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
        if self.tb is not None:
            self.tb.close()


def train(config: TrainConfig, *, resume: bool | str | None = None, overwrite: bool = False,
          frame_cache: FrameCache | None = None) -> Path:
    """Train as ``config`` says; return the final output folder (``<output.dir>/final``).

    Args:
        config: the run (see :mod:`videoccam.train.config`).
        resume: ``True`` / ``"latest"``: continue from the newest complete checkpoint of
            ``output.dir`` (from scratch if there is none); a path: that checkpoint. The checkpoint
            must belong to the run in ``output.dir`` (same run id).
        overwrite: replace the run that ``output.dir`` holds: its artefacts (checkpoints, log,
            config, final output) are deleted before the new run writes; nothing else there is.
        frame_cache: with ``data.cache_frames``, the :class:`~videoccam.data.FrameCache` the training
            clips are read from (e.g. one warmed before this process was forked); default: a new one.
            Unused without ``data.cache_frames``.

    An ``output.dir`` that holds a run is refused (:class:`~videoccam.errors.ConfigError`) unless
    ``resume`` or ``overwrite`` is given; see :mod:`videoccam.train.run_folder`. Errors in the config,
    the model source or the data are raised before anything is written there.

    Under ``torchrun`` every process calls this; rank 0 writes logs and the final folder.
    """
    config.validate()
    ctx = setup_distributed(config.engine)
    try:
        return _train(config, ctx, resume, overwrite, frame_cache)
    finally:
        teardown_distributed(ctx)


def _train(config: TrainConfig, ctx: DistContext, resume: bool | str | None, overwrite: bool,
           frame_cache: FrameCache | None) -> Path:
    run_dir = Path(config.output.dir)
    check_run_folder(run_dir, resume=bool(resume), overwrite=overwrite)
    resume_from = _find_resume(run_dir, resume)
    if resume_from is not None:
        _check_resume_config(run_dir, config)
        check_checkpoint_run(resume_from, run_dir)
    _check_tensorboard(config)

    model, processor = build_model(config.model, config.data.num_frames)
    apply_stage(model, config.stage)
    if ctx.is_main:
        logger.info("trainable parameters (stage %s):\n%s", config.stage.name, format_summary(trainable_summary(model)))
    if config.engine.gradient_checkpointing:
        enable_activation_checkpointing(model)
    model.to(ctx.device)
    model.train()

    data_path = Path(config.data.train)
    dataset = LlavaDataset(
        data_path, processor, media_root=Path(config.data.media_root) if config.data.media_root else data_path.parent,
        num_frames=config.data.num_frames, sample=config.data.sample, max_length=config.data.max_length,
        seed=config.data.seed, frame_cache=(frame_cache if frame_cache is not None else FrameCache()) if config.data.cache_frames else None,
    )
    opt = config.optim
    sampler = ResumableBatchSampler(
        dataset.lengths, opt.micro_batch_size, num_replicas=ctx.world_size, rank=ctx.rank,
        grad_accum=opt.grad_accum, seed=config.data.seed, group_by_length=config.data.group_by_length,
    )
    steps_per_epoch = len(sampler) // opt.grad_accum
    if steps_per_epoch == 0:
        raise ConfigError(f"data.train: {len(dataset)} samples make no full global batch of "
                          f"{opt.micro_batch_size * opt.grad_accum * ctx.world_size} (micro_batch_size x "
                          "grad_accum x processes)")
    total_steps = opt.max_steps or opt.epochs * steps_per_epoch
    loader = DataLoader(
        dataset, batch_sampler=sampler, num_workers=config.data.num_workers,
        collate_fn=partial(collate, pad_token_id=processor.tokenizer.pad_token_id),
        persistent_workers=False,
    )

    if config.engine.compile:
        compile_blocks(model)
    wrapped = wrap_model(model, config.engine, ctx)
    torch.manual_seed(opt.seed)
    optimizer = torch.optim.AdamW(_param_groups(wrapped, opt.weight_decay), lr=opt.lr, betas=opt.betas, eps=opt.eps)
    try:
        scheduler = get_scheduler(opt.schedule, optimizer, num_warmup_steps=math.ceil(opt.warmup_ratio * total_steps),
                                  num_training_steps=total_steps, scheduler_specific_kwargs=opt.schedule_kwargs)
    except (TypeError, ValueError) as err:  # e.g. warmup_stable_decay without num_decay_steps
        raise ConfigError(f"optim.schedule={opt.schedule} with optim.schedule_kwargs={opt.schedule_kwargs}: {err}") from err
    weighted_steps = math.ceil(opt.turn_weight_ratio * total_steps)  # steps that use the turn weights
    state = TrainState()
    saved_rng = None
    if resume_from is not None:
        saved = load_checkpoint(resume_from, wrapped, optimizer, ctx)
        scheduler.load_state_dict(saved["scheduler"])
        sampler.load_state_dict(saved["sampler"])
        state = TrainState(**saved["state"])
        saved_rng = saved["rng"]
        logger.info("resumed from %s at step %d (epoch %d)", resume_from, state.step, state.epoch)

    # the run folder changes only now, when the model, data and checkpoint have loaded: a run that
    # fails to start leaves it as it was (and is not refused as an existing run when started again)
    ctx.barrier()  # every rank has checked the folder before rank 0 changes it
    if ctx.is_main:
        prepare_run_folder(run_dir, config, overwrite=overwrite, fresh=resume_from is None)
    ctx.barrier()
    run_id = read_run_id(run_dir)
    if ctx.is_main:
        logger.info("run %s in %s", run_id, run_dir)

    log = _Logger(run_dir, config, ctx)
    progress = None
    if ctx.is_main and config.output.progress:
        from tqdm.auto import tqdm

        progress = tqdm(total=total_steps, initial=state.step, desc=f"train {config.stage.name}", unit="step")
    fallback: dict[str, Any] | None = None  # a batch that loaded, for ranks whose micro-batch was all skipped
    try:
        while state.step < total_steps:
            sampler.set_epoch(state.epoch)
            dataset.set_epoch(state.epoch)
            iterator = iter(loader)  # creating it draws from the RNG: restore the saved state after
            if saved_rng is not None:
                set_rng_state(saved_rng)
                saved_rng = None
            t0 = time.perf_counter()  # a step's time runs from the previous step's end: data loading included
            for micro_batches in _steps(iterator, opt.grad_accum):
                fallback = fallback or next((b for b in micro_batches if not b.empty), None)
                turn_weights = state.step < weighted_steps
                if not turn_weights:
                    if state.step == weighted_steps and weighted_steps > 0:
                        logger.info("step %d: turn weights off from here (optim.turn_weight_ratio=%s)",
                                    state.step + 1, opt.turn_weight_ratio)
                    micro_batches = [dataclasses.replace(b, loss_weights=None) for b in micro_batches]  # HF's plain loss
                record = _optimizer_step(wrapped, optimizer, scheduler, micro_batches, fallback, config, ctx)
                sampler.advance(opt.grad_accum)
                state.step += 1
                state.samples += record["samples"]
                state.tokens += record["tokens"]
                state.skipped += record.pop("_skipped")
                elapsed, t0 = time.perf_counter() - t0, time.perf_counter()
                if ctx.is_main and state.step % config.output.log_every == 0:
                    log.log({
                        "step": state.step, "epoch": state.epoch, **record, "turn_weights": turn_weights,
                        "skipped": state.skipped,
                        "samples_per_s": record["samples"] / elapsed, "tokens_per_s": record["tokens"] / elapsed,
                        "step_time_s": elapsed, "memory_mib": _memory_mib(ctx.device),
                    })
                if progress is not None:
                    progress.update(1)
                    progress.set_postfix(loss=f"{record['loss']:.4f}", lr=f"{record['lr']:.2e}")
                every = config.output.save_every
                if (every and state.step % every == 0) or state.step == total_steps:
                    trainer_state = {"scheduler": scheduler.state_dict(), "sampler": sampler.state_dict(),
                                     "state": dataclasses.asdict(state), "run_id": run_id}
                    save_checkpoint(run_dir, state.step, wrapped, optimizer, trainer_state, ctx,
                                    config.output.keep_last)
                if state.step >= total_steps:
                    break
            else:
                state.epoch += 1
                continue
            break
    finally:
        if progress is not None:
            progress.close()
        log.close()
    digests = _rank_digests(wrapped, config, ctx)
    if digests is not None:
        log_end = {"step": state.step, "event": "end", "rank_weight_digests": digests}
        if len(set(digests)) > 1:
            logger.error("the ranks' trainable weights differ at the end (digests %s): replicas diverged", digests)
        if ctx.is_main:
            with (run_dir / LOG_FILE).open("a") as f:
                f.write(json.dumps(log_end) + "\n")
    final = save_final(run_dir, wrapped, model, processor, config, ctx)
    if ctx.is_main:
        logger.info("finished %d steps (%d samples, %d skipped); final model in %s",
                    state.step, state.samples, state.skipped, final)
    return final


def _rank_digests(model: nn.Module, config: TrainConfig, ctx: DistContext) -> list[str] | None:
    """Every rank's SHA-256 of its trainable weights (replicated strategies only: FSDP shards differ)."""
    if config.engine.strategy == "fsdp" and ctx.distributed:
        return None
    digest = hashlib.sha256()
    for name, param in sorted(model.named_parameters()):
        if param.requires_grad:
            digest.update(name.encode())
            digest.update(param.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    if not ctx.distributed:
        return [digest.hexdigest()]
    gathered: list[str | None] = [None] * ctx.world_size
    dist.all_gather_object(gathered, digest.hexdigest())
    return [str(d) for d in gathered]


@contextlib.contextmanager
def _gradient_sync(model: nn.Module, last: bool) -> Iterator[None]:
    """Reduce gradients over ranks only on the last micro-batch of a step (DDP ``no_sync`` /
    FSDP2 ``set_requires_gradient_sync``)."""
    if last:
        yield
    elif hasattr(model, "no_sync"):
        with model.no_sync():
            yield
    elif hasattr(model, "set_requires_gradient_sync"):
        model.set_requires_gradient_sync(False)
        try:
            yield
        finally:
            model.set_requires_gradient_sync(True)
    else:
        yield


def _steps(iterator: Iterator[dict[str, Any]], grad_accum: int) -> Iterator[list[dict[str, Any]]]:
    """Group micro-batches into optimizer steps (an incomplete last group is dropped)."""
    group = []
    for batch in iterator:
        group.append(batch)
        if len(group) == grad_accum:
            yield group
            group = []


def _optimizer_step(model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
                    micro_batches: list[dict[str, Any]], fallback: dict[str, Any] | None,
                    config: TrainConfig, ctx: DistContext) -> dict[str, Any]:
    """Forward/backward every micro-batch, then clip and step; returns the step's log record."""
    local_tokens = [_labelled_tokens(b) for b in micro_batches]
    local_mass = sum(_loss_mass(b, tokens) for b, tokens in zip(micro_batches, local_tokens))
    local_samples = sum(b.num_samples for b in micro_batches)
    local_skipped = sum(b.num_skipped for b in micro_batches)
    local_seq_tokens = sum(int(b.attention_mask.sum()) for b in micro_batches if not b.empty)
    global_tokens, global_mass, global_samples, global_skipped, global_seq = ctx.all_reduce_sum(
        [sum(local_tokens), local_mass, local_samples, local_skipped, local_seq_tokens])
    # each rank's loss = its (weighted) token-loss sum / (global loss mass / world): DDP's gradient mean
    # gives the global weighted mean; without turn weights the mass is the labelled-token count
    mass = global_mass if global_mass > 0 else 1.0
    num_items = torch.tensor(mass / ctx.world_size, device=ctx.device)
    loss_sum = 0.0
    for i, batch in enumerate(micro_batches):
        empty = batch.empty
        if empty and fallback is None:
            raise RuntimeError("every sample of the first micro-batch was skipped on this rank; check the data "
                               "with `videoccam data check`")
        inputs = _to_device(fallback if empty else batch, ctx.device)
        with _gradient_sync(model, last=i == len(micro_batches) - 1):
            with _autocast(config, ctx.device):
                weights = inputs.pop("loss_weights")
                if weights is None:
                    loss = model(**inputs, num_items_in_batch=num_items, use_cache=False).loss
                else:
                    labels = inputs.pop("labels")
                    loss = _weighted_loss(model(**inputs, use_cache=False).logits, labels, weights, num_items)
            (loss * 0.0 if empty else loss).backward()  # an all-skipped micro-batch still joins the all-reduce
        if not empty:
            loss_sum += float(loss.detach()) * float(num_items)
    params = [p for p in model.parameters() if p.requires_grad]
    max_norm = config.optim.max_grad_norm
    grad_norm = torch.nn.utils.clip_grad_norm_(params, max_norm if max_norm is not None else math.inf)
    lr = scheduler.get_last_lr()[0]
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    (total_loss,) = ctx.all_reduce_sum([loss_sum])
    return {
        "loss": total_loss / mass, "lr": lr, "grad_norm": float(grad_norm),
        "samples": int(global_samples), "tokens": int(global_tokens), "seq_tokens": int(global_seq),
        "_skipped": int(global_skipped),
    }
