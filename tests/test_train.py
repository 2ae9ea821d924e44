"""Training: config, stages, loss masking, torchrun DDP/FSDP2 (gloo), exact resume, overfitting, export."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from videoccam.configs import resolve_config, shipped_configs
from videoccam.errors import ConfigError
from videoccam.synth.schedule import TurnWeightSchedule
from videoccam.testing import make_tiny_tokenizer
from videoccam.testing.media import write_test_video
from videoccam.train import load_config, load_trained, train
from videoccam.train.build import apply_stage, build_model
from videoccam.train.config import TrainConfig
from videoccam.train.distributed import compile_blocks

# PYTHONFAULTHANDLER: a worker killed by a signal prints every thread's Python stack; it located the SIGABRT
# at the end of two-process gloo runs (no Python frame: interpreter shutdown, see teardown_distributed)
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error",
       "PYTHONWARNINGS": "ignore", "PYTHONFAULTHANDLER": "1"}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """A tokenizer folder and 8 LLaVA records (videos and images mixed) under one root."""
    root = tmp_path_factory.mktemp("train-data")
    make_tiny_tokenizer().save_pretrained(root / "tok")
    (root / "media").mkdir()
    records = []
    for i in range(8):
        if i % 3 == 2:
            pixels = np.random.default_rng(i).integers(0, 255, (40, 40, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / "media" / f"img{i}.png")
            records.append({"id": f"s{i}", "image": f"img{i}.png", "conversations": [
                {"from": "human", "value": "<image>\ndescribe the clip ."},
                {"from": "gpt", "value": "a green triangle" + " red" * (i % 4)}]})
        else:
            write_test_video(root / "media" / f"v{i}.mp4", num_frames=12 + i, fps=10)
            records.append({"id": f"s{i}", "video": f"v{i}.mp4", "conversations": [
                {"from": "human", "value": "<video>\nwhat happens in the video ?"},
                {"from": "gpt", "value": "the red square moves left" + " then the blue circle appears" * (i % 2)}]})
    (root / "data.json").write_text(json.dumps(records))
    return root


# an instruct stage on a model built from scratch: tiny-align with the shipped tiny-instruct's stage (the
# shipped tiny-instruct itself continues tiny-align's output, see test_the_tiny_configs_chain_through_the_cli)
SCRATCH_INSTRUCT = ("tiny-align", "stage.name=instruct", "stage.train_llm=lora",
                    "stage.llm_lora={r: 8, alpha: 16, dropout: 0.0}")


def _overrides(root: Path, out: Path, *extra: str) -> list[str]:
    return [f"model.tokenizer={root / 'tok'}", f"data.train={root / 'data.json'}",
            f"data.media_root={root / 'media'}", f"output.dir={out}", *extra]


def _config(root: Path, out: Path, name: str = "tiny-align", *extra: str) -> TrainConfig:
    return load_config(resolve_config(name), _overrides(root, out, *extra))


def _trainable(run: Path, step: int) -> dict[str, torch.Tensor]:
    return load_file(run / "checkpoints" / f"step-{step:08d}" / "trainable.safetensors")


def _assert_close(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], atol: float) -> None:
    assert a.keys() == b.keys()
    worst = max((a[k] - b[k]).abs().max().item() for k in a)
    assert worst <= atol, worst


def _torchrun(nproc: int, args: list[str]) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", "--standalone",
           "-m", "videoccam.cli", "train", *args]
    if nproc == 1:
        cmd = [sys.executable, "-m", "videoccam.cli", "train", *args]
    result = subprocess.run(cmd, check=False, env=ENV, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


# ---------------------------------------------------------------- config
def test_shipped_configs_parse():
    names = shipped_configs()
    assert {"qwen2.5-7b-stage1", "qwen2.5-7b-stage2", "phi3.5-mini-stage1", "phi3.5-mini-stage2",
            "tiny-align", "tiny-instruct"} <= names.keys()
    for name, path in names.items():
        config = load_config(path, ["data.train=x.json"] if name.startswith("tiny") else [])
        assert config.stage.name in ("align", "instruct")
    stage2 = load_config(names["qwen2.5-7b-stage2"])
    assert (stage2.stage.llm_mode, stage2.stage.llm_lora.r, stage2.stage.llm_lora.alpha) == ("lora", 512, 256)
    assert (stage2.stage.train_vision, stage2.stage.vision_lora.r, stage2.optim.lr) == ("lora", 64, 2e-4)


@pytest.mark.parametrize("override, message", [
    (["optim.lrr=1"], "optim.lrr"),
    (["optim.lr=fast"], "optim.lr"),
    (["stage.train_llm=half"], "stage.train_llm"),
    (["stage.name=align", "stage.train_llm=lora"], "stage.train_llm"),
    (["optim.micro_batch_size=0"], "optim.micro_batch_size"),
    (["data.train="], "data.train"),
    (["engine.precision=fp8"], "engine.precision"),
])
def test_config_errors_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        load_config(resolve_config("tiny-align"), ["data.train=x.json", "model.tokenizer=tok", *override])


def test_overrides_are_typed_and_saved(dataset, tmp_path):
    config = _config(dataset, tmp_path, "tiny-instruct", "optim.lr=2e-4", "stage.llm_lora.r=4",
                     "optim.betas=[0.9, 0.95]")
    assert config.optim.lr == 2e-4 and config.stage.llm_lora.r == 4 and config.optim.betas == (0.9, 0.95)


# ---------------------------------------------------------------- stages
def _stage_model(dataset: Path, tmp_path: Path, name: str, *extra: str):
    config = _config(dataset, tmp_path, name, *extra)
    model, processor = build_model(config.model, config.data.num_frames)
    apply_stage(model, config.stage)
    return model, processor


def _one_backward(model, processor, dataset: Path):
    records = json.loads((dataset / "data.json").read_text())
    record = records[0]
    conv = [{"role": "user", "content": record["conversations"][0]["value"]},
            {"role": "assistant", "content": record["conversations"][1]["value"]}]
    batch = processor([conv], [[str(dataset / "media" / record["video"])]], add_generation_prompt=False,
                      return_labels=True, padding_side="right", video_kwargs={"num_frames": 4})
    model.train()
    out = model(**batch)
    out.logits.retain_grad()
    out.loss.backward()
    return batch, out


@pytest.mark.parametrize("name, extra, trained", [
    (("tiny-align",), (), {"projector"}),
    (SCRATCH_INSTRUCT, (), {"projector", "lora"}),
    (SCRATCH_INSTRUCT, ("stage.train_llm=full",), {"projector", "language_model"}),
    (SCRATCH_INSTRUCT, ("stage.train_vision=lora", "stage.vision_lora.r=4"), {"projector", "lora"}),
    (SCRATCH_INSTRUCT, ("stage.train_vision=full", "model.vision_select_layer=-1"),
     {"projector", "lora", "vision_model"}),
])
def test_only_the_stage_parameters_get_gradients(dataset, tmp_path, name, extra, trained):
    model, processor = _stage_model(dataset, tmp_path, *name, *extra)
    _one_backward(model, processor, dataset)
    for pname, param in model.named_parameters():
        kind = "projector" if pname.startswith("projector.") else "lora" if "lora_" in pname else pname.split(".")[0]
        if kind == "vision_model" and ("head." in pname or "post_layernorm" in pname):
            kind = "unused"  # after the selected hidden state: no gradient can reach them
        if kind in trained:
            assert param.requires_grad and param.grad is not None, pname
        else:
            assert not param.requires_grad and param.grad is None, pname
    names = [n for n, p in model.named_parameters() if p.requires_grad and "lora_" in n]
    if "stage.train_vision=lora" in extra:
        assert any(n.startswith("vision_model.") for n in names) and any(n.startswith("language_model.") for n in names)
    elif "lora" in trained:
        assert names and all(n.startswith("language_model.") for n in names)


def test_prompt_and_visual_positions_carry_no_loss(dataset, tmp_path):
    model, processor = _stage_model(dataset, tmp_path, *SCRATCH_INSTRUCT)
    batch, out = _one_backward(model, processor, dataset)
    labelled_next = batch["labels"][0, 1:] != -100  # position t predicts token t+1
    grad_rows = out.logits.grad[0, :-1].abs().sum(-1) != 0  # [S-1]
    assert torch.equal(grad_rows, labelled_next)
    visual = (batch["input_ids"][0] == model.config.video_token_id)
    assert int(visual.sum()) == model.config.num_visual_tokens and not bool(batch["labels"][0][visual].ne(-100).any())
    answer = processor.tokenizer.decode(batch["labels"][0][batch["labels"][0] != -100])
    assert answer == "the red square moves left<|im_end|>\n"  # the answer and the template's end of turn


# ---------------------------------------------------------------- the loop
def test_overfitting_one_batch_drops_the_loss_by_90_percent(dataset, tmp_path):
    config = _config(dataset, tmp_path / "run", *SCRATCH_INSTRUCT, "stage.train_llm=full", "optim.lr=3e-3",
                     "optim.max_steps=80", "optim.micro_batch_size=2", "output.save_every=0",
                     "data.sample=uniform", "data.seed=3")
    # one batch: a 2-sample dataset, so every step sees the same two samples
    records = json.loads((dataset / "data.json").read_text())[:2]
    small = tmp_path / "two.json"
    small.write_text(json.dumps(records))
    config.data.train = str(small)
    train(config)
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in log if "loss" in r]
    assert len(losses) == 80
    assert losses[-1] <= 0.1 * losses[0], (losses[0], losses[-1])


def test_log_records_and_bad_samples_are_skipped_and_counted(dataset, tmp_path):
    records = json.loads((dataset / "data.json").read_text())
    records[1] = {**records[1], "video": "missing.mp4"}
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(records))
    config = _config(dataset, tmp_path / "run", "tiny-align", "optim.max_steps=4", "optim.micro_batch_size=2")
    config.data.train = str(bad)
    final = train(config)
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    steps = [r for r in log if "loss" in r]
    assert [r["step"] for r in steps] == [1, 2, 3, 4]
    for key in ("loss", "lr", "grad_norm", "samples_per_s", "tokens_per_s", "memory_mib", "skipped"):
        assert all(np.isfinite(r[key]) for r in steps), key
    assert steps[-1]["skipped"] == 1 and sum(r["samples"] for r in steps) == 7
    assert (final / "config.json").is_file() and (tmp_path / "run" / "config.yaml").is_file()


@pytest.mark.parametrize(("option", "atol"), [
    ("engine.gradient_checkpointing", 1e-6),
    pytest.param("engine.compile", 1e-5, marks=pytest.mark.slow),  # compiles for a minute or two on CPU
])
def test_an_engine_option_gives_the_same_step(dataset, tmp_path, option, atol):
    runs = []
    for flag in ("false", "true"):
        out = tmp_path / flag
        train(_config(dataset, out, *SCRATCH_INSTRUCT, "optim.max_steps=2", f"{option}={flag}"))
        runs.append(_trainable(out, 2))
    _assert_close(*runs, atol=atol)


def test_compile_compiles_every_block_in_place(dataset, tmp_path):
    """engine.compile compiles the projector and every vision / decoder layer, nothing else, and keeps
    the parameter names (checkpoints and resume see the same keys)."""
    model, _ = build_model(_config(dataset, tmp_path).model)
    keys = list(model.state_dict())
    classes = compile_blocks(model)
    assert {"CCAMProjector", "Qwen2DecoderLayer", "SiglipEncoderLayer"} <= set(classes)
    compiled = {name for name, m in model.named_modules() if m._compiled_call_impl is not None}
    assert compiled == {name for name, m in model.named_modules() if type(m).__name__ in classes}
    layers = {name for name, m in model.named_modules() if type(m).__name__.endswith("Layer")}
    assert layers | {"projector"} <= compiled
    assert len(layers) == model.config.text_config.num_hidden_layers + model.config.vision_config.num_hidden_layers
    assert "language_model" not in compiled and "" not in compiled
    assert list(model.state_dict()) == keys


@pytest.mark.parametrize("flag", [False, True])
def test_engine_compile_reaches_the_trainer(dataset, tmp_path, monkeypatch, flag):
    from videoccam.train import trainer

    calls = []
    monkeypatch.setattr(trainer, "compile_blocks", lambda model: calls.append(type(model).__name__))
    train(_config(dataset, tmp_path, *SCRATCH_INSTRUCT, "optim.max_steps=1", f"engine.compile={str(flag).lower()}"))
    assert calls == (["VideoCCAMForConditionalGeneration"] if flag else [])


def _weighted(dataset: Path, path: Path, weights: list[float | None]) -> str:
    """The fixture's records with ``weights[i]`` on record i's answer turn (none where None)."""
    records = json.loads((dataset / "data.json").read_text())
    for record, weight in zip(records, weights, strict=True):
        if weight is not None:
            record["conversations"][-1]["weight"] = weight
    path.write_text(json.dumps(records))
    return str(path)


def _schedule(ratio: float) -> str:
    """The override that puts a TurnWeightSchedule of ``ratio`` in a config's callbacks."""
    return f"callbacks=[{{class_path: videoccam.synth.schedule.TurnWeightSchedule, init_args: {{ratio: {ratio}}}}}]"


