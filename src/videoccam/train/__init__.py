"""Two-stage training (align: projector only; instruct: projector + LLM LoRA/full) on torchrun.

>>> from videoccam.train import load_config, train
>>> final = train(load_config("tiny-align.yaml", ["data.train=data.json"]))  # doctest: +SKIP

The modules: :mod:`~videoccam.train.config` (the YAML config), :mod:`~videoccam.train.trainer`
(:func:`train`, the recipe), :mod:`~videoccam.train.setup` (model, data, optimiser),
:mod:`~videoccam.train.step` (one optimizer step and its loss), :mod:`~videoccam.train.callbacks`
(hooks into the loop), :mod:`~videoccam.train.checkpoint`, :mod:`~videoccam.train.run_folder` and
:mod:`~videoccam.train.run_log` (what a run writes), :mod:`~videoccam.train.distributed`
(DDP / FSDP2), :mod:`~videoccam.train.build` (model + stage, and loading a trained folder),
:mod:`~videoccam.train.adapter_folder` (the adapter folder format) and :mod:`~videoccam.train.export`
(the final output). The training data is :mod:`videoccam.data`.
"""

from videoccam.train.build import load_trained
from videoccam.train.callbacks import StepControl, TrainCallback
from videoccam.train.config import TrainConfig, load_config
from videoccam.train.trainer import train

__all__ = ["StepControl", "TrainCallback", "TrainConfig", "load_config", "load_trained", "train"]
