"""Training data: LLaVA records, samples and labels, frame sampling, batching, the resumable sampler, data check."""

from __future__ import annotations

import functools
import gc
import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from videoccam.cli import main
from videoccam.data import (
    Batch,
    DataRecordError,
    FrameCache,
    LlavaDataset,
    ResumableBatchSampler,
    check_dataset,
    collate,
    read_records,
    record_to_conversation,
)
from videoccam.errors import ConfigError
from videoccam.processing.video import load_video
from videoccam.processing.video_pyav_reader import FrameOutput, Reader
from videoccam.testing import make_tiny_model, make_tiny_processor, make_tiny_tokenizer, tiny_config
from videoccam.testing.media import read_test_pattern, write_test_video

Q = 8  # visual tokens per media item of the tiny processor


@pytest.fixture(scope="module")
def proc():
    tokenizer = make_tiny_tokenizer()
    return make_tiny_processor(tokenizer, tiny_config(tokenizer))


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("media")
    write_test_video(root / "clip.mp4", num_frames=40, fps=10)  # frame k shows k
    write_test_video(root / "short.mp4", num_frames=12, fps=10, size=(48, 32))
    Image.fromarray(np.full((30, 40, 3), 200, np.uint8)).save(root / "still.png")
    (root / "broken.mp4").write_bytes(b"this is not a video" * 50)
    return root


def turn(src: str, value: str) -> dict:
    return {"from": src, "value": value}


def qa(question: str = "what happens ?", answer: str = "the red square moves left") -> list[dict]:
    return [turn("human", question), turn("gpt", answer)]


def write_jsonl(path: Path, records: list) -> Path:
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in records) + "\n")
    return path


def frame_indices(pixel_values: torch.Tensor) -> list[int]:
    """Source frame numbers of processed test-pattern frames (SigLIP normalisation: mean 0.5, std 0.5)."""
    frames = ((pixel_values * 0.5 + 0.5) * 255).round().clamp(0, 255).to(torch.uint8)  # [N, 3, H, W]
    return [read_test_pattern(f) for f in frames.permute(0, 2, 3, 1).numpy()]  # [N, H, W, 3] each


# ------------------------------------------------------------------------------------------ records
def test_record_maps_roles_and_orders_media_by_placeholder_kind(tmp_path):
    record = {
        "id": "r1", "video": ["v1.mp4", "v2.mp4"], "image": ["i1.png", "/abs/i2.png"],
        "conversations": [
            turn("system", "be brief ."), turn("human", "<image>\n<video>\nfirst ?"), turn("gpt", "A"),
            turn("human", "now <video> and <image> ?"), turn("gpt", "B"),
        ],
    }
    messages, paths = record_to_conversation(record, tmp_path)
    assert messages == [
        {"role": "system", "content": "be brief ."},
        {"role": "user", "content": "<image>\n<video>\nfirst ?"},
        {"role": "assistant", "content": "A"},
        {"role": "user", "content": "now <video> and <image> ?"},
        {"role": "assistant", "content": "B"},
    ]
    assert paths == [tmp_path / "i1.png", tmp_path / "v1.mp4", tmp_path / "v2.mp4", Path("/abs/i2.png")]
    assert record["conversations"][1]["value"] == "<image>\n<video>\nfirst ?"  # the record is not modified


def test_media_without_placeholders_are_prepended_to_the_first_human_turn():
    record = {"image": "i.png", "video": "v.mp4", "conversations": [*qa("what ?", "x"), *qa("and ?", "y")]}
    messages, paths = record_to_conversation(record, None)
    assert messages[0]["content"] == "<video>\n<image>\nwhat ?"
    assert messages[2]["content"] == "and ?"
    assert paths == [Path("v.mp4"), Path("i.png")]  # relative paths kept as given without a media root
    messages, paths = record_to_conversation({"conversations": qa()}, None)  # text only
    assert paths == [] and messages[0]["content"] == "what happens ?"


