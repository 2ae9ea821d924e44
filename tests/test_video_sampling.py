"""Frame sampling rules, against literal index lists and Video-CCAM's own formulas."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from videoccam.errors import SamplingError
from videoccam.processing.video_sampling import linspace_int, sample_indices


def indices(total: int, src_fps: float = 30.0, **kwargs) -> list[int]:
    return sample_indices(total, src_fps=src_fps, **kwargs).tolist()


def video_ccam_uniform(num_frames: int, total: int) -> list[int]:
    """Video-CCAM eval/utils.uniform_indices, verbatim in behaviour (torch linspace, int cast)."""
    if num_frames < total:
        splits = torch.linspace(0, total, num_frames + 1, dtype=int)
        return ((splits[:-1] + splits[1:]) // 2).tolist()
    return list(range(total))


def midpoint_formula(num_frames: int, total: int) -> list[int]:
    seg = total / num_frames
    return [int(seg * i + seg / 2) for i in range(num_frames)]


@pytest.mark.parametrize(
    ("total", "num_frames", "expected"),
    [
        (100, 8, [6, 18, 31, 43, 56, 68, 81, 93]),
        (10, 4, [1, 3, 6, 8]),
        (16, 4, [2, 6, 10, 14]),
        (9, 8, [0, 1, 2, 3, 4, 5, 6, 8]),  # the midpoint formula gives [0, 1, 2, 3, 5, 6, 7, 8]
        (8, 8, list(range(8))),  # not fewer frames than wanted: all of them
        (5, 8, [0, 1, 2, 3, 4]),  # fewer frames than wanted: all of them, T = 5
        (1, 16, [0]),
        (7, 1, [3]),
    ],
)
def test_uniform_literal(total, num_frames, expected):
    assert indices(total, num_frames=num_frames, sample="uniform") == expected
    assert video_ccam_uniform(num_frames, total) == expected


def test_uniform_matches_midpoint_formula_where_boundaries_are_integers():
    # When total is a multiple of num_frames the boundaries are exact and both conventions agree.
    for total, num_frames in [(100, 10), (96, 16), (300, 12), (64, 64 // 4)]:
        assert indices(total, num_frames=num_frames, sample="uniform") == midpoint_formula(num_frames, total)


def test_uniform_is_within_one_of_midpoint_formula_and_equals_torch_reference():
    differing = 0
    for total in range(2, 700, 7):
        for num_frames in (1, 2, 3, 7, 16, 32, 96, 128):
            ours = indices(total, num_frames=num_frames, sample="uniform")
            assert ours == video_ccam_uniform(num_frames, total), (total, num_frames)
            if num_frames < total:
                gap = np.array(midpoint_formula(num_frames, total)) - np.array(ours)
                assert set(gap.tolist()) <= {0, 1}
                differing += bool(gap.any())
    assert differing > 0  # the two conventions really differ; we follow Video-CCAM's


def test_linspace_int_reproduces_torch_float_quirk():
    # torch gives 54 for point 50 of linspace(0, 110, 101) (exact arithmetic: 55).
    assert linspace_int(0, 110, 101)[50] == 54
    for start, end, steps in [(0, 110, 101), (3, 2999, 129), (17, 18000, 97), (5, 6, 2), (0, 1000, 513)]:
        expected = torch.linspace(start, end, steps, dtype=torch.int64).numpy()
        np.testing.assert_array_equal(linspace_int(start, end, steps), expected)


def test_uniform_with_bounds():
    # [1 s, 3 s) at 30 fps is frames [30, 90).
    assert indices(300, num_frames=8, sample="uniform", start=1, end=3) == [33, 41, 48, 56, 63, 71, 78, 86]
    # An end past the clip is clipped to it: [270, 300).
    assert indices(300, num_frames=4, sample="uniform", start=9, end=100) == [273, 281, 288, 296]
    # Only a start, or only an end.
    assert indices(300, num_frames=2, sample="uniform", start=5) == [187, 262]
    assert indices(300, num_frames=2, sample="uniform", end=1) == [7, 22]
    # A window shorter than one frame still yields its first frame.
    assert indices(300, num_frames=4, sample="uniform", start=1.0, end=1.01) == [30]


def test_fps_without_cap():
    assert indices(300, num_frames=1, sample="fps", fps=1) == list(range(0, 300, 30))
    # Step 30/7 = 4.2857..., rounded half to even.
    assert indices(300, num_frames=1, sample="fps", fps=7)[:8] == [0, 4, 9, 13, 17, 21, 26, 30]
    # At or above the source rate: every frame once.
    assert indices(50, num_frames=1, sample="fps", fps=60) == list(range(50))
    # Within bounds: from the first frame of the range.
    assert indices(300, num_frames=1, sample="fps", fps=1, start=2.5, end=6) == [75, 105, 135, 165]


@pytest.mark.parametrize("fps", [1e-300, 5e-324, 1e-9, 0.01])
def test_fps_below_one_frame_per_clip_keeps_the_first_frame(fps):
    # 30 / 5e-324 overflows to inf: the step count was 0 and the video came back empty.
    assert indices(300, num_frames=1, sample="fps", fps=fps) == [0]
    assert indices(300, num_frames=1, sample="fps", fps=fps, start=2.5, end=6) == [75]


@pytest.mark.parametrize("fps", [0, -2.0, float("nan"), float("inf"), -float("inf")])
def test_fps_must_be_finite_and_positive(fps):
    with pytest.raises(SamplingError, match="fps"):
        sample_indices(300, num_frames=1, sample="fps", src_fps=30, fps=fps)


def test_a_rule_that_selects_nothing_is_an_error(monkeypatch):
    import videoccam.processing.video_sampling as sampling

    monkeypatch.setattr(sampling, "uniform_in_range", lambda first, stop, n: np.empty(0, dtype=np.int64))
    with pytest.raises(SamplingError, match="no frames"):
        sample_indices(300, num_frames=4, sample="uniform", src_fps=30)


def test_fps_with_cap_resamples_uniformly_instead_of_truncating():
    capped = indices(300, num_frames=1, sample="fps", fps=2, max_frames=8)  # 20 frames at 2 fps > 8
    assert capped == [18, 56, 93, 131, 168, 206, 243, 281] == indices(300, num_frames=8, sample="uniform")
    assert capped[-1] > 240  # spans the whole clip, not its first 4 seconds
    # Under the cap nothing changes.
    assert indices(300, num_frames=1, sample="fps", fps=1, max_frames=10) == list(range(0, 300, 30))


def test_random_one_frame_per_segment_and_seeded():
    bounds = linspace_int(0, 1000, 17)  # segments of the 16-frame uniform rule
    draws = set()
    for seed in range(50):
        picked = sample_indices(
            1000, num_frames=16, sample="random", src_fps=30, rng=np.random.default_rng(seed)
        )
        assert len(picked) == 16
        assert np.all(picked >= bounds[:-1]) and np.all(picked < bounds[1:])
        draws.add(tuple(picked.tolist()))
    assert len(draws) == 50  # really random
    again = [
        sample_indices(1000, num_frames=16, sample="random", src_fps=30, rng=np.random.default_rng(7))
        for _ in "ab"
    ]
    np.testing.assert_array_equal(*again)
    assert indices(5, num_frames=8, sample="random", rng=np.random.default_rng(0)) == [0, 1, 2, 3, 4]
    in_bounds = sample_indices(
        300, num_frames=4, sample="random", src_fps=30, start=2, end=4, rng=np.random.default_rng(1)
    )
    assert np.all((in_bounds >= 60) & (in_bounds < 120))


def mvbench_get_index(num_frames, bound, fps, max_frame, first_idx=0):
    """VideoChat2's MVBench get_index as documented in reference/benchmarks.md."""
    start, end = bound if bound else (-100000, 100000)
    start_idx = max(first_idx, round(start * fps))
    end_idx = min(round(end * fps), max_frame)
    seg_size = float(end_idx - start_idx) / num_frames
    return [int(start_idx + (seg_size / 2) + np.round(seg_size * idx)) for idx in range(num_frames)]