def _step_records(run: Path) -> list[dict]:
    """The run's per-step log records (those with a loss)."""
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines() if '"loss"' in line]


def _losses(run: Path) -> list[float]:
    return [r["loss"] for r in _step_records(run)]


def test_the_loss_with_weight_1_everywhere_is_the_models_own_loss(dataset, tmp_path):
    """The trainer's one loss path (causal_lm_loss with per-token weights) with weight 1 on every labelled
    token equals HF's model(**inputs, labels=..., num_items_in_batch=n).loss, and so does its gradient."""
    from videoccam.data import LlavaDataset, collate
    from videoccam.train.step import causal_lm_loss

    model, processor = _stage_model(dataset, tmp_path, *SCRATCH_INSTRUCT)
    ds = LlavaDataset(dataset / "data.json", processor, media_root=dataset / "media", num_frames=4, sample="uniform")
    batch = collate([ds[i] for i in range(3)], pad_token_id=processor.tokenizer.pad_token_id)
    assert batch.loss_weights is None
    n = torch.tensor(7.5)  # what a step normalises by: any share of the global loss mass
    model.train()
    torch.manual_seed(0)
    theirs = model(**batch.model_inputs(), labels=batch.labels, num_items_in_batch=n, use_cache=False).loss
    theirs.backward()
    grads = {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    torch.manual_seed(0)
    logits = model(**batch.model_inputs(), use_cache=False).logits
    ours = causal_lm_loss(logits, batch.labels, batch.weights(), n)
    ours.backward()
    torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=1e-6)
    assert grads and all(torch.allclose(p.grad, grads[k], rtol=1e-5, atol=1e-7)
                         for k, p in model.named_parameters() if p.grad is not None)
    assert {k for k, p in model.named_parameters() if p.grad is not None} == grads.keys()