@pytest.mark.parametrize(("change", "kind", "match"), [
    ({"conversations": None}, "schema", "'conversations'"),
    ({"conversations": [turn("bot", "hi"), turn("gpt", "x")]}, "schema", r"conversations\[0\].from is 'bot'"),
    ({"conversations": [turn("human", "a"), turn("human", "b")]}, "schema", "alternate"),
    ({"conversations": [turn("gpt", "a"), turn("human", "b")]}, "schema", "alternate"),
    ({"conversations": [*qa(), turn("human", "more ?")]}, "schema", "end with a 'gpt'"),
    ({"conversations": [turn("human", "a"), turn("system", "s"), turn("gpt", "b")]}, "schema", "only allowed first"),
    ({"conversations": [turn("human", 3), turn("gpt", "b")]}, "schema", r"conversations\[0\].value"),
    ({"video": 5}, "schema", "'video'"),
    ({"conversations": qa("<video> <video> ?")}, "placeholders", "2 <video> placeholder"),
    ({"conversations": qa("<image> ?")}, "placeholders", "0 <video> placeholder.* 1 <image> for 0"),
    ({"conversations": qa("<video> ?", "a <image>")}, "placeholders", "only allowed in human turns"),
    ({"conversations": qa("<video> ?", "  ")}, "empty", "empty answer"),
    ({"conversations": [turn("human", "<video> ?") | {"weight": 2}, turn("gpt", "b")]}, "schema",
     r"conversations\[0\]: only assistant turns take a loss weight"),
    ({"conversations": [turn("human", "<video> ?"), turn("gpt", "b") | {"weight": -1}]}, "schema",
     r"conversations\[1\]: 'weight' must be a finite number >= 0, got -1"),
    ({"conversations": [turn("human", "<video> ?"), turn("gpt", "b") | {"weight": "high"}]}, "schema",
     r"conversations\[1\]: 'weight'"),
    ({"conversations": [turn("human", "<video> ?"), turn("gpt", "b") | {"weight": True}]}, "schema",
     r"conversations\[1\]: 'weight'"),
])
def test_bad_records_name_the_field(change, kind, match):
    record = {"id": "x", "video": "v.mp4", "conversations": qa("<video>\nq")} | change
    with pytest.raises(DataRecordError, match=match) as info:
        record_to_conversation(record, None)
    assert info.value.kind == kind and isinstance(info.value, ValueError)


def test_read_records_jsonl_and_json(tmp_path):
    records = [{"id": str(i), "conversations": qa()} for i in range(3)]
    jsonl = tmp_path / "a.jsonl"
    jsonl.write_text("\n" + json.dumps(records[0]) + "\n\n" + json.dumps(records[1]) + "\r\n" + json.dumps(records[2]))
    assert read_records(jsonl) == records
    (tmp_path / "a.json").write_text(json.dumps(records, indent=2))
    assert read_records(tmp_path / "a.json") == records
    (tmp_path / "bad.jsonl").write_text(json.dumps(records[0]) + "\n{\"id\": 1,\n")
    with pytest.raises(ValueError, match=r"bad\.jsonl:2: invalid JSON"):
        read_records(tmp_path / "bad.jsonl")
    (tmp_path / "bad.json").write_text("[\n" + json.dumps(records[0]) + ",\n{\"id\": ]")
    with pytest.raises(ValueError, match=r"bad\.json:3: invalid JSON"):
        read_records(tmp_path / "bad.json")


# ------------------------------------------------------------------------------------------ samples
def test_labels_cover_only_the_answers(proc, media):
    record = {"video": "clip.mp4", "image": "still.png", "conversations": [
        turn("system", "be brief ."), turn("human", "<video>\nwhat happens ?"), turn("gpt", "the red square"),
        turn("human", "and <image> ?"), turn("gpt", "a blue circle"),
    ]}
    ds = LlavaDataset(write_jsonl(media / "labels.jsonl", [record]), proc, num_frames=4, sample="uniform")
    s = ds[0]
    ids, labels = s.input_ids, s.labels
    assert ids.shape == labels.shape and ids.dtype == labels.dtype == torch.long
    assert ids.numel() == ds.lengths[0]  # the length estimate is exact
    keep = labels != -100
    assert torch.equal(labels[keep], ids[keep])
    tok = proc.tokenizer
    assert tok.decode(labels[keep]) == "the red square<|im_end|>\na blue circle<|im_end|>\n"
    visual = (ids == proc.video_token_id) | (ids == proc.image_token_id)
    assert int(visual.sum()) == 2 * Q and (labels[visual] == -100).all()
    prompt = tok.decode(ids[~keep & ~visual])
    assert "what happens ?" in prompt and "be brief ." in prompt and "the red square" not in prompt
    assert s.frame_counts == [4, 1] and s.pixel_values.shape == (5, 3, 32, 32)  # video then image, by placeholder


