"""The synthetic temporal world: procedural clips whose questions need (or do not need) temporal order.

Coloured shapes on a dark-grey background, on a clock of one-beat events (see
:mod:`videoccam.synth.world`); six question families, four of which are at chance for a model that
sees the frames as an unordered set (see :mod:`videoccam.synth.families`); a writer for mp4 clips,
LLaVA-format JSON and a word-level tokenizer (see :mod:`videoccam.synth.dataset`). The format is
described in ``docs/synthetic-world.md``::

    from videoccam.synth import generate_dataset
    generate_dataset("data/synth", num_train=4000, num_test=1800, seed=0, workers=2)
"""

from videoccam.synth.dataset import (
    GENERATOR_VERSION,
    dataset_sample,
    generate_dataset,
    sample_seed,
    write_clip,
    write_examples,
)
from videoccam.synth.families import (
    ANSWERS,
    CONTROL_FAMILIES,
    FAMILIES,
    ORDER_FAMILIES,
    QUESTIONS,
    TRAIN_ONLY_FAMILIES,
    Sample,
    answer_for,
    make_sample,
    world_words,
)
from videoccam.synth.tokenizer import build_tokenizer
from videoccam.synth.world import BACKGROUND, COLOURS, PALETTE, Clip, Sprite, WorldConfig

__all__ = [
    "ANSWERS",
    "BACKGROUND",
    "COLOURS",
    "CONTROL_FAMILIES",
    "FAMILIES",
    "GENERATOR_VERSION",
    "ORDER_FAMILIES",
    "PALETTE",
    "QUESTIONS",
    "TRAIN_ONLY_FAMILIES",
    "Clip",
    "Sample",
    "Sprite",
    "WorldConfig",
    "answer_for",
    "build_tokenizer",
    "dataset_sample",
    "generate_dataset",
    "make_sample",
    "sample_seed",
    "world_words",
    "write_clip",
    "write_examples",
]