def test_turn_weights_give_a_weighted_mean_loss(dataset, tmp_path):
    """Weight 1 on every turn trains what no weights train (the weighted loss path = HF's loss); one
    common weight <= 1 (which the end-of-turn markers share) changes nothing (the loss is normalised
    by the summed weights); uneven weights change the step, and the same global batch gives the same
    step over accumulation."""
    uneven = [4, 0, 1, 1, 2.5, 1, 0.5, 1]
    runs = {}
    for name, weights, extra in (("plain", [None] * 8, ()), ("ones", [1] * 8, ()), ("common", [0.5] * 8, ()),
                                 ("uneven", uneven, ()),
                                 ("uneven-acc", uneven, ("optim.micro_batch_size=1", "optim.grad_accum=2"))):
        config = _config(dataset, tmp_path / name, *SCRATCH_INSTRUCT, "optim.max_steps=2", "optim.micro_batch_size=2",
                         *extra)
        config.data.train = _weighted(dataset, tmp_path / f"{name}.json", weights)
        train(config)
        runs[name] = _trainable(tmp_path / name, 2)
    for name in ("ones", "common"):
        _assert_close(runs["plain"], runs[name], atol=1e-6)
        assert np.allclose(_losses(tmp_path / name), _losses(tmp_path / "plain"), rtol=1e-5)
    assert max((runs["plain"][k] - runs["uneven"][k]).abs().max().item() for k in runs["plain"]) > 1e-4
    _assert_close(runs["uneven"], runs["uneven-acc"], atol=1e-5)