def test_turn_weights_reach_exactly_their_turns_labelled_tokens(proc, media):
    weighted = {"video": "clip.mp4", "conversations": [
        turn("human", "<video>\nwhat happens ?"), turn("gpt", "the red square") | {"weight": 3},
        turn("human", "and then ?"), turn("gpt", "a blue circle"),
        turn("human", "why ?"), turn("gpt", "no reason") | {"weight": 0}]}
    plain = {"video": "clip.mp4", "conversations": qa()}
    ds = LlavaDataset(write_jsonl(media / "weights.jsonl", [weighted, plain]), proc, num_frames=2)
    s, t = ds[0], ds[1]
    assert t.loss_weights is None  # no weighted turn: the trainer's plain loss path
    labelled = s.labels != -100
    assert s.loss_weights.dtype == torch.float32 and s.loss_weights.shape == s.labels.shape
    assert (s.loss_weights[~labelled] == 0).all()
    tok = proc.tokenizer
    # the answer text gets its turn's weight; the end-of-turn marker min(weight, 1)
    for weight, text in ((3.0, "the red square"), (1.0, "<|im_end|>\na blue circle<|im_end|>\n"),
                         (0.0, "no reason<|im_end|>\n")):
        assert tok.decode(s.labels[labelled & (s.loss_weights == weight)]) == text
    batch = collate([t, s], pad_token_id=tok.pad_token_id)
    assert torch.equal(batch.loss_weights[0], (batch.labels[0] != -100).float())  # 1 on the plain sample
    assert torch.equal(batch.loss_weights[1, :s.labels.numel()], s.loss_weights)
    assert (batch.loss_weights[1, s.labels.numel():] == 0).all()
    assert torch.equal(batch.weights(), batch.loss_weights)
    assert torch.equal(batch.weights(turn_weights=False), (batch.labels != -100).float())
    plain = collate([t, t], pad_token_id=tok.pad_token_id)
    assert plain.loss_weights is None
    assert torch.equal(plain.weights(), (plain.labels != -100).float())  # no weights: 1 on every label


def test_random_frames_depend_only_on_seed_epoch_and_index(proc, media):
    records = [{"id": str(i), "video": "clip.mp4", "conversations": qa()} for i in range(2)]
    path = write_jsonl(media / "random.jsonl", records)
    ds = LlavaDataset(path, proc, num_frames=4, sample="random", seed=3)
    first = frame_indices(ds[0].pixel_values)
    assert all(10 * j <= f < 10 * (j + 1) for j, f in enumerate(first))  # one frame per segment of 10
    np.random.seed(123)
    torch.manual_seed(123)
    assert frame_indices(ds[0].pixel_values) == first  # no global RNG
    again = LlavaDataset(path, proc, num_frames=4, sample="random", seed=3)  # e.g. a resumed run / another rank
    assert frame_indices(again[0].pixel_values) == first
    assert frame_indices(ds[1].pixel_values) != first  # same clip, other index
    ds.set_epoch(1)
    epoch1 = frame_indices(ds[0].pixel_values)
    assert epoch1 != first
    ds.set_epoch(0)
    assert frame_indices(ds[0].pixel_values) == first
    other_seed = LlavaDataset(path, proc, num_frames=4, sample="random", seed=4)
    assert frame_indices(other_seed[0].pixel_values) != first


