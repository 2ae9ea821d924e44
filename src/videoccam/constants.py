"""Values the whole library shares, each defined here and nowhere else.

This module imports nothing from videoccam, so any module (the synthetic world, the test helpers,
the processor, the training data) may import it without a cycle.
"""

from __future__ import annotations

from typing import Literal, get_args

IMAGE_TOKEN = "<image>"  # the placeholder of one image in a prompt; the processor expands it to Q tokens
VIDEO_TOKEN = "<video>"  # the placeholder of one video (T frames) in a prompt, expanded to Q tokens
PLACEHOLDER_TOKENS: tuple[str, str] = (IMAGE_TOKEN, VIDEO_TOKEN)

DEFAULT_NUM_FRAMES = 16  # frames sampled per video when neither the caller nor the model says otherwise

TemporalRope = Literal["none", "tc", "frame"]  # positions of visual tokens: see videoccam.positions
TEMPORAL_ROPE_MODES: tuple[str, ...] = get_args(TemporalRope)
