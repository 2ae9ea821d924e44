"""Bundle a trained synthetic-world model as the package's default model, with its model card.

    python tools/bundle_default_model.py runs/ablate "CCAM" [--seed S]

copies ``runs/ablate/seed<S>/<variant>/final`` to ``src/videoccam/assets/default_model/`` and writes
its README.md (command, data seed, test accuracy from ``runs/ablate/results.json``).
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path
from typing import Any

from safetensors.torch import load_file

from videoccam.configs import resolve_config
from videoccam.synth.ablation import CONFIG, STAGE1_CONFIG, VARIANTS, accuracy_cell, variant_slug
from videoccam.train.config import load_config

DEFAULT_DEST = Path(__file__).resolve().parents[1] / "src" / "videoccam" / "assets" / "default_model"

CARD = """# videoccam default model: {variant} on the synthetic temporal world

A {params:,}-parameter Video-CCAM model (tiny SigLIP 32x32 + CCAM projector with {queries} queries +
3-layer Qwen2, word-level tokenizer of {vocab} tokens), trained from scratch on CPU on the synthetic
world of `docs/synthetic-world.md`. It answers that world's six question families about clips
like those in `examples/`; it knows nothing else. It is the default of `videoccam chat` so the CLI,
demo and server run out of the box; a real checkpoint is one `--model` flag away.

## How it was made

```bash
{synth}
videoccam train {stage1}{seeded} && videoccam train {stage2}{seeded}{overrides}
```

Stage 1 (`{stage1}`) learns perception on single frames{stills_note}, stage 2 (`{stage2}`) the clips'
questions (docs/synthetic-world.md, "Training recipe"). `videoccam ablate{ablate_overrides} --data {clips}{stage1_data} --out
runs/ablate --seeds {seed}{ablate_options}` trains this variant with the same configs and seed, next to the other
four. Data seed {data_seed}; training seed {seed}; trained at 16 frames.

## Test accuracy ({n} held-out questions, greedy exact match, 95% Wilson interval)

| family | order-dependent | chance | {frames_head} |
|---|---|---|{frames_rule}
{rows}

