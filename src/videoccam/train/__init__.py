"""Two-stage training (align: projector only; instruct: projector + LLM LoRA/full) on torchrun.

>>> from videoccam.train import load_config, train
>>> final = train(load_config("tiny-align.yaml", ["data.train=data.json"]))  # doctest: +SKIP
"""

from videoccam.train.build import load_trained
from videoccam.train.config import TrainConfig, load_config
from videoccam.train.trainer import train

__all__ = ["TrainConfig", "load_config", "load_trained", "train"]
