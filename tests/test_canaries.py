"""Pinned numbers of seeded models: an upgrade of transformers or torch that changes them fails here.

The values were computed with transformers 5.20.0 and 5.25.0 (identical on both) and torch 2.13.0
on CPU. They are not "right" in any other sense: a failure says the numerics drifted, and the
release notes of whatever was upgraded say whether the new numbers should be re-pinned.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoModelForImageTextToText, AutoProcessor

from videoccam.assets import default_model_path
from videoccam.testing import make_tiny_model

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

# family: (logit mean, logit std, last position's first 4 logits, 8 greedy tokens)
TINY = {
    "qwen2": (0.002428, 0.158644, [-0.145086, 0.166647, -0.091378, 0.181006], [158, 24, 267, 22, 155, 24, 267, 22]),
    "llama": (-0.002450, 0.160893, [0.153351, -0.040467, -0.017766, -0.219664],
              [154, 95, 251, 106, 130, 315, 131, 18]),
    "phi3": (-0.001792, 0.160289, [0.094360, 0.048039, -0.027871, 0.010577], [259, 197, 176, 216, 181, 176, 216, 186]),
}


@pytest.mark.parametrize("family", sorted(TINY))
def test_tiny_model_with_both_tc_options_gives_the_pinned_logits_and_tokens(family):
    mean, std, first4, tokens = TINY[family]
    model, proc = make_tiny_model(family, seed=0, frame_block_mask=True, temporal_rope="tc")
    model.eval()
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for _ in range(4)]
    inputs = proc([[{"role": "user", "content": "<video>\nyes no"}]], [[frames]])
    with torch.no_grad():
        logits = model(**inputs, use_cache=False).logits  # [1, S, V]
        out = model.generate(**inputs, max_new_tokens=8, do_sample=False)  # [1, S + 8]
    assert logits.mean().item() == pytest.approx(mean, abs=2e-6)
    assert logits.std().item() == pytest.approx(std, abs=2e-6)
    assert logits[0, -1, :4].tolist() == pytest.approx(first4, abs=2e-5)
    assert out[0, inputs["input_ids"].shape[1]:].tolist() == tokens


def test_bundled_model_gives_the_pinned_logits_on_the_example_clip():
    path = default_model_path()
    model = AutoModelForImageTextToText.from_pretrained(path).eval()
    proc = AutoProcessor.from_pretrained(path)
    inputs = proc([[{"role": "user", "content": "<video>\nwhich colour flashed first ?"}]],
                  [[str(EXAMPLES / "first.mp4")]], video_kwargs={"num_frames": 16})
    with torch.no_grad():
        last = model(**inputs, use_cache=False).logits[0, -1]  # [V]
    top = last.topk(3)
    assert last.mean().item() == pytest.approx(-0.831281, abs=1e-5)
    assert last.std().item() == pytest.approx(2.419810, abs=1e-5)
    assert top.indices.tolist() == [23, 13, 35]
    assert top.values.tolist() == pytest.approx([12.8638, 3.6233, 3.2433], abs=2e-4)