def test_turn_weight_schedule_switches_the_weights_off_after_its_share_of_the_steps(dataset, tmp_path):
    """The TurnWeightSchedule callback (synth-stills-where / synth-ccam-long): ratio 0 trains exactly what
    the unweighted data trains; ratio 0.5 of 4 steps weighs steps 1-2 like ratio 1 (same losses) and
    steps 3-4 not (it ends away from both ratio 1 and ratio 0); the log says which steps were weighted.
    On data without weights the ratio changes nothing, bit for bit (synth-ccam-long sets 0.3 for
    weighted synth data and is also run on unweighted data). Given in the config or to train(), the same."""
    uneven = [4, 0, 1, 1, 2.5, 1, 0.5, 1]
    runs, logs = {}, {}
    for name, weights, ratio in (("plain", [None] * 8, 1.0), ("plain-half", [None] * 8, 0.5), ("off", uneven, 0.0),
                                 ("half", uneven, 0.5), ("full", uneven, 1.0), ("half-arg", uneven, None)):
        config = _config(dataset, tmp_path / name, *SCRATCH_INSTRUCT, "optim.max_steps=4", "optim.micro_batch_size=2",
                         *([] if ratio is None else [_schedule(ratio)]))
        config.data.train = _weighted(dataset, tmp_path / f"{name}.json", weights)
        train(config, callbacks=[TurnWeightSchedule(0.5)] if ratio is None else ())
        runs[name] = _trainable(tmp_path / name, 4)
        logs[name] = _step_records(tmp_path / name)
    _assert_close(runs["plain"], runs["plain-half"], atol=0)
    assert _losses(tmp_path / "plain-half") == _losses(tmp_path / "plain")
    _assert_close(runs["plain"], runs["off"], atol=1e-6)
    assert np.allclose(_losses(tmp_path / "off"), _losses(tmp_path / "plain"), rtol=1e-5)
    assert [r["turn_weights"] for r in logs["half"]] == [True, True, False, False]
    assert [r["turn_weights"] for r in logs["off"]] == [False] * 4
    assert [r["turn_weights"] for r in logs["full"]] == [True] * 4
    half, full = _losses(tmp_path / "half"), _losses(tmp_path / "full")
    assert np.allclose(half[:2], full[:2], rtol=1e-6)
    for other in ("off", "full"):
        assert max((runs["half"][k] - runs[other][k]).abs().max().item() for k in runs["half"]) > 1e-4
    _assert_close(runs["half"], runs["half-arg"], atol=0)
    assert [r["turn_weights"] for r in logs["half-arg"]] == [True, True, False, False]


def test_max_steps_equal_to_whole_epochs_trains_what_the_epochs_train(dataset, tmp_path):
    """optim.max_steps = epochs x steps per epoch is the same run step for step (schedule, warmup,
    turn-weight share, per-epoch shuffles): what lets synth-stills-where / synth-ccam-long count steps
    and still reproduce the tables made with epochs. 8 records, micro-batch 2: 4 steps an epoch."""
    common = ("optim.micro_batch_size=2", "optim.warmup_ratio=0.25", _schedule(0.5))
    runs = {}
    for name, length in (("epochs", ("optim.epochs=2", "optim.max_steps=null")), ("steps", ("optim.max_steps=8",)),
                         ("short", ("optim.max_steps=6",))):
        config = _config(dataset, tmp_path / name, *SCRATCH_INSTRUCT, *length, *common)
        config.data.train = _weighted(dataset, tmp_path / f"{name}.json", [4, 0, 1, 1, 2.5, 1, 0.5, 1])
        train(config)
        runs[name] = _step_records(tmp_path / name)
    assert len(runs["epochs"]) == len(runs["steps"]) == 8
    assert [r["lr"] for r in runs["steps"]] == [r["lr"] for r in runs["epochs"]]
    assert [r["turn_weights"] for r in runs["steps"]] == [True] * 4 + [False] * 4
    assert _losses(tmp_path / "steps") == _losses(tmp_path / "epochs")
    _assert_close(_trainable(tmp_path / "steps", 8), _trainable(tmp_path / "epochs", 8), atol=0)
    # a step budget that is not whole epochs is another schedule
    assert [r["lr"] for r in runs["short"]] != [r["lr"] for r in runs["epochs"]][:6]


def test_warmup_stable_decay_takes_its_decay_steps_from_schedule_kwargs(dataset, tmp_path):
    """optim.schedule_kwargs reaches the schedule: 8 steps = 2 of warm-up, 4 stable at optim.lr, 2 of
    cosine decay. Without num_decay_steps, or with a schedule the trainer cannot step, a ConfigError."""
    config = _config(dataset, tmp_path / "wsd", *SCRATCH_INSTRUCT, "optim.max_steps=8", "optim.micro_batch_size=2",
                     "optim.lr=0.01", "optim.warmup_ratio=0.25", "optim.schedule=warmup_stable_decay",
                     "optim.schedule_kwargs={num_decay_steps: 2}")
    train(config)
    lrs = [r["lr"] for r in _step_records(tmp_path / "wsd")]  # the lr each step used
    assert lrs == pytest.approx([0.0, 0.005, 0.01, 0.01, 0.01, 0.01, 0.01, 0.005])
    with pytest.raises(ConfigError, match=r"optim.schedule=warmup_stable_decay with optim.schedule_kwargs=\{\}: "
                                          r".*num_decay_steps"):
        train(_config(dataset, tmp_path / "bare", *SCRATCH_INSTRUCT, "optim.max_steps=1",
                      "optim.schedule=warmup_stable_decay"))
    with pytest.raises(ConfigError, match="optim.schedule=reduce_lr_on_plateau: the trainer steps"):
        _config(dataset, tmp_path / "plateau", *SCRATCH_INSTRUCT, "optim.schedule=reduce_lr_on_plateau")
    with pytest.raises(ConfigError, match="optim.schedule='cosinus': unknown; known: linear, cosine"):
        _config(dataset, tmp_path / "typo", *SCRATCH_INSTRUCT, "optim.schedule=cosinus")


