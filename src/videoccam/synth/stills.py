"""Single-frame perception questions: the first training stage of the synthetic recipe.

A tiny model trained from scratch on the clips alone barely learns to see: a one-beat flash is one
patch of one frame among 16 x 16 patches, so at initialisation the projector's near-uniform
attention dilutes it 256-fold and the gradient that would teach the vision encoder to detect it
is as small (docs/synthetic-world.md, "Training recipe"). The stills fix that the way LLaVA-style
recipes do, with an image stage first: single frames (beats) of the training clips, each with
questions about what is visible in it — which colours, how many objects, and where objects are.
``where="side"`` (the default recipe) asks the side (left or right) of one object off the middle;
``where="both"`` (the long recipe) asks, for every object off the middle, its side and its height
(top or bottom), with those answers at loss weight :data:`WHERE_WEIGHT` — the motion families need
both axes (``direction`` moves sideways, ``reverse`` falls), and at weight 1 the model never learns
them (docs/synthetic-world.md, "Training recipe"). No question is about time, so the stage teaches
perception only and gives no projector variant an advantage on the order families.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from videoccam.constants import IMAGE_TOKEN
from videoccam.synth.families import NUMBER_WORDS, QUESTIONS, Sample, colour_set_answer, words_of
from videoccam.synth.world import Clip

POSITION_QUESTION = "is the {subject} object left or right ?"
HEIGHT_QUESTION = "is the {subject} object at the top or the bottom ?"
STILLS_PER_CLIP = 2
# The texts of each where mode's questions and answers (the tokenizer's words for its stills).
_WHERE_TEXTS: dict[str, tuple[str, ...]] = {
    "side": (POSITION_QUESTION, "left right"),
    "both": (POSITION_QUESTION, HEIGHT_QUESTION, "left right top bottom"),
}
WHERE_MODES: tuple[str, ...] = tuple(_WHERE_TEXTS)
# Loss weight of the side and height answers with where="both" (the JSON's per-turn "weight"). Where
# things are is what the motion families need and what the model is slowest to learn: at weight 1 the
# colour and count answers win, and the side stays at chance (docs/synthetic-world.md, "Training recipe").
WHERE_WEIGHT = 10.0
_STILLS_KEY = 0x5711  # seed-sequence tag of the stills' stream (the clip's own stream is untouched)


@dataclass(frozen=True)
class Still:
    """One beat of a clip and its questions, as ``(family, question, answer, loss weight)`` turns."""

    beat: int
    turns: tuple[tuple[str, str, str, float], ...]


def visible(clip: Clip, beat: int) -> list[tuple[str, int, int]]:
    """``(colour, centre x, centre y)`` of the sprites visible on ``beat``."""
    return [(s.colour, p[0] + s.size // 2, p[1] + s.size // 2)
            for s in clip.sprites if (p := s.positions[beat]) is not None]


def third(centre: int, size: int, low: str, high: str) -> str | None:
    """``low`` / ``high`` for a centre coordinate in the first / last third of the frame, else None."""
    if centre < size / 3:
        return low
    if centre >= 2 * size / 3:
        return high
    return None


def check_where(where: str, name: str = "where") -> None:
    """Raise a ValueError naming the parameter ``name`` unless ``where`` is one of :data:`WHERE_MODES`."""
    if where not in WHERE_MODES:
        raise ValueError(f"{name} must be one of {WHERE_MODES}, got {where!r}")


def still_words(where: str = "side") -> list[str]:
    """Every word of the stills' own questions and answers with this ``where`` mode, sorted."""
    check_where(where)
    return sorted(words_of(_WHERE_TEXTS[where]))


def make_stills(sample: Sample, own_seed: int, count: int = STILLS_PER_CLIP, where: str = "side") -> list[Still]:
    """Up to ``count`` distinct beats of ``sample``'s clip with at least one visible object.

    Every still asks which colours appear and how many objects there are. With ``where="side"``
    it also asks the side of one object (drawn at random) whose centre lies in the left or right
    third, if any. With ``where="both"`` it asks, for every object whose centre lies in the left or
    right third, which side it is on, and for every object whose centre lies in the top or bottom
    third, which of the two, those answers weighted :data:`WHERE_WEIGHT`. The turns come in a random
    order. Deterministic in ``own_seed`` (the sample's seed).
    """
    check_where(where)
    clip = sample.clip
    size = clip.config.size
    rng = np.random.default_rng([own_seed, _STILLS_KEY])
    seen = [visible(clip, b) for b in range(clip.config.num_beats)]
    beats = [b for b, objects in enumerate(seen) if objects]
    chosen = sorted(int(b) for b in rng.choice(beats, size=min(count, len(beats)), replace=False))
    stills = []
    for beat in chosen:
        objects = seen[beat]
        turns = [
            ("colours", QUESTIONS["colours"], colour_set_answer([c for c, _, _ in objects]), 1.0),
            ("count", QUESTIONS["count"], NUMBER_WORDS[len(objects) - 1], 1.0),
        ]
        # (colour, left/right/None, top/bottom/None) of every visible object
        where_of = [(c, third(x, size, "left", "right"), third(y, size, "top", "bottom")) for c, x, y in objects]
        if where == "side":
            sided = [(c, side) for c, side, _ in where_of if side is not None]
            if sided:
                colour, side = sided[int(rng.integers(len(sided)))]
                turns.append(("position", POSITION_QUESTION.format(subject=colour), side, 1.0))
        else:
            for colour, side, height in where_of:
                if side is not None:
                    turns.append(("position", POSITION_QUESTION.format(subject=colour), side, WHERE_WEIGHT))
                if height is not None:
                    turns.append(("height", HEIGHT_QUESTION.format(subject=colour), height, WHERE_WEIGHT))
        order = rng.permutation(len(turns))
        stills.append(Still(beat, tuple(turns[int(i)] for i in order)))
    return stills


def still_record(still: Still, sample_id: str, image: str, own_seed: int) -> dict:
    """The LLaVA-format JSON entry of one still (multi-turn: one turn per question; an answer whose
    loss weight is not 1 carries it as ``"weight"``)."""
    conversations = []
    for k, (_, question, answer, weight) in enumerate(still.turns):
        conversations.append({"from": "human", "value": f"{IMAGE_TOKEN}\n{question}" if k == 0 else question})
        conversations.append({"from": "gpt", "value": answer})
        if weight != 1.0:
            conversations[-1]["weight"] = weight
    return {
        "id": f"{sample_id}_beat{still.beat:02d}",
        "image": image,
        "conversations": conversations,
        "meta": {"families": [f for f, *_ in still.turns], "beat": still.beat, "seed": own_seed},
    }
