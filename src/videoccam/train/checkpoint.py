"""Resumable checkpoints: written atomically (temp folder + rename), the last K kept.

A checkpoint ``<run>/checkpoints/step-00000042/`` holds what an exact resume needs and nothing the
config can rebuild: the trainable parameters (``trainable.safetensors``; frozen weights come back
from the config's sources), the optimizer state (``optimizer.pt``, keyed by parameter name), the
scheduler, sampler and counters (``trainer_state.pt``), and every rank's RNG states
(``rng-<rank>.pt``). State dicts go through ``torch.distributed.checkpoint.state_dict`` so DDP,
FSDP2 and single-process runs save and load the same full (unsharded) tensors.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import random
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict, set_state_dict

from videoccam.errors import ConfigError
from videoccam.train.distributed import DistContext

logger = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoints"
PREFIX = "step-"
COMPLETE = "COMPLETE"


def _is_disk_full(err: BaseException) -> bool:
    if isinstance(err, OSError) and err.errno == errno.ENOSPC:
        return True
    text = str(err)  # safetensors and torch.save report the OS error in their message only
    return f"os error {errno.ENOSPC}" in text or os.strerror(errno.ENOSPC) in text


@contextlib.contextmanager
def writing(path: Path, cleanup: Path | None = None) -> Iterator[None]:
    """Name ``path`` when writing it fails: a full disk becomes ``OSError(ENOSPC, ..., path)``, other
    OS and safetensors errors an OSError naming the file; ``cleanup`` (a temp folder) is removed first,
    so no half-written checkpoint is left for ``--resume``."""
    try:
        yield
    except (OSError, SafetensorError, RuntimeError) as err:
        if isinstance(err, RuntimeError) and not _is_disk_full(err):
            raise
        if cleanup is not None:
            shutil.rmtree(cleanup, ignore_errors=True)
        if _is_disk_full(err):
            raise OSError(errno.ENOSPC, f"{os.strerror(errno.ENOSPC)} while writing", str(path)) from err
        if isinstance(err, OSError) and err.filename is not None:
            raise
        raise OSError(getattr(err, "errno", None) or errno.EIO, f"cannot write ({err})", str(path)) from err


def _save_torch(obj: Any, path: Path) -> None:
    with path.open("wb") as file:  # a Python file: a failed write raises OSError with its errno
        torch.save(obj, file)


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first (interrupted writes are ignored)."""
    root = run_dir / CHECKPOINT_DIR
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and p.name.startswith(PREFIX) and (p / COMPLETE).is_file()]
    return sorted(found, key=lambda p: int(p.name[len(PREFIX):]))


def save_checkpoint(run_dir: Path, step: int, model: nn.Module, optimizer: torch.optim.Optimizer,
                    trainer_state: dict[str, Any], ctx: DistContext, keep_last: int) -> Path:
    """Write checkpoint ``step`` atomically (every rank must call this) and prune to ``keep_last``."""
    root = run_dir / CHECKPOINT_DIR
    final = root / f"{PREFIX}{step:08d}"
    tmp = root / f".tmp-{PREFIX}{step:08d}"
    options = StateDictOptions(full_state_dict=True, cpu_offload=True, ignore_frozen_params=True)
    model_state, optim_state = get_state_dict(model, optimizer, options=options)  # collective under FSDP
    if ctx.is_main:
        with writing(tmp, cleanup=tmp):
            if tmp.exists():
                shutil.rmtree(tmp)
            tmp.mkdir(parents=True)
        for name, write in (("trainable.safetensors",
                             lambda p: save_file({k: v.contiguous() for k, v in model_state.items()}, p)),
                            ("optimizer.pt", lambda p: _save_torch(optim_state, p)),
                            ("trainer_state.pt", lambda p: _save_torch(trainer_state, p))):
            with writing(tmp / name, cleanup=tmp):
                write(tmp / name)
    ctx.barrier()
    with writing(tmp / f"rng-{ctx.rank}.pt", cleanup=tmp):
        _save_torch(rng_state(), tmp / f"rng-{ctx.rank}.pt")
    ctx.barrier()
    if ctx.is_main:
        with writing(tmp / COMPLETE, cleanup=tmp):
            (tmp / COMPLETE).write_text(f"{ctx.world_size}\n")
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)  # atomic on one filesystem: a checkpoint is either whole or absent
        stale = [p for p in root.iterdir() if p.name.startswith(".tmp-")]  # writes cut short by a kill
        for old in [*list_checkpoints(run_dir)[:-keep_last], *stale]:
            shutil.rmtree(old, ignore_errors=True)
        logger.info("saved checkpoint %s", final)
    ctx.barrier()
    return final


def load_checkpoint(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer,
                    ctx: DistContext) -> dict[str, Any]:
    """Restore model (trainable part) and optimizer; return the trainer state, with this rank's RNG
    states under ``"rng"`` (to be set by the caller once its data iterator exists, see the trainer)."""
    if not (path / COMPLETE).is_file():
        raise ConfigError(f"{path} is not a complete checkpoint (no {COMPLETE} marker)")
    saved_world = int((path / COMPLETE).read_text().split()[0])
    if saved_world != ctx.world_size:
        raise ConfigError(f"{path} was written by {saved_world} processes but this run has {ctx.world_size}; "
                          "an exact resume needs the same number of processes")
    model_state = load_file(path / "trainable.safetensors")
    optim_state = torch.load(path / "optimizer.pt", weights_only=False)
    options = StateDictOptions(full_state_dict=True, ignore_frozen_params=True, strict=False)
    set_state_dict(model, optimizer, model_state_dict=model_state, optim_state_dict=optim_state, options=options)
    trainer_state = torch.load(path / "trainer_state.pt", weights_only=False)
    trainer_state["rng"] = torch.load(path / f"rng-{ctx.rank}.pt", weights_only=False)
    return trainer_state
