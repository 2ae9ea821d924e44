import torch

from videoccam.masks import ccam_mask, ccam_query_frames, ccam_query_self_mask


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