{at_chance}
"""


def _synth_line(out: str, manifest: dict[str, Any]) -> str:
    """The ``videoccam synth`` command that wrote the data of ``manifest`` (its manifest.json) to ``out``."""
    # generator version 4 added train_questions ("all" by default); earlier data asked one question per clip
    questions = manifest["train_questions"] if manifest["version"] >= 4 else "one"
    weights = manifest.get("turn_weights", {})  # manifests written before --turn-weight have no weights
    also_ask = manifest.get("also_ask", [])  # nor before --also-ask (generator version 5) training-only questions
    options = "".join([f" --stills-where {manifest['stills_where']}" if manifest["stills_where"] != "side" else "",
                       f" --train-questions {questions}" if questions != "all" else "",
                       *(f" --turn-weight {family}={weight:g}" for family, weight in weights.items()),
                       *(f" --also-ask {family}" for family in also_ask)])
    return (f"videoccam synth --out {out} --train {manifest['num_train']} --test {manifest['num_test']} "
            f"--seed {manifest['seed']} --workers 2{options}")


def write_bundle(final: str | Path, results: dict[str, Any], variant: str, dest: str | Path,
                 manifest: dict[str, Any], stage1_manifest: dict[str, Any] | None = None) -> Path:
    """Copy the run's ``final`` folder to ``dest`` and write its README.md model card from ``results``
    (a ``videoccam ablate`` results.json: the variant's accuracy, the two stages' configs and the
    overrides of every run) and ``manifest`` (the data's manifest.json: seed, counts, what the stills
    and training clips ask). ``stage1_manifest``: the manifest of the ``--stage1-data`` folder when
    stage 1 trained on another folder's stills than stage 2's clips."""
    stage1, stage2 = results["stage1_config"], results["config"]
    if stage1 is None:
        raise ValueError("the ablation trained no stage 1 (stage1_config is null): the card's two-stage "
                         "commands would not make this model")
    final, dest = Path(final), Path(dest)
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(final, dest, ignore=shutil.ignore_patterns("train_config.yaml"))
    config = json.loads((dest / "config.json").read_text())
    runs = [r for r in results["runs"] if r["variant"] == variant]
    if not runs:
        raise ValueError(f"no results for variant {variant!r}")
    frames = [r["frames"] for r in runs]
    families = list(runs[0]["families"])
    rows, chance_families = [], []
    for fam in families:
        first = runs[0]["families"][fam]
        lo, hi = first["ci95"]
        if lo <= first["chance"] <= hi:
            chance_families.append(fam)
        rows.append(f"| {fam} | {'yes' if first['order_dependent'] else 'no'} | {100 * first['chance']:.0f} | "
                    + " | ".join(accuracy_cell(run["families"][fam]) for run in runs) + " |")
    params = sum(t.numel() for t in load_file(dest / "model.safetensors").values())
    ablate_overrides = "".join(f" {o}" for o in results["overrides"])
    ablate_options = "".join([f" --stage1-config {stage1}" if stage1 != STAGE1_CONFIG else "",
                              f" --config {stage2}" if stage2 != CONFIG else ""])
    # the folder the shipped stage-1 config reads its stills and tokenizer from (data/synth, data/synth-where)
    data = Path(load_config(resolve_config(stage1)).data.train).parent.as_posix()
    if stage1_manifest is None:  # both stages on one folder
        clips, synth, stage1_data, stills_note, clips_override = data, _synth_line(data, manifest), "", "", ""
    else:  # stage 1 on data's stills, stage 2 on a larger clip set of the same world
        clips = f"{data}-{manifest['num_train']}"
        synth = f"{_synth_line(data, stage1_manifest)}\n{_synth_line(clips, manifest)}"
        stage1_data, clips_override = f" --stage1-data {data}", f" data.train={clips}/train.json"
        stills_note = f" (the stills of {data}'s {stage1_manifest['num_train']} clips)"
    overrides = "".join(f" {o}" for o in [*VARIANTS[variant], *results["overrides"]]) + clips_override
    (dest / "README.md").write_text(CARD.format(
        variant=variant, params=params, queries=config["projector_config"]["num_query"],
        vocab=config["text_config"]["vocab_size"], data_seed=manifest["seed"], seed=runs[0]["seed"],
        synth=synth, clips=clips, stage1_data=stage1_data, stills_note=stills_note,
        ablate_overrides=ablate_overrides, stage1=stage1, stage2=stage2, ablate_options=ablate_options,
        seeded="" if runs[0]["seed"] == 0 else "".join(f" {k}.seed={runs[0]['seed']}" for k in ("model", "optim", "data")),
        overrides=overrides, n=sum(e["n"] for e in runs[0]["families"].values()),
        frames_head=" | ".join(f"{f} frames" for f in frames), frames_rule="---|" * len(frames),
        rows="\n".join(rows),
        at_chance=(f"At {frames[0]} frames the 95% interval includes chance on: {', '.join(chance_families)}."
                   if chance_families else f"At {frames[0]} frames it is above chance on every family.")))
    return dest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("ablation", type=Path, help="a `videoccam ablate` output folder")
    parser.add_argument("variant", choices=list(VARIANTS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dest", type=Path, default=DEFAULT_DEST)
    args = parser.parse_args()
    results = json.loads((args.ablation / "results.json").read_text())
    final = args.ablation / f"seed{args.seed}" / variant_slug(args.variant) / "final"
    manifest = json.loads((Path(results["data"]) / "manifest.json").read_text())
    # results.json of ablations before --stage1-data have no "stage1_data": stage 1 used "data"'s stills
    stage1_data = Path(results.get("stage1_data", results["data"]))
    stage1_manifest = (None if stage1_data == Path(results["data"])
                       else json.loads((stage1_data / "manifest.json").read_text()))
    runs = {**results, "runs": [r for r in results["runs"] if r["seed"] == args.seed]}
    print(write_bundle(final, runs, args.variant, args.dest, manifest, stage1_manifest))


if __name__ == "__main__":
    main()
