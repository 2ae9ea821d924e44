"""The temporal ablation: interval arithmetic, scoring, and one end-to-end run of the real command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from videoccam.cli import main
from videoccam.synth import generate_dataset
from videoccam.synth.ablation import (
    VARIANTS,
    builds_the_model,
    markdown_table,
    run_ablation,
    score,
    wilson_interval,
)


def test_wilson_interval_literal_values():
    lo, hi = wilson_interval(90, 100)
    assert (round(lo, 4), round(hi, 4)) == (0.8256, 0.9448)
    lo, hi = wilson_interval(0, 10)
    assert lo == 0.0 and round(hi, 4) == 0.2775
    lo, hi = wilson_interval(50, 100)
    assert round(lo, 4) == 0.4038 and round(hi, 4) == 0.5962


def test_score_groups_by_family():
    rows = [{"family": "first", "correct": c, "chance": 0.5, "order_dependent": True} for c in (1, 1, 0)]
    rows += [{"family": "count", "correct": 1, "chance": 0.25, "order_dependent": False}]
    scores = score(rows)
    assert (scores["first"].n, scores["first"].correct, scores["first"].chance) == (3, 2, 0.5)
    assert scores["count"].accuracy == 1.0 and not scores["count"].order_dependent


def _family(correct: int, n: int, chance: float, order_dependent: bool) -> dict:
    return {"n": n, "correct": correct, "accuracy": correct / n, "ci95": [0.0, 1.0], "chance": chance,
            "order_dependent": order_dependent}


def test_markdown_table_means_over_seeds():
    runs = [{"variant": "CCAM", "frames": 16, "seed": seed,
             "families": {"first": _family(first, 100, 0.5, True), "count": _family(count, 100, 0.25, False)}}
            for seed, first, count in ((0, 80, 90), (1, 91, 100), (2, 86, 95))]
    runs.append({"variant": "CCAM", "frames": 32, "seed": 0,
                 "families": {"first": _family(50, 100, 0.5, True), "count": _family(25, 100, 0.25, False)}})
    table = markdown_table({"seeds": [0, 1, 2], "wall_s": 60.0, "runs": runs}).splitlines()
    assert table[:6] == [
        "Mean over seeds 0, 1, 2 [lowest, highest seed]:",
        "",
        "| variant | frames | seeds | first (n=100, chance 50) | count (n=100, chance 25) "
        "| order mean | control mean |",
        "|---|---|---|---|---|---|---|",
        "| CCAM | 16 | 3 | 85.7 [80, 91] | 95.0 [90, 100] | 85.7 | 95.0 |",
        "| CCAM | 32 | 1 | 50.0 [50, 50] | 25.0 [25, 25] | 50.0 | 25.0 |",
    ]
    assert table[6:9] == ["", "Per seed:", ""]
    assert table[9].startswith("| variant | frames | seed | first")
    assert table[12] == "| CCAM | 16 | 1 | 91 [0, 100] | 100 [0, 100] | 91.0 | 100.0 |"
    assert table[-1].endswith("Wall time 1.0 min.")
    # one seed: the per-seed table alone, without a seed column
    single = markdown_table({"seeds": [0], "wall_s": 60.0, "runs": runs[:1]}).splitlines()
    assert single[0].startswith("| variant | frames | first") and "Mean over seeds" not in "".join(single)


def _fail_on_odd(n: int) -> int:
    if n % 2:
        raise ValueError(f"odd {n}")
    return n * 10


def test_forked_children_get_their_arguments_by_fork_and_send_back_results_and_errors():
    """run_forked (what the ablation trains in): arguments reach the children without pickling (a lambda
    does), results come back in call order, and a child's exception is raised here with its traceback."""
    from videoccam.synth.forked import ChildTraceback, run_forked

    assert run_forked(lambda f, n: f(n), [(_fail_on_odd, 0), (_fail_on_odd, 2), (_fail_on_odd, 4)],
                      workers=2) == [0, 20, 40]
    with pytest.raises(ValueError, match="odd 3") as info:
        run_forked(_fail_on_odd, [(2,), (3,)], workers=2)
    assert isinstance(info.value.__cause__, ChildTraceback) and "_fail_on_odd" in str(info.value.__cause__)


