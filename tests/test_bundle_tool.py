"""tools/bundle_default_model.py: the model card's commands reproduce the recipe the ablation ran."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

TOOL = Path(__file__).resolve().parents[1] / "tools" / "bundle_default_model.py"


@pytest.fixture(scope="module")
def bundle_tool():
    spec = importlib.util.spec_from_file_location("bundle_default_model", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _results(stage1: str | None, stage2: str, seed: int) -> dict:
    family = {"n": 300, "correct": 270, "accuracy": 0.9, "ci95": [0.86, 0.93], "chance": 0.5, "order_dependent": True}
    return {"stage1_config": stage1, "config": stage2, "overrides": [],
            "runs": [{"variant": "CCAM", "seed": seed, "frames": 16, "families": {"first": family}}]}


def _manifest(stills_where: str, train_questions: str, version: int = 4, num_train: int = 4000) -> dict:
    return {"seed": 0, "num_train": num_train, "num_test": 1800, "version": version,
            "stills_where": stills_where, "train_questions": train_questions}


def test_card_of_the_default_recipe(bundle_tool, tiny_checkpoint, tmp_path):
    card = (bundle_tool.write_bundle(tiny_checkpoint, _results("synth-stills", "synth-ccam", 0), "CCAM",
                                     tmp_path / "bundle", _manifest("side", "all")) / "README.md").read_text()
    lines = card.splitlines()
    assert "videoccam synth --out data/synth --train 4000 --test 1800 --seed 0 --workers 2" in lines
    assert "videoccam train synth-stills && videoccam train synth-ccam" in lines
    assert "runs/ablate --seeds 0` trains this variant" in card
    assert "| first | yes | 50 | 90 [86, 93] |" in lines
    assert (tmp_path / "bundle" / "model.safetensors").is_file()


def test_card_of_the_long_recipe_names_its_data_configs_and_seed(bundle_tool, tiny_checkpoint, tmp_path):
    card = (bundle_tool.write_bundle(tiny_checkpoint, _results("synth-stills-where", "synth-ccam-long", 1), "CCAM",
                                     tmp_path / "bundle", _manifest("both", "all")) / "README.md").read_text()
    lines = card.splitlines()
    assert ("videoccam synth --out data/synth-where --train 4000 --test 1800 --seed 0 --workers 2 "
            "--stills-where both") in lines
    seeded = " model.seed=1 optim.seed=1 data.seed=1"
    assert f"videoccam train synth-stills-where{seeded} && videoccam train synth-ccam-long{seeded}" in lines
    assert "--seeds 1 --stage1-config synth-stills-where --config synth-ccam-long` trains" in card.replace("\n", " ")


def test_card_of_stage_1_on_a_smaller_folder_names_both_folders_and_the_overrides(bundle_tool, tiny_checkpoint,
                                                                                  tmp_path):
    results = {**_results("synth-stills-where", "synth-ccam-long", 1), "overrides": ["data.cache_frames=false"]}
    card = (bundle_tool.write_bundle(tiny_checkpoint, results, "CCAM", tmp_path / "bundle",
                                     _manifest("both", "all", num_train=60000),
                                     _manifest("both", "all", num_train=12000)) / "README.md").read_text()
    lines = card.splitlines()
    synth = "--test 1800 --seed 0 --workers 2 --stills-where both"
    assert f"videoccam synth --out data/synth-where --train 12000 {synth}" in lines
    assert f"videoccam synth --out data/synth-where-60000 --train 60000 {synth}" in lines
    seeded = " model.seed=1 optim.seed=1 data.seed=1"
    assert (f"videoccam train synth-stills-where{seeded} && videoccam train synth-ccam-long{seeded} "
            "data.cache_frames=false data.train=data/synth-where-60000/train.json") in lines
    assert ("`videoccam ablate data.cache_frames=false --data data/synth-where-60000 --stage1-data data/synth-where "
            "--out runs/ablate --seeds 1") in card.replace("\n", " ")
    assert "(the stills of data/synth-where's 12000 clips)" in card


def test_card_of_single_question_data(bundle_tool, tiny_checkpoint, tmp_path):
    bundle = bundle_tool.write_bundle(tiny_checkpoint, _results("synth-stills", "synth-ccam", 0), "CCAM",
                                      tmp_path / "bundle", _manifest("side", "one", version=3))
    card = (bundle / "README.md").read_text()
    assert "--seed 0 --workers 2 --train-questions one" in card


def test_card_of_weighted_data_names_its_turn_weights(bundle_tool, tiny_checkpoint, tmp_path):
    manifest = {**_manifest("both", "all"), "turn_weights": {"direction": 5.0, "reverse": 2.5}}
    card = (bundle_tool.write_bundle(tiny_checkpoint, _results("synth-stills-where", "synth-ccam-long", 0), "CCAM",
                                     tmp_path / "bundle", manifest) / "README.md").read_text()
    assert ("videoccam synth --out data/synth-where --train 4000 --test 1800 --seed 0 --workers 2 --stills-where both "
            "--turn-weight direction=5 --turn-weight reverse=2.5") in card.splitlines()


def test_card_of_data_with_training_only_questions_names_them(bundle_tool, tiny_checkpoint, tmp_path):
    manifest = {**_manifest("both", "all", version=5), "turn_weights": {"direction": 5.0}, "also_ask": ["before"]}
    card = (bundle_tool.write_bundle(tiny_checkpoint, _results("synth-stills-where", "synth-ccam-long", 0), "CCAM",
                                     tmp_path / "bundle", manifest) / "README.md").read_text()
    assert ("videoccam synth --out data/synth-where --train 4000 --test 1800 --seed 0 --workers 2 --stills-where both "
            "--turn-weight direction=5 --also-ask before") in card.splitlines()


def test_an_ablation_without_stage_1_is_refused(bundle_tool, tiny_checkpoint, tmp_path):
    with pytest.raises(ValueError, match="stage1_config"):
        bundle_tool.write_bundle(tiny_checkpoint, _results(None, "synth-ccam", 0), "CCAM", tmp_path / "bundle",
                                 _manifest("side", "all"))
