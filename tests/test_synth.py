"""The synthetic temporal world: answers readable from decoded mp4s, order-only information, determinism,
tokenizer, CLI."""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from transformers import AutoTokenizer

from videoccam import load_video, sample_indices
from videoccam.cli import main
from videoccam.processing.processor import IGNORE_INDEX
from videoccam.synth import (
    ANSWERS,
    BACKGROUND,
    COLOURS,
    FAMILIES,
    ORDER_FAMILIES,
    PALETTE,
    QUESTIONS,
    WorldConfig,
    answer_for,
    build_tokenizer,
    dataset_sample,
    generate_dataset,
    make_sample,
    write_examples,
)
from videoccam.synth.families import order_questions
from videoccam.testing import make_tiny_processor, tiny_config

SEED = 3


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "data"
    generate_dataset(out, num_train=24, num_test=12, seed=SEED)
    return out


def records(root: Path, split: str) -> list[dict]:
    return json.loads((root / f"{split}.json").read_text())


def question_of(record: dict) -> str:
    human = record["conversations"][0]["value"]
    assert human.startswith("<video>\n")
    return human.removeprefix("<video>\n")


def turns_of(record: dict) -> list[tuple[str, str]]:
    """Every ``(question, answer)`` of a record, the media placeholder removed."""
    conversations = record["conversations"]
    return [(conversations[k]["value"].removeprefix("<video>\n"), conversations[k + 1]["value"])
            for k in range(0, len(conversations), 2)]


# ------------------------------------------------------- an independent reader of decoded frames
_PALETTE = np.array([PALETTE[c] for c in COLOURS], dtype=np.int32)  # [6, 3]
MIN_PIXELS = 40  # the smallest object (a 12 px disc) has ~113 px


def read_frames(frames: np.ndarray) -> list[dict[str, tuple[float, float]]]:
    """Per frame, the palette colours visible (as blobs of at least MIN_PIXELS) and their centroids."""
    num, height, width, _ = frames.shape
    pixels = frames.reshape(-1, 3).T.astype(np.float32)  # [3, T * H * W]
    palette = np.concatenate([_PALETTE, [BACKGROUND]]).astype(np.float32)  # [7, 3], background last
    # squared distances less the pixel's own |p|^2 (the same for every colour)
    partial = (palette**2).sum(1)[:, None] - 2 * palette @ pixels  # [7, T * H * W]
    label = partial.argmin(0)  # [T * H * W]
    nearest = np.take_along_axis(partial, label[None], 0)[0] + (pixels**2).sum(0)  # [T * H * W]
    label[nearest > 60**2] = len(COLOURS)  # far from every colour: background
    key = np.repeat(np.arange(num), height * width) * (len(COLOURS) + 1) + label  # [T * H * W]
    ys, xs = np.mgrid[:height, :width]  # [H, W] each
    size = num * (len(COLOURS) + 1)
    counts = np.bincount(key, minlength=size).reshape(num, -1)  # [T, 7]
    sum_x = np.bincount(key, weights=np.tile(xs.ravel(), num), minlength=size).reshape(num, -1)  # [T, 7]
    sum_y = np.bincount(key, weights=np.tile(ys.ravel(), num), minlength=size).reshape(num, -1)  # [T, 7]
    return [
        {c: (sum_x[t, k] / counts[t, k], sum_y[t, k] / counts[t, k])
         for k, c in enumerate(COLOURS) if counts[t, k] >= MIN_PIXELS}
        for t in range(num)
    ]


