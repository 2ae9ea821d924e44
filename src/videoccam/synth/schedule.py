"""The synthetic recipes' training hook: turn weights for the first part of a run only.

``synth-stills-where`` and ``synth-ccam-long`` name it in their ``callbacks`` section::

    callbacks:
      - class_path: videoccam.synth.schedule.TurnWeightSchedule
        init_args: {ratio: 0.3}

(docs/synthetic-world.md, "Training recipe", measures what it does).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

from videoccam.train.callbacks import StepControl

__all__ = ["TurnWeightSchedule"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TurnWeightSchedule:
    """A :class:`~videoccam.train.callbacks.TrainCallback`: the data's per-turn loss weights for the first
    ``ratio`` of the run's optimizer steps (rounded up), then weight 1 on every labelled token, inside
    the same learning-rate schedule. Ratio 0 trains what the data without weights trains; ratio 1
    changes nothing."""

    ratio: float

    def __post_init__(self) -> None:
        if isinstance(self.ratio, bool) or not isinstance(self.ratio, (int, float)):
            raise TypeError(f"ratio must be a number in [0, 1], got {self.ratio!r}")
        if not 0.0 <= self.ratio <= 1.0:
            raise ValueError(f"ratio must be in [0, 1], got {self.ratio}")

    def on_step_start(self, control: StepControl) -> None:
        weighted = math.ceil(self.ratio * control.total_steps)  # the steps that use the turn weights
        control.turn_weights = control.step < weighted
        if control.step == weighted and weighted > 0:
            logger.info("step %d: turn weights off from here (TurnWeightSchedule ratio %s)", control.step + 1,
                        self.ratio)
