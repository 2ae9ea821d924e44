"""One optimizer step: the loss of each micro-batch, gradient accumulation over them, clipping, the update.

Loss normalisation: every micro-batch's loss is the SUM of its weighted token losses divided by the
loss mass of the whole optimizer step (the summed weights of the labelled tokens of all micro-batches
of all ranks) over the world size; DDP/FSDP average gradients over ranks, so the step's gradient is
that of the weighted mean token loss of the global batch, whatever the split over processes and
accumulation steps. That is what makes one process with micro-batch 4 and two processes with
micro-batch 2 train the same weights. Without turn weights every labelled token weighs 1 and the
mass is the number of labelled tokens: the model's own (Hugging Face) causal-LM loss.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import resource
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from videoccam.data import Batch
from videoccam.processing.processor import IGNORE_INDEX
from videoccam.train.config import TrainConfig
from videoccam.train.distributed import DistContext

__all__ = ["StepResult", "causal_lm_loss", "group_steps", "memory_mib", "optimizer_step", "rank_digests"]


@dataclass
class StepResult:
    """What one optimizer step did, summed over all ranks."""

    loss: float  # the weighted mean token loss of the global batch
    lr: float  # the learning rate the step used
    grad_norm: float  # before clipping
    samples: int  # samples trained on
    tokens: int  # labelled tokens
    seq_tokens: int  # all tokens (attention mask)
    skipped: int  # samples that failed to load

    def log_fields(self) -> dict[str, Any]:
        """The fields a step's log record shows (``skipped`` is logged as the run's running total)."""
        return {"loss": self.loss, "lr": self.lr, "grad_norm": self.grad_norm, "samples": self.samples,
                "tokens": self.tokens, "seq_tokens": self.seq_tokens}


def causal_lm_loss(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor,
                   num_items: torch.Tensor | float) -> torch.Tensor:
    """Hugging Face's causal-LM loss with per-token weights: the sum of weight x cross-entropy over the
    shifted tokens, divided by ``num_items``. With weight 1 on every labelled token this is
    ``model(..., labels=labels, num_items_in_batch=num_items).loss``.

    Args:
        logits: ``[B, S, V]``.
        labels: ``[B, S]``, IGNORE_INDEX where no loss is taken.
        weights: ``[B, S]`` float, 0 where ``labels`` is IGNORE_INDEX.
        num_items: what the sum is divided by (the step's loss mass share of this rank).
    """
    logits = logits[:, :-1].float()  # [B, S-1, V]: position t predicts token t + 1
    losses = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1),
                                         ignore_index=IGNORE_INDEX, reduction="none")  # [B * (S-1)]
    return (losses * weights[:, 1:].reshape(-1)).sum() / num_items  # weights [B, S-1] -> [B * (S-1)]


def group_steps(batches: Iterator[Batch], grad_accum: int) -> Iterator[list[Batch]]:
    """Group micro-batches into optimizer steps (an incomplete last group is dropped)."""
    group = []
    for batch in batches:
        group.append(batch)
        if len(group) == grad_accum:
            yield group
            group = []


def optimizer_step(model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any, micro_batches: list[Batch],
                   fallback: Batch | None, config: TrainConfig, ctx: DistContext,
                   turn_weights: bool = True) -> StepResult:
    """Forward/backward every micro-batch (weights from the data when ``turn_weights``, else 1 on every
    labelled token), then clip and step. ``fallback``: a fixed stand-in batch (the dataset's dummy sample),
    run with loss x 0 in place of a micro-batch whose samples were all skipped (every rank must join the
    gradient all-reduce)."""
    weights = [None if b.empty else b.weights(turn_weights) for b in micro_batches]  # [B, S] each
    local_tokens = sum(0 if b.empty else int((b.labels[:, 1:] != IGNORE_INDEX).sum()) for b in micro_batches)
    local_mass = sum(0.0 if w is None else float(w[:, 1:].sum()) for w in weights)
    local_seq = sum(0 if b.empty else int(b.attention_mask.sum()) for b in micro_batches)
    global_tokens, global_mass, global_samples, global_skipped, global_seq = ctx.all_reduce_sum([
        local_tokens, local_mass, sum(b.num_samples for b in micro_batches),
        sum(b.num_skipped for b in micro_batches), local_seq])
    # each rank's loss = its weighted token-loss sum / (global loss mass / world): DDP's gradient mean
    # gives the global weighted mean
    mass = global_mass if global_mass > 0 else 1.0
    num_items = torch.tensor(mass / ctx.world_size, device=ctx.device)
    loss_sum = 0.0
    for i, (batch, batch_weights) in enumerate(zip(micro_batches, weights, strict=True)):
        if batch.empty and fallback is None:
            raise ValueError("an all-skipped micro-batch needs a fallback batch (LlavaDataset.dummy_sample)")
        run = (fallback if batch.empty else batch).to(ctx.device)
        run_weights = (run.weights(turn_weights) if batch.empty else batch_weights).to(ctx.device)
        with _gradient_sync(model, last=i == len(micro_batches) - 1):
            with _autocast(config, ctx.device):
                logits = model(**run.model_inputs(), use_cache=False).logits  # [B, S, V]
                loss = causal_lm_loss(logits, run.labels, run_weights, num_items)
            # an all-skipped micro-batch still joins the gradient all-reduce
            (loss * 0.0 if batch.empty else loss).backward()
        if not batch.empty:
            loss_sum += float(loss.detach()) * float(num_items)
    grad_norm, lr = _update(model, optimizer, scheduler, config.optim.max_grad_norm)
    (total_loss,) = ctx.all_reduce_sum([loss_sum])
    return StepResult(loss=total_loss / mass, lr=lr, grad_norm=grad_norm, samples=int(global_samples),
                      tokens=int(global_tokens), seq_tokens=int(global_seq), skipped=int(global_skipped))


def _update(model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
            max_grad_norm: float | None) -> tuple[float, float]:
    """Clip, step the optimizer and the schedule; returns the gradient norm before clipping and the lr used."""
    params = [p for p in model.parameters() if p.requires_grad]
    grad_norm = torch.nn.utils.clip_grad_norm_(params, max_grad_norm if max_grad_norm is not None else math.inf)
    lr = scheduler.get_last_lr()[0]
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return float(grad_norm), lr


def _autocast(config: TrainConfig, device: torch.device) -> contextlib.AbstractContextManager:
    if config.engine.precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


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


def memory_mib(device: torch.device) -> float:
    """Peak memory of this process: CUDA allocations on a GPU, the resident set on the CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def rank_digests(model: nn.Module, config: TrainConfig, ctx: DistContext) -> list[str] | None:
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
