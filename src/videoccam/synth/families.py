"""Question families of the synthetic world: scene generators, questions and ground-truth oracles.

Order-dependent families (a model that sees the frames as an unordered set is at chance, because
for every scene the time-reversed or reordered scene, with the same multiset of frames, is just as
likely and has another answer):

* ``first``: two one-beat flashes of different colours; "which colour flashed first ?"
* ``direction``: one object crosses the frame horizontally; "which way does the <c> object move ?"
* ``after``: three or four one-beat flashes; "which colour flashed right after the <c> one ?"
* ``reverse``: objects fall (from rest, accelerating) and the clip is played forward or
  time-reversed; "is the clip played forward or reversed ?"

Controls (order does not matter): ``colours`` ("which colours appear ?") and ``count`` ("how many
objects are there ?").

Training only (:data:`TRAIN_ONLY_FAMILIES`, never a test family and never a clip's own question):
``before``, "the <c> one flashed right after which colour ?", the flash right before the named one,
asked as an extra turn of clips with flashes (``generate_dataset(also_ask=("before",))``). It uses no
word the other questions do not, so the tokenizer is the same with or without it.

Every family is balanced: the generator is given the answer (the dataset cycles through the
answer values) and draws everything else independently of it. :func:`answer_for` recomputes the
answer from a scene, independently of how it was generated.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from videoccam.synth.world import COLOURS, Clip, Layout, Sprite, WorldConfig, pick_colours

NUMBER_WORDS: tuple[str, ...] = ("one", "two", "three", "four")
MAX_COUNT = len(NUMBER_WORDS)


def colour_set_answer(colours: list[str] | tuple[str, ...]) -> str:
    """Colour names in canonical (alphabetical) order joined with "and": ``"blue and red"``."""
    return " and ".join(sorted(colours))


COLOUR_SET_ANSWERS: tuple[str, ...] = tuple(
    colour_set_answer(combo) for n in (2, 3) for combo in itertools.combinations(COLOURS, n)
)

QUESTIONS: dict[str, str] = {
    "first": "which colour flashed first ?",
    "direction": "which way does the {subject} object move ?",
    "after": "which colour flashed right after the {subject} one ?",
    "reverse": "is the clip played forward or reversed ?",
    "colours": "which colours appear ?",
    "count": "how many objects are there ?",
    "before": "the {subject} one flashed right after which colour ?",
}
ANSWERS: dict[str, tuple[str, ...]] = {
    "first": COLOURS,
    "direction": ("left", "right"),
    "after": COLOURS,
    "reverse": ("forward", "reversed"),
    "colours": COLOUR_SET_ANSWERS,
    "count": NUMBER_WORDS,
}  # the test families' answer values ("before", training only, answers a colour)
ORDER_FAMILIES: tuple[str, ...] = ("first", "direction", "after", "reverse")
CONTROL_FAMILIES: tuple[str, ...] = ("colours", "count")
FAMILIES: tuple[str, ...] = ORDER_FAMILIES + CONTROL_FAMILIES  # the test families (each has a scene generator)
TRAIN_ONLY_FAMILIES: tuple[str, ...] = ("before",)  # extra turns of training clips only (no generator)


@dataclass(frozen=True)
class Sample:
    """One clip and its single-turn question.

    Attributes:
        family: Question family.
        clip: The scene.
        question: Question text (no media placeholder).
        answer: Ground-truth answer text.
        subject: The colour named in the question, or ``None``.
        chance: Accuracy of the best guess without the skill the family tests: for order
            families, a model that knows which colours occur but not in which order; for controls,
            a guess that ignores the video.
    """

    family: str
    clip: Clip
    question: str
    answer: str
    subject: str | None
    chance: float

    @property
    def order_dependent(self) -> bool:
        return self.family in ORDER_FAMILIES


def make_sample(family: str, rng: np.random.Generator, answer: str | None = None,
                config: WorldConfig | None = None) -> Sample:
    """Draw one sample of ``family``.

    Args:
        family: One of :data:`FAMILIES`.
        rng: Source of randomness (everything but the answer is drawn from it).
        answer: The answer the scene must have, from ``ANSWERS[family]``; drawn uniformly when
            ``None``.
        config: Clip size and clock.
    """
    if family not in _GENERATORS:
        raise ValueError(f"unknown family {family!r}; families: {FAMILIES}")
    config = config or WorldConfig()
    values = ANSWERS[family]
    if answer is None:
        answer = values[int(rng.integers(len(values)))]
    elif answer not in values:
        raise ValueError(f"{answer!r} is not an answer of family {family!r}")
    clip, subject, chance = _GENERATORS[family](rng, config, answer)
    sample = Sample(family, clip, QUESTIONS[family].format(subject=subject), answer, subject, chance)
    found = answer_for(family, clip, subject)
    if found != answer:  # a generator bug, never bad input
        raise AssertionError(f"{family}: generated a scene whose answer is {found!r}, wanted {answer!r}")
    return sample


# -------------------------------------------------------------------------------- generators
Generator = Callable[[np.random.Generator, WorldConfig, str], tuple[Clip, "str | None", float]]


def _distinct_beats(rng: np.random.Generator, config: WorldConfig, count: int) -> list[int]:
    """``count`` distinct beats, ascending, uniform over all such sets."""
    return sorted(int(b) for b in rng.choice(config.num_beats, size=count, replace=False))


def _finish(rng: np.random.Generator, config: WorldConfig, sprites: list[Sprite]) -> Clip:
    """A clip with the sprites in random order (drawing order carries no information)."""
    order = rng.permutation(len(sprites))
    return Clip(tuple(sprites[i] for i in order), config)


def _gen_first(rng: np.random.Generator, config: WorldConfig, answer: str) -> tuple[Clip, None, float]:
    other = pick_colours(rng, 1, exclude=[answer])[0]
    early, late = _distinct_beats(rng, config, 2)
    distractors = pick_colours(rng, int(rng.integers(0, 3)), exclude=[answer, other])
    layout = Layout(rng, config)
    sprites = [layout.flash(answer, early), layout.flash(other, late)]
    sprites += [layout.static(c) for c in distractors]
    return _finish(rng, config, sprites), None, 1 / 2


def _gen_direction(rng: np.random.Generator, config: WorldConfig, answer: str) -> tuple[Clip, str, float]:
    subject = pick_colours(rng, 1)[0]
    distractors = pick_colours(rng, int(rng.integers(0, 3)), exclude=[subject])
    layout = Layout(rng, config)
    sprites = [layout.mover(subject, rightwards=answer == "right")]
    sprites += [layout.static(c) for c in distractors]
    return _finish(rng, config, sprites), subject, 1 / 2


def _gen_after(rng: np.random.Generator, config: WorldConfig, answer: str) -> tuple[Clip, str, float]:
    count = int(rng.integers(3, 5))
    position = int(rng.integers(1, count))  # where the answer sits in time; never first
    others = pick_colours(rng, count - 1, exclude=[answer])
    order = others[:position] + [answer] + others[position:]
    beats = _distinct_beats(rng, config, count)
    distractors = pick_colours(rng, int(rng.integers(0, 2)), exclude=order)
    layout = Layout(rng, config)
    sprites = [layout.flash(colour, beat) for colour, beat in zip(order, beats, strict=True)]
    sprites += [layout.static(c) for c in distractors]
    return _finish(rng, config, sprites), order[position - 1], 1 / (count - 1)


def _gen_reverse(rng: np.random.Generator, config: WorldConfig, answer: str) -> tuple[Clip, None, float]:
    fallers = pick_colours(rng, int(rng.integers(1, 3)))
    distractors = pick_colours(rng, int(rng.integers(0, 2)), exclude=fallers)
    layout = Layout(rng, config)
    sprites = [layout.faller(c) for c in fallers]
    sprites += [layout.static(c) for c in distractors]
    clip = _finish(rng, config, sprites)
    return (clip if answer == "forward" else clip.reversed()), None, 1 / 2


def _gen_colours(rng: np.random.Generator, config: WorldConfig, answer: str) -> tuple[Clip, None, float]:
    colours = answer.split(" and ")
    colours = [colours[i] for i in rng.permutation(len(colours))]
    kinds = [("static", "flash", "mover")[int(rng.integers(3))] for _ in colours]
    if kinds.count("mover") > 1:  # one mover at most: it takes a whole row of the layout
        kinds = [k if k != "mover" or i == kinds.index("mover") else "static" for i, k in enumerate(kinds)]
    layout = Layout(rng, config)
    sprites = []
    for colour, kind in sorted(zip(colours, kinds, strict=True), key=lambda ck: ck[1] != "mover"):  # the row first
        if kind == "mover":
            sprites.append(layout.mover(colour, rightwards=bool(rng.integers(2))))
        elif kind == "flash":
            sprites.append(layout.flash(colour, int(rng.integers(config.num_beats))))
        else:
            sprites.append(layout.static(colour))
    return _finish(rng, config, sprites), None, 1 / len(COLOUR_SET_ANSWERS)


def _gen_count(rng: np.random.Generator, config: WorldConfig, answer: str) -> tuple[Clip, None, float]:
    layout = Layout(rng, config)
    sprites = [layout.static(c) for c in pick_colours(rng, NUMBER_WORDS.index(answer) + 1)]
    return _finish(rng, config, sprites), None, 1 / MAX_COUNT


_GENERATORS: dict[str, Generator] = {
    "first": _gen_first,
    "direction": _gen_direction,
    "after": _gen_after,
    "reverse": _gen_reverse,
    "colours": _gen_colours,
    "count": _gen_count,
}


# ---------------------------------------------------------------------------------- oracles
def _flashes(clip: Clip) -> list[tuple[int, str]]:
    """``(beat, colour)`` of the sprites visible on exactly one beat, in time order."""
    return sorted((s.visible_beats[0], s.colour) for s in clip.sprites if len(s.visible_beats) == 1)


def answer_for(family: str, clip: Clip, subject: str | None = None) -> str:
    """The answer to ``family``'s question about ``clip``, read off the scene.

    Independent of the generators: e.g. ``answer_for("first", clip.reversed())`` is the answer of
    the reversed clip. ``subject`` is the colour named in the question (``direction``, ``after``,
    ``before``).

    Raises:
        ValueError: The scene does not fit the family's question (e.g. fewer than two flashes).
    """
    if family in ("first", "after", "before"):
        flashes = _flashes(clip)
        beats = [b for b, _ in flashes]
        if len(flashes) < 2 or len(set(beats)) != len(beats):
            raise ValueError(f"{family}: needs two or more flashes on distinct beats, got {flashes}")
        colours = [c for _, c in flashes]
        if family == "first":
            return colours[0]
        if family == "before":
            if subject not in colours[1:]:
                raise ValueError(f"before: {subject!r} must be a flash colour other than the first of {colours}")
            return colours[colours.index(subject) - 1]
        if subject not in colours[:-1]:
            raise ValueError(f"after: {subject!r} must be a flash colour other than the last of {colours}")
        return colours[colours.index(subject) + 1]
    if family == "direction":
        xs = [p[0] for p in clip.sprite(subject).positions if p is not None]
        if xs[-1] == xs[0]:
            raise ValueError(f"direction: the {subject} object does not move sideways")
        return "right" if xs[-1] > xs[0] else "left"
    if family == "reverse":
        steps = [np.diff([p[1] for p in s.positions if p is not None]) for s in clip.sprites]
        moving = [d for d in steps if np.any(d != 0)]
        if not moving:
            raise ValueError("reverse: nothing moves vertically")
        if all(np.all(d >= 0) for d in moving):
            return "forward"  # things fall
        if all(np.all(d <= 0) for d in moving):
            return "reversed"  # things rise, which the world's law forbids
        raise ValueError("reverse: objects move both up and down")
    if family == "colours":
        return colour_set_answer([s.colour for s in clip.sprites])
    if family == "count":
        if not 1 <= len(clip.sprites) <= MAX_COUNT:
            raise ValueError(f"count: {len(clip.sprites)} objects, expected 1 to {MAX_COUNT}")
        return NUMBER_WORDS[len(clip.sprites) - 1]
    raise ValueError(f"unknown family {family!r}; families: {FAMILIES}")


def order_questions(clip: Clip, also_ask: Sequence[str] = ()) -> list[tuple[str, str | None, str]]:
    """Every order-family question ``clip`` answers, as ``(family, subject, answer)``.

    ``first`` and one ``after`` per flash but the last, when the clip has two or more flashes on
    distinct beats; ``direction`` for every object that moves sideways; ``reverse`` when objects
    fall (or rise). A ``first`` clip thus also answers "after" its earlier flash, an ``after`` clip
    "first" and every other "after", and a ``colours`` clip whatever its flashes and mover allow.
    ``also_ask`` adds training-only families (:data:`TRAIN_ONLY_FAMILIES`): ``"before"``, one per
    flash but the first. :func:`answer_for` decides which questions fit the scene and answers them.
    In time order of the flashes (the ``before`` questions after the ``after`` ones), then the movers
    in sprite order.
    """
    check_also_ask(also_ask)
    flashes = [c for _, c in _flashes(clip)]
    candidates = [("first", None), *(("after", c) for c in flashes),
                  *(("before", c) for c in flashes if "before" in also_ask),
                  *(("direction", s.colour) for s in clip.sprites), ("reverse", None)]
    questions: list[tuple[str, str | None, str]] = []
    for family, subject in candidates:
        try:
            questions.append((family, subject, answer_for(family, clip, subject)))
        except ValueError:  # the scene does not fit this question (e.g. the last flash has no "after")
            continue
    return questions


def check_also_ask(also_ask: Sequence[str]) -> None:
    """Raise a ValueError naming ``also_ask`` unless every entry is one of :data:`TRAIN_ONLY_FAMILIES`."""
    unknown = [f for f in also_ask if f not in TRAIN_ONLY_FAMILIES]
    if unknown:
        raise ValueError(f"also_ask: unknown training-only families {unknown}; known: {list(TRAIN_ONLY_FAMILIES)}")


def words_of(templates: Iterable[str]) -> set[str]:
    """The words (and punctuation marks) of question templates, ``{subject}`` filled with every colour."""
    texts = [t.format(subject=c) for t in templates for c in COLOURS]
    return {w for text in texts for w in re.findall(r"\w+|[^\w\s]", text)}


def world_words() -> list[str]:
    """Every word (and punctuation mark) a clip's question or answer can contain, sorted."""
    return sorted(words_of(QUESTIONS.values()) | words_of(a for values in ANSWERS.values() for a in values))
