"""The training loop: one function, :func:`train`, run as is or under ``torchrun``.

A run, in order (:func:`_train`): check where it starts (:func:`~videoccam.train.setup.check_start`),
build the model, the data and the optimiser (:mod:`videoccam.train.setup`), restore a checkpoint
when resuming, claim the run folder, then step until ``total_steps`` (:func:`_run_steps`; one step:
:func:`~videoccam.train.step.optimizer_step`, which also explains the loss normalisation), saving
checkpoints on the way, and save the final model.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from videoccam.data import FrameCache, collate
from videoccam.train.callbacks import StepControl, TrainCallback, build_callbacks
from videoccam.train.checkpoint import load_checkpoint, save_checkpoint, set_rng_state
from videoccam.train.config import TrainConfig
from videoccam.train.distributed import (
    DistContext,
    compile_blocks,
    setup_distributed,
    teardown_distributed,
    wrap_model,
)
from videoccam.train.export import save_final
from videoccam.train.run_folder import prepare_run_folder, read_run_id
from videoccam.train.run_log import RunLog
from videoccam.train.setup import TrainData, check_start, setup_data, setup_model, setup_optimizer
from videoccam.train.step import StepResult, group_steps, memory_mib, optimizer_step, rank_digests

logger = logging.getLogger(__name__)


@dataclass
class TrainState:
    """Counters that a resume restores (with the sampler's position)."""

    step: int = 0  # optimizer steps done
    epoch: int = 0
    samples: int = 0  # samples trained on, all ranks
    tokens: int = 0  # labelled tokens, all ranks
    skipped: int = 0  # samples skipped for bad media / length, all ranks


@dataclass
class _Run:
    """Everything the loop works with."""

    config: TrainConfig
    ctx: DistContext
    run_dir: Path
    run_id: str | None
    model: nn.Module  # wrapped for the strategy (DDP / FSDP2)
    optimizer: torch.optim.Optimizer
    scheduler: Any
    data: TrainData
    state: TrainState
    callbacks: list[TrainCallback]


def train(config: TrainConfig, *, resume: bool | str | None = None, overwrite: bool = False,
          frame_cache: FrameCache | None = None, callbacks: Sequence[TrainCallback] = ()) -> Path:
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
        callbacks: hooks called at the start of every optimizer step, after those of
            ``config.callbacks`` (see :mod:`videoccam.train.callbacks`); unlike those, they are not
            saved with the run.

    An ``output.dir`` that holds a run is refused (:class:`~videoccam.errors.ConfigError`) unless
    ``resume`` or ``overwrite`` is given; see :mod:`videoccam.train.run_folder`. Errors in the config,
    the model source or the data are raised before anything is written there.

    Under ``torchrun`` every process calls this; rank 0 writes logs and the final folder.
    """
    config.validate()
    all_callbacks = [*build_callbacks(config.callbacks), *callbacks]
    ctx = setup_distributed(config.engine)
    try:
        return _train(config, ctx, resume, overwrite, frame_cache, all_callbacks)
    finally:
        teardown_distributed(ctx)


def _train(config: TrainConfig, ctx: DistContext, resume: bool | str | None, overwrite: bool,
           frame_cache: FrameCache | None, callbacks: list[TrainCallback]) -> Path:
    """The recipe: where it starts, model, data, optimiser, resume, run folder, steps, final model."""
    run_dir = Path(config.output.dir)
    resume_from = check_start(run_dir, config, resume, overwrite)
    model, processor = setup_model(config, ctx)
    data = setup_data(config, ctx, processor, frame_cache)
    if config.engine.compile:
        compile_blocks(model)
    wrapped = wrap_model(model, config.engine, ctx)
    optimizer, scheduler = setup_optimizer(wrapped, config.optim, data.total_steps)
    state, saved_rng = TrainState(), None
    if resume_from is not None:
        saved = load_checkpoint(resume_from, wrapped, optimizer, ctx)
        scheduler.load_state_dict(saved["scheduler"])
        data.sampler.load_state_dict(saved["sampler"])
        state, saved_rng = TrainState(**saved["state"]), saved["rng"]
        logger.info("resumed from %s at step %d (epoch %d)", resume_from, state.step, state.epoch)
    run_id = _claim_run_folder(run_dir, config, ctx, overwrite=overwrite, fresh=resume_from is None)
    run = _Run(config, ctx, run_dir, run_id, wrapped, optimizer, scheduler, data, state, callbacks)
    log = RunLog(run_dir, config, ctx, total_steps=data.total_steps, done_steps=state.step)
    try:
        _run_steps(run, log, saved_rng)
        _log_rank_digests(run, log)
    finally:
        log.close()
    final = save_final(run_dir, wrapped, model, processor, config, ctx)
    if ctx.is_main:
        logger.info("finished %d steps (%d samples, %d skipped); final model in %s",
                    state.step, state.samples, state.skipped, final)
    return final


def _claim_run_folder(run_dir: Path, config: TrainConfig, ctx: DistContext, *, overwrite: bool,
                      fresh: bool) -> str | None:
    """Rank 0 prepares the run folder (every rank has checked it first); returns the run id.

    The folder changes only now, when the model, data and checkpoint have loaded: a run that fails to
    start leaves it as it was (and is not refused as an existing run when started again).
    """
    ctx.barrier()
    if ctx.is_main:
        prepare_run_folder(run_dir, config, overwrite=overwrite, fresh=fresh)
    ctx.barrier()
    run_id = read_run_id(run_dir)
    if ctx.is_main:
        logger.info("run %s in %s", run_id, run_dir)
    return run_id


def _run_steps(run: _Run, log: RunLog, saved_rng: dict[str, Any] | None) -> None:
    """Optimizer steps, epoch after epoch, until ``total_steps``; ``saved_rng``: a resumed run's RNG state."""
    state, data, grad_accum = run.state, run.data, run.config.optim.grad_accum
    # run (loss x 0) in place of a micro-batch whose samples were all skipped: the same on every step, so
    # a resume is exact, and there from the first micro-batch on
    fallback = collate([data.dataset.dummy_sample()], pad_token_id=data.dataset.processor.tokenizer.pad_token_id)
    while state.step < data.total_steps:
        data.sampler.set_epoch(state.epoch)
        data.dataset.set_epoch(state.epoch)
        batches = iter(data.loader)  # creating it draws from the RNG: restore the saved state after
        if saved_rng is not None:
            set_rng_state(saved_rng)
            saved_rng = None
        started = time.perf_counter()  # a step's time runs from the previous step's end: data loading included
        for micro_batches in group_steps(batches, grad_accum):
            control = StepControl(step=state.step, total_steps=data.total_steps, epoch=state.epoch)
            for callback in run.callbacks:
                callback.on_step_start(control)
            result = optimizer_step(run.model, run.optimizer, run.scheduler, micro_batches, fallback, run.config,
                                    run.ctx, turn_weights=control.turn_weights)
            data.sampler.advance(grad_accum)
            elapsed, started = time.perf_counter() - started, time.perf_counter()
            _after_step(run, log, result, control, elapsed)
            if state.step >= data.total_steps:
                return
        state.epoch += 1


def _after_step(run: _Run, log: RunLog, result: StepResult, control: StepControl, elapsed: float) -> None:
    """Count the step, log it, and save a checkpoint when one is due."""
    state, config = run.state, run.config
    state.step += 1
    state.samples += result.samples
    state.tokens += result.tokens
    state.skipped += result.skipped
    if state.step % config.output.log_every == 0:
        log.log({
            "step": state.step, "epoch": state.epoch, **result.log_fields(), "turn_weights": control.turn_weights,
            "skipped": state.skipped, "samples_per_s": result.samples / elapsed,
            "tokens_per_s": result.tokens / elapsed, "step_time_s": elapsed,
            "memory_mib": memory_mib(run.ctx.device),
        })
    log.advance(result.loss, result.lr)
    every = config.output.save_every
    if (every and state.step % every == 0) or state.step == run.data.total_steps:
        trainer_state = {"scheduler": run.scheduler.state_dict(), "sampler": run.data.sampler.state_dict(),
                         "state": dataclasses.asdict(state), "run_id": run.run_id}
        save_checkpoint(run.run_dir, state.step, run.model, run.optimizer, trainer_state, run.ctx,
                        config.output.keep_last)


def _log_rank_digests(run: _Run, log: RunLog) -> None:
    """Every rank's digest of its trainable weights, in the log's last record; replicas that diverged
    (their digests differ) are an error in the log."""
    digests = rank_digests(run.model, run.config, run.ctx)
    if digests is None:
        return
    if len(set(digests)) > 1:
        logger.error("the ranks' trainable weights differ at the end (digests %s): replicas diverged", digests)
    log.log({"step": run.state.step, "event": "end", "rank_weight_digests": digests})