def test_mvbench_rule_matches_videochat2():
    assert indices(300, num_frames=8, sample="mvbench") == [18, 55, 93, 130, 168, 205, 242, 280]
    assert indices(300, num_frames=8, sample="mvbench", start=1, end=3) == mvbench_get_index(
        8, (1, 3), 30, 299
    )
    # Short clips repeat frames rather than return fewer.
    assert indices(5, num_frames=8, sample="mvbench") == [0, 0, 1, 2, 2, 2, 3, 4]
    # Frame folders: VideoChat2 numbers files from 1 (max_frame = file count); we return positions.
    numbers = mvbench_get_index(4, (2, 8), 3, 30, first_idx=1)
    assert numbers == [8, 12, 17, 22]
    assert indices(30, src_fps=3, num_frames=4, sample="mvbench", start=2, end=8, first_index=1) == [
        n - 1 for n in numbers
    ]


@pytest.mark.parametrize(
    ("kwargs", "names"),
    [
        ({"num_frames": 0, "sample": "uniform"}, "num_frames"),
        ({"num_frames": -3, "sample": "uniform"}, "num_frames"),
        ({"num_frames": 2.5, "sample": "uniform"}, "num_frames"),
        ({"num_frames": True, "sample": "uniform"}, "num_frames"),
        ({"num_frames": 4, "sample": "linear"}, "sample"),
        ({"num_frames": 4, "sample": "fps"}, "fps"),
        ({"num_frames": 4, "sample": "fps", "fps": 0}, "fps"),
        ({"num_frames": 4, "sample": "fps", "fps": 1, "max_frames": 0}, "max_frames"),
        ({"num_frames": 4, "sample": "uniform", "fps": 1}, "fps"),
        ({"num_frames": 4, "sample": "uniform", "start": 3, "end": 3}, "start"),
        ({"num_frames": 4, "sample": "uniform", "start": 5, "end": 2}, "end"),
        ({"num_frames": 4, "sample": "uniform", "start": -1}, "start"),
        ({"num_frames": 4, "sample": "uniform", "start": 10}, "start"),  # clip is 300 / 30 = 10 s
        ({"num_frames": 4, "sample": "mvbench", "start": 4, "end": 1}, "start"),
    ],
)
def test_bad_arguments_raise_sampling_error_naming_them(kwargs, names):
    with pytest.raises(SamplingError, match=names):
        sample_indices(300, src_fps=30, **kwargs)


def test_bad_frame_count_and_rate():
    with pytest.raises(SamplingError, match="total"):
        sample_indices(0, num_frames=4, sample="uniform", src_fps=30)
    with pytest.raises(SamplingError, match="src_fps"):
        sample_indices(10, num_frames=4, sample="uniform", src_fps=0)
