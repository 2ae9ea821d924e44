"""Media encoded once: ``visual_embeds=`` in the model, ChatSession, AnswerStreamer.

Tiny models with large weights (``initializer_range=0.3``) so that greedy answers are not one
repeated token and the TC options change them (see test_temporal_options.py).
"""

from __future__ import annotations

import functools

import pytest
import torch

from videoccam.processing.video_synth import write_test_video
from videoccam.testing import make_tiny_model

VIDEO_KW = {"num_frames": 6}
GREEDY = {"max_new_tokens": 8, "min_new_tokens": 8, "do_sample": False}
Q1 = "what happens in the video ?"
# (frame_block_mask, temporal_rope, rope_gamma)
OPTIONS = [(False, "none", 1.0), (True, "tc", 1.0), (False, "frame", 0.5)]


@functools.cache
def strong_model(fb: bool = False, mode: str = "none", gamma: float = 1.0):
    """Shared read-only models (never mutate them; hooks are removed after use)."""
    return make_tiny_model(frame_block_mask=fb, temporal_rope=mode, rope_gamma=gamma,
                           text_config={"initializer_range": 0.3}, projector_config={"initializer_range": 0.3})


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return write_test_video(tmp_path_factory.mktemp("session") / "clip.mp4", num_frames=24, fps=8)


def video_message(text: str) -> list[dict]:
    return [{"role": "user", "content": f"<video>\n{text}"}]


@pytest.mark.parametrize(("fb", "mode", "gamma"), OPTIONS)
def test_generate_with_visual_embeds_equals_pixel_values(clip, fb, mode, gamma):
    """Precomputed projector output in place of the frames: same tokens, cached and recomputed decoding."""
    model, proc = strong_model(fb, mode, gamma)
    inputs = proc(video_message(Q1), [clip], video_kwargs=VIDEO_KW)
    text = proc(video_message(Q1), None, text_only=True)
    assert torch.equal(text["input_ids"], inputs["input_ids"]) and "pixel_values" not in text
    visual = model.get_visual_embeds(inputs["pixel_values"], inputs["frame_counts"])
    ref = model.generate(**inputs, **GREEDY)
    for use_cache in (True, False):
        out = model.generate(**text, visual_embeds=visual, use_cache=use_cache, **GREEDY)
        assert torch.equal(out, ref), use_cache


def test_visual_embeds_and_pixel_values_together_are_refused(clip):
    model, proc = strong_model()
    inputs = proc(video_message(Q1), [clip], video_kwargs=VIDEO_KW)
    visual = model.get_visual_embeds(inputs["pixel_values"], inputs["frame_counts"])
    with pytest.raises(ValueError, match="not both"):
        model(**inputs, visual_embeds=visual)
    with pytest.raises(ValueError, match="media=None"):
        proc(video_message(Q1), [clip], text_only=True)
