"""Literal tests of ``masks.llm_attention_mask`` (TC-LLaVA frame-wise block causal prefill mask) and of the
predicate it is evaluated from (``masks.LLMMaskRule.mask_mod``), which also builds the FlexAttention BlockMask."""

from __future__ import annotations

import pytest
import torch

from videoccam.masks import LLMMaskRule, additive_attention_mask, llm_attention_mask, to_hf_attention_mask

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


# ---------------------------------------------------------------------------------------------
# the rule as a predicate (mask_mod) and the FlexAttention BlockMask built from it
# ---------------------------------------------------------------------------------------------

RULE_CASES = {  # (frame_ids, media_ids, padding_mask [B, S]) -> expected frame-block mask (rows of the dense form)
    "text, video, text": (
        [[T, T, 0, 0, 1, 1, T]], [[T, T, 0, 0, 0, 0, T]], [[1] * 7],
        [["1000000", "1100000", "1111000", "1111000", "1111110", "1111110", "1111111"]],
    ),
    "two videos with the same frame numbers": (
        [[0, 0, 1, 0, 0, 1]], [[0, 0, 0, 1, 1, 1]], [[1] * 6],
        [["110000", "110000", "111000", "111110", "111110", "111111"]],
    ),
    "left padding and right padding in one batch": (
        [[T, T, T, 0, 0, T], [T, 0, 0, T, T, T]], [[T, T, T, 0, 0, T], [T, 0, 0, T, T, T]],
        [[0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]],
        [["100000", "010000", "001000", "001110", "001110", "001111"],
         ["100000", "111000", "111000", "111100", "111110", "111101"]],  # right-padding rows: real keys + self
    ),
}


def _rule(case: str) -> tuple[LLMMaskRule, torch.Tensor]:
    frames, media, real, rows = RULE_CASES[case]
    rule = LLMMaskRule(torch.tensor(frames), torch.tensor(media), torch.tensor(real, dtype=torch.bool),
                       frame_block=True)
    expected = torch.stack([mat(r)[0] for r in rows])  # [B, 1, S, S]
    return rule, expected


@pytest.mark.parametrize("case", RULE_CASES)
def test_mask_mod_on_every_pair_equals_the_literal_dense_mask(case):
    from torch.nn.attention.flex_attention import create_mask

    rule, expected = _rule(case)
    batch, seq_len = rule.shape
    assert torch.equal(rule.dense(), expected)
    assert torch.equal(llm_attention_mask(rule.frame_ids, rule.media_ids, rule.padding_mask, frame_block=True),
                       expected)
    # what FlexAttention evaluates: the predicate at every (b, h, q, k), through vmap
    assert torch.equal(create_mask(rule.mask_mod, batch, 1, seq_len, seq_len, device="cpu"), expected)


@pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")
@pytest.mark.parametrize("case", RULE_CASES)
def test_flex_block_mask_from_the_predicate_equals_the_dense_mask(case):
    """The BlockMask that ``to_hf_attention_mask`` hands ``flex_attention`` is built from the predicate (no
    dense tensor), covers the whole [B, 1, S, S] and attends exactly as SDPA under the dense mask."""
    from torch.nn.attention.flex_attention import BlockMask, create_mask, flex_attention

    rule, expected = _rule(case)
    batch, seq_len = rule.shape
    block = to_hf_attention_mask(rule, attn_implementation="flex_attention", dtype=torch.float32)
    assert isinstance(block, BlockMask) and block.shape == (batch, 1, seq_len, seq_len)
    assert torch.equal(create_mask(block.mask_mod, batch, 1, seq_len, seq_len, device="cpu"), expected)
    q, k, v = torch.randn(3, batch, 2, seq_len, 8, generator=torch.Generator().manual_seed(0))
    flex = flex_attention(q, k, v, block_mask=block)  # [B, H, S, Dh]
    sdpa = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=expected)
    torch.testing.assert_close(flex, sdpa, atol=1e-5, rtol=1e-5)


def test_rule_forms_for_sdpa_and_eager_equal_the_dense_mask():
    rule, expected = _rule("text, video, text")
    assert torch.equal(to_hf_attention_mask(rule, attn_implementation="sdpa", dtype=torch.float32), expected)
    eager = to_hf_attention_mask(rule, attn_implementation="eager", dtype=torch.float32)
    assert torch.equal(eager, additive_attention_mask(expected, torch.float32))


def test_flex_attention_refuses_a_dense_tensor_and_the_rule_validates():
    rule, expected = _rule("text, video, text")
    with pytest.raises(ValueError, match="LLMMaskRule"):
        to_hf_attention_mask(expected, attn_implementation="flex_attention", dtype=torch.float32)
    with pytest.raises(ValueError, match="cannot apply"):
        to_hf_attention_mask(rule, attn_implementation="flash_attention_2", dtype=torch.float32)
    f, m, r = meta([0, T], [0, T], [0, 1])
    with pytest.raises(ValueError, match="padding tokens"):
        LLMMaskRule(f, m, r, frame_block=True)
