"""Literal tests of ``videoccam.positions`` (temporal RoPE positions and their decode continuation)."""

from __future__ import annotations

import pytest
import torch

from videoccam.errors import ConfigError
from videoccam.positions import decode_position_ids, decode_step, position_ids

T = -1  # text / padding marker


def meta(frames: list[int], media: list[int] | None = None, real: list[int] | None = None):
    f = torch.tensor([frames])
    m = torch.where(f >= 0, 0, -1) if media is None else torch.tensor([media])
    r = torch.ones_like(f, dtype=torch.bool) if real is None else torch.tensor([real], dtype=torch.bool)
    return f, m, r


# 2.3 worked example of tc-llava.md: 3 text, 3 frames x 4 tokens, 4 text.
EX_FRAMES = [T] * 3 + [0] * 4 + [1] * 4 + [2] * 4 + [T] * 4


def test_worked_example_tc_gamma1_literal():
    pos, delta = position_ids(*meta(EX_FRAMES), mode="tc", gamma=1.0)
    expected = [0, 2, 4, 6, 7, 8, 9, 11, 12, 13, 14, 16, 17, 18, 19, 20, 22, 24, 26]
    assert pos.dtype == torch.float32
    assert pos[0].tolist() == expected
    # first decoded token (cache slot 19) continues at 26 + 2
    assert delta.tolist() == [[-10.0]]
    assert decode_position_ids(torch.tensor([19, 20]), delta, mode="tc", gamma=1.0).tolist() == [[28.0, 30.0]]


def test_worked_example_frame_and_none():
    pos, delta = position_ids(*meta(EX_FRAMES), mode="frame", gamma=1.0)
    assert pos[0].tolist() == [0, 1, 2, 3, 4, 5, 6, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19, 20]
    assert decode_position_ids(torch.tensor([19]), delta, mode="frame", gamma=1.0).tolist() == [[21.0]]
    pos, delta = position_ids(*meta(EX_FRAMES), mode="none", gamma=1.0)
    assert pos.dtype == torch.long and pos[0].tolist() == list(range(19)) and delta.tolist() == [[0]]


def test_fractional_gamma():
    pos, _ = position_ids(*meta([T, 0, 0, 1, T]), mode="tc", gamma=0.5)
    # I_t: 0 1 1 2 2 -> n + 0.5 I_t
    assert pos[0].tolist() == [0.0, 1.5, 2.5, 4.0, 5.0]
    pos, _ = position_ids(*meta([T, 0, 0, 1, T]), mode="frame", gamma=0.5)
    assert pos[0].tolist() == [0.0, 1.0, 2.0, 3.5, 4.5]
    assert decode_step("tc", 0.5) == 1.5
    assert decode_step("frame", 0.5) == 1.0 and decode_step("none", 3) == 1.0


@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0])
def test_text_only(gamma):
    f, m, r = meta([T] * 6)
    pos, _ = position_ids(f, m, r, mode="none", gamma=gamma)
    assert torch.equal(pos, torch.arange(6)[None])
    pos, _ = position_ids(f, m, r, mode="frame", gamma=gamma)
    assert torch.equal(pos, torch.arange(6, dtype=torch.float32)[None])
    pos, _ = position_ids(f, m, r, mode="tc", gamma=gamma)
    assert torch.equal(pos, torch.arange(6, dtype=torch.float32)[None] * (1 + gamma))


def test_gamma_zero_tc_equals_none():
    f, m, r = meta(EX_FRAMES)
    p_tc, d_tc = position_ids(f, m, r, mode="tc", gamma=0.0)
    p_none, d_none = position_ids(f, m, r, mode="none", gamma=0.0)
    assert torch.equal(p_tc, p_none.float()) and torch.equal(d_tc, d_none.float())


def test_image_is_one_block():
    f, m, r = meta([T, T, 0, 0, 0, T, T])
    assert position_ids(f, m, r, mode="tc", gamma=1.0)[0][0].tolist() == [0, 2, 4, 5, 6, 7, 9]
    assert position_ids(f, m, r, mode="frame", gamma=1.0)[0][0].tolist() == [0, 1, 2, 3, 4, 5, 6]


def test_two_images_back_to_back_are_two_blocks():
    # both images are frame 0; media 0 then media 1
    f, m, r = meta([T, 0, 0, 0, 0, T], [T, 0, 0, 1, 1, T])
    # tc: I_t 0 1 1 2 2 2 ; frame: a new media item's first block adds nothing
    assert position_ids(f, m, r, mode="tc", gamma=1.0)[0][0].tolist() == [0, 2, 3, 5, 6, 7]
    assert position_ids(f, m, r, mode="frame", gamma=1.0)[0][0].tolist() == [0, 1, 2, 3, 4, 5]


