"""torch.distributed wiring: process group from torchrun's environment, DDP / FSDP2 wrapping.

Nothing here is a distribution engine of its own: ``torchrun`` starts the processes, the process
group comes from ``init_process_group`` (NCCL on GPUs, gloo on CPU), and the model is wrapped by
``DistributedDataParallel`` or FSDP2's ``fully_shard``.
"""

from __future__ import annotations

import gc
import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from transformers import PreTrainedModel

from videoccam.train.config import EngineSettings

logger = logging.getLogger(__name__)


@dataclass
class DistContext:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def all_reduce_sum(self, values: list[float]) -> list[float]:
        """Sum a few scalars over ranks (float64 on the process group's device)."""
        if not self.distributed:
            return list(values)
        tensor = torch.tensor(values, dtype=torch.float64, device=self._collective_device())
        dist.all_reduce(tensor)
        return tensor.tolist()

    def _collective_device(self) -> torch.device:
        return self.device if dist.get_backend() == "nccl" else torch.device("cpu")


def training_device(engine: EngineSettings, local_rank: int = 0) -> torch.device:
    """Where a process trains: ``engine.device``, else ``cuda:<local rank>`` when CUDA is available,
    else the CPU."""
    if engine.device is not None:
        return torch.device(engine.device)
    if torch.cuda.is_available():
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def setup_distributed(engine: EngineSettings) -> DistContext:
    """Join the process group torchrun describes (``WORLD_SIZE``/``RANK``/``LOCAL_RANK``), if any."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = training_device(engine, local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if world_size > 1 and not dist.is_initialized():
        backend = engine.backend or ("nccl" if device.type == "cuda" else "gloo")
        dist.init_process_group(backend=backend)
        logger.info("rank %d/%d joined the %s process group on %s", rank, world_size, backend, device)
    return DistContext(rank=rank, world_size=world_size, local_rank=local_rank, device=device)


def teardown_distributed(ctx: DistContext) -> None:
    if ctx.distributed and dist.is_initialized():
        # the DDP wrapper's reducer holds the group; collect it now so that the gloo group is freed here,
        # not in the interpreter's shutdown, where its threads aborted a rank ("terminate called without
        # an active exception", no Python frame) in 4 of 29 two-process test runs
        gc.collect()
        dist.destroy_process_group()


def _blocks(model: nn.Module) -> list[nn.Module]:
    """Every module of ``model`` whose class an HF model inside it declares unsplittable
    (``_no_split_modules``: decoder / encoder layers, the projector, SigLIP's embeddings)."""
    classes: set[str] = set()
    for module in model.modules():
        if isinstance(module, PreTrainedModel) and module._no_split_modules:
            classes.update(module._no_split_modules)
    return [m for m in model.modules() if type(m).__name__ in classes]


def _class_names(modules: list[nn.Module]) -> list[str]:
    return sorted({type(m).__name__ for m in modules})


def compile_blocks(model: nn.Module) -> list[str]:
    """``torch.compile`` every block of ``model`` in place: the classes its models declare unsplittable,
    the same units FSDP2 shards (decoder and encoder layers, the projector, SigLIP's embeddings).

    Per-block compilation (``nn.Module.compile``) leaves the parameter names and the top-level HF
    code (masks, caches, loss) as they are, so checkpoints, DDP and FSDP2 see the same modules.
    Returns the compiled classes' names.
    """
    blocks = _blocks(model)
    for block in blocks:
        block.compile()
    names = _class_names(blocks)
    logger.info("torch.compile: %d blocks (%s)", len(blocks), ", ".join(names))
    return names


def wrap_model(model: nn.Module, engine: EngineSettings, ctx: DistContext) -> nn.Module:
    """DDP (default) or FSDP2 around ``model`` (already on ``ctx.device``); unchanged for one process."""
    if not ctx.distributed:
        return model
    if engine.strategy == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        device_ids = [ctx.device.index] if ctx.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=device_ids,
                                       find_unused_parameters=engine.find_unused_parameters)
    from torch.distributed.fsdp import fully_shard

    blocks = _blocks(model)
    for block in blocks:  # one FSDP unit per layer, then the root for what is left (embeddings, heads)
        fully_shard(block)
    fully_shard(model)
    logger.info("FSDP2: %d sharded blocks (%s) + root", len(blocks), ", ".join(_class_names(blocks)))
    return model


def unwrap_model(model: nn.Module) -> nn.Module:
    """The module inside a DDP wrapper (FSDP2 shards in place: same module)."""
    from torch.nn.parallel import DistributedDataParallel

    return model.module if isinstance(model, DistributedDataParallel) else model