def test_epoch_and_skip_counts_reach_persistent_workers(proc, media):
    records = [{"video": "clip.mp4", "conversations": qa()}, {"video": "gone.mp4", "conversations": qa()}]
    ds = LlavaDataset(write_jsonl(media / "workers.jsonl", records), proc, num_frames=4)
    loader = DataLoader(ds, batch_size=None, num_workers=1, persistent_workers=True, sampler=[0, 1],
                        multiprocessing_context="fork")
    seen = []
    for epoch in range(2):
        ds.set_epoch(epoch)
        sample, skipped = list(loader)
        assert skipped is None
        seen.append(frame_indices(sample.pixel_values))
        assert seen[-1] == frame_indices(ds[0].pixel_values)  # the worker used the main process's epoch
    assert seen[0] != seen[1]
    assert ds.skipped == {"missing": 2}  # counted in the worker, visible here


def test_pyav_decoding_leaves_no_cycles_for_forked_workers(media):
    """A decoder left to the cyclic GC may be freed in a forked DataLoader worker, where FFmpeg's threads
    are gone: a segfault. Decoding must release everything at once."""
    gc.collect()
    gc.disable()
    try:
        load_video(media / "clip.mp4", num_frames=4, sample="random", seed=1)
        leftovers = [o for o in gc.get_objects() if isinstance(o, (Reader, FrameOutput))]
    finally:
        gc.enable()
    assert leftovers == []


def test_bad_media_are_skipped_and_counted(proc, media, caplog):
    records = [
        {"id": "ok", "video": "clip.mp4", "conversations": qa()},
        {"id": "gone", "video": "missing.mp4", "conversations": qa()},
        {"id": "bad", "image": "broken.mp4", "conversations": qa()},
        {"id": "img", "image": "still.png", "conversations": qa()},
    ]
    ds = LlavaDataset(write_jsonl(media / "bad_media.jsonl", records), proc, num_frames=3)
    with caplog.at_level(logging.WARNING, logger="videoccam"):
        samples = [ds[i] for i in range(len(ds))]
    assert samples[1] is None and samples[2] is None
    assert ds.skipped == {"missing": 1, "decode": 1}
    assert "id gone" in caplog.text and "bad_media.jsonl:2" in caplog.text and "missing" in caplog.text
    assert "id bad" in caplog.text and "decode" in caplog.text
    batch = collate(samples, pad_token_id=proc.tokenizer.pad_token_id)
    assert batch.num_samples == 2 and batch.num_skipped == 2 and batch.indices == [0, 3]
    assert batch.frame_counts.tolist() == [3, 1]
    assert batch.pixel_values.shape == (4, 3, 32, 32)


def test_collate_pads_right_and_mixes_images_and_videos(proc, media):
    records = [
        {"image": ["still.png", "still.png"], "conversations": qa("<image> <image> same ?", "yes")},
        {"video": "clip.mp4", "conversations": qa("what happens ?", "the red square moves left then the blue "
                                                  "circle appears")},
        {"conversations": qa("count : one two", "three")},  # text only
        {"video": ["short.mp4"], "image": "still.png", "conversations": qa()},
    ]
    ds = LlavaDataset(write_jsonl(media / "mixed.jsonl", records), proc, num_frames=4)
    samples = [ds[i] for i in range(4)]
    batch = collate(samples, pad_token_id=proc.tokenizer.pad_token_id)
    assert isinstance(batch, Batch) and not batch.empty
    lengths = [s.input_ids.numel() for s in samples]
    assert batch.input_ids.shape == batch.labels.shape == batch.attention_mask.shape == (4, max(lengths))
    assert batch.attention_mask.sum(1).tolist() == lengths == ds.lengths
    assert (batch.attention_mask[:, 0] == 1).all()  # right padding
    assert (batch.labels[batch.attention_mask == 0] == -100).all()
    assert (batch.input_ids[batch.attention_mask == 0] == proc.tokenizer.pad_token_id).all()
    assert batch.frame_counts.tolist() == [1, 1, 4, 4, 1]
    assert batch.pixel_values.shape == (11, 3, 32, 32)
    assert torch.equal(batch.pixel_values[2:6], samples[1].pixel_values)  # frames in sample order
    visual = (batch.input_ids == proc.video_token_id) | (batch.input_ids == proc.image_token_id)
    assert int(visual.sum()) == Q * len(batch.frame_counts)

    empty = collate([None, None], pad_token_id=0)
    assert empty.num_samples == 0 and empty.num_skipped == 2 and empty.input_ids is None and empty.empty
    assert empty.pixel_values is None and empty.frame_counts is None