def test_turn_weight_ratio_out_of_range_is_a_config_error(dataset, tmp_path):
    with pytest.raises(ConfigError, match=r"callbacks\[0\] \(videoccam.synth.schedule.TurnWeightSchedule\): "
                                          r"ratio must be in \[0, 1\], got 1.5"):
        _config(dataset, tmp_path / "run", *SCRATCH_INSTRUCT, _schedule(1.5))


@pytest.mark.parametrize(("callbacks", "message"), [
    ("[{class_path: videoccam.synth.schedule.TurnWeightSchedule, init_args: {ratoi: 0.5}}]",
     r"callbacks\[0\] \(videoccam.synth.schedule.TurnWeightSchedule\): .*unexpected keyword argument 'ratoi'"),
    ("[{class_path: videoccam.synth.schedule.TurnWeightSchedule, init_args: {ratio: high}}]",
     r"callbacks\[0\] .*ratio must be a number"),
    ("[{class_path: videoccam.synth.schedule.Nothing}]", r"callbacks\[0\]\.class_path=.*cannot import it"),
    ("[{class_path: collections.OrderedDict}]", r"callbacks\[0\]: collections.OrderedDict is no training callback"),
    ("[{class_path: videoccam.synth.schedule.TurnWeightSchedule, args: {ratio: 0.5}}]",
     r"unknown config key 'callbacks\[0\]\.args'"),
    ("{ratio: 0.5}", "callbacks: expected a list"),
])
def test_bad_callbacks_in_a_config_fail_at_once_naming_them(dataset, tmp_path, callbacks, message):
    with pytest.raises(ConfigError, match=message):
        _config(dataset, tmp_path / "run", *SCRATCH_INSTRUCT, f"callbacks={callbacks}")
    assert not (tmp_path / "run").exists()


def test_the_config_callbacks_are_saved_with_the_run_and_a_resume_must_keep_them(dataset, tmp_path):
    train(_config(dataset, tmp_path, "tiny-align", "optim.max_steps=2", _schedule(0.5)))
    assert load_config(tmp_path / "config.yaml").callbacks[0].init_args == {"ratio": 0.5}
    with pytest.raises(ConfigError, match="differs from the saved one in callbacks"):
        train(_config(dataset, tmp_path, "tiny-align", "optim.max_steps=2", _schedule(0.25)), resume=True)


def test_two_processes_equal_one_process_on_the_same_global_batch(dataset, tmp_path):
    """torchrun (gloo): 2 x micro-batch 1 == 1 x micro-batch 2; both ranks hold identical weights."""
    one, two = tmp_path / "one", tmp_path / "two"
    _torchrun(1, [*SCRATCH_INSTRUCT, *_overrides(dataset, one, "optim.micro_batch_size=2")])
    _torchrun(2, [*SCRATCH_INSTRUCT, *_overrides(dataset, two, "optim.micro_batch_size=1")])
    _assert_close(_trainable(one, 4), _trainable(two, 4), atol=1e-5)
    end = [json.loads(line) for line in (two / "log.jsonl").read_text().splitlines()][-1]
    digests = end["rank_weight_digests"]
    assert len(digests) == 2 and digests[0] == digests[1]
    # the same global batch over accumulation: 1 process x 2 micro-steps of 1
    acc = tmp_path / "acc"
    _torchrun(1, [*SCRATCH_INSTRUCT, *_overrides(dataset, acc, "optim.micro_batch_size=1", "optim.grad_accum=2")])
    _assert_close(_trainable(one, 4), _trainable(acc, 4), atol=1e-5)


def test_fsdp2_equals_one_process(dataset, tmp_path):
    one, fsdp = tmp_path / "one", tmp_path / "fsdp"
    train(_config(dataset, one, *SCRATCH_INSTRUCT, "optim.micro_batch_size=2"))
    _torchrun(2, [*SCRATCH_INSTRUCT, *_overrides(dataset, fsdp, "optim.micro_batch_size=1", "engine.strategy=fsdp")])
    _assert_close(_trainable(one, 4), _trainable(fsdp, 4), atol=1e-5)
    _assert_close(load_file(one / "final" / "model.safetensors"), load_file(fsdp / "final" / "model.safetensors"),
                  atol=1e-5)


