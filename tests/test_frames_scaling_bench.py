"""bench/frames_scaling.py at a micro scale: the LLM input lengths of the three token budgets, literally."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

spec = importlib.util.spec_from_file_location("frames_scaling", Path(__file__).resolve().parents[1] / "bench"
                                              / "frames_scaling.py")
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)


@pytest.mark.parametrize("frames", [1, 2, 8, 96])
def test_llm_input_lengths(frames):
    """micro: 28 px / patch 14 = 2x2 patches, Q = 4, 32 text tokens."""
    assert bench.llm_tokens("micro", "ccam", frames) == 4 + 32  # fixed, whatever T
    assert bench.llm_tokens("micro", "all-tokens", frames) == frames * 4 + 32
    assert bench.llm_tokens("micro", "pooled", frames) == frames * 1 + 32
    assert bench.llm_tokens("released", "all-tokens", frames) == frames * 729 + 32
    assert bench.llm_tokens("released", "pooled", frames) == frames * 196 + 32  # 27x27 pooled 2x2, ceil: 14x14
    assert bench.llm_tokens("released", "ccam", frames) == 1024 + 32


@pytest.mark.parametrize("method", bench.METHODS)
def test_a_row_runs_and_measures_every_stage(method):
    row = bench.run_row("micro", method, 4, torch.device("cpu"), torch.float32, repeats=1)
    assert row["llm_tokens"] == bench.llm_tokens("micro", method, 4)
    assert all(row[k] > 0 for k in ("vision", "projector", "prefill", "peak_mb"))
    assert row["ttft"] == pytest.approx(row["vision"] + row["projector"] + row["prefill"])


def test_table_gives_ratios_and_names_rows_not_run():
    rows = [{"frames": 8, "method": "ccam", "llm_tokens": 36, "vision": 1.0, "projector": 0.1, "prefill": 0.9,
             "ttft": 2.0, "peak_mb": 100},
            {"frames": 8, "method": "all-tokens", "llm_tokens": 64, "vision": 1.0, "projector": 0.1, "prefill": 6.9,
             "ttft": 8.0, "peak_mb": 200},
            {"frames": 8, "method": "pooled", "llm_tokens": 40, "error": "out of memory"}]
    text = bench.table(rows, [8])
    assert "| 8 | 0.250 | (out of memory) |" in text and "| 8 | pooled | 40 | out of memory |" in text
