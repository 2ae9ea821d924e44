"""Literal tests of ``masks.llm_attention_mask`` (TC-LLaVA frame-wise block causal prefill mask)."""

from __future__ import annotations

import pytest
import torch

from videoccam.masks import additive_attention_mask, llm_attention_mask, to_hf_attention_mask

T = -1  # text / padding marker in the metadata


def meta(frames: list[int], media: list[int], real: list[int] | None = None):
    """Build ``[1, S]`` metadata tensors from literal lists."""
    f = torch.tensor([frames])
    m = torch.tensor([media])
    r = torch.ones_like(f, dtype=torch.bool) if real is None else torch.tensor([real], dtype=torch.bool)
    return f, m, r


def mat(rows: list[str]) -> torch.Tensor:
    """``["100", "110"]`` -> ``BoolTensor[1, 1, S, S]``."""
    return torch.tensor([[int(c) for c in r] for r in rows], dtype=torch.bool)[None, None]


def causal(s: int) -> torch.Tensor:
    return torch.ones(s, s, dtype=torch.bool).tril()[None, None]


def test_text_only_is_causal_with_and_without_blocks():
    f, m, r = meta([T] * 5, [T] * 5)
    for fb in (False, True):
        out = llm_attention_mask(f, m, r, frame_block=fb)
        assert out.dtype == torch.bool and out.shape == (1, 1, 5, 5)
        assert torch.equal(out, causal(5))


def test_text_video_text_literal():
    # t0 t1 | frame a (2 tokens) | frame b (2 tokens) | t2  -- the docstring example
    f, m, r = meta([T, T, 0, 0, 1, 1, T], [T, T, 0, 0, 0, 0, T])
    expected = mat(
        [
            "1000000",
            "1100000",
            "1111000",
            "1111000",
            "1111110",
            "1111110",
            "1111111",
        ]
    )
    assert torch.equal(llm_attention_mask(f, m, r, frame_block=True), expected)
    assert torch.equal(llm_attention_mask(f, m, r, frame_block=False), causal(7))


def test_image_is_one_block():
    f, m, r = meta([T, 0, 0, 0, T], [T, 0, 0, 0, T])
    expected = mat(["10000", "11110", "11110", "11110", "11111"])
    assert torch.equal(llm_attention_mask(f, m, r, frame_block=True), expected)


def test_two_images_back_to_back_do_not_share_a_block():
    # Both images have frame 0, but different media ordinals.
    f, m, r = meta([0, 0, 0, 0, T], [0, 0, 1, 1, T])
    expected = mat(["11000", "11000", "11110", "11110", "11111"])
    assert torch.equal(llm_attention_mask(f, m, r, frame_block=True), expected)


def test_two_videos_back_to_back_do_not_share_a_block():
    # video 0: frames 0,1 (1 token each) ; video 1: frames 0,1 (1 token each); same frame numbers.
    f, m, r = meta([0, 0, 1, 0, 0, 1], [0, 0, 0, 1, 1, 1])
    expected = mat(["110000", "110000", "111000", "111110", "111110", "111111"])
    assert torch.equal(llm_attention_mask(f, m, r, frame_block=True), expected)


def test_unequal_block_sizes():
    # CCAM with Q=5, T=2: blocks of 3 and 2 tokens.
    f, m, r = meta([T, 0, 0, 0, 1, 1], [T, 0, 0, 0, 0, 0])
    expected = mat(["100000", "111100", "111100", "111100", "111111", "111111"])
    assert torch.equal(llm_attention_mask(f, m, r, frame_block=True), expected)