def test_kill_and_resume_equals_an_uninterrupted_run(dataset, tmp_path):
    """SIGKILL mid-run (after a checkpoint), then --resume: the final weights equal an uninterrupted run's.
    LoRA dropout, random frame sampling and two epochs exercise the RNG, data and epoch state."""
    extra = ("optim.max_steps=8", "optim.micro_batch_size=2", "output.save_every=1", "output.keep_last=2",
             "stage.llm_lora.dropout=0.1", "optim.warmup_ratio=0.25")
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    train(_config(dataset, straight, *SCRATCH_INSTRUCT, *extra))
    cmd = [sys.executable, "-m", "videoccam.cli", "train", *SCRATCH_INSTRUCT, *_overrides(dataset, killed, *extra)]
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    target = killed / "checkpoints" / "step-00000003" / "COMPLETE"
    deadline = time.monotonic() + 240
    while not target.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert target.exists() and not (killed / "final").exists(), "the run ended before it could be killed"
    # a new checkpoint is renamed into place before the oldest is pruned (never fewer than keep_last
    # complete ones), so a kill in between leaves keep_last + 1
    kept = sorted(p.name for p in (killed / "checkpoints").iterdir() if not p.name.startswith("."))
    assert len(kept) <= 3
    subprocess.run([*cmd, "--resume"], env=ENV, check=True, capture_output=True, timeout=240)
    assert sorted(p.name for p in (killed / "checkpoints").iterdir()) == ["step-00000007", "step-00000008"]
    _assert_close(_trainable(straight, 8), _trainable(killed, 8), atol=1e-6)
    steps = [json.loads(line)["step"] for line in (killed / "log.jsonl").read_text().splitlines()]
    assert steps[-1] == 8


def test_resume_refuses_a_changed_config(dataset, tmp_path):
    train(_config(dataset, tmp_path, "tiny-align", "optim.max_steps=2"))
    with pytest.raises(ConfigError, match="optim.lr"):
        train(_config(dataset, tmp_path, "tiny-align", "optim.max_steps=4", "optim.lr=0.5"), resume=True)


def test_resuming_a_finished_run_changes_nothing(dataset, tmp_path):
    """Resuming a finished run with the same config does nothing more (its last checkpoint is final)."""
    train(_config(dataset, tmp_path, "tiny-align", "optim.max_steps=2"))
    before = _trainable(tmp_path, 2)
    train(_config(dataset, tmp_path, "tiny-align", "optim.max_steps=2"), resume=True)
    _assert_close(before, _trainable(tmp_path, 2), atol=0.0)


# ---------------------------------------------------------------- the run folder: never clobbered
def _snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under ``folder``: its bytes and modification time."""
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _run_id(run: Path) -> str:
    return json.loads((run / "run.json").read_text())["run_id"]


def test_an_existing_run_folder_is_refused_and_left_as_it_was(dataset, tmp_path):
    """A new run in a folder that holds a run (same config or another) is a ConfigError naming the folder
    and both ways out, and nothing on disk changes; a folder with only other files is no run."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "notes.txt").write_text("mine")  # a folder with files of its own but no run is fine
    train(_config(dataset, run, "tiny-align", "optim.max_steps=2"))
    assert (run / "final" / "config.json").is_file() and (run / "notes.txt").read_text() == "mine"
    assert len(_run_id(run)) == 32
    before = _snapshot(run)
    for extra in ((), ("optim.lr=0.5",)):
        with pytest.raises(ConfigError, match=rf"output\.dir={run} already holds a run .*--resume to continue "
                                              r"it or --overwrite to replace it"):
            train(_config(dataset, run, "tiny-align", "optim.max_steps=2", *extra))
        assert _snapshot(run) == before
    for name in ("config.yaml", "log.jsonl", "checkpoints", "final"):  # any one artefact is a run
        lone = tmp_path / f"lone-{name}"
        (lone / name).parent.mkdir(parents=True, exist_ok=True)
        (lone / name).mkdir() if name in ("checkpoints", "final") else (lone / name).write_text("")
        with pytest.raises(ConfigError, match=f"already holds a run \\({name}\\)"):
            train(_config(dataset, lone, "tiny-align", "optim.max_steps=1"))
    with pytest.raises(ConfigError, match="resume and overwrite exclude each other"):
        train(_config(dataset, run, "tiny-align", "optim.max_steps=2"), resume=True, overwrite=True)
    assert _snapshot(run) == before


def test_overwrite_replaces_the_old_run_and_nothing_else(dataset, tmp_path):
    """overwrite=True deletes the old run's artefacts (its later checkpoints, log, final, config, run id)
    and trains exactly what a run in an empty folder trains; other files in the folder stay."""
    run, fresh = tmp_path / "run", tmp_path / "fresh"
    train(_config(dataset, run, "tiny-align", "optim.max_steps=4", "output.save_every=1", "output.keep_last=4",
                  "optim.lr=0.5"))
    old_id = _run_id(run)
    (run / "mine").mkdir()
    (run / "mine" / "notes.txt").write_text("keep me")
    (run / "data.json").write_text("[]")
    new = ("optim.max_steps=2", "output.save_every=1", "output.keep_last=4")
    final = train(_config(dataset, run, "tiny-align", *new), overwrite=True)
    train(_config(dataset, fresh, "tiny-align", *new))
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-00000001", "step-00000002"]
    assert [r["step"] for r in _step_records(run)] == [1, 2]
    assert _run_id(run) != old_id and torch.load(run / "checkpoints" / "step-00000002" / "trainer_state.pt",
                                                  weights_only=False)["run_id"] == _run_id(run)
    assert load_config(run / "config.yaml").optim.lr == 1e-3  # the new run's config, not the old one's
    assert (final / "model.safetensors").is_file()
    _assert_close(_trainable(run, 2), _trainable(fresh, 2), atol=0.0)
    _assert_close(load_file(final / "model.safetensors"), load_file(fresh / "final" / "model.safetensors"), atol=0.0)
    assert (run / "mine" / "notes.txt").read_text() == "keep me" and (run / "data.json").read_text() == "[]"
    # and an overwrite of a missing folder is a plain fresh start
    assert (train(_config(dataset, tmp_path / "new", "tiny-align", "optim.max_steps=1"), overwrite=True)
            / "model.safetensors").is_file()


