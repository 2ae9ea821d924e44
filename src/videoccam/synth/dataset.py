"""Writing the synthetic benchmark to disk: mp4 clips, LLaVA-format JSON, tokenizer, manifest.

Layout of ``generate_dataset(out_dir, ...)``::

    out_dir/videos/train/train_000000.mp4 ...   H.264 (libx264, yuv420p)
    out_dir/videos/test/test_000000.mp4 ...
    out_dir/train.json, out_dir/test.json        LLaVA format; "video" paths are relative to out_dir; a
                                                 training clip asks every order question it answers
                                                 (and the training-only ones of also_ask; answers
                                                 weighted by family with turn_weights)
    out_dir/stills/train/train_000000_beat03.png  single beats of the training clips (PNG)
    out_dir/stills.json                          their perception questions (stage 1; videoccam.synth.stills)
    out_dir/tokenizer/                           build_tokenizer(stills_where).save_pretrained(...)
    out_dir/manifest.json                        seed, counts, clock, families, generator version

Sample ``i`` of split ``s`` is a pure function of ``(seed, s, i)``: its random stream comes from
``numpy.random.SeedSequence(seed, spawn_key=(crc32(s), i))``, so splits never share a stream and
any sample can be regenerated alone, in any process. Families cycle (sample ``i`` is of family
``families[i % len(families)]``), and within a family the answers cycle through every answer value
in a freshly shuffled order per cycle, so answers are exactly balanced over every full cycle.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import time
import zlib
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from videoccam.constants import VIDEO_TOKEN
from videoccam.processing.processor import check_turn_weight
from videoccam.progress import ProgressCallback
from videoccam.synth.families import (
    ANSWERS,
    FAMILIES,
    QUESTIONS,
    TRAIN_ONLY_FAMILIES,
    Sample,
    check_also_ask,
    make_sample,
    order_questions,
)
from videoccam.synth.stills import check_where, make_stills, still_record
from videoccam.synth.tokenizer import build_tokenizer
from videoccam.synth.world import WorldConfig
from videoccam.testing.media import write_video

logger = logging.getLogger(__name__)

GENERATOR_VERSION = 5  # 2: stills (stage-1 perception set); 3: the stills' `where` option (same output for "side");
#                        4: training clips ask every order question they answer (`train_questions="all"`);
#                        5: training-only questions (`also_ask`; the same output without them)
SPLITS: tuple[str, ...] = ("train", "test")
EXAMPLES_SPLIT = "examples"
_BALANCE_KEY = 0xBA1A  # spawn-key tag of the answer-order streams (never equal to a sample's key)
_TURNS_KEY = 0x7A25  # spawn-key tag of the extra turns' order streams
TRAIN_QUESTIONS: tuple[str, ...] = ("all", "one")  # what a training clip asks; the test split always asks one
# x264 settings of the clips: "fast" preset, near-transparent quality, one thread per clip (clips
# are tiny; parallelism comes from the worker processes).
ENCODER_OPTIONS: dict[str, str] = {"preset": "fast", "crf": "18", "threads": "1"}


def _split_key(split: str) -> int:
    return zlib.crc32(split.encode("utf-8"))


def sample_seed(seed: int, split: str, index: int) -> int:
    """The 64-bit seed of sample ``index`` of ``split`` (``numpy.random.default_rng`` takes it)."""
    state = np.random.SeedSequence(seed, spawn_key=(_split_key(split), index)).generate_state(2, np.uint32)
    return int(state[0]) << 32 | int(state[1])


def balanced_answer(seed: int, split: str, family: str, k: int) -> str:
    """The answer of the ``k``-th sample of ``family`` in ``split``.

    The answer values are visited in cycles of ``len(ANSWERS[family])``, each cycle in its own
    seeded random order, so every value occurs equally often over a full cycle.
    """
    values = ANSWERS[family]
    cycle, offset = divmod(k, len(values))
    stream = np.random.SeedSequence(seed, spawn_key=(_split_key(split), _BALANCE_KEY, _split_key(family), cycle))
    order = np.random.default_rng(stream).permutation(len(values))
    return values[int(order[offset])]


def dataset_sample(seed: int, split: str, index: int, families: Sequence[str] = FAMILIES,
                   config: WorldConfig | None = None) -> tuple[Sample, int]:
    """Sample ``index`` of ``split`` and its seed, exactly as :func:`generate_dataset` writes it."""
    family = families[index % len(families)]
    answer = balanced_answer(seed, split, family, index // len(families))
    own_seed = sample_seed(seed, split, index)
    return make_sample(family, np.random.default_rng(own_seed), answer, config), own_seed


def write_clip(path: str | Path, sample: Sample) -> Path:
    """Encode ``sample``'s clip as an H.264 mp4 at the config's frame rate."""
    return write_video(path, sample.clip.render(), sample.clip.config.fps, codec="libx264",
                       pix_fmt="yuv420p", options=ENCODER_OPTIONS)


def check_train_questions(mode: str) -> None:
    """Raise a ValueError naming ``train_questions`` unless ``mode`` is one of :data:`TRAIN_QUESTIONS`."""
    if mode not in TRAIN_QUESTIONS:
        raise ValueError(f"train_questions must be one of {TRAIN_QUESTIONS}, got {mode!r}")


def extra_turns(sample: Sample, seed: int, split: str, index: int,
                also_ask: Sequence[str] = ()) -> list[tuple[str, str, str]]:
    """The order questions of ``sample``'s clip other than its own, as ``(family, question, answer)``.

    From :func:`~videoccam.synth.families.order_questions` (with the training-only families of
    ``also_ask``), in a random order drawn from a stream of their own (``seed``, ``split``,
    ``index``), so the sample's scene is the same with or without them.
    """
    own = (sample.family, sample.subject)
    turns = [(family, QUESTIONS[family].format(subject=subject), answer)
             for family, subject, answer in order_questions(sample.clip, also_ask) if (family, subject) != own]
    stream = np.random.SeedSequence(seed, spawn_key=(_split_key(split), _TURNS_KEY, index))
    return [turns[int(i)] for i in np.random.default_rng(stream).permutation(len(turns))]


def check_turn_weights(weights: Mapping[str, float]) -> dict[str, float]:
    """``weights`` as ``{family: float}``; a ValueError naming ``turn_weights`` for an unknown family or a
    weight that is not a finite number >= 0."""
    known = FAMILIES + TRAIN_ONLY_FAMILIES
    unknown = [f for f in weights if f not in known]
    if unknown:
        raise ValueError(f"turn_weights: unknown families {unknown}; known: {list(known)}")
    return {family: check_turn_weight(weight, "assistant", f"turn_weights[{family!r}]")
            for family, weight in weights.items()}


def _record(sample: Sample, sample_id: str, video: str, own_seed: int,
            extra: Sequence[tuple[str, str, str]] = (), weights: Mapping[str, float] | None = None
            ) -> dict[str, Any]:
    """The LLaVA-format JSON entry of one sample; ``extra`` turns follow its own question.

    ``meta.family`` and ``meta.answer`` describe the first turn (the sample's own question);
    ``meta.families`` lists the family of every turn. An answer whose family has a weight other than
    1 in ``weights`` carries it as ``"weight"`` (the data format's per-turn loss weight).
    """
    turns = [(sample.family, sample.question, sample.answer), *extra]
    conversations = []
    for k, (family, question, answer) in enumerate(turns):
        conversations += [{"from": "human", "value": f"{VIDEO_TOKEN}\n{question}" if k == 0 else question},
                          {"from": "gpt", "value": answer}]
        weight = (weights or {}).get(family, 1.0)
        if weight != 1.0:
            conversations[-1]["weight"] = weight
    return {
        "id": sample_id,
        "video": video,
        "conversations": conversations,
        "meta": {
            "family": sample.family,
            "answer": sample.answer,
            "chance": sample.chance,
            "order_dependent": sample.order_dependent,
            "seed": own_seed,
            "families": [sample.family] + [family for family, _, _ in extra],
        },
    }


def _write_samples(job: tuple[Path, int, str, list[int], tuple[str, ...], WorldConfig, str, str, dict[str, float],
                              tuple[str, ...]]
                   ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Generate, encode and describe a chunk of samples of one split (runs in worker processes).

    Returns the clips' records and, for the train split, the records of their stills.
    """
    out_dir, seed, split, indices, families, config, where, questions, turn_weights, also_ask = job
    records, stills = [], []
    if split == "train":
        (out_dir / "stills" / split).mkdir(parents=True, exist_ok=True)
    for index in indices:
        sample, own_seed = dataset_sample(seed, split, index, families, config)
        sample_id = f"{split}_{index:06d}"
        video = f"videos/{split}/{sample_id}.mp4"
        write_clip(out_dir / video, sample)
        extra = extra_turns(sample, seed, split, index, also_ask) if split == "train" and questions == "all" else []
        records.append(_record(sample, sample_id, video, own_seed, extra, turn_weights if split == "train" else None))
        if split == "train":
            beats = sample.clip.render_beats()  # [beats, H, W, 3]
            for still in make_stills(sample, own_seed, where=where):
                image = f"stills/{split}/{sample_id}_beat{still.beat:02d}.png"
                Image.fromarray(beats[still.beat]).save(out_dir / image)
                stills.append(still_record(still, sample_id, image, own_seed))
    return records, stills


def generate_dataset(
    out_dir: str | Path,
    num_train: int,
    num_test: int,
    seed: int = 0,
    *,
    config: WorldConfig | None = None,
    families: Sequence[str] = FAMILIES,
    workers: int = 1,
    stills_where: str = "side",
    train_questions: str = "all",
    turn_weights: Mapping[str, float] | None = None,
    also_ask: Sequence[str] = (),
    progress: ProgressCallback | None = None,
) -> dict[str, Any]:
    """Write the synthetic benchmark to ``out_dir`` (see the module docstring for the layout).

    Args:
        out_dir: Output folder (created; existing files of the same names are overwritten).
        num_train: Number of training samples.
        num_test: Number of test samples.
        seed: Master seed; the same seed gives the same JSON and the same clips.
        config: Clip size and clock (default 64x64, 16 beats of 4 frames, 8 fps).
        families: Families to cycle through, a subset of :data:`~videoccam.synth.families.FAMILIES`.
        workers: Processes that render and encode clips (``1``: in this process).
        stills_where: What the stills ask about where objects are: ``"side"`` (the default recipe) or
            ``"both"`` (side and height of every object off the middle, weighted; the long recipe),
            see :func:`~videoccam.synth.stills.make_stills`. The tokenizer covers its words.
        train_questions: ``"all"``: a training clip asks its own question, then every other order
            question its scene answers (:func:`extra_turns`; e.g. a ``first`` clip also asks what
            flashed right after its earlier flash), as one multi-turn conversation; ``"one"``: its
            own question only. Test clips always ask one question; the clips and stills are the same.
        turn_weights: Loss weight of the training clips' answers by family, e.g. ``{"direction": 5,
            "reverse": 5}`` (written as the answers' ``"weight"``; families left out weigh 1, and
            with the default ``None`` no answer carries a weight). Test clips and stills are not
            weighted. A config's ``TurnWeightSchedule`` callback (:mod:`videoccam.synth.schedule`)
            says for how many steps they act.
        also_ask: Training-only families (:data:`~videoccam.synth.families.TRAIN_ONLY_FAMILIES`) that
            training clips ask as extra turns, with ``train_questions="all"``: ``("before",)`` asks,
            for every flash but the first, which flash came right before it ("the <c> one flashed
            right after which colour ?"). The clips, stills, test set and tokenizer are the same.
        progress: Called with ``(clips written, clips)`` after every chunk of 50 clips (see
            :mod:`videoccam.progress`).

    Returns:
        The manifest (also written to ``out_dir/manifest.json``).
    """
    config = config or WorldConfig()
    families = tuple(families)
    unknown = [f for f in families if f not in FAMILIES]
    if unknown or not families:
        raise ValueError(f"families must be a non-empty subset of {FAMILIES}, got {list(families)}")
    if num_train < 0 or num_test < 0:
        raise ValueError(f"sample counts must be >= 0, got train={num_train}, test={num_test}")
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    check_where(stills_where, "stills_where")
    check_train_questions(train_questions)
    also_ask = tuple(dict.fromkeys(also_ask))  # once each, in the given order
    check_also_ask(also_ask)
    if also_ask and train_questions != "all":
        raise ValueError(f"also_ask={list(also_ask)} needs train_questions='all' (extra turns), "
                         f"got {train_questions!r}")
    weights = check_turn_weights(turn_weights or {})
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    counts = {"train": num_train, "test": num_test}
    chunk = 50
    jobs = [
        (out_dir, seed, split, list(range(start, min(start + chunk, counts[split]))), families, config, stills_where,
         train_questions, weights, also_ask)
        for split in SPLITS for start in range(0, counts[split], chunk)
    ]
    started = time.perf_counter()
    records: dict[str, list[dict[str, Any]]] = {split: [] for split in SPLITS}
    stills: list[dict[str, Any]] = []
    if progress is not None:
        progress(0, num_train + num_test)
    for job, (chunk_records, chunk_stills) in zip(jobs, _run(jobs, workers), strict=True):
        records[job[2]].extend(chunk_records)
        stills.extend(chunk_stills)
        done = sum(len(r) for r in records.values())
        if progress is not None:
            progress(done, num_train + num_test)
        logger.info("synth: %d / %d clips (%.1f clips/s)", done, num_train + num_test,
                    done / max(time.perf_counter() - started, 1e-9))
    for split in SPLITS:
        (out_dir / f"{split}.json").write_text(json.dumps(records[split], indent=1) + "\n")
    (out_dir / "stills.json").write_text(json.dumps(stills, indent=1) + "\n")
    build_tokenizer(stills_where).save_pretrained(out_dir / "tokenizer")
    manifest = {
        "generator": "videoccam.synth",
        "version": GENERATOR_VERSION,
        "seed": seed,
        "num_train": num_train,
        "num_test": num_test,
        "num_stills": len(stills),
        "stills_where": stills_where,
        "train_questions": train_questions,
        "turn_weights": weights,
        "also_ask": list(also_ask),
        "size": config.size,
        "frames": config.num_frames,
        "beats": config.num_beats,
        "frames_per_beat": config.frames_per_beat,
        "fps": config.fps,
        "families": list(families),
        "family_counts": {
            split: dict(Counter(r["meta"]["family"] for r in records[split])) for split in SPLITS
        },
        "turn_counts": {  # questions asked per family, every turn counted
            split: dict(Counter(f for r in records[split] for f in r["meta"]["families"])) for split in SPLITS
        },
        "codec": "libx264",
        "encoder_options": ENCODER_OPTIONS,
        "tokenizer": "tokenizer",
    }
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    elapsed = time.perf_counter() - started
    logger.info("synth: wrote %d clips to %s in %.1f s", num_train + num_test, out_dir, elapsed)
    return manifest


def _run(jobs: list, workers: int) -> Iterator[tuple[list[dict[str, Any]], list[dict[str, Any]]]]:
    """Run the chunk jobs, yielding their records in job order, here or in ``workers`` processes."""
    if workers == 1 or len(jobs) <= 1:
        yield from map(_write_samples, jobs)
        return
    # fork avoids re-importing torch/transformers in every worker; fall back where it is missing
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("fork" if "fork" in methods and os.name == "posix" else None)
    with ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=context) as pool:
        yield from pool.map(_write_samples, jobs)


def write_examples(out_dir: str | Path, seed: int = 0, *, config: WorldConfig | None = None,
                   families: Sequence[str] = FAMILIES) -> Path:
    """Write one example clip per family, from the ``"examples"`` split (disjoint from train/test).

    Writes ``out_dir/<family>.mp4`` and ``out_dir/questions.json``, a list of
    ``{"video": "<family>.mp4", "family", "question", "answer"}`` (video names relative to
    ``out_dir``).

    Returns:
        The path of ``questions.json``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    entries = []
    for index, family in enumerate(families):
        sample, _ = dataset_sample(seed, EXAMPLES_SPLIT, index, families=(family,), config=config)
        write_clip(out_dir / f"{family}.mp4", sample)
        entries.append({"video": f"{family}.mp4", "family": family, "question": sample.question,
                        "answer": sample.answer})
    path = out_dir / "questions.json"
    path.write_text(json.dumps(entries, indent=1) + "\n")
    return path
