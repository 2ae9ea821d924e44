"""The order of training samples: micro-batches for each rank, identical global batches on every rank,
grouped by length, and resumable to the exact micro-batch (see ``docs/training-data.md``, "Batches").

    sampler = ResumableBatchSampler(dataset.lengths, micro_batch_size=2, num_replicas=world, rank=rank,
                                    grad_accum=4, seed=0)
    loader = DataLoader(dataset, batch_sampler=sampler, collate_fn=...)
    for epoch in range(state_epoch, num_epochs):
        dataset.set_epoch(epoch); sampler.set_epoch(epoch)   # keeps a loaded resume position of that epoch
        for batch in loader:
            ...forward/backward on batch...
            sampler.advance()                              # one micro-batch consumed by the trainer
            if optimizer_stepped: checkpoint["data"] = sampler.state_dict()
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
from torch.utils.data import Sampler

from videoccam.errors import ConfigError

__all__ = ["ResumableBatchSampler"]

# the settings that fix the order: a saved state with any of them changed cannot resume exactly
_ORDER_KEYS = ("seed", "num_samples", "global_batch_size", "shuffle", "group_by_length", "drop_last",
               "mega_batches")


class ResumableBatchSampler(Sampler[list[int]]):
    """Micro-batches of dataset indices for one rank, the same global order on every rank, resumable.

    Each epoch, a permutation seeded by ``(seed, epoch)`` is cut into global batches of
    ``G = micro_batch_size * num_replicas * grad_accum`` indices (one optimizer step). With
    ``group_by_length``, the permutation is sorted by length (longest first) within mega-chunks of
    ``mega_batches`` global batches, so a global batch holds similar lengths, and the order of the
    global batches is then shuffled (same generator). Micro-step ``a`` of rank ``r`` in a global batch
    takes its indices ``[(a * num_replicas + r) * micro : ... + micro]``, so any split of the same
    ``G`` over processes and accumulation steps trains on the same samples per optimizer step.
    ``drop_last`` drops an incomplete last global batch; otherwise it is filled by repeating the
    permutation from its start.

    **Resume.** The sampler does not count what it yields: a DataLoader with workers draws
    ``num_workers * prefetch_factor`` batches ahead of the training loop. The trainer calls
    :meth:`advance` once per micro-batch it has trained on (a micro-batch whose samples were all
    skipped counts too), and :meth:`state_dict` returns ``{"epoch": e, "micro_step": k, ...}``: the
    first ``k`` micro-batches of this rank in epoch ``e`` are consumed. Saved right after an optimizer
    step, ``k`` is a multiple of ``grad_accum``; the value is the same on every rank. After
    :meth:`load_state_dict`, ``__iter__`` yields the micro-batches ``k, k + 1, ...`` of epoch ``e``.
    :meth:`set_epoch` with the loaded epoch keeps that position and with another epoch starts it at 0.
    A state saved at the end of an epoch (``k == len(self)``) resumes to an empty remainder of it.
    A state whose order settings (seed, dataset size, ``G``, shuffling, grouping) differ is refused;
    a different split of the same ``G`` (``micro_batch_size``, ``num_replicas``, ``grad_accum``) is
    converted when ``k`` is at an optimizer step boundary.
    """

    def __init__(self, lengths: Sequence[int], micro_batch_size: int, *, num_replicas: int = 1, rank: int = 0,
                 grad_accum: int = 1, seed: int = 0, shuffle: bool = True, group_by_length: bool = True,
                 drop_last: bool = True, mega_batches: int = 50) -> None:
        for name, value in (("micro_batch_size", micro_batch_size), ("num_replicas", num_replicas),
                            ("grad_accum", grad_accum), ("mega_batches", mega_batches)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be an integer >= 1, got {value!r}")
        if not (isinstance(rank, int) and 0 <= rank < num_replicas):
            raise ConfigError(f"rank must be in [0, {num_replicas}), got {rank!r}")
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ConfigError(f"seed must be an integer >= 0, got {seed!r}")
        self.lengths = np.asarray(lengths, dtype=np.int64)  # [n]
        self.micro_batch_size, self.num_replicas, self.rank = micro_batch_size, num_replicas, rank
        self.grad_accum, self.seed, self.shuffle = grad_accum, seed, shuffle
        self.group_by_length, self.drop_last, self.mega_batches = group_by_length, drop_last, mega_batches
        self.global_batch_size = micro_batch_size * num_replicas * grad_accum
        n = len(self.lengths)
        if n == 0 or (drop_last and n < self.global_batch_size):
            raise ConfigError(
                f"{n} samples make no complete global batch of {self.global_batch_size} "
                f"(micro_batch_size {micro_batch_size} x num_replicas {num_replicas} x grad_accum {grad_accum}); "
                "use a smaller batch or drop_last=False"
            )
        self.epoch = 0
        self.consumed = 0  # micro-batches of self.epoch the trainer has consumed (see advance)

    @property
    def num_global_batches(self) -> int:
        """Optimizer steps per epoch."""
        n, g = len(self.lengths), self.global_batch_size
        return n // g if self.drop_last else math.ceil(n / g)

    def __len__(self) -> int:
        """Micro-batches per epoch for this rank (the same on every rank)."""
        return self.num_global_batches * self.grad_accum

    def global_batches(self, epoch: int) -> np.ndarray:
        """The epoch's global batches, ``int64 [num_global_batches, G]``, identical on every rank."""
        n, g, num = len(self.lengths), self.global_batch_size, self.num_global_batches
        rng = np.random.default_rng([self.seed, epoch])
        order = rng.permutation(n) if self.shuffle else np.arange(n)  # [n]
        order = np.resize(order, num * g)  # [num * G]: drops the tail, or repeats from the start
        if self.group_by_length:
            chunk = self.mega_batches * g
            for s in range(0, len(order), chunk):
                part = order[s:s + chunk]
                order[s:s + chunk] = part[np.argsort(-self.lengths[part], kind="stable")]
        batches = order.reshape(num, g)  # [num, G]
        if self.shuffle and self.group_by_length:
            batches = batches[rng.permutation(num)]
        return batches

    def micro_batches(self, epoch: int) -> list[list[int]]:
        """All of this rank's micro-batches of ``epoch``, in order."""
        m, r = self.micro_batch_size, self.num_replicas
        batches = self.global_batches(epoch).reshape(-1, self.grad_accum, r, m)  # [num, A, R, m]
        return batches[:, :, self.rank, :].reshape(-1, m).tolist()  # [num * A, m]

    def __iter__(self) -> Iterator[list[int]]:
        """This rank's micro-batches of the current epoch from the resume position on."""
        return iter(self.micro_batches(self.epoch)[self.consumed:])

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch; a different one than the current starts at its first micro-batch."""
        if epoch != self.epoch:
            self.epoch, self.consumed = int(epoch), 0

    def advance(self, num_micro_batches: int = 1) -> None:
        """Record that the trainer has consumed ``num_micro_batches`` more micro-batches of this epoch."""
        if num_micro_batches < 0 or self.consumed + num_micro_batches > len(self):
            raise ValueError(f"cannot advance by {num_micro_batches}: {self.consumed} of {len(self)} micro-batches "
                             f"of epoch {self.epoch} are consumed")
        self.consumed += num_micro_batches

    def state_dict(self) -> dict[str, Any]:
        """``{"epoch", "micro_step"}`` (consumed micro-batches of this rank) plus the order settings."""
        return {
            "epoch": self.epoch, "micro_step": self.consumed, "grad_accum": self.grad_accum,
            "num_replicas": self.num_replicas, "micro_batch_size": self.micro_batch_size, "seed": self.seed,
            "num_samples": len(self.lengths), "global_batch_size": self.global_batch_size, "shuffle": self.shuffle,
            "group_by_length": self.group_by_length, "drop_last": self.drop_last, "mega_batches": self.mega_batches,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume at ``state``: the next ``__iter__`` of its epoch skips its consumed micro-batches.

        Raises:
            ConfigError: the saved order settings differ, or a changed split of ``G`` cannot be
                converted (state saved inside an accumulation cycle), or ``micro_step`` is out of range.
        """
        current = self.state_dict()
        changed = [f"{k} was {state[k]!r}, now {current[k]!r}" for k in _ORDER_KEYS
                   if k in state and state[k] != current[k]]
        if changed:
            raise ConfigError(f"cannot resume the data order exactly: {'; '.join(changed)}")
        epoch, step = int(state["epoch"]), int(state["micro_step"])
        old_accum = int(state.get("grad_accum", self.grad_accum))
        if (old_accum, state.get("num_replicas", self.num_replicas)) != (self.grad_accum, self.num_replicas):
            if step % old_accum:
                raise ConfigError(f"micro_step {step} is inside an accumulation cycle of {old_accum}; cannot "
                                  "convert it to a new num_replicas / grad_accum split")
            step = step // old_accum * self.grad_accum
        if not 0 <= step <= len(self):
            raise ConfigError(f"micro_step {step} is outside epoch {epoch} ({len(self)} micro-batches)")
        self.epoch, self.consumed = epoch, step
