"""Single-frame perception questions: the first training stage of the synthetic recipe.

A tiny model trained from scratch on the clips alone barely learns to see: a one-beat flash is one
patch of one frame among 16 x 16 patches, so at initialisation the projector's near-uniform
attention dilutes it 256-fold and the gradient that would teach the vision encoder to detect it
is as small (docs/synthetic-world.md, "Training recipe"). The stills fix that the way LLaVA-style
recipes do, with an image stage first: single frames (beats) of the training clips, each with
questions about what is visible in it — which colours, how many objects, and whether an object
is on the left or the right. No question is about time, so the stage teaches perception only and
gives no projector variant an advantage on the order families.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from videoccam.synth.families import NUMBER_WORDS, QUESTIONS, Sample, colour_set_answer
from videoccam.synth.world import Clip

POSITION_QUESTION = "is the {subject} object left or right ?"
STILLS_PER_CLIP = 2
_STILLS_KEY = 0x5711  # seed-sequence tag of the stills' stream (the clip's own stream is untouched)


@dataclass(frozen=True)
class Still:
    """One beat of a clip and its questions, as ``(family, question, answer)`` turns."""

    beat: int
    turns: tuple[tuple[str, str, str], ...]


def visible(clip: Clip, beat: int) -> list[tuple[str, int]]:
    """``(colour, centre x)`` of the sprites visible on ``beat``."""
    return [(s.colour, s.positions[beat][0] + s.size // 2) for s in clip.sprites if s.positions[beat] is not None]


def position_answer(centre_x: int, size: int) -> str | None:
    """``"left"`` / ``"right"`` for a centre in the left / right third of the frame, else None."""
    if centre_x < size / 3:
        return "left"
    if centre_x >= 2 * size / 3:
        return "right"
    return None


def make_stills(sample: Sample, own_seed: int, count: int = STILLS_PER_CLIP) -> list[Still]:
    """Up to ``count`` distinct beats of ``sample``'s clip with at least one visible object.

    Every still asks which colours appear and how many objects there are, plus, when an object's
    centre lies in the left or right third, which side that object is on; the turns come in a
    random order. Deterministic in ``own_seed`` (the sample's seed).
    """
    clip = sample.clip
    rng = np.random.default_rng([own_seed, _STILLS_KEY])
    seen = [visible(clip, b) for b in range(clip.config.num_beats)]
    beats = [b for b, objects in enumerate(seen) if objects]
    chosen = sorted(int(b) for b in rng.choice(beats, size=min(count, len(beats)), replace=False))
    stills = []
    for beat in chosen:
        objects = seen[beat]
        turns = [
            ("colours", QUESTIONS["colours"], colour_set_answer([c for c, _ in objects])),
            ("count", QUESTIONS["count"], NUMBER_WORDS[len(objects) - 1]),
        ]
        sided = [(c, side) for c, x in objects if (side := position_answer(x, clip.config.size)) is not None]
        if sided:
            colour, side = sided[int(rng.integers(len(sided)))]
            turns.append(("position", POSITION_QUESTION.format(subject=colour), side))
        order = rng.permutation(len(turns))
        stills.append(Still(beat, tuple(turns[int(i)] for i in order)))
    return stills


def still_record(still: Still, sample_id: str, image: str, own_seed: int) -> dict:
    """The LLaVA-format JSON entry of one still (multi-turn: one turn per question)."""
    conversations = []
    for k, (_, question, answer) in enumerate(still.turns):
        conversations.append({"from": "human", "value": f"<image>\n{question}" if k == 0 else question})
        conversations.append({"from": "gpt", "value": answer})
    return {
        "id": f"{sample_id}_beat{still.beat:02d}",
        "image": image,
        "conversations": conversations,
        "meta": {"families": [f for f, _, _ in still.turns], "beat": still.beat, "seed": own_seed},
    }