def test_cached_frames_give_the_same_samples_and_are_read_once(proc, media, tmp_path):
    (tmp_path / "clip.mp4").write_bytes((media / "clip.mp4").read_bytes())
    (tmp_path / "still.png").write_bytes((media / "still.png").read_bytes())
    records = [{"video": "clip.mp4", "image": "still.png", "conversations": qa("<video> then <image> ?", "yes")},
               {"video": "clip.mp4", "conversations": qa()}]
    path = write_jsonl(tmp_path / "train.jsonl", records)
    plain = LlavaDataset(path, proc, num_frames=4, sample="uniform")
    cache = FrameCache()
    cached = LlavaDataset(path, proc, num_frames=4, sample="uniform", frame_cache=cache)
    for i in range(2):
        want, got = plain[i], cached[i]
        assert torch.equal(got.input_ids, want.input_ids) and torch.equal(got.labels, want.labels)
        assert torch.equal(got.pixel_values, want.pixel_values) and got.frame_counts == want.frame_counts
    assert frame_indices(cached[1].pixel_values) == [5, 15, 25, 35]
    (tmp_path / "clip.mp4").unlink()  # the clip's pixels come from the cache from now on
    again = LlavaDataset(path, proc, num_frames=4, sample="uniform", frame_cache=cache)  # a dataset sharing it
    assert again[1] is not None and torch.equal(again[1].pixel_values, cached[1].pixel_values)
    assert plain[1] is None  # without the cache the missing clip is a skipped sample
    with pytest.raises(ConfigError, match="deterministic frames"):  # random frames differ every epoch
        LlavaDataset(path, proc, num_frames=4, sample="random", frame_cache=cache)


def test_the_pixel_cache_keeps_uint8_resized_frames_warmed_in_parallel(proc, tmp_path):
    for name in ("a.mp4", "b.mp4"):
        write_test_video(tmp_path / name, num_frames=20, fps=10, size=(64, 48))
    (tmp_path / "gone.mp4").write_bytes(b"not a video")
    records = [{"video": name, "conversations": qa()} for name in ("a.mp4", "b.mp4", "gone.mp4")]
    path = write_jsonl(tmp_path / "train.jsonl", records)
    plain = LlavaDataset(path, proc, num_frames=5, sample="uniform")
    want = [plain[i] for i in range(2)]
    cache = FrameCache()
    cache.warm_pixels([tmp_path / r["video"] for r in records], 5, "uniform", proc, workers=2)
    size = proc.image_processor.size["height"]
    stored = cache.pixel_arrays()
    assert len(stored) == 2  # the broken clip is left out, for the dataset to report
    assert all(s.dtype == np.uint8 and s.shape == (5, 3, size, size) for s in stored)  # a quarter of float32
    for name in ("a.mp4", "b.mp4"):
        (tmp_path / name).unlink()  # from now on only the cache has them
    cached = LlavaDataset(path, proc, num_frames=5, sample="uniform", frame_cache=cache)
    for i in range(2):
        assert torch.equal(cached[i].pixel_values, want[i].pixel_values)  # bit for bit the processor's pixels
    assert cached[2] is None and cached.skipped == {"decode": 1}


def test_the_pixel_cache_keeps_float_pixels_when_its_uint8_split_is_not_exact(proc, media, monkeypatch):
    from videoccam.data import frame_cache

    finished = frame_cache._finished
    monkeypatch.setattr(frame_cache, "_finished", lambda ip, resized: finished(ip, resized) + 1e-7)  # one ulp off
    want = proc.preprocess_media([load_video(media / "clip.mp4", num_frames=4, sample="uniform").frames],
                                 kinds=["video"])["pixel_values"]  # [4, 3, S, S]
    cache = FrameCache()
    got = cache.pixels(media / "clip.mp4", 4, "uniform", proc)
    assert torch.equal(got, want) and list(cache.uint8_exact.values()) == [False]
    assert [s.dtype for s in cache.pixel_arrays()] == [np.float32]