def test_variants_are_the_five_of_the_design():
    assert VARIANTS["plain cross-attn"] == ["model.projector.mask=none"]
    assert VARIANTS["CCAM + both"] == ["model.frame_block_mask=true", "model.temporal_rope=tc"]
    assert len(VARIANTS) == 5


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("world")
    generate_dataset(root, num_train=12, num_test=6, seed=5)
    return root


def test_ablate_command_end_to_end(world, tmp_path, capsys):
    """Two variants, 2 training steps each, evaluated at 16 and 32 frames through `videoccam ablate`."""
    out = tmp_path / "ablate"
    code = main(["ablate", "optim.max_steps=2", "optim.micro_batch_size=4", "output.save_every=0",
                 "--data", str(world), "--out", str(out), "--variants", "plain cross-attn", "CCAM",
                 "--frames", "16", "32"])
    assert code == 0
    summary = json.loads((out / "results.json").read_text())
    assert [(r["variant"], r["frames"]) for r in summary["runs"]] == [
        ("plain cross-attn", 16), ("plain cross-attn", 32), ("CCAM", 16), ("CCAM", 32)]
    for run in summary["runs"]:
        assert sum(f["n"] for f in run["families"].values()) == 6
    table = (out / "results.md").read_text()
    assert table.count("\n| plain cross-attn |") == 2 and "Wall time" in table
    assert "| CCAM | 32 |" in capsys.readouterr().out
    plain = json.loads((out / "seed0" / "plain-cross-attn" / "final" / "config.json").read_text())
    assert plain["projector_config"]["mask"] == "none"
    # stage 1 (stills) was trained once and both variants' stage 2 started from it
    stage1 = out / "seed0" / "stills" / "final"
    assert json.loads((stage1 / "config.json").read_text())["projector_config"]["mask"] == "ccam"
    for variant in ("plain-cross-attn", "ccam"):
        run_config = yaml.safe_load((out / "seed0" / variant / "config.yaml").read_text())
        assert run_config["model"]["checkpoint"] == str(stage1)
    assert summary["stage1_config"] == "synth-stills" and set(summary["stage1_s"]) == {"0"}
    preds = (out / "seed0" / "ccam" / "predictions-16.jsonl").read_text().splitlines()
    assert len(preds) == 6 and {"prediction", "answer", "correct"} <= json.loads(preds[0]).keys()


def test_stage1_trains_on_the_stills_of_stage1_data(world, tmp_path):
    """--stage1-data: stage 1 reads another synth folder's stills.json and tokenizer, stage 2 --data's clips."""
    small = tmp_path / "small"
    generate_dataset(small, num_train=6, num_test=6, seed=5)  # the first 6 of world's 12 clips
    out = tmp_path / "ablate"
    assert main(["ablate", "optim.max_steps=1", "optim.micro_batch_size=4", "output.save_every=0",
                 "--data", str(world), "--stage1-data", str(small), "--out", str(out),
                 "--variants", "CCAM", "--frames", "16", "--limit", "2"]) == 0
    stage1 = yaml.safe_load((out / "seed0" / "stills" / "config.yaml").read_text())
    assert stage1["data"]["train"] == str(small / "stills.json")
    assert stage1["model"]["tokenizer"] == str(small / "tokenizer")
    stage2 = yaml.safe_load((out / "seed0" / "ccam" / "config.yaml").read_text())
    assert stage2["data"]["train"] == str(world / "train.json")
    summary = json.loads((out / "results.json").read_text())
    assert (summary["data"], summary["stage1_data"]) == (str(world), str(small))
    with pytest.raises(FileNotFoundError, match=r"stills.json: stage 1 \(synth-stills\) of seeds \[0\]"):
        run_ablation(world, tmp_path / "none", stage1_data=tmp_path / "missing")
    # a seed whose stage 1 is in --out needs no stills: seed 0 is reused (and CCAM scored again)
    again = run_ablation(world, out, stage1_data=tmp_path / "missing", variants=["CCAM"], frames=[16], limit=2,
                         overrides=["optim.max_steps=1", "optim.micro_batch_size=4", "output.save_every=0"])
    assert again["runs"][0]["families"] == summary["runs"][0]["families"]
    with pytest.raises(FileNotFoundError, match=r"of seeds \[1\]"):
        run_ablation(world, out, stage1_data=tmp_path / "missing", seeds=[0, 1])
    with pytest.raises(ValueError, match="stage1_config"):
        run_ablation(world, tmp_path / "none", stage1_config=None, stage1_data=small)