def read_answer(frames: np.ndarray, question: str) -> tuple[str, dict[str, list[int]]]:
    """Answer ``question`` from frames alone; also return the frames in which each flash was seen."""
    seen = read_frames(frames)
    frames_of = {c: [t for t, s in enumerate(seen) if c in s] for c in COLOURS}
    present = [c for c in COLOURS if frames_of[c]]
    flashes = {c: frames_of[c] for c in present if len(frames_of[c]) < len(frames) // 2}
    in_time = [c for c in sorted(flashes, key=lambda c: flashes[c][0])]
    named = re.search(r"the (\w+) (?:object|one)", question)
    subject = named.group(1) if named else None
    if question == QUESTIONS["first"]:
        return in_time[0], flashes
    if question == QUESTIONS["after"].format(subject=subject):
        return in_time[in_time.index(subject) + 1], flashes
    if question == QUESTIONS["before"].format(subject=subject):
        assert in_time.index(subject) > 0, "the first flash has nothing before it"
        return in_time[in_time.index(subject) - 1], flashes
    if question == QUESTIONS["direction"].format(subject=subject):
        xs = [seen[t][subject][0] for t in frames_of[subject]]
        return ("right" if xs[-1] > xs[0] else "left"), flashes
    if question == QUESTIONS["reverse"]:
        rising = set()
        for c in present:
            ys = [seen[t][c][1] for t in frames_of[c]]
            if max(ys) - min(ys) > 4:
                rising.add(ys[-1] < ys[0])
        assert len(rising) == 1, "falling objects must all move the same way"
        return ("reversed" if rising.pop() else "forward"), flashes
    if question == QUESTIONS["colours"]:
        return " and ".join(sorted(present)), flashes
    if question == QUESTIONS["count"]:
        counts = {len(s) for s in seen}
        assert len(counts) == 1, "count objects stay for the whole clip"
        return ("one", "two", "three", "four")[counts.pop() - 1], flashes
    raise AssertionError(f"unknown question {question!r}")


# ------------------------------------------------------------------------------------- tests
def test_answers_are_readable_from_decoded_frames(dataset):
    for split in ("train", "test"):
        for record in records(dataset, split):
            video = load_video(dataset / record["video"], num_frames=16)
            assert video.frames.shape == (16, 64, 64, 3)
            answer, flashes = read_answer(video.frames, question_of(record))
            assert answer == record["meta"]["answer"] == record["conversations"][1]["value"], record["id"]
            for question, said in turns_of(record)[1:]:  # the training clips' further order questions
                assert read_answer(video.frames, question)[0] == said, (record["id"], question)
            # one frame per 4-frame segment sees every one-beat flash exactly once
            assert all(len(frames) == 1 for frames in flashes.values()), (record["id"], flashes)
            if record["meta"]["family"] in ("first", "after"):
                assert len(flashes) >= 2


def test_flashes_last_exactly_one_beat_in_the_decoded_mp4(dataset):
    for record in records(dataset, "test")[: len(FAMILIES)]:  # one clip per family
        video = load_video(dataset / record["video"], num_frames=64)
        assert video.indices.tolist() == list(range(64))
        answer, flashes = read_answer(video.frames, question_of(record))
        assert answer == record["meta"]["answer"], record["id"]
        for frames in flashes.values():
            assert len(frames) == 4 and frames[0] % 4 == 0 and frames == list(range(frames[0], frames[0] + 4))


def test_every_sampler_sees_each_beat_once_at_16_frames_and_evenly_at_32_64():
    config = WorldConfig()
    rng = np.random.default_rng(0)
    for _ in range(20):
        beats = config.beat_of_frame(sample_indices(64, num_frames=16, sample="random", src_fps=8, rng=rng))
        assert sorted(beats.tolist()) == list(range(16))
    for frames in (16, 32, 64):
        beats = config.beat_of_frame(sample_indices(64, num_frames=frames, sample="uniform", src_fps=8))
        assert Counter(beats.tolist()) == {b: frames // 16 for b in range(16)}


def test_same_seed_same_data_in_any_worker_count_and_split_seeds_differ(dataset, tmp_path):
    again = tmp_path / "again"
    generate_dataset(again, num_train=6, num_test=6, seed=SEED, workers=2)
    for split in ("train", "test"):
        first, second = records(dataset, split)[:6], records(again, split)
        assert first == second  # sample i depends only on (seed, split, i)
        for record in second:
            assert (dataset / record["video"]).read_bytes() == (again / record["video"]).read_bytes()
        a = load_video(dataset / second[0]["video"], num_frames=64).frames
        np.testing.assert_array_equal(a, load_video(again / second[0]["video"], num_frames=64).frames)
    train, test = records(dataset, "train"), records(dataset, "test")
    seeds = [r["meta"]["seed"] for r in train + test]
    assert len(set(seeds)) == len(seeds)
    other, _ = dataset_sample(SEED + 1, "train", 0)
    assert other.clip != dataset_sample(SEED, "train", 0)[0].clip
    assert dataset_sample(SEED, "test", 0)[0].clip != dataset_sample(SEED, "train", 0)[0].clip
    manifest = json.loads((dataset / "manifest.json").read_text())
    assert manifest["seed"] == SEED and manifest["num_train"] == 24 and manifest["frames"] == 64
    assert manifest["family_counts"]["train"] == {f: 4 for f in FAMILIES}


def test_records_are_llava_format_with_metadata(dataset):
    for record in records(dataset, "train"):
        assert set(record) == {"id", "video", "conversations", "meta"}
        assert record["video"] == f"videos/train/{record['id']}.mp4" and (dataset / record["video"]).is_file()
        turns = len(record["conversations"]) // 2
        assert [turn["from"] for turn in record["conversations"]] == ["human", "gpt"] * turns
        assert ["<video>" in turn["value"] for turn in record["conversations"]] == [True] + [False] * (2 * turns - 1)
        meta = record["meta"]
        assert len(meta["families"]) == turns and meta["families"][0] == meta["family"]
        assert set(meta["families"][1:]) <= set(ORDER_FAMILIES)
        assert meta["order_dependent"] == (meta["family"] in ORDER_FAMILIES)
        assert 0 < meta["chance"] <= 0.5


def test_training_clips_ask_every_order_question_they_answer(tmp_path):
    """Seed 0's first training clips, literally: the clip's own question first, then every other
    order question its scene answers, in a seeded random order. ``train_questions="one"`` writes the
    same clips, stills and test set with the first turn only."""
    first, reverse = QUESTIONS["first"], QUESTIONS["reverse"]
    after, way = QUESTIONS["after"].format, QUESTIONS["direction"].format
    expected = {
        0: [(first, "purple"), (after(subject="purple"), "white")],
        1: [(way(subject="blue"), "right")],
        2: [(after(subject="blue"), "purple"), (after(subject="red"), "blue"), (first, "red")],
        3: [(reverse, "reversed")],
        4: [(QUESTIONS["colours"], "green and red and white"), (way(subject="red"), "right")],
        5: [(QUESTIONS["count"], "four")],
    }
    out, one = tmp_path / "all", tmp_path / "one"
    manifest = generate_dataset(out, num_train=6, num_test=6, seed=0)
    assert [turns_of(r) for r in records(out, "train")] == list(expected.values())
    assert manifest["train_questions"] == "all"
    assert manifest["turn_counts"]["train"] == {"first": 2, "after": 3, "direction": 2, "reverse": 1, "colours": 1,
                                                "count": 1}
    assert generate_dataset(one, num_train=6, num_test=6, seed=0, train_questions="one")["train_questions"] == "one"
    for full, single in zip(records(out, "train"), records(one, "train"), strict=True):
        assert single["conversations"] == full["conversations"][:2]
        assert single["meta"] == {**full["meta"], "families": full["meta"]["families"][:1]}
        assert (out / full["video"]).read_bytes() == (one / single["video"]).read_bytes()
    assert records(one, "test") == records(out, "test")
    assert all(len(r["conversations"]) == 2 for r in records(out, "test"))
    assert (one / "stills.json").read_text() == (out / "stills.json").read_text()

    # the oracle behind the extra turns follows the scene: time reversal swaps the flashes
    sample, _ = dataset_sample(0, "train", 0)
    assert order_questions(sample.clip.reversed()) == [("first", None, "white"), ("after", "white", "purple")]
    with pytest.raises(ValueError, match="train_questions"):
        generate_dataset("unused", num_train=1, num_test=0, train_questions="some")


def test_also_ask_before_adds_training_turns_read_back_from_the_mp4s_and_changes_nothing_else(tmp_path):
    """Seed 0's first training clips with ``also_ask=("before",)``, literally: every flash but the
    first is also asked about ("the <c> one flashed right after which colour ?"), each answer is read
    back from the decoded mp4; the clips, stills, test set and tokenizer are those of the plain data."""
    first, after, before = QUESTIONS["first"], QUESTIONS["after"].format, QUESTIONS["before"].format
    plain, asked = tmp_path / "plain", tmp_path / "before"
    generate_dataset(plain, num_train=6, num_test=6, seed=0)
    manifest = generate_dataset(asked, num_train=6, num_test=6, seed=0, also_ask=["before", "before"],
                                turn_weights={"before": 2})
    assert [turns_of(r) for r in records(asked, "train")] == [
        [(first, "purple"), (before(subject="white"), "purple"), (after(subject="purple"), "white")],
        [(QUESTIONS["direction"].format(subject="blue"), "right")],
        [(after(subject="blue"), "purple"), (before(subject="blue"), "red"), (after(subject="red"), "blue"),
         (before(subject="purple"), "blue"), (first, "red")],
        [(QUESTIONS["reverse"], "reversed")],
        [(QUESTIONS["colours"], "green and red and white"), (QUESTIONS["direction"].format(subject="red"), "right")],
        [(QUESTIONS["count"], "four")],
    ]
    assert manifest["also_ask"] == ["before"] and manifest["turn_weights"] == {"before": 2.0}
    assert manifest["turn_counts"]["train"]["before"] == 3
    assert [[t.get("weight") for t in r["conversations"][1::2]] for r in records(asked, "train")][2] == [
        None, 2.0, None, 2.0, None]
    for a, p in zip(records(asked, "train"), records(plain, "train"), strict=True):
        assert (asked / a["video"]).read_bytes() == (plain / p["video"]).read_bytes()
        assert a["conversations"][:2] == p["conversations"][:2]  # the clip's own question comes first
        assert sorted(a["meta"]["families"]) == sorted(p["meta"]["families"] + ["before"] * a["meta"]["families"]
                                                       .count("before"))
        video = load_video(asked / a["video"], num_frames=16)
        for question, said in turns_of(a):
            assert read_answer(video.frames, question)[0] == said, (a["id"], question)
    assert records(asked, "test") == records(plain, "test")
    assert (asked / "stills.json").read_text() == (plain / "stills.json").read_text()
    assert (asked / "tokenizer" / "tokenizer.json").read_text() == (plain / "tokenizer" / "tokenizer.json").read_text()
    assert json.loads((plain / "manifest.json").read_text())["also_ask"] == []

    # the oracle: the first flash has nothing before it; reversal swaps the answers
    sample, _ = dataset_sample(0, "train", 2)
    assert answer_for("before", sample.clip.reversed(), "blue") == "purple"
    with pytest.raises(ValueError, match="before"):
        answer_for("before", sample.clip, "red")  # red flashed first
    with pytest.raises(ValueError, match="also_ask"):
        generate_dataset("unused", num_train=1, num_test=0, also_ask=["last"])
    with pytest.raises(ValueError, match="train_questions='all'"):
        generate_dataset("unused", num_train=1, num_test=0, also_ask=["before"], train_questions="one")
    with pytest.raises(ValueError, match="unknown family"):
        make_sample("before", np.random.default_rng(0))  # training-only: no scene of its own


def test_turn_weights_weigh_the_named_families_answers_of_training_clips_only(tmp_path):
    """Seed 0's first training clips (the literal turns above) with the motion families weighted 5:
    exactly their answers carry ``"weight": 5.0``, wherever they come in the conversation; the rest of
    every record, the test set, the stills and the clips are those of the unweighted dataset."""
    plain, weighted = tmp_path / "plain", tmp_path / "weighted"
    generate_dataset(plain, num_train=6, num_test=6, seed=0)
    manifest = generate_dataset(weighted, num_train=6, num_test=6, seed=0,
                                turn_weights={"direction": 5, "reverse": 5, "count": 1})
    assert manifest["turn_weights"] == {"direction": 5.0, "reverse": 5.0, "count": 1.0}

    def weights(record):
        return [turn.get("weight") for turn in record["conversations"] if turn["from"] == "gpt"]

    assert [weights(r) for r in records(weighted, "train")] == [
        [None, None], [5.0], [None, None, None], [5.0], [None, 5.0], [None]]
    for w, p in zip(records(weighted, "train"), records(plain, "train"), strict=True):
        assert [{k: v for k, v in turn.items() if k != "weight"} for turn in w["conversations"]] == p["conversations"]
        assert w["meta"] == p["meta"] and (weighted / w["video"]).read_bytes() == (plain / p["video"]).read_bytes()
    assert records(weighted, "test") == records(plain, "test")
    assert (weighted / "stills.json").read_text() == (plain / "stills.json").read_text()
    assert "weight" not in (plain / "train.json").read_text()  # no turn_weights: no weight written

    # the weights reach the processor's loss weights: 5 on the answer word, 1 on its end-of-turn marker
    tokenizer = AutoTokenizer.from_pretrained(weighted / "tokenizer")
    processor = make_tiny_processor(tokenizer, tiny_config(tokenizer))
    record = records(weighted, "train")[4]  # colours, then direction (weighted)
    conversation = [{"role": "user" if t["from"] == "human" else "assistant", "content": t["value"],
                     **({"weight": t["weight"]} if "weight" in t else {})} for t in record["conversations"]]
    batch = processor(conversation, [np.zeros((2, 64, 64, 3), dtype=np.uint8)], return_labels=True,
                      add_generation_prompt=False)
    labelled = batch["labels"][0] != IGNORE_INDEX
    assert batch["loss_weights"][0][labelled].tolist() == [1.0] * 6 + [5.0, 1.0]  # "green and red and white", "right"

    for bad, match in (({"where": 2}, "unknown families"), ({"after": -1}, r"turn_weights\['after'\]"),
                       ({"after": float("nan")}, r"turn_weights\['after'\]")):
        with pytest.raises(ValueError, match=match):
            generate_dataset(tmp_path / "bad", num_train=1, num_test=0, turn_weights=bad)
    assert not (tmp_path / "bad").exists()  # checked before anything is written


def test_answers_are_balanced():
    for family in FAMILIES:
        values = ANSWERS[family]
        n = len(values) * (2 if len(values) < 10 else 1)  # whole cycles of answer values
        answers = Counter(dataset_sample(0, "train", len(FAMILIES) * k + FAMILIES.index(family))[0].answer
                          for k in range(n))
        assert answers == {v: n // len(values) for v in values}, family


@pytest.mark.parametrize("family", ["direction", "reverse"])
def test_opposite_answers_from_one_stream_are_time_reversals(family):
    """Everything but the order is drawn independently of the answer: the set of frames is no cue."""
    for seed in range(10):
        a, b = ANSWERS[family]
        one = make_sample(family, np.random.default_rng(seed), a)
        two = make_sample(family, np.random.default_rng(seed), b)
        assert two.clip == one.clip.reversed() and two.question == one.question
        np.testing.assert_array_equal(two.clip.render(), one.clip.render()[::-1])


def frame_multiset(frames: np.ndarray) -> list[str]:
    return sorted(hashlib.sha1(frame.tobytes()).hexdigest() for frame in frames)


@pytest.mark.parametrize("family", ORDER_FAMILIES)
def test_reordering_the_beats_changes_the_answer_not_the_frame_multiset(family):
    rng = np.random.default_rng(1)
    for _ in range(10):
        sample = make_sample(family, rng)
        frames = sample.clip.render()
        if family == "after":  # reversal may make the subject last: swap the flashes instead
            flash_beats = sorted(s.visible_beats[0] for s in sample.clip.sprites if len(s.visible_beats) == 1)
            changed = None
            for perm in itertools.permutations(flash_beats):
                order = list(range(16))
                for src, dst in zip(flash_beats, perm, strict=True):
                    order[dst] = src
                clip = sample.clip.reordered(order)
                try:
                    if answer_for(family, clip, sample.subject) != sample.answer:
                        changed = clip
                        break
                except ValueError:  # the subject became the last flash
                    continue
            assert changed is not None
        else:
            changed = sample.clip.reversed()
            np.testing.assert_array_equal(changed.render(), frames[::-1])
            assert answer_for(family, changed, sample.subject) != sample.answer
        assert frame_multiset(changed.render()) == frame_multiset(frames)


def test_clips_are_well_formed():
    rng = np.random.default_rng(2)
    for family in FAMILIES:
        for _ in range(30):
            sample = make_sample(family, rng)
            assert sample.question == QUESTIONS[family].format(subject=sample.subject)
            frames = sample.clip.render()
            assert frames.shape == (64, 64, 64, 3) and frames.dtype == np.uint8
            # no two objects ever overlap: every drawn pixel belongs to one sprite
            drawn = np.zeros((16, 64, 64), dtype=np.int32)
            for sprite in sample.clip.sprites:
                for beat, pos in enumerate(sprite.positions):
                    if pos is not None:
                        x, y = pos
                        drawn[beat, y : y + sprite.size, x : x + sprite.size] += sprite.mask()
            assert drawn.max() <= 1, family


def test_other_sizes_and_clocks():
    config = WorldConfig.from_frames(size=32, num_frames=32, num_beats=8, fps=4)
    assert config.frames_per_beat == 4 and config.num_frames == 32
    for family in FAMILIES:
        sample = make_sample(family, np.random.default_rng(0), config=config)
        assert sample.clip.render().shape == (32, 32, 32, 3)
    shortest = WorldConfig(size=24, num_beats=4, frames_per_beat=1)
    for family, seed in itertools.product(FAMILIES, range(10)):
        assert make_sample(family, np.random.default_rng(seed), config=shortest).clip.render().shape[0] == 4
    with pytest.raises(ValueError, match="multiple"):
        WorldConfig.from_frames(num_frames=60, num_beats=16)


def test_tokenizer_covers_the_world_and_labels_exactly_the_answer(dataset):
    tokenizer = build_tokenizer()
    assert tokenizer.get_vocab() == build_tokenizer().get_vocab()
    unk = tokenizer.unk_token_id
    texts = [q.format(subject=c) for q in QUESTIONS.values() for c in COLOURS]
    texts += [a for values in ANSWERS.values() for a in values]
    for text in texts:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        assert unk not in ids and tokenizer.decode(ids) == text
    assert tokenizer("Which colour ?")["input_ids"] == tokenizer("which colour ?")["input_ids"]
    assert tokenizer("zebra")["input_ids"] == [unk]

    # the copy saved with the dataset loads back identical and drives the processor's labels
    loaded = AutoTokenizer.from_pretrained(dataset / "tokenizer")
    assert loaded.get_vocab() == tokenizer.get_vocab() and loaded.chat_template == tokenizer.chat_template
    processor = make_tiny_processor(loaded, tiny_config(loaded))
    frames = np.zeros((2, 64, 64, 3), dtype=np.uint8)
    for record in records(dataset, "test")[:6]:
        conversation = [{"role": "user", "content": record["conversations"][0]["value"]},
                        {"role": "assistant", "content": record["conversations"][1]["value"]}]
        batch = processor(conversation, [frames], return_labels=True, add_generation_prompt=False)
        ids, labels = batch["input_ids"][0], batch["labels"][0]
        assert unk not in ids.tolist()
        labelled = ids[labels != IGNORE_INDEX].tolist()
        expected = loaded(record["meta"]["answer"], add_special_tokens=False)["input_ids"]
        assert labelled == expected + [loaded.convert_tokens_to_ids("<|im_end|>")]


def test_write_examples(tmp_path):
    path = write_examples(tmp_path / "examples", seed=0)
    entries = json.loads(path.read_text())
    assert [e["family"] for e in entries] == list(FAMILIES)
    for entry in entries:
        video = load_video(path.parent / entry["video"], num_frames=16)
        assert read_answer(video.frames, entry["question"])[0] == entry["answer"]


def test_cli_synth(tmp_path):
    out = tmp_path / "cli"
    code = main(["synth", "--out", str(out), "--train", "6", "--test", "6", "--seed", "1",
                 "--families", "first", "count"])
    assert code == 0
    train = records(out, "train")
    assert len(train) == 6 and len(records(out, "test")) == 6
    assert {r["meta"]["family"] for r in train} == {"first", "count"}
    assert all((out / r["video"]).is_file() for r in train)
    assert (out / "tokenizer" / "tokenizer.json").is_file() and (out / "manifest.json").is_file()
    assert main(["synth", "--out", str(tmp_path / "bad"), "--frames", "60"]) == 2
    where = tmp_path / "where"
    assert main(["synth", "--out", str(where), "--train", "2", "--test", "0", "--stills-where", "both"]) == 0
    assert json.loads((where / "manifest.json").read_text())["stills_where"] == "both"
    assert main(["synth", "--out", str(tmp_path / "one"), "--train", "6", "--test", "0", "--seed", "0",
                 "--train-questions", "one"]) == 0
    assert all(len(r["conversations"]) == 2 for r in records(tmp_path / "one", "train"))
    assert len(AutoTokenizer.from_pretrained(where / "tokenizer")) == 49
    weighted = tmp_path / "weighted"
    assert main(["synth", "--out", str(weighted), "--train", "2", "--test", "0", "--seed", "0",
                 "--turn-weight", "direction=5", "--turn-weight", "reverse=2.5"]) == 0
    assert json.loads((weighted / "manifest.json").read_text())["turn_weights"] == {"direction": 5.0, "reverse": 2.5}
    assert [t.get("weight") for t in records(weighted, "train")[1]["conversations"]] == [None, 5.0]
    assert main(["synth", "--out", str(tmp_path / "bad"), "--turn-weight", "where=5"]) == 2
    with pytest.raises(SystemExit):  # not FAMILY=W: argparse's usage error
        main(["synth", "--out", str(tmp_path / "bad"), "--turn-weight", "direction"])
    asked = tmp_path / "asked"
    assert main(["synth", "--out", str(asked), "--train", "3", "--test", "0", "--seed", "0",
                 "--also-ask", "before"]) == 0
    assert json.loads((asked / "manifest.json").read_text())["also_ask"] == ["before"]
    assert records(asked, "train")[2]["meta"]["families"].count("before") == 2
    assert main(["synth", "--out", str(tmp_path / "bad"), "--also-ask", "before", "--train-questions", "one"]) == 2
    with pytest.raises(SystemExit):  # not a training-only family: argparse's usage error
        main(["synth", "--out", str(tmp_path / "bad"), "--also-ask", "after"])
    assert any(t.get("weight") == 10.0 for s in json.loads((where / "stills.json").read_text())
               for t in s["conversations"])


# --------------------------------------------------------------------- stills (stage-1 perception set)
@pytest.fixture(scope="module")
def where_dataset(tmp_path_factory) -> Path:
    """Training clips and stills with ``stills_where="both"`` (the long recipe's stage-1 data)."""
    out = tmp_path_factory.mktemp("synth_where") / "data"
    generate_dataset(out, num_train=24, num_test=0, seed=SEED, stills_where="both")
    return out


@pytest.mark.parametrize("where", ["side", "both"])
def test_stills_answers_are_readable_from_the_pngs(where, request):
    from PIL import Image

    from videoccam.synth.stills import HEIGHT_QUESTION, POSITION_QUESTION, WHERE_WEIGHT

    root = request.getfixturevalue("dataset" if where == "side" else "where_dataset")
    stills = json.loads((root / "stills.json").read_text())
    train = records(root, "train")
    assert len(stills) == 2 * len(train)  # every clip has >= 2 beats with something visible
    assert [s["id"].rsplit("_beat", 1)[0] for s in stills] == [r["id"] for r in train for _ in range(2)]
    assert json.loads((root / "manifest.json").read_text())["stills_where"] == where
    families = Counter()
    axes = {"position": (0, POSITION_QUESTION, "left", "right"), "height": (1, HEIGHT_QUESTION, "top", "bottom")}
    for still in stills:
        frame = np.asarray(Image.open(root / still["image"]).convert("RGB"))
        assert frame.shape == (64, 64, 3)
        seen = read_frames(frame[None])[0]  # colour -> centroid (x, y)
        turns = still["conversations"]
        assert turns[0]["value"].startswith("<image>\n") and [t["from"] for t in turns] == ["human", "gpt"] * (
            len(turns) // 2)
        assert all("weight" not in t for t in turns[::2])
        asked = {axis: set() for axis in axes}
        for family, human, gpt in zip(still["meta"]["families"], turns[::2], turns[1::2], strict=True):
            question, answer = human["value"].removeprefix("<image>\n"), gpt["value"]
            families[family] += 1
            if family == "colours":
                assert question == QUESTIONS["colours"] and answer == " and ".join(sorted(seen)), still["id"]
            elif family == "count":
                assert answer == ("one", "two", "three", "four")[len(seen) - 1], still["id"]
            else:
                axis, template, low, high = axes[family]
                subject = question.split()[2]  # "is the <colour> object ..."
                assert question == template.format(subject=subject) and subject not in asked[family]
                asked[family].add(subject)
                v = seen[subject][axis]
                if abs(v - 64 / 3) > 1 and abs(v - 128 / 3) > 1:  # centroid and box centre agree off the borders
                    assert answer == (low if v < 64 / 3 else high if v > 128 / 3 else None), still["id"]
            expected_weight = WHERE_WEIGHT if where == "both" and family in axes else None
            assert gpt.get("weight") == expected_weight, (still["id"], family)
        for family, (axis, *_) in axes.items():
            outer = {c for c, xy in seen.items() if xy[axis] < 64 / 3 - 1 or xy[axis] > 128 / 3 + 1}
            inner = {c for c, xy in seen.items() if 64 / 3 + 1 < xy[axis] < 128 / 3 - 1}
            assert not inner & asked[family], (still["id"], family)
            if where == "both":  # every object off the middle third is asked about, on both axes
                assert outer <= asked[family], (still["id"], family)
            elif family == "position":  # one object off the middle, when there is one
                assert len(asked[family]) <= 1 and (len(asked[family]) == 1 or not outer), still["id"]
            else:
                assert not asked[family], still["id"]
    assert families["colours"] == families["count"] == len(stills) and families["position"] > 0
    assert (families["height"] > 0) == (where == "both")


@pytest.mark.parametrize("where", ["side", "both"])
def test_stills_are_deterministic_and_in_the_vocabulary(where, request, tmp_path):
    from videoccam.synth.stills import make_stills

    root = request.getfixturevalue("dataset" if where == "side" else "where_dataset")
    sample, own_seed = dataset_sample(SEED, "train", 5)
    assert make_stills(sample, own_seed, where=where) == make_stills(sample, own_seed, where=where)
    assert make_stills(sample, own_seed, where=where) != make_stills(*dataset_sample(SEED, "train", 6), where=where)
    again = tmp_path / "again"
    generate_dataset(again, num_train=6, num_test=0, seed=SEED, stills_where=where)
    ours = json.loads((root / "stills.json").read_text())[:12]
    assert json.loads((again / "stills.json").read_text()) == ours
    for still in ours:
        assert (again / still["image"]).read_bytes() == (root / still["image"]).read_bytes()
    tokenizer = AutoTokenizer.from_pretrained(root / "tokenizer")
    assert tokenizer.get_vocab() == build_tokenizer(where).get_vocab()
    for still in ours:
        for turn in still["conversations"]:
            ids = tokenizer(turn["value"].removeprefix("<image>\n"), add_special_tokens=False)["input_ids"]
            assert tokenizer.unk_token_id not in ids, turn


def test_where_both_adds_only_its_words_to_the_tokenizer():
    from videoccam.synth.stills import make_stills

    side, both = build_tokenizer().get_vocab(), build_tokenizer("both").get_vocab()
    assert len(side) == 46 and set(both) - set(side) == {"at", "top", "bottom"}
    assert sorted(both.values()) == list(range(49))
    with pytest.raises(ValueError, match="where must be one of"):
        make_stills(*dataset_sample(SEED, "train", 0), where="height")
    with pytest.raises(ValueError, match="stills_where"):
        generate_dataset("unused", num_train=1, num_test=0, stills_where="everywhere")


def test_stills_literal_for_two_samples():
    """Training samples 5 and 1 of seed 0. "side" is what the generator wrote before the option
    existed (the default recipe's stills, the README table's data), so this pins it; sample 5 has
    several objects off the middle, of which one is drawn."""
    from videoccam.synth.stills import Still, make_stills

    how_many, which = "how many objects are there ?", "which colours appear ?"
    blue_side, green_height = "is the blue object left or right ?", "is the green object at the top or the bottom ?"
    yellow_side, all_four = "is the yellow object left or right ?", "blue and green and purple and yellow"
    assert make_stills(*dataset_sample(0, "train", 5)) == [
        Still(5, (("count", how_many, "four", 1.0), ("colours", which, all_four, 1.0),
                  ("position", yellow_side, "right", 1.0))),
        Still(10, (("count", how_many, "four", 1.0), ("colours", which, all_four, 1.0),
                   ("position", yellow_side, "right", 1.0))),
    ]
    sample, own_seed = dataset_sample(0, "train", 1)
    assert make_stills(sample, own_seed) == [
        Still(5, (("count", how_many, "two", 1.0), ("colours", which, "blue and green", 1.0))),
        Still(13, (("count", how_many, "two", 1.0), ("position", blue_side, "right", 1.0),
                   ("colours", which, "blue and green", 1.0))),
    ]
    assert make_stills(sample, own_seed, where="both") == [
        Still(5, (("height", green_height, "bottom", 10.0), ("count", how_many, "two", 1.0),
                  ("colours", which, "blue and green", 1.0))),
        Still(13, (("position", blue_side, "right", 10.0), ("count", how_many, "two", 1.0),
                   ("height", green_height, "bottom", 10.0), ("colours", which, "blue and green", 1.0))),
    ]