def test_a_collated_batch_trains_the_model(media):
    model, processor = make_tiny_model()
    records = [{"video": "clip.mp4", "conversations": qa()}, {"image": "still.png", "conversations": qa("a ?", "b")}]
    ds = LlavaDataset(write_jsonl(media / "model.jsonl", records), processor, num_frames=3)
    sampler = ResumableBatchSampler(ds.lengths, micro_batch_size=2, shuffle=False)
    loader = DataLoader(ds, batch_sampler=sampler,
                        collate_fn=functools.partial(collate, pad_token_id=processor.tokenizer.pad_token_id))
    batch = next(iter(loader))
    loss = model.train()(**batch.model_inputs(), labels=batch.labels).loss
    loss.backward()
    assert torch.isfinite(loss) and model.projector.query.grad is not None


def test_structurally_bad_and_too_long_records_are_left_out(proc, media, caplog):
    records = [
        {"id": "a", "video": "clip.mp4", "conversations": qa()},
        {"id": "b", "video": "clip.mp4", "conversations": qa("<video> <video>")},
        {"id": "c", "conversations": qa("q", "one two three " * 40)},
        {"id": "d", "conversations": qa("q", "")},
        {"id": "e", "image": "still.png", "conversations": qa()},
    ]
    with caplog.at_level(logging.WARNING, logger="videoccam"):
        ds = LlavaDataset(write_jsonl(media / "left_out.jsonl", records), proc, max_length=60)
    assert len(ds) == 2 and [ds.record_line(i) for i in range(2)] == [1, 5]
    assert ds.excluded == {"placeholders": 1, "too_long": 1, "empty": 1}
    assert "left_out.jsonl:3 (id c)" in caplog.text and "too_long" in caplog.text
    with pytest.raises(ConfigError, match="no usable"):
        LlavaDataset(write_jsonl(media / "none.jsonl", records[1:4]), proc, max_length=60)
    with pytest.raises(ConfigError, match="seed"):
        LlavaDataset(media / "left_out.jsonl", proc, video_kwargs={"seed": 1})
    with pytest.raises(ValueError, match="num_frames"):
        LlavaDataset(media / "left_out.jsonl", proc, num_frames=0)


# ------------------------------------------------------------------------------------------ sampler
def test_sampler_literal_order_without_shuffling():
    lengths = [5, 1, 7, 3, 8, 2, 6, 4]
    plain = {"shuffle": False, "group_by_length": False}
    ranks = [ResumableBatchSampler(lengths, 2, num_replicas=2, rank=r, **plain) for r in range(2)]
    assert [list(s) for s in ranks] == [[[0, 1], [4, 5]], [[2, 3], [6, 7]]]
    assert list(ResumableBatchSampler(lengths, 2, grad_accum=2, **plain)) == [[0, 1], [2, 3], [4, 5], [6, 7]]
    ranks = [ResumableBatchSampler(lengths, 1, num_replicas=2, rank=r, grad_accum=2, **plain) for r in range(2)]
    assert [list(s) for s in ranks] == [[[0], [2], [4], [6]], [[1], [3], [5], [7]]]
    # sorted by length (longest first) within mega-chunks of global batches
    grouped = ResumableBatchSampler(lengths, 4, shuffle=False, mega_batches=1)
    assert list(grouped) == [[2, 0, 3, 1], [4, 6, 7, 5]]
    grouped = ResumableBatchSampler(lengths, 4, shuffle=False, mega_batches=2)
    assert list(grouped) == [[4, 2, 6, 0], [7, 3, 5, 1]]
    # an incomplete last global batch is dropped, or filled from the start
    assert list(ResumableBatchSampler(range(10), 4, **plain)) == [[0, 1, 2, 3], [4, 5, 6, 7]]
    padded = ResumableBatchSampler(range(10), 4, drop_last=False, **plain)
    assert list(padded) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 0, 1]] and len(padded) == 3
    with pytest.raises(ConfigError, match="no complete global batch"):
        ResumableBatchSampler(range(3), 2, num_replicas=2)