def test_overrides_that_shape_the_model_go_to_the_stage_that_builds_it(world, tmp_path):
    """A deeper LLM or fewer queries for the whole ablation: stage 1 builds the model with them and every
    variant starts from it; stage 2, which starts from a checkpoint (and refuses them), is not given them."""
    assert [builds_the_model(o) for o in ("model.text_config.num_hidden_layers=4", "model.vision_config.hidden_size=8",
                                          "model.projector.num_query=8", "model.projector.mask=none",
                                          "model.temporal_rope=tc", "optim.max_steps=1")] == [
        True, True, True, False, False, False]
    out = tmp_path / "ablate"
    assert main(["ablate", "optim.max_steps=1", "optim.micro_batch_size=4", "output.save_every=0",
                 "model.text_config.num_hidden_layers=2", "model.projector.num_query=8",
                 "--data", str(world), "--out", str(out), "--variants", "CCAM", "--frames", "16", "--limit", "2"]) == 0
    stage1 = yaml.safe_load((out / "seed0" / "stills" / "config.yaml").read_text())["model"]
    assert stage1["text_config"]["num_hidden_layers"] == 2 and stage1["projector"]["num_query"] == 8
    stage2 = yaml.safe_load((out / "seed0" / "ccam" / "config.yaml").read_text())
    assert stage2["model"]["text_config"] == {} and stage2["model"]["projector"] == {}
    assert stage2["optim"]["max_steps"] == 1  # the other overrides still reach stage 2
    built = json.loads((out / "seed0" / "ccam" / "final" / "config.json").read_text())
    assert built["text_config"]["num_hidden_layers"] == 2 and built["projector_config"]["num_query"] == 8


def test_variants_trained_side_by_side_equal_one_at_a_time(world, tmp_path):
    """workers=2 (two forked processes, then the odd one here) trains and scores what one process does,
    thread for thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # stage 1 and every variant (either way) run on one thread
    try:
        kwargs = {"variants": ["plain cross-attn", "CCAM + dual RoPE", "CCAM"], "frames": [16],
                  "overrides": ["optim.max_steps=2", "optim.micro_batch_size=4", "output.save_every=0"]}
        side = run_ablation(world, tmp_path / "side", workers=2, **kwargs)
        alone = run_ablation(world, tmp_path / "alone", workers=1, **kwargs)
    finally:
        torch.set_num_threads(threads)
    assert [r["families"] for r in side["runs"]] == [r["families"] for r in alone["runs"]]
    assert [r["variant"] for r in side["runs"]] == ["plain cross-attn", "CCAM + dual RoPE", "CCAM"]
    for variant in ("plain-cross-attn", "ccam-dual-rope", "ccam"):  # two side by side, the third alone
        a, b = (load_file(tmp_path / run / "seed0" / variant / "final" / "model.safetensors")
                for run in ("side", "alone"))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
        assert ((tmp_path / "side" / "seed0" / variant / "predictions-16.jsonl").read_text()
                == (tmp_path / "alone" / "seed0" / variant / "predictions-16.jsonl").read_text())


def test_the_ablation_process_trains_nothing_itself(world, tmp_path, monkeypatch):
    """Stage 1 and every variant train in forked children, even with one worker: a process that has
    initialised CUDA cannot fork workers that use it, so the ablation's own process must never train."""
    import os

    import videoccam.train

    real_train, log = videoccam.train.train, tmp_path / "pids"

    def train_and_record(config, **kwargs):
        with log.open("a") as f:
            f.write(f"{os.getpid()} {config.output.dir}\n")
        return real_train(config, **kwargs)

    monkeypatch.setattr(videoccam.train, "train", train_and_record)
    for workers in (1, 2):  # one: all in one child after another; two: a pair side by side, then the odd one
        run_ablation(world, tmp_path / f"w{workers}", variants=["plain cross-attn", "CCAM", "CCAM + dual RoPE"],
                     frames=[16], workers=workers,
                     overrides=["optim.max_steps=1", "optim.micro_batch_size=4", "output.save_every=0"])
    runs = [line.split() for line in log.read_text().splitlines()]
    assert sorted(Path(d).relative_to(tmp_path).as_posix() for _, d in runs) == sorted(
        f"w{w}/seed0/{r}" for w in (1, 2) for r in ("stills", "plain-cross-attn", "ccam", "ccam-dual-rope"))
    assert all(int(pid) != os.getpid() for pid, _ in runs)