def test_resume_refuses_a_checkpoint_of_another_run(dataset, tmp_path):
    """--resume continues the folder's own run: another run's checkpoint (copied in as the newest one, or
    named by path) is refused, naming both run ids, and the folder is left as it was."""
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    extra = ("optim.max_steps=4", "output.save_every=2")
    train(_config(dataset, ours, "tiny-align", *extra))
    train(_config(dataset, theirs, "tiny-align", *extra))
    ours_id, theirs_id = _run_id(ours), _run_id(theirs)
    shutil.copytree(theirs / "checkpoints" / "step-00000004", ours / "checkpoints" / "step-00000009")
    before = _snapshot(ours)
    cmd = [sys.executable, "-m", "videoccam.cli", "train", "tiny-align", *_overrides(dataset, ours, *extra), "--resume"]
    result = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert f"the checkpoint belongs to run {theirs_id}, but {ours} holds run {ours_id}" in result.stderr
    assert _snapshot(ours) == before
    shutil.rmtree(ours / "checkpoints" / "step-00000009")
    with pytest.raises(ConfigError, match=f"belongs to run {theirs_id}, but {ours} holds run {ours_id}"):
        train(_config(dataset, ours, "tiny-align", *extra), resume=str(theirs / "checkpoints" / "step-00000004"))
    # its own checkpoint resumes (the finished run: nothing more to train)
    train(_config(dataset, ours, "tiny-align", *extra), resume=str(ours / "checkpoints" / "step-00000004"))


def test_a_run_that_fails_to_start_writes_nothing(dataset, tmp_path):
    """A missing model.checkpoint or data file is a clear error before the run folder is touched, so the
    corrected command is not refused as an existing run."""
    run = tmp_path / "run"
    with pytest.raises(ConfigError, match=rf"model\.checkpoint={tmp_path / 'nope'}: no such folder"):
        train(load_config(resolve_config("tiny-instruct"), [f"data.train={dataset / 'data.json'}",
                                                            f"model.checkpoint={tmp_path / 'nope'}",
                                                            f"output.dir={run}"]))
    with pytest.raises(FileNotFoundError):
        train(_config(dataset, run, "tiny-align", f"data.train={tmp_path / 'missing.json'}"))
    assert not run.exists()


def test_the_tiny_configs_chain_through_the_cli(dataset, tmp_path):
    """The README's two commands, as typed, in a fresh folder: tiny-align needs only its data, and
    tiny-instruct only its data (it reads tiny-align's output, runs/tiny-align/final); both exit 0 and
    stage 2's final model loads, with stage 1's weights where stage 2 did not train."""
    records = json.loads((dataset / "data.json").read_text())
    for record in records:
        key = "video" if "video" in record else "image"
        record[key] = f"media/{record[key]}"
    (tmp_path / "data.json").write_text(json.dumps(records))
    (tmp_path / "media").symlink_to(dataset / "media")
    outputs = []
    for name in ("tiny-align", "tiny-instruct"):
        result = subprocess.run([sys.executable, "-m", "videoccam.cli", "train", name, "data.train=data.json"],
                                cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=240)
        assert result.returncode == 0, result.stderr[-3000:]
        outputs.append(result.stdout.strip().splitlines()[-1])
    assert outputs == ["runs/tiny-align/final", "runs/tiny-instruct/final"]
    stage1, stage2 = (tmp_path / out for out in outputs)
    assert load_config(stage2.parent / "config.yaml").model.checkpoint == "runs/tiny-align/final"
    model, processor = load_trained(stage2)
    assert torch.isfinite(_logits(model, processor, dataset)).all()
    first, second = load_file(stage1 / "model.safetensors"), load_file(stage2 / "model.safetensors")
    vision = [k for k in first if k.startswith("vision_model.")]
    assert vision and all(torch.equal(first[k], second[k]) for k in vision)  # frozen in both stages
    projector = [k for k in first if k.startswith("projector.")]
    assert projector and any(not torch.equal(first[k], second[k]) for k in projector)  # trained further


# ---------------------------------------------------------------- outputs
def _logits(model, processor, dataset: Path) -> torch.Tensor:
    conv = [{"role": "user", "content": "<video>\nwhat happens in the video ?"}]
    batch = processor([conv], [[str(dataset / "media" / "v0.mp4")]], video_kwargs={"num_frames": 4})
    with torch.no_grad():
        return model.eval()(**batch).logits


def test_merged_and_adapter_outputs_load_to_the_same_model(dataset, tmp_path):
    merged = train(_config(dataset, tmp_path / "merged", *SCRATCH_INSTRUCT, "stage.train_vision=lora"))
    adapter = train(_config(dataset, tmp_path / "adapter", *SCRATCH_INSTRUCT, "stage.train_vision=lora",
                            "stage.save_adapter=true"))
    assert (adapter / "adapters" / "language_model" / "adapter_config.json").is_file()
    assert (adapter / "adapters" / "vision_model" / "adapter_config.json").is_file()
    assert not (adapter / "model.safetensors").exists()
    from transformers import AutoModelForImageTextToText, AutoProcessor

    m1 = AutoModelForImageTextToText.from_pretrained(merged)
    p1 = AutoProcessor.from_pretrained(merged)
    assert m1.generation_config.eos_token_id == p1.stop_token_ids  # generate / the pipeline stop like chat
    m2, p2 = load_trained(adapter)
    torch.testing.assert_close(_logits(m1, AutoProcessor.from_pretrained(merged), dataset),
                               _logits(m2, p2, dataset), atol=1e-5, rtol=1e-5)
    # a next stage can start from either output
    config = _config(dataset, tmp_path / "next", "tiny-instruct", "optim.max_steps=1")
    config.model.tokenizer = None
    config.model.from_scratch = False
    config.model.checkpoint = str(adapter)
    config.model.vision_config, config.model.text_config, config.model.projector = {}, {}, {}
    assert (train(config) / "model.safetensors").is_file()


