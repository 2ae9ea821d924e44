"""bench/frames_scaling.py at a micro scale: the table's structure and the LLM input lengths.

Tiny scale: 32px frames, patch 8 -> 4x4 = 16 patches per frame, pooled 2x2 -> 4 per frame, Q = 8,
32 text tokens. So the LLM gets 8 + 32 = 40 tokens with CCAM for every T, T*16 + 32 with all tokens
and T*4 + 32 pooled.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench" / "frames_scaling.py"


def _bench():
    spec = importlib.util.spec_from_file_location("frames_scaling_bench", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _table_rows(text: str) -> list[list[str]]:
    """Cells of the first markdown table's body."""
    lines = text.split("| T | method |", 1)[1].split("\n\n", 1)[0].splitlines()[2:]
    return [[c.strip() for c in line.strip("|").split("|")] for line in lines]


def test_micro_run_table_and_llm_lengths(tmp_path, capsys):
    out = tmp_path / "results.json"
    result = _bench().main(["--scale", "tiny", "--frames", "2,4", "--in-process", "--repeats", "1",
                            "--out", str(out)])
    printed = capsys.readouterr().out
    cells = _table_rows(printed)
    assert [(c[0], c[1], c[2], c[-1]) for c in cells] == [
        ("2", "ccam", "40", "ok"), ("2", "all-tokens", "64", "ok"), ("2", "pooled", "40", "ok"),
        ("4", "ccam", "40", "ok"), ("4", "all-tokens", "96", "ok"), ("4", "pooled", "48", "ok"),
    ]
    assert all(len(c) == 10 for c in cells)
    for c in cells:  # TTFT and the three stages are numbers, TTFT >= the largest stage
        ttft, vision, projector, prefill = (float(x) for x in c[3:7])
        assert ttft >= max(vision, projector, prefill) > 0
        assert c[7:9] == ["n/a", "n/a"]  # in-process CPU rows report no memory
    assert "| T | CCAM/all-tokens TTFT | CCAM/pooled TTFT |" in printed
    assert "Q=8" in printed and "4x4=16 patches" in printed and "pooled 2x2=4 tokens/frame" in printed
    saved = json.loads(out.read_text())
    assert saved == json.loads(json.dumps(result))
    assert [r["llm_tokens"] for r in saved["rows"]] == [40, 64, 40, 40, 96, 48]
    assert saved["config"]["projector"]["num_query"] == 8 and saved["dtype"] == "float32"
    assert {"torch", "transformers", "device"} <= saved.keys()


def test_row_over_the_token_cap_is_reported_not_run(capsys):
    """Two rounds still give one row per (T, method)."""
    result = _bench().main(["--scale", "tiny", "--frames", "2", "--in-process", "--repeats", "1",
                            "--max-llm-tokens", "50", "--rounds", "2"])
    cells = _table_rows(capsys.readouterr().out)
    assert cells[1][:3] == ["2", "all-tokens", "64"]
    assert cells[1][3:9] == ["n/a"] * 6
    assert cells[1][9] == "over cap (64 > --max-llm-tokens 50), not run"
    assert [r["status"] for r in result["rows"]] == ["ok", cells[1][9], "ok"]
