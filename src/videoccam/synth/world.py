"""The synthetic world: coloured shapes on a dark-grey background, on a clock of beats.

A clip is ``num_beats`` beats of ``frames_per_beat`` identical frames (defaults: 16 beats of 4
frames, 64 frames at 8 fps, 64x64 px). Everything that happens, happens on a beat: a sprite has one
position (or none: absent) per beat, so a flash lasts exactly one beat and a motion takes one step
per beat. Video-CCAM's uniform sampler at 16 frames takes the midpoint of each 4-frame segment, and
its random sampler one frame of each segment, so both see every beat exactly once; 32 and 64
frames see every beat 2 and 4 times.

Because frames within a beat are identical, reversing the beats is exact time reversal:
``clip.reversed().render()`` equals ``clip.render()[::-1]``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

# Six colours far apart in RGB and in chroma, so they stay distinct after H.264 yuv420p (chroma at
# half resolution) and after resizing a frame to 32x32. Names are the answer words.
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (225, 35, 35),
    "green": (40, 190, 50),
    "blue": (45, 85, 245),
    "yellow": (240, 220, 30),
    "purple": (170, 50, 220),
    "white": (240, 240, 240),
}
COLOURS: tuple[str, ...] = tuple(PALETTE)
BACKGROUND: tuple[int, int, int] = (48, 48, 48)
SHAPES: tuple[str, ...] = ("square", "disc")

GRID = 3  # objects are placed in distinct cells of a GRID x GRID layout, so they never overlap


@dataclass(frozen=True)
class WorldConfig:
    """Size and clock of the clips.

    Attributes:
        size: Frame side in pixels (square frames, even for yuv420p).
        num_beats: Beats per clip; every event lasts one beat.
        frames_per_beat: Identical frames per beat.
        fps: Frame rate of the written mp4.
    """

    size: int = 64
    num_beats: int = 16
    frames_per_beat: int = 4
    fps: float = 8.0

    def __post_init__(self) -> None:
        if self.size < 24 or self.size % 2:
            raise ValueError(f"size must be an even number >= 24, got {self.size}")
        if self.num_beats < 4:
            raise ValueError(f"num_beats must be >= 4, got {self.num_beats}")
        if self.frames_per_beat < 1:
            raise ValueError(f"frames_per_beat must be >= 1, got {self.frames_per_beat}")
        if not self.fps > 0:
            raise ValueError(f"fps must be > 0, got {self.fps}")

    @classmethod
    def from_frames(cls, size: int = 64, num_frames: int = 64, num_beats: int = 16,
                    fps: float = 8.0) -> WorldConfig:
        """Config with ``num_frames`` frames in ``num_beats`` beats (``num_frames`` must be a multiple)."""
        if num_frames % num_beats:
            raise ValueError(f"num_frames ({num_frames}) must be a multiple of num_beats ({num_beats})")
        return cls(size=size, num_beats=num_beats, frames_per_beat=num_frames // num_beats, fps=fps)

    @property
    def num_frames(self) -> int:
        return self.num_beats * self.frames_per_beat

    @property
    def cell(self) -> int:
        """Side of one layout cell in pixels."""
        return self.size // GRID

    @property
    def object_sizes(self) -> tuple[int, int]:
        """Smallest and largest object side in pixels (12 and 16 at 64 px)."""
        return max(4, round(12 * self.size / 64)), min(self.cell, round(16 * self.size / 64))

    def beat_of_frame(self, frame: int | np.ndarray) -> int | np.ndarray:
        """The beat that frame index ``frame`` belongs to."""
        return frame // self.frames_per_beat


Position = tuple[int, int] | None  # top-left (x, y) in pixels, or None when the sprite is absent


@dataclass(frozen=True)
class Sprite:
    """One coloured shape with one position per beat.

    Attributes:
        colour: A name from :data:`PALETTE`.
        shape: ``"square"`` or ``"disc"``.
        size: Side (or diameter) in pixels.
        positions: Per beat, the top-left ``(x, y)`` or ``None`` (absent on that beat).
    """

    colour: str
    shape: str
    size: int
    positions: tuple[Position, ...]

    def __post_init__(self) -> None:
        if self.colour not in PALETTE:
            raise ValueError(f"unknown colour {self.colour!r}; palette: {COLOURS}")
        if self.shape not in SHAPES:
            raise ValueError(f"unknown shape {self.shape!r}; shapes: {SHAPES}")

    @property
    def visible_beats(self) -> list[int]:
        return [b for b, p in enumerate(self.positions) if p is not None]

    def reversed(self) -> Sprite:
        return Sprite(self.colour, self.shape, self.size, self.positions[::-1])

    def mask(self) -> np.ndarray:
        """``bool[size, size]``: the pixels of the shape inside its bounding box."""
        if self.shape == "square":
            return np.ones((self.size, self.size), dtype=bool)
        centre = (self.size - 1) / 2
        yy, xx = np.mgrid[: self.size, : self.size]  # [s, s] each
        return (yy - centre) ** 2 + (xx - centre) ** 2 <= (self.size / 2) ** 2


@dataclass(frozen=True)
class Clip:
    """A scene: sprites on the background, on the config's beat clock."""

    sprites: tuple[Sprite, ...]
    config: WorldConfig = field(default_factory=WorldConfig)

    def __post_init__(self) -> None:
        cfg = self.config
        colours = [s.colour for s in self.sprites]
        if len(set(colours)) != len(colours):
            raise ValueError(f"every sprite of a clip needs its own colour, got {colours}")
        for sprite in self.sprites:
            if len(sprite.positions) != cfg.num_beats:
                raise ValueError(f"{sprite.colour} sprite has {len(sprite.positions)} positions for "
                                 f"{cfg.num_beats} beats")
            for pos in sprite.positions:
                if pos is not None and not (0 <= pos[0] <= cfg.size - sprite.size
                                            and 0 <= pos[1] <= cfg.size - sprite.size):
                    raise ValueError(f"{sprite.colour} sprite at {pos} leaves the {cfg.size}px frame")

    def reversed(self) -> Clip:
        """The same clip played backwards (exact: frames within a beat are identical)."""
        return Clip(tuple(s.reversed() for s in self.sprites), self.config)

    def reordered(self, beats: Sequence[int]) -> Clip:
        """The clip whose beat ``k`` is this clip's beat ``beats[k]`` (a permutation of the beats).

        Every reordering shows the same multiset of frames, which is why a model that sees frames
        as an unordered set cannot answer the order-dependent questions.
        """
        order = [int(b) for b in beats]
        if sorted(order) != list(range(self.config.num_beats)):
            raise ValueError(f"beats must be a permutation of range({self.config.num_beats}), got {order}")
        sprites = tuple(
            Sprite(s.colour, s.shape, s.size, tuple(s.positions[b] for b in order)) for s in self.sprites
        )
        return Clip(sprites, self.config)

    def sprite(self, colour: str) -> Sprite:
        for sprite in self.sprites:
            if sprite.colour == colour:
                return sprite
        raise KeyError(colour)

    def render_beats(self) -> np.ndarray:
        """``uint8[num_beats, size, size, 3]``: one RGB frame per beat."""
        cfg = self.config
        beats = np.empty((cfg.num_beats, cfg.size, cfg.size, 3), dtype=np.uint8)
        beats[:] = BACKGROUND
        for sprite in self.sprites:
            mask = sprite.mask()  # [s, s]
            colour = np.array(PALETTE[sprite.colour], dtype=np.uint8)
            for beat, pos in enumerate(sprite.positions):
                if pos is None:
                    continue
                x, y = pos
                beats[beat, y : y + sprite.size, x : x + sprite.size][mask] = colour
        return beats

    def render(self) -> np.ndarray:
        """``uint8[num_frames, size, size, 3]``: every beat repeated ``frames_per_beat`` times."""
        return np.repeat(self.render_beats(), self.config.frames_per_beat, axis=0)  # [T, H, W, 3]