def test_long_recipe_configs_differ_from_the_default_only_where_documented():
    """synth-stills-where / synth-ccam-long are the default stages with the long recipe's changes
    (docs/synthetic-world.md, "Training recipe"); anything else drifting apart would make the two
    tables incomparable."""
    from videoccam.configs import resolve_config
    from videoccam.train.config import config_to_dict, load_config

    def flat(name):
        out = {}
        for section, values in config_to_dict(load_config(resolve_config(name))).items():
            if isinstance(values, list):  # callbacks: a list, compared whole
                out[section] = values
            else:
                out.update({f"{section}.{k}": v for k, v in values.items()})
        return out

    schedule = [{"class_path": "videoccam.synth.schedule.TurnWeightSchedule", "init_args": {"ratio": 0.3}}]

    def changes(default, long):
        a, b = flat(default), flat(long)
        return {k: (a[k], b[k]) for k in a if a[k] != b[k]}

    assert changes("synth-stills", "synth-stills-where") == {
        "model.tokenizer": ("data/synth/tokenizer", "data/synth-where/tokenizer"),
        "data.train": ("data/synth/stills.json", "data/synth-where/stills.json"),
        "optim.epochs": (3, 1),  # unused: max_steps rules
        "optim.max_steps": (None, 2495),
        "callbacks": ([], schedule),  # the turn weights for the first 30% of the steps
        "output.dir": ("runs/synth-stills", "runs/synth-stills-where"),
    }
    assert changes("synth-ccam", "synth-ccam-long") == {
        "model.checkpoint": ("runs/synth-stills/final", "runs/synth-stills-where/final"),
        "data.train": ("data/synth/train.json", "data/synth-where/train.json"),
        "optim.epochs": (10, 1),
        "optim.max_steps": (None, 5000),
        "callbacks": ([], schedule),  # for data with weights (videoccam synth --turn-weight)
        "output.dir": ("runs/synth-ccam", "runs/synth-ccam-long"),
    }


def test_the_variants_read_training_clips_from_the_cache_warmed_before_they_fork(world, tmp_path, monkeypatch):
    """With cache_frames (the shipped configs) every training clip is decoded and resized once, before
    the variants fork: their trainings decode none (the cache is shared copy on write); when every
    variant is trained already, none is decoded at all."""
    import os

    import videoccam.train
    from videoccam.data import dataset, frame_cache, read_records

    real_train, real_load, log = videoccam.train.train, frame_cache.load_video, tmp_path / "log"

    def train_and_record(config, **kwargs):
        with log.open("a") as f:
            f.write(f"train {os.getpid()}\n")
        return real_train(config, **kwargs)

    def load_and_record(path, *args, **kwargs):
        with log.open("a") as f:
            f.write(f"decode {os.getpid()} {path}\n")
        return real_load(path, *args, **kwargs)

    monkeypatch.setattr(videoccam.train, "train", train_and_record)
    for module in (frame_cache, dataset):  # the cache's decoding and the dataset's own
        monkeypatch.setattr(module, "load_video", load_and_record)
    run_ablation(world, tmp_path / "out", variants=["plain cross-attn", "CCAM"], frames=[16], workers=2,
                 overrides=["optim.max_steps=3", "optim.micro_batch_size=4", "output.save_every=0"])
    lines = [line.split(maxsplit=2) for line in log.read_text().splitlines() if line]
    trainers = {pid for kind, pid, *_ in lines if kind == "train"}
    train_clips = {str(world / r["video"]) for r in read_records(world / "train.json")}
    decoded = [(pid, path) for kind, pid, *rest in lines if kind == "decode" for path in rest if path in train_clips]
    assert len(trainers) == 3 and {path for _, path in decoded} == train_clips  # stage 1 and the pair
    assert not [path for pid, path in decoded if pid in trainers]
    log.unlink()  # run again: every variant is trained already, so the training clips are not decoded
    run_ablation(world, tmp_path / "out", variants=["plain cross-attn", "CCAM"], frames=[16], workers=2,
                 overrides=["optim.max_steps=3", "optim.micro_batch_size=4", "output.save_every=0"])
    assert not [line for line in log.read_text().splitlines() if line.split()[-1] in train_clips]