def test_two_videos_back_to_back():
    # video 0: frames 0,1 ; video 1: frames 0,1 ; one token each
    f, m, r = meta([T, 0, 1, 0, 1, T], [T, 0, 0, 1, 1, T])
    # tc I_t: 0 1 2 3 4 4
    assert position_ids(f, m, r, mode="tc", gamma=1.0)[0][0].tolist() == [0, 2, 4, 6, 8, 9]
    # frame c: 0 0 1 1 2 2
    assert position_ids(f, m, r, mode="frame", gamma=1.0)[0][0].tolist() == [0, 1, 3, 4, 6, 7]


def test_unequal_block_sizes():
    # CCAM Q=5, T=2 -> blocks of 3 and 2
    f, m, r = meta([T, 0, 0, 0, 1, 1, T])
    assert position_ids(f, m, r, mode="tc", gamma=1.0)[0][0].tolist() == [0, 2, 3, 4, 6, 7, 8]
    assert position_ids(f, m, r, mode="frame", gamma=1.0)[0][0].tolist() == [0, 1, 2, 3, 5, 6, 7]


def test_video_first_token():
    f, m, r = meta([0, 0, 1, 1, T, T])
    assert position_ids(f, m, r, mode="tc", gamma=1.0)[0][0].tolist() == [0, 1, 3, 4, 5, 7]


@pytest.mark.parametrize("mode", ["none", "tc", "frame"])
def test_left_padded_batch_equals_unpadded_samples(mode):
    s0 = [T, 0, 0, 1, 1, T]  # 6 real tokens
    s1 = [T, T, 0, 0, 0, 1, 1, 2, T, T]  # 10 real tokens
    f = torch.tensor([[T] * 4 + s0, s1])
    m = torch.where(f >= 0, 0, -1)
    r = torch.tensor([[0] * 4 + [1] * 6, [1] * 10], dtype=torch.bool)
    pos, delta = position_ids(f, m, r, mode=mode, gamma=1.0)
    for b, (s, pad) in enumerate([(s0, 4), (s1, 0)]):
        alone, alone_delta = position_ids(*meta(s), mode=mode, gamma=1.0)
        assert torch.equal(pos[b, pad:], alone[0])
        assert (pos[b, :pad] == 0).all()  # padding slots get 0
        # decode continues identically: padded slot S+i <-> unpadded slot (S-pad)+i
        c = torch.arange(3)
        got = decode_position_ids(10 + c, delta[b : b + 1], mode=mode, gamma=1.0)
        ref = decode_position_ids(len(s) + c, alone_delta, mode=mode, gamma=1.0)
        assert torch.equal(got, ref)
    if mode == "none":
        assert delta.tolist() == [[-4], [0]]


@pytest.mark.parametrize("mode", ["none", "tc", "frame"])
@pytest.mark.parametrize("gamma", [0.0, 0.5, 1.0])
def test_decode_continues_prefill(mode, gamma):
    """Positions of prompt + k generated text tokens, computed as one prefill, equal prefill + decode."""
    k = 4
    prompt = [T] * 4 + [T, T, 0, 0, 1, 1, 2, T, T]  # left-padded by 4, ends with text
    real = [0] * 4 + [1] * 9
    f, m, r = meta(prompt, real=real)
    pos, delta = position_ids(f, m, r, mode=mode, gamma=gamma)
    dec = decode_position_ids(torch.arange(13, 13 + k), delta, mode=mode, gamma=gamma)
    full, _ = position_ids(*meta(prompt + [T] * k, real=real + [1] * k), mode=mode, gamma=gamma)
    assert torch.equal(torch.cat([pos, dec], dim=1), full)
    assert dec.dtype == pos.dtype


def test_right_padding():
    f, m, r = meta([T, 0, 0, T, T, T], real=[1, 1, 1, 1, 0, 0])
    pos, delta = position_ids(f, m, r, mode="tc", gamma=1.0)
    assert pos[0].tolist() == [0, 2, 3, 4, 0, 0]
    # rope_delta is relative to slot S = 6 (cache slots include the right padding)
    assert decode_position_ids(torch.tensor([6]), delta, mode="tc", gamma=1.0).tolist() == [[6.0]]


def test_bad_mode_and_gamma():
    f, m, r = meta([T, T])
    with pytest.raises(ValueError, match="temporal_rope"):
        position_ids(f, m, r, mode="TC", gamma=1.0)
    with pytest.raises(ConfigError, match="rope_gamma"):
        position_ids(f, m, r, mode="tc", gamma=-0.1)
    with pytest.raises(ValueError, match="rope_gamma"):
        decode_step("tc", float("nan"))
    with pytest.raises(ValueError, match="temporal_rope"):
        decode_position_ids(torch.tensor([2]), torch.zeros(1, 1), mode="mrope", gamma=1.0)
    with pytest.raises(ValueError, match="rope_delta"):
        decode_position_ids(torch.tensor([2]), torch.zeros(1), mode="tc", gamma=1.0)


def test_bad_metadata():
    with pytest.raises(ValueError, match="at least one real token"):
        position_ids(*meta([T, T], real=[0, 0]), mode="tc", gamma=1.0)
