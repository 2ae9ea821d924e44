import torch

from videoccam.masks import (
    ccam_mask,
    ccam_query_frames,
    ccam_query_self_mask,
    projector_key_mask,
    projector_self_mask,
)


def _m(rows):
    return torch.tensor(rows, dtype=torch.bool)


def test_q8_t4():
    assert torch.equal(ccam_mask(8, 4), _m([
        [1, 0, 0, 0], [1, 0, 0, 0], [1, 1, 0, 0], [1, 1, 0, 0],
        [1, 1, 1, 0], [1, 1, 1, 0], [1, 1, 1, 1], [1, 1, 1, 1],
    ]))


def test_q8_t3_uneven_blocks():
    assert ccam_query_frames(8, 3).tolist() == [0, 0, 0, 1, 1, 1, 2, 2]
    assert torch.equal(ccam_mask(8, 3), _m([
        [1, 0, 0], [1, 0, 0], [1, 0, 0], [1, 1, 0], [1, 1, 0], [1, 1, 0], [1, 1, 1], [1, 1, 1],
    ]))


def test_q4_t8_more_frames_than_queries():
    assert ccam_query_frames(4, 8).tolist() == [0, 2, 4, 6]
    assert torch.equal(ccam_mask(4, 8), _m([
        [1, 0, 0, 0, 0, 0, 0, 0],
        [1, 1, 1, 0, 0, 0, 0, 0],
        [1, 1, 1, 1, 1, 0, 0, 0],
        [1, 1, 1, 1, 1, 1, 1, 0],
    ]))


def test_image_sees_everything():
    assert torch.equal(ccam_mask(5, 1), torch.ones(5, 1, dtype=torch.bool))
    assert ccam_query_frames(5, 1).tolist() == [0] * 5


def test_released_config_blocks_of_64_at_16_frames():
    g = ccam_query_frames(1024, 16)
    assert torch.equal(g, torch.arange(16).repeat_interleave(64))
    g96 = ccam_query_frames(1024, 96)
    sizes = torch.unique_consecutive(g96, return_counts=True)[1]
    assert len(sizes) == 96 and set(sizes.tolist()) == {10, 11}


def test_query_self_mask():
    assert torch.equal(ccam_query_self_mask(4, 2), _m([
        [1, 1, 0, 0], [1, 1, 0, 0], [1, 1, 1, 1], [1, 1, 1, 1],
    ]))
    assert torch.equal(ccam_query_self_mask(3, 1), torch.ones(3, 3, dtype=torch.bool))


def test_projector_key_mask_q4_counts_2_3_p2_padded():
    """Q=4 queries, items of 2 and 3 frames, P=2 tokens per frame, padded to T_max*P = 6 keys."""
    mask = projector_key_mask(4, [2, 3], 2)
    assert mask.shape == (2, 1, 4, 6) and mask.dtype == torch.bool
    assert torch.equal(mask[:, 0], _m([
        [[1, 1, 0, 0, 0, 0],  # item 0 (T=2): g = 0 0 1 1; frame 2 is padding
         [1, 1, 0, 0, 0, 0],
         [1, 1, 1, 1, 0, 0],
         [1, 1, 1, 1, 0, 0]],
        [[1, 1, 0, 0, 0, 0],  # item 1 (T=3): g = 0 0 1 2
         [1, 1, 0, 0, 0, 0],
         [1, 1, 1, 1, 0, 0],
         [1, 1, 1, 1, 1, 1]],
    ]))


def test_projector_key_mask_plain_cross_attention_masks_padding_only():
    mask = projector_key_mask(4, [2, 3], 2, causal=False)
    assert torch.equal(mask[:, 0], _m([[[1, 1, 1, 1, 0, 0]] * 4, [[1, 1, 1, 1, 1, 1]] * 4]))


def test_projector_key_mask_equals_ccam_mask_per_item():
    counts, q, p = [1, 4, 7], 5, 3
    mask = projector_key_mask(q, counts, p)  # [M, 1, Q, T_max*P]
    for m, t in enumerate(counts):
        assert torch.equal(mask[m, 0, :, : t * p], ccam_mask(q, t).repeat_interleave(p, dim=1))
        assert not mask[m, 0, :, t * p:].any()


def test_projector_self_mask_stacks_items():
    mask = projector_self_mask(4, [2, 1])
    assert mask.shape == (2, 1, 4, 4)
    assert torch.equal(mask[:, 0], _m([
        [[1, 1, 0, 0], [1, 1, 0, 0], [1, 1, 1, 1], [1, 1, 1, 1]],
        [[1, 1, 1, 1]] * 4,
    ]))