@pytest.mark.parametrize("save_adapter", [False, True])
def test_a_checkpoint_can_continue_with_plain_cross_attention(dataset, tmp_path, save_adapter):
    """model.projector.mask=none on top of a checkpoint (the ablation's plain variant after a shared stage 1):
    the loaded projector's first query then sees later frames; shape fields stay refused."""
    final = train(_config(dataset, tmp_path / "run", *SCRATCH_INSTRUCT, "optim.max_steps=1",
                          f"stage.save_adapter={str(save_adapter).lower()}"))
    frames = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))  # [T, C, H, W]
    changed = frames.clone()
    changed[3] += 1.0  # only the last frame differs
    first_token = {}
    for mask in ("ccam", "none"):
        settings = load_config(resolve_config("tiny-instruct"), [
            "data.train=x.json", "model.from_scratch=false", "model.tokenizer=null", "model.vision_config={}",
            "model.text_config={}", f"model.checkpoint={final}", f"model.projector={{mask: {mask}}}"]).model
        model, _ = build_model(settings, 4)
        assert model.config.projector_config.mask == mask
        with torch.no_grad():
            a, b = (model.eval().get_visual_embeds(f, [4]).embeds[0, 0] for f in (frames, changed))  # [D]
        first_token[mask] = (a - b).abs().max().item()
    assert first_token["ccam"] == 0.0 and first_token["none"] > 1e-4
    with pytest.raises(ConfigError, match=r"model\.projector\.num_query"):
        load_config(resolve_config("tiny-instruct"), [
            "data.train=x.json", "model.from_scratch=false", "model.tokenizer=null", "model.vision_config={}",
            "model.text_config={}", f"model.checkpoint={final}", "model.projector={num_query: 4}"])
    # backbone configs would be ignored by a checkpoint (tiny-align builds from scratch with both)
    with pytest.raises(ConfigError, match=r"model\.vision_config\.hidden_size: a checkpoint keeps"):
        load_config(resolve_config("tiny-align"), [
            "data.train=x.json", "model.from_scratch=false", "model.tokenizer=null", f"model.checkpoint={final}"])
    with pytest.raises(ConfigError, match=r"model\.text_config\.num_hidden_layers: a checkpoint keeps"):
        load_config(resolve_config("tiny-align"), [
            "data.train=x.json", "model.from_scratch=false", "model.tokenizer=null", "model.vision_config={}",
            "model.text_config={num_hidden_layers: 4}", f"model.checkpoint={final}"])
    with pytest.raises(ConfigError, match="mask"):
        build_model(load_config(resolve_config("tiny-instruct"), [
            "data.train=x.json", "model.from_scratch=false", "model.tokenizer=null", "model.vision_config={}",
            "model.text_config={}", f"model.checkpoint={final}", "model.projector={mask: sideways}"]).model)


def test_base_backbones_are_joined_by_a_new_projector(tmp_path):
    """model.vision + model.llm: pretrained folders (saved tiny backbones), placeholders added to the tokenizer."""
    from transformers import (
        AutoModelForCausalLM,
        PreTrainedTokenizerFast,
        Qwen2Config,
        SiglipImageProcessorPil,
        SiglipVisionConfig,
        SiglipVisionModel,
    )

    tok = make_tiny_tokenizer()
    plain = PreTrainedTokenizerFast(tokenizer_object=tok.backend_tokenizer, eos_token="<|endoftext|>")
    vision = SiglipVisionModel(SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                                  num_attention_heads=2, image_size=32, patch_size=8))
    vision.save_pretrained(tmp_path / "vision")
    SiglipImageProcessorPil(size={"height": 32, "width": 32}).save_pretrained(tmp_path / "vision")
    llm = AutoModelForCausalLM.from_config(Qwen2Config(
        hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        vocab_size=300))
    llm.save_pretrained(tmp_path / "llm")
    plain.save_pretrained(tmp_path / "llm")
    config = load_config(None, [f"model.vision={tmp_path / 'vision'}", f"model.llm={tmp_path / 'llm'}",
                                "model.projector={num_query: 4, hidden_size: 32, num_heads: 4, "
                                "num_key_value_heads: 4, intermediate_size: 64}",
                                "data.train=x.json"])
    model, processor = build_model(config.model, num_frames=4)
    assert model.config.num_visual_tokens == 4 and processor.num_visual_tokens == 4
    assert model.config.video_token_id == processor.tokenizer.convert_tokens_to_ids("<video>")
    assert model.get_input_embeddings().num_embeddings >= len(processor.tokenizer)
    loaded, saved = model.vision_model.state_dict(), vision.state_dict()
    assert loaded.keys() == saved.keys() and all(torch.equal(loaded[k], saved[k]) for k in saved)
    frames = np.random.default_rng(0).integers(0, 255, (4, 40, 40, 3), dtype=np.uint8)
    batch = processor([[{"role": "user", "content": "<video>\nwhat happens ?"},
                        {"role": "assistant", "content": "the red square"}]], [[frames]],
                      add_generation_prompt=False, return_labels=True, padding_side="right")
    apply_stage(model, config.stage)
    assert torch.isfinite(model(**batch).loss)
