"""The one inference object: loading, encode once, batched = single, streaming deltas, model.chat parity."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from test_session import GREEDY, Q1, VIDEO_KW, strong_model
from videoccam import Pipeline
from videoccam.testing import make_tiny_checkpoint
from videoccam.testing.media import write_test_video

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipeline")
    return [write_test_video(root / f"clip{i}.mp4", num_frames=24 + 8 * i, fps=8) for i in range(2)]


def test_bundled_model_answers_every_example_in_one_batch():
    """The bundled model through the pipeline: the examples' answers, batched, each video encoded once."""
    pipe = Pipeline.from_pretrained()
    examples = json.loads((EXAMPLES / "questions.json").read_text())
    encoded = [pipe.encode([str(EXAMPLES / e["video"])]) for e in examples]
    convs = [[{"role": "user", "content": e["question"]}] for e in examples]
    answers = pipe.chat(convs, encoded, max_new_tokens=8, do_sample=False)
    assert [a.text for a in answers] == [e["answer"] for e in examples]
    assert all(a.finish_reason == "stop" and a.timings.batch_size == len(examples) for a in answers)
    assert pipe.ask(encoded[0], examples[0]["question"], max_new_tokens=8) == examples[0]["answer"]


@pytest.mark.parametrize(("fb", "mode", "gamma"), [(False, "none", 1.0), (True, "tc", 1.0)])
def test_batched_equals_single_and_streams_every_row(clips, fb, mode, gamma):
    """Left-padded batch of conversations of different lengths (one text-only) = each alone; the
    streamed deltas of every row add up to its answer."""
    model, proc = strong_model(fb, mode, gamma)
    pipe = Pipeline(model, proc)
    encoded = [pipe.encode([c], video_kwargs=VIDEO_KW) for c in clips]
    convs = [[{"role": "user", "content": Q1}],
             [{"role": "user", "content": "which colour came first in this long clip ?"}],
             [{"role": "user", "content": "say something ."}]]
    media = [encoded[0], encoded[1], None]
    deltas: dict[int, str] = {}
    batch = pipe.chat(convs, media, on_text=lambda i, d: deltas.__setitem__(i, deltas.get(i, "") + d), **GREEDY)
    single = [pipe.chat([c], [m], **GREEDY)[0] for c, m in zip(convs, media, strict=True)]
    assert [a.token_ids for a in batch] == [a.token_ids for a in single]
    assert [a.text for a in batch] == [a.text for a in single]
    assert [deltas.get(i, "") for i in range(3)] == [a.text for a in batch]
    assert [a.prompt_tokens for a in batch] == [a.prompt_tokens for a in single]
    assert batch[2].prompt_tokens < batch[0].prompt_tokens  # no visual tokens in the text-only row


def test_model_chat_is_the_pipeline_path(clips):
    """The v1.2 API (media given raw) gives the pipeline's answers on the same media."""
    model, proc = strong_model(True, "tc")
    pipe = Pipeline(model, proc)
    convs = [[{"role": "user", "content": f"<video>\n{Q1}"}], [{"role": "user", "content": "<video>\nand ?"}]]
    by_model = model.chat(convs, [[str(c)] for c in clips], proc, video_kwargs=VIDEO_KW, **GREEDY)
    encoded = [pipe.encode([c], video_kwargs=VIDEO_KW) for c in clips]
    assert by_model == [a.text for a in pipe.chat(convs, encoded, **GREEDY)]


def test_from_pretrained_options_and_errors(tmp_path):
    path = make_tiny_checkpoint(tmp_path / "tiny")
    pipe = Pipeline.from_pretrained(path, device="cpu", temporal_rope="tc", frame_block_mask=True)
    assert pipe.model.config.temporal_rope == "tc" and pipe.model.config.frame_block_mask
    assert pipe.model_path == str(path) and str(pipe.device) == "cpu"
    with pytest.raises(ValueError, match="dtype 'float8'"):
        Pipeline.from_pretrained(path, dtype="float8")
    with pytest.raises(ValueError, match="device cuda:7"):
        Pipeline.from_pretrained(path, device="cuda:7")
