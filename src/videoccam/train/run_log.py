"""The run's log: one JSON record per logged step in ``<output.dir>/log.jsonl`` (rank 0), optionally
mirrored to TensorBoard, and a progress bar on the terminal."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from videoccam.errors import ConfigError
from videoccam.train.config import TrainConfig
from videoccam.train.distributed import DistContext
from videoccam.train.run_folder import LOG_FILE, TENSORBOARD_DIR

__all__ = ["RunLog", "check_tensorboard"]


def check_tensorboard(config: TrainConfig) -> None:
    """``output.tensorboard`` needs its package: found out before the run folder is written."""
    if config.output.tensorboard:
        try:
            import torch.utils.tensorboard  # noqa: F401
        except ImportError as err:
            raise ConfigError("output.tensorboard=true needs the tensorboard package "
                              "(pip install tensorboard)") from err


class RunLog:
    """Rank 0's JSONL log (+ TensorBoard with ``output.tensorboard``, + a tqdm bar with
    ``output.progress``); on other ranks every call does nothing."""

    def __init__(self, run_dir: Path, config: TrainConfig, ctx: DistContext, *, total_steps: int,
                 done_steps: int) -> None:
        self.active = ctx.is_main
        self.file = None
        self.tb = None
        self.bar = None
        if not self.active:
            return
        self.file = (run_dir / LOG_FILE).open("a")
        if config.output.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(run_dir / TENSORBOARD_DIR))
        if config.output.progress:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total_steps, initial=done_steps, desc=f"train {config.stage.name}", unit="step")

    def log(self, record: dict[str, Any]) -> None:
        """Append ``record`` (which has a ``step``) to the log."""
        if not self.active:
            return
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()
        if self.tb is not None:
            for key, value in record.items():
                if key != "step" and isinstance(value, (int, float)):
                    self.tb.add_scalar(key, value, record["step"])

    def advance(self, loss: float, lr: float) -> None:
        """One more step done: the progress bar moves and shows them."""
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}")

    def close(self) -> None:
        for handle in (self.bar, self.file, self.tb):
            if handle is not None:
                handle.close()