def test_ranks_together_see_the_one_process_batch():
    lengths = np.random.default_rng(0).integers(1, 500, 103).tolist()
    one = list(ResumableBatchSampler(lengths, 4, seed=7))
    two = [list(ResumableBatchSampler(lengths, 2, num_replicas=2, rank=r, seed=7)) for r in range(2)]
    accum = list(ResumableBatchSampler(lengths, 2, grad_accum=2, seed=7))
    four = [list(ResumableBatchSampler(lengths, 1, num_replicas=2, rank=r, grad_accum=2, seed=7)) for r in range(2)]
    assert len(one) == len(two[0]) == len(two[1]) == 25 and len(accum) == 50
    for step, batch in enumerate(one):
        assert two[0][step] + two[1][step] == batch  # rank 0 the first half, rank 1 the second
        assert accum[2 * step] + accum[2 * step + 1] == batch
        assert four[0][2 * step] + four[1][2 * step] + four[0][2 * step + 1] + four[1][2 * step + 1] == batch
    flat = [i for b in one for i in b]
    assert len(set(flat)) == len(flat) == 100


def test_group_by_length_makes_global_batches_homogeneous_and_epochs_differ():
    lengths = np.random.default_rng(1).integers(1, 1000, 800)
    grouped = ResumableBatchSampler(lengths.tolist(), 4, num_replicas=2, seed=0)
    mixed = ResumableBatchSampler(lengths.tolist(), 4, num_replicas=2, seed=0, group_by_length=False)

    def spread(sampler: ResumableBatchSampler) -> float:
        return float(np.mean([np.ptp(lengths[b]) for b in sampler.global_batches(0)]))

    assert spread(grouped) < 0.1 * spread(mixed)
    # the shuffled order of global batches is not sorted by length
    means = [lengths[b].mean() for b in grouped.global_batches(0)]
    assert means != sorted(means) and means != sorted(means, reverse=True)
    e0, e1 = grouped.global_batches(0), grouped.global_batches(1)
    assert not np.array_equal(e0, e1)
    assert sorted(e0.ravel().tolist()) == sorted(e1.ravel().tolist()) == list(range(800))
    grouped.set_epoch(1)
    assert list(grouped) == grouped.micro_batches(1) != grouped.micro_batches(0)


def test_resume_mid_epoch_yields_exactly_the_rest():
    lengths = np.random.default_rng(2).integers(1, 300, 64).tolist()

    def make(**kw):
        return ResumableBatchSampler(lengths, 2, grad_accum=2, seed=5, **kw)

    full_epoch1 = make().micro_batches(1)
    sampler = make()
    sampler.set_epoch(1)
    it = iter(sampler)
    for _ in range(6):  # a DataLoader with workers draws ahead of the trainer ...
        next(it)
    sampler.advance(4)  # ... which has trained on 4 micro-batches (2 optimizer steps)
    state = sampler.state_dict()
    assert state["epoch"] == 1 and state["micro_step"] == 4

    resumed = make()
    resumed.load_state_dict(json.loads(json.dumps(state)))  # survives a JSON checkpoint
    resumed.set_epoch(1)  # the trainer's loop sets the epoch again: the position is kept
    assert list(resumed) == full_epoch1[4:]
    resumed.advance(len(resumed) - 4)
    resumed.set_epoch(2)  # next epoch from its start
    assert list(resumed) == make().micro_batches(2)

    # a different split of the same global batch (2 ranks x micro 2, no accumulation) resumes too
    ranks = [ResumableBatchSampler(lengths, 2, num_replicas=2, rank=r, seed=5) for r in range(2)]
    for s in ranks:
        s.load_state_dict(state)
    rest = [list(s) for s in ranks]
    assert [b for pair in zip(*rest, strict=True) for b in pair] == full_epoch1[4:]

    with pytest.raises(ConfigError, match="seed was 5"):
        ResumableBatchSampler(lengths, 2, grad_accum=2, seed=6).load_state_dict(state)
    with pytest.raises(ConfigError, match="global_batch_size"):
        ResumableBatchSampler(lengths, 2, seed=5).load_state_dict(state)
    with pytest.raises(ConfigError, match="accumulation"):
        ranks[0].load_state_dict(state | {"micro_step": 3})
    with pytest.raises(ValueError, match="cannot advance"):
        make().advance(len(make()) + 1)


