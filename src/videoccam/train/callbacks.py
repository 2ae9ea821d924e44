"""Hooks into the training loop: what a caller may change at each optimizer step, without a trainer option.

    class SecondHalfUnweighted:
        def on_step_start(self, control: StepControl) -> None:
            control.turn_weights = control.step < control.total_steps // 2

    train(config, callbacks=[SecondHalfUnweighted()])

or, in a config file (then saved with the run, and built from its import path and arguments)::

    callbacks:
      - class_path: videoccam.synth.schedule.TurnWeightSchedule
        init_args: {ratio: 0.3}

The trainer makes one :class:`StepControl` per step, hands it to every callback in order (the
config's first, then those passed to :func:`~videoccam.train.train`), then runs the step as it
says; each step's log record carries its ``turn_weights``.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from videoccam.errors import ConfigError

__all__ = ["CallbackSpec", "StepControl", "TrainCallback", "build_callbacks"]


@dataclass
class StepControl:
    """The optimizer step about to run: read-only counters, and what callbacks may set."""

    step: int  # optimizer steps done before this one (0 for the first step of the run)
    total_steps: int  # optimizer steps of the whole run
    epoch: int  # the epoch this step's samples come from
    # weigh the loss by the data's per-turn weights (a record's "weight"); False: every labelled token 1
    turn_weights: bool = True


@runtime_checkable
class TrainCallback(Protocol):
    """Something :func:`videoccam.train.train` calls at the start of every optimizer step.

    A callback runs in every process of a distributed run and must decide the same in each, and
    the same again after a resume: decide from the :class:`StepControl` alone.
    """

    def on_step_start(self, control: StepControl) -> None:
        """Look at ``control`` and change what this step does (``control.turn_weights``)."""
        ...


@dataclass
class CallbackSpec:
    """A callback in a config file: ``class_path`` (``package.module.Class``) called with ``init_args``."""

    class_path: str
    init_args: dict[str, Any] = field(default_factory=dict)


def build_callbacks(specs: Sequence[CallbackSpec]) -> list[TrainCallback]:
    """The callbacks of a config's ``callbacks`` section, built.

    Raises:
        ConfigError: naming ``callbacks[i]``: a class that cannot be imported, arguments it does not
            take or accept, or an object without ``on_step_start``.
    """
    callbacks = []
    for i, spec in enumerate(specs):
        where = f"callbacks[{i}]"
        module, _, name = spec.class_path.rpartition(".")
        try:
            cls = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError, ValueError) as err:
            raise ConfigError(f"{where}.class_path={spec.class_path!r}: cannot import it ({err})") from err
        try:
            callback = cls(**spec.init_args)
        except (TypeError, ValueError) as err:  # an unknown or a bad argument
            raise ConfigError(f"{where} ({spec.class_path}): {err}") from err
        if not isinstance(callback, TrainCallback):
            raise ConfigError(f"{where}: {spec.class_path} is no training callback (no on_step_start(control))")
        callbacks.append(callback)
    return callbacks