def test_left_padded_batch():
    # sample 0: 2 pads + [t, a, a, t]; sample 1: unpadded [t, t, a, a, t, t]
    f = torch.tensor([[T, T, T, 0, 0, T], [T, T, 0, 0, T, T]])
    m = torch.tensor([[T, T, T, 0, 0, T], [T, T, 0, 0, T, T]])
    r = torch.tensor([[0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]], dtype=torch.bool)
    out = llm_attention_mask(f, m, r, frame_block=True)
    expected0 = mat(["100000", "010000", "001000", "001110", "001110", "001111"])[0]
    expected1 = mat(["100000", "110000", "111100", "111100", "111110", "111111"])[0]
    assert torch.equal(out[0], expected0)
    assert torch.equal(out[1], expected1)
    # Real part of the padded sample == mask of the unpadded sample alone.
    alone = llm_attention_mask(f[:1, 2:], m[:1, 2:], r[:1, 2:], frame_block=True)
    assert torch.equal(out[0, :, 2:, 2:], alone[0])
    # Padding keys never seen by real queries; no all-False row.
    assert not out[0, 0, 2:, :2].any()
    assert out.any(dim=-1).all()
    # SDPA on it gives no NaN.
    q = torch.randn(2, 1, 6, 4)
    y = torch.nn.functional.scaled_dot_product_attention(q, q, q, attn_mask=out)
    assert torch.isfinite(y).all()


def test_right_padding_and_integer_padding_mask():
    f, m, _ = meta([T, 0, 0, T, T], [T, 0, 0, T, T])
    r = torch.tensor([[1, 1, 1, 0, 0]])  # HF-style long mask
    out = llm_attention_mask(f, m, r, frame_block=True)
    expected = mat(["10000", "11100", "11100", "11110", "11101"])
    assert torch.equal(out, expected)


def test_frame_block_false_equals_hf_style_causal_and_padding():
    f = torch.tensor([[T, T, 0, 0, 1, T], [T, 0, 0, 1, 1, T]])
    m = torch.where(f >= 0, 0, -1)
    r = torch.tensor([[0, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]], dtype=torch.bool)
    out = llm_attention_mask(f, m, r, frame_block=False)
    ref = causal(6) & r[:, None, None, :]
    ref = ref | torch.eye(6, dtype=torch.bool)
    assert torch.equal(out, ref)


def test_additive_mask():
    mask = mat(["10", "11"])
    add = additive_attention_mask(mask, torch.float32)
    assert add.dtype == torch.float32
    assert add[0, 0, 0, 0] == 0 and add[0, 0, 0, 1] == torch.finfo(torch.float32).min
    assert torch.equal(add == 0, mask)
    with pytest.raises(ValueError):
        additive_attention_mask(add, torch.float32)
    with pytest.raises(ValueError):
        additive_attention_mask(mask, torch.long)


def test_to_hf_attention_mask_forms():
    mask = mat(["10", "11"])
    assert to_hf_attention_mask(mask, attn_implementation="sdpa", dtype=torch.float16) is mask
    eager = to_hf_attention_mask(mask, attn_implementation="eager", dtype=torch.float16)
    assert eager.dtype == torch.float16 and torch.equal(eager == 0, mask)
    for impl in ("flash_attention_2", "flash_attention_3", "paged|sdpa"):
        with pytest.raises(ValueError, match="cannot apply"):
            to_hf_attention_mask(mask, attn_implementation=impl, dtype=torch.float16)


@pytest.mark.parametrize(
    "frames, media, real, match",
    [
        ([0, T], [T, T], [1, 1], "both be -1"),
        ([T, T], [T, T], [0, 0], "at least one real token"),
        ([0, T], [0, T], [0, 1], "padding tokens"),
        ([-2, T], [0, T], [1, 1], "must be -1"),
    ],
)
def test_bad_metadata_raises(frames, media, real, match):
    f, m, r = meta(frames, media, real)
    with pytest.raises(ValueError, match=match):
        llm_attention_mask(f, m, r, frame_block=True)


def test_bad_shapes_raise():
    f = torch.full((2, 3), T)
    with pytest.raises(ValueError, match="share the shape"):
        llm_attention_mask(f, f, torch.ones(2, 4, dtype=torch.bool), frame_block=True)
    with pytest.raises(ValueError, match=r"\[B, S\]"):
        llm_attention_mask(f[0], f[0], torch.ones(3, dtype=torch.bool), frame_block=True)
    with pytest.raises(ValueError, match="integer"):
        llm_attention_mask(f.float(), f, torch.ones(2, 3, dtype=torch.bool), frame_block=True)
