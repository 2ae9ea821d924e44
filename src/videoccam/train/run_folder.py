"""The run folder (``output.dir``): what belongs to a run, its identity, and when it may be reused.

A run writes ``config.yaml``, ``run.json`` (its identity: a random run id drawn at a fresh start),
``log.jsonl``, ``checkpoints/``, ``final/`` and, optionally, ``tensorboard/`` into its folder; those
are its *artefacts* and nothing else in the folder is touched. A folder that already holds any of
them is refused unless the run continues it (``resume``) or replaces it (``overwrite``: the old
artefacts are removed first). Every checkpoint's trainer state carries the run id, and a resume
checks that the checkpoint belongs to the folder's run.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
import uuid
from pathlib import Path

import torch

from videoccam.errors import ConfigError
from videoccam.train.checkpoint import CHECKPOINT_DIR, COMPLETE
from videoccam.train.config import TrainConfig, dump_config

logger = logging.getLogger(__name__)

CONFIG_FILE = "config.yaml"
RUN_FILE = "run.json"
LOG_FILE = "log.jsonl"
FINAL_DIR = "final"
TENSORBOARD_DIR = "tensorboard"
# everything a run writes into its folder (".tmp-final": a final output whose write was cut short)
RUN_ARTEFACTS: tuple[str, ...] = (CONFIG_FILE, RUN_FILE, LOG_FILE, CHECKPOINT_DIR, FINAL_DIR, TENSORBOARD_DIR,
                                  ".tmp-final")


def run_artefacts(run_dir: Path) -> list[Path]:
    """The artefacts of a run that ``run_dir`` holds (empty for a missing or unrelated folder)."""
    return [run_dir / name for name in RUN_ARTEFACTS if (run_dir / name).exists()]


def check_run_folder(run_dir: Path, *, resume: bool, overwrite: bool) -> None:
    """Refuse to start a new run over an old one: ``run_dir`` may hold a run's artefacts only when
    this run continues it (``resume``) or replaces it (``overwrite``). Changes nothing on disk."""
    if resume and overwrite:
        raise ConfigError("resume and overwrite exclude each other: --resume continues the run in "
                          f"{run_dir}, --overwrite deletes it and starts afresh")
    if resume or overwrite:
        return
    found = run_artefacts(run_dir)
    if found:
        names = ", ".join(p.name for p in found)
        raise ConfigError(f"output.dir={run_dir} already holds a run ({names}): pass --resume to continue it "
                          "or --overwrite to replace it (from Python: resume=True or overwrite=True), or "
                          "choose another output.dir")


def read_run_id(run_dir: Path) -> str | None:
    """The run id recorded in ``run_dir`` (None: no run.json, e.g. a run from before run ids)."""
    path = run_dir / RUN_FILE
    if not path.is_file():
        return None
    try:
        return str(json.loads(path.read_text())["run_id"])
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise ConfigError(f"{path}: not a run file ({err}); pass --overwrite to replace the run") from err


def checkpoint_run_id(path: Path) -> str | None:
    """The run id a checkpoint was written by (None: a checkpoint from before run ids)."""
    if not (path / COMPLETE).is_file():
        raise ConfigError(f"{path} is not a complete checkpoint (no {COMPLETE} marker)")
    state = torch.load(path / "trainer_state.pt", weights_only=False)
    return state.get("run_id")


def check_checkpoint_run(checkpoint: Path, run_dir: Path) -> None:
    """A resume continues the folder's own run: ``checkpoint`` must carry ``run_dir``'s run id."""
    ours, theirs = read_run_id(run_dir), checkpoint_run_id(checkpoint)
    if ours == theirs:
        if ours is None:
            logger.warning("%s and %s carry no run id (written before videoccam recorded one): cannot check "
                           "that the checkpoint belongs to this run", run_dir, checkpoint)
        return
    if theirs is None:
        whose = "carries no run id (an older videoccam's, or another run's)"
    else:
        whose = f"belongs to run {theirs}"
    mine = f"run {ours}" if ours is not None else f"no run ({run_dir / RUN_FILE} is missing)"
    raise ConfigError(f"cannot resume {run_dir} from {checkpoint}: the checkpoint {whose}, but {run_dir} "
                      f"holds {mine}; resume a run from its own checkpoints, or pass --overwrite to start "
                      f"{run_dir} afresh")


def prepare_run_folder(run_dir: Path, config: TrainConfig, *, overwrite: bool, fresh: bool) -> str | None:
    """Rank 0, once every check passed: remove the old run's artefacts (``overwrite``), create the
    folder, save the resolved config, and record a new run id when the run starts afresh (``fresh``
    and no run id yet; a resumed run keeps its own). Returns the folder's run id."""
    if overwrite:
        for path in run_artefacts(run_dir):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
            logger.info("overwrite: removed %s", path)
    run_dir.mkdir(parents=True, exist_ok=True)
    dump_config(config, run_dir / CONFIG_FILE)
    run_id = read_run_id(run_dir)
    if run_id is None and fresh:
        run_id = uuid.uuid4().hex  # os.urandom: no draw from the RNGs a resume restores
        (run_dir / RUN_FILE).write_text(json.dumps({
            "run_id": run_id, "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "stage": config.stage.name,
        }, indent=1) + "\n")
    return run_id