# ---------------------------------------------------------------------------------------- layout
class Layout:
    """Draws non-overlapping places for the objects of one clip from a ``GRID x GRID`` cell grid.

    Every object gets its own cell (or, for a horizontal mover, a whole row; for a falling object, a
    whole column), so objects never overlap, whether or not they are visible at the same time.
    """

    def __init__(self, rng: np.random.Generator, config: WorldConfig) -> None:
        self.rng = rng
        self.config = config
        self.free = np.ones((GRID, GRID), dtype=bool)  # [row, col]

    def object_size(self) -> int:
        low, high = self.config.object_sizes
        return int(self.rng.integers(low, high + 1))

    def shape(self) -> str:
        return SHAPES[int(self.rng.integers(len(SHAPES)))]

    def _jitter(self, index: int, size: int) -> int:
        cell = self.config.cell
        return index * cell + int(self.rng.integers(0, cell - size + 1))

    def cell(self, size: int) -> tuple[int, int]:
        """Top-left ``(x, y)`` inside a random free cell, which is taken."""
        free = np.argwhere(self.free)  # [n, 2] (row, col)
        if len(free) == 0:
            raise RuntimeError("the layout has no free cell left")
        row, col = free[int(self.rng.integers(len(free)))]
        self.free[row, col] = False
        return self._jitter(int(col), size), self._jitter(int(row), size)

    def row(self, size: int) -> int:
        """y of a random completely free row, which is taken; objects may travel along it."""
        rows = np.flatnonzero(self.free.all(axis=1))
        if len(rows) == 0:
            raise RuntimeError("the layout has no free row left")
        row = int(rows[int(self.rng.integers(len(rows)))])
        self.free[row, :] = False
        return self._jitter(row, size)

    def column(self, size: int) -> int:
        """x of a random completely free column, which is taken; objects may travel along it."""
        cols = np.flatnonzero(self.free.all(axis=0))
        if len(cols) == 0:
            raise RuntimeError("the layout has no free column left")
        col = int(cols[int(self.rng.integers(len(cols)))])
        self.free[:, col] = False
        return self._jitter(col, size)

    # Sprites -----------------------------------------------------------------------------------
    def static(self, colour: str) -> Sprite:
        """A sprite present at one place for the whole clip."""
        size = self.object_size()
        pos = self.cell(size)
        return Sprite(colour, self.shape(), size, (pos,) * self.config.num_beats)

    def flash(self, colour: str, beat: int) -> Sprite:
        """A sprite visible on ``beat`` only."""
        size = self.object_size()
        pos = self.cell(size)
        positions: list[Position] = [None] * self.config.num_beats
        positions[beat] = pos
        return Sprite(colour, self.shape(), size, tuple(positions))

    def mover(self, colour: str, rightwards: bool) -> Sprite:
        """A sprite crossing the frame horizontally at constant speed, one step per beat.

        The travelled span is drawn independently of the direction and leftward motion is the
        rightward path reversed, so the set of positions says nothing about the direction.
        """
        cfg = self.config
        size = self.object_size()
        y = self.row(size)
        room = cfg.size - size
        distance = int(self.rng.integers(cfg.size // 2, room + 1))
        start = int(self.rng.integers(0, room - distance + 1))
        xs = start + np.rint(distance * np.arange(cfg.num_beats) / (cfg.num_beats - 1)).astype(int)  # [B]
        if not rightwards:
            xs = xs[::-1]
        return Sprite(colour, self.shape(), size, tuple((int(x), y) for x in xs))

    def faller(self, colour: str) -> Sprite:
        """A sprite at rest near the top that is released on a random beat and falls, accelerating
        (``y`` grows with the square of time), onto the bottom edge, where it stays."""
        cfg = self.config
        size = self.object_size()
        x = self.column(size)
        floor = cfg.size - size
        top = int(self.rng.integers(0, cfg.size // 6 + 1))
        longest = min(max(4, cfg.num_beats // 2), cfg.num_beats - 1)  # lands by the last beat
        duration = int(self.rng.integers(min(max(3, cfg.num_beats // 4), longest), longest + 1))
        release = int(self.rng.integers(0, cfg.num_beats - duration))
        t = np.clip(np.arange(cfg.num_beats) - release, 0, duration) / duration  # [B], 0 -> 1
        ys = top + np.rint((floor - top) * t**2).astype(int)  # [B]
        return Sprite(colour, self.shape(), size, tuple((x, int(y)) for y in ys))


def pick_colours(rng: np.random.Generator, count: int, exclude: Sequence[str] = ()) -> list[str]:
    """``count`` distinct random colours not in ``exclude``."""
    pool = [c for c in COLOURS if c not in exclude]
    if count > len(pool):
        raise ValueError(f"cannot pick {count} colours from {len(pool)}")
    return [pool[i] for i in rng.permutation(len(pool))[:count]]