# ------------------------------------------------------------------------------------------ data check
BAD_LINES = {  # line -> kind; lines 1, 3, 11 are good and 10 is blank
    2: "json", 4: "schema", 5: "placeholders", 6: "missing", 7: "decode", 8: "too_long", 9: "empty",
}


@pytest.fixture
def check_file(media) -> Path:
    lines = [
        {"id": "good-video", "video": "clip.mp4", "conversations": qa("<video>\nwhat happens ?")},
        '{"id": "bad-json", "video": "clip.mp4", "conversations": [',
        {"id": "good-mixed", "video": "short.mp4", "image": "still.png", "conversations": qa("<image> <video> ?")},
        {"id": "bad-role", "video": "clip.mp4", "conversations": [turn("robot", "<video> ?"), turn("gpt", "x")]},
        {"id": "bad-count", "video": "clip.mp4", "conversations": qa("<video> <video> ?")},
        {"id": "bad-missing", "video": "nowhere.mp4", "conversations": qa()},
        {"id": "bad-decode", "video": "broken.mp4", "conversations": qa()},
        {"id": "bad-long", "image": "still.png", "conversations": qa("q", "one two three four " * 30)},
        {"id": "bad-empty", "conversations": qa("q", "")},
        "",
        {"id": "good-text", "conversations": qa("count : one two", "three")},
    ]
    return write_jsonl(media / "check.jsonl", lines)


def test_check_dataset_finds_each_kind(check_file, proc):
    problems = check_dataset(check_file, proc, max_length=80, num_frames=4)
    assert [(p.line, p.kind) for p in problems] == sorted(BAD_LINES.items())
    by_line = {p.line: p for p in problems}
    assert by_line[6].id == "bad-missing" and "nowhere.mp4" in by_line[6].message
    assert by_line[4].id == "bad-role" and "robot" in by_line[4].message
    assert by_line[2].id is None
    no_decode = check_dataset(check_file, None, decode=False)  # no tokenizer: no lengths; no decoding
    assert [(p.line, p.kind) for p in no_decode] == [
        (line, kind) for line, kind in sorted(BAD_LINES.items()) if kind not in ("decode", "too_long")]


def test_check_dataset_json_list_lines(media, proc):
    records = [{"id": "a", "video": "clip.mp4", "conversations": qa()},
               {"id": "b", "video": "nope.mp4", "conversations": qa()}]
    path = media / "check.json"
    path.write_text(json.dumps(records, indent=2))
    line_of_b = path.read_text().splitlines().index("  {", 2) + 1  # where the second record opens
    assert [(p.line, p.kind, p.id) for p in check_dataset(path, proc)] == [(line_of_b, "missing", "b")]


def test_data_check_cli(check_file, tiny_checkpoint, media, capsys):
    code = main(["data", "check", str(check_file), "--model", str(tiny_checkpoint), "--max-length", "80",
                 "--num-frames", "4"])
    out = capsys.readouterr().out.splitlines()
    assert code == 1
    for line, kind in BAD_LINES.items():
        assert any(o.startswith(f"{check_file}:{line}: {kind}: ") for o in out), (line, kind, out)
    assert len(out) == len(BAD_LINES) + 1
    assert out[-1] == (f"{check_file}: 10 records, 7 problems (decode 1, empty 1, json 1, missing 1, "
                       "placeholders 1, schema 1, too_long 1)")

    clean = write_jsonl(media / "clean.jsonl", [{"id": "a", "video": "clip.mp4", "conversations": qa()}])
    assert main(["data", "check", str(clean), "--model", str(tiny_checkpoint), "--max-length", "80"]) == 0
    assert capsys.readouterr().out == f"{clean}: 1 records, 0 problems\n"
    assert main(["data", "check", str(clean), "--max-length", "80"]) == 2  # needs --model
    assert main(["data", "check", str(media / "absent.jsonl")]) == 2
    with pytest.raises(SystemExit) as info:
        main(["data", "check"])
    assert info.value.code == 2
