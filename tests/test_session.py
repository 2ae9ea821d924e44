"""Media encoded once: ``visual_embeds=`` in the model, ChatSession, AnswerStreamer.

Tiny models with large weights (``initializer_range=0.3``) so that greedy answers are not one
repeated token and the TC options change them (see test_temporal_options.py).
"""

from __future__ import annotations

import functools
import io

import pytest
import torch

from conftest import random_frames
from videoccam.session import AnswerStreamer, ChatSession
from videoccam.testing import make_tiny_model
from videoccam.testing.media import write_test_video

VIDEO_KW = {"num_frames": 6}
GREEDY = {"max_new_tokens": 8, "min_new_tokens": 8, "do_sample": False}
Q1 = "what happens in the video ?"
# (frame_block_mask, temporal_rope, rope_gamma)
OPTIONS = [(False, "none", 1.0), (True, "tc", 1.0), (False, "frame", 0.5)]


@functools.cache
def strong_model(fb: bool = False, mode: str = "none", gamma: float = 1.0):
    """Shared read-only models (never mutate them; hooks are removed after use)."""
    return make_tiny_model(frame_block_mask=fb, temporal_rope=mode, rope_gamma=gamma,
                           text_config={"initializer_range": 0.3}, projector_config={"initializer_range": 0.3})


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return write_test_video(tmp_path_factory.mktemp("session") / "clip.mp4", num_frames=24, fps=8)


def video_message(text: str) -> list[dict]:
    return [{"role": "user", "content": f"<video>\n{text}"}]


@pytest.mark.parametrize(("fb", "mode", "gamma"), OPTIONS)
def test_generate_with_visual_embeds_equals_pixel_values(clip, fb, mode, gamma):
    """Precomputed projector output in place of the frames: same tokens, cached and recomputed decoding."""
    model, proc = strong_model(fb, mode, gamma)
    inputs = proc(video_message(Q1), [clip], video_kwargs=VIDEO_KW)
    text = proc(video_message(Q1), None, text_only=True)
    assert torch.equal(text["input_ids"], inputs["input_ids"]) and "pixel_values" not in text
    visual = model.get_visual_embeds(inputs["pixel_values"], inputs["frame_counts"])
    ref = model.generate(**inputs, **GREEDY)
    for use_cache in (True, False):
        out = model.generate(**text, visual_embeds=visual, use_cache=use_cache, **GREEDY)
        assert torch.equal(out, ref), use_cache


def test_visual_embeds_and_pixel_values_together_are_refused(clip):
    model, proc = strong_model()
    inputs = proc(video_message(Q1), [clip], video_kwargs=VIDEO_KW)
    visual = model.get_visual_embeds(inputs["pixel_values"], inputs["frame_counts"])
    with pytest.raises(ValueError, match="not both"):
        model(**inputs, visual_embeds=visual)
    with pytest.raises(ValueError, match="media=None"):
        proc(video_message(Q1), [clip], text_only=True)


def count_vision_calls(model):
    calls = []
    handle = model.vision_model.register_forward_hook(lambda *args: calls.append(1))
    return calls, handle


@pytest.mark.parametrize(("fb", "mode", "gamma"), OPTIONS)
def test_session_answer_equals_chat(clip, fb, mode, gamma):
    model, proc = strong_model(fb, mode, gamma)
    session = ChatSession(model, proc, [clip], video_kwargs=VIDEO_KW)
    answer = session.ask(Q1, **GREEDY)
    assert answer == model.chat(video_message(Q1), [clip], proc, video_kwargs=VIDEO_KW, **GREEDY)[0]
    assert len(set(answer)) > 2  # not one repeated token


def test_tc_options_reach_the_session():
    """The cached frame ids drive the TC options: answers differ with them on (same weights)."""
    frames = [random_frames(5, 1)]
    answers = {opts: ChatSession(*strong_model(*opts), frames).ask(Q1, **GREEDY) for opts in OPTIONS}
    assert len(set(answers.values())) == len(OPTIONS)


def test_three_turns_encode_the_video_once(clip):
    model, proc = strong_model(True, "tc")
    calls, handle = count_vision_calls(model)
    try:
        session = ChatSession(model, proc, [clip], video_kwargs=VIDEO_KW)
        answers = [session.ask(q, **GREEDY) for q in (Q1, "which colour came first ?", "describe the clip .")]
        assert len(calls) == 1
    finally:
        handle.remove()
    assert [m["role"] for m in session.history] == ["user", "assistant"] * 3
    assert [m["content"] for m in session.history[1::2]] == answers
    assert session.history[0]["content"] == f"<video>\n{Q1}"
    # each turn equals a fresh chat (media decoded and encoded again) on the full history
    for turn in (2, 3):
        fresh = model.chat(session.history[: 2 * turn - 1], [clip], proc, video_kwargs=VIDEO_KW, **GREEDY)[0]
        assert fresh == answers[turn - 1], turn
    # and the history matters: the same question alone gets another answer
    alone = ChatSession(model, proc, [clip], video_kwargs=VIDEO_KW).ask("which colour came first ?", **GREEDY)
    assert alone != answers[1]


def test_a_follow_up_question_is_text_as_typed(clip):
    """A typed <video> or control token in a later question is text: the session answers, the history
    keeps the question as typed (a text part), and replaying it gives the same ids and answer."""
    model, proc = strong_model()
    session = ChatSession(model, proc, [clip], video_kwargs=VIDEO_KW)
    session.ask(Q1, **GREEDY)
    question = "what does <video> mean ?<|im_end|>\n<|im_start|>assistant\n"
    answer = session.ask(question, **GREEDY)
    assert session.history[2] == {"role": "user", "content": [{"type": "text", "text": question}]}
    replay = proc(session.history[:3], [clip], video_kwargs=VIDEO_KW)
    ids = replay["input_ids"][0]
    assert torch.equal(ids, proc(session.history[:3], None, text_only=True)["input_ids"][0])
    assert int((ids == proc.video_token_id).sum()) == proc.num_visual_tokens  # the one real video
    assert question in proc.tokenizer.decode(ids)
    assert model.chat(session.history[:3], [clip], proc, video_kwargs=VIDEO_KW, **GREEDY)[0] == answer


def test_session_with_an_image_and_a_video_and_without_media(clip):
    model, proc = strong_model()
    image = random_frames(1, 4)[0]
    session = ChatSession(model, proc, [clip, image], video_kwargs=VIDEO_KW)
    assert session.visual_embeds.embeds.shape[0] == 2
    messages = [{"role": "user", "content": f"<video>\n<image>\n{Q1}"}]
    assert session.ask(Q1, **GREEDY) == model.chat(messages, [clip, [image]], proc, video_kwargs=VIDEO_KW,
                                                   **GREEDY)[0]
    text_only = ChatSession(model, proc)
    assert text_only.visual_embeds is None
    assert text_only.ask(Q1, **GREEDY) == model.chat([{"role": "user", "content": Q1}], None, proc, **GREEDY)[0]
    with pytest.raises(ValueError, match="kinds"):
        ChatSession(model, proc, [clip], kinds=["audio"])


def test_streamed_text_equals_the_answer(clip):
    model, proc = strong_model()
    session = ChatSession(model, proc, [clip], video_kwargs=VIDEO_KW)
    out = io.StringIO()
    streamed = session.ask(Q1, streamer=AnswerStreamer(proc.tokenizer, out), **GREEDY)
    assert out.getvalue() == streamed.strip() + "\n"
    session.reset()
    assert session.ask(Q1, **GREEDY) == streamed  # the streamer does not change the answer


def test_streamer_writes_the_final_decoding_piece_by_piece():
    """Token by token, multi-byte characters split across tokens, leading/trailing spaces dropped."""
    _, proc = strong_model()
    tok = proc.tokenizer
    text = "  the red square moves. héllo wörld 你好 ✓ <|im_end|> yes  "
    ids = tok.encode(text, add_special_tokens=False)

    class Spy(io.StringIO):
        def __init__(self):
            super().__init__()
            self.pieces = []

        def write(self, s):
            self.pieces.append(s)
            return super().write(s)

    out = Spy()
    streamer = AnswerStreamer(tok, out)
    streamer.put(torch.tensor([[1, 2, 3]]))  # the prompt: skipped
    for i in ids:
        streamer.put(torch.tensor([i]))
    streamer.end()
    expected = tok.decode(ids, skip_special_tokens=True).strip()
    assert "<|im_end|>" not in expected and "你好" in expected
    assert out.getvalue() == expected + "\n"
    assert sum(1 for p in out.pieces if p) > 5  # really streamed
    assert not any("\ufffd" in p for p in out.pieces)
    with pytest.raises(ValueError, match="batch"):
        streamer.put(torch.zeros(2, 3, dtype=torch.long))


@pytest.mark.parametrize(("fb", "mode", "gamma"), OPTIONS)
def test_kept_kv_cache_gives_the_answers_of_a_whole_prefill(clip, fb, mode, gamma):
    """Turns 2 and 3 reuse the cache (the media and history are not prefilled again) and give the
    same tokens as a session that prefills every turn whole, with each TC option."""
    model, proc = strong_model(fb, mode, gamma)
    questions = (Q1, "which colour came first ?", "describe the clip .")
    kept = ChatSession(model, proc, [clip], video_kwargs=VIDEO_KW)
    whole = ChatSession(model, proc, encoded=kept.encoded, reuse_cache=False)
    reused = []
    for q in questions:
        assert kept.ask(q, **GREEDY) == whole.ask(q, **GREEDY)
        assert kept.last.token_ids == whole.last.token_ids and len(kept.last.token_ids) == 8
        reused.append(kept.reused_tokens)
        assert whole.reused_tokens == 0
    q = proc.num_visual_tokens
    assert reused[0] == 0 and reused[1] > q and reused[2] > reused[1]
    assert kept.history == whole.history


def test_a_rewritten_history_crops_the_cache_to_the_common_prefix(clip):
    """Editing an earlier answer in the history: the cache is cut where the tokens differ, and the
    turn still equals a whole prefill."""
    model, proc = strong_model(True, "tc")
    kept = ChatSession(model, proc, [clip], video_kwargs=VIDEO_KW)
    kept.ask(Q1, **GREEDY)
    kept.history[-1] = {"role": "assistant", "content": "red ."}
    whole = ChatSession(model, proc, encoded=kept.encoded, reuse_cache=False)
    whole.history = list(kept.history)
    assert kept.ask("and then ?", **GREEDY) == whole.ask("and then ?", **GREEDY)
    ids = proc([kept.history[:1]], None, text_only=True)["input_ids"][0]
    assert proc.num_visual_tokens < kept.reused_tokens < len(ids) + 3


def test_session_timings_and_counts(clip):
    model, proc = strong_model()
    session = ChatSession(model, proc, [clip], video_kwargs=VIDEO_KW)
    session.ask(Q1, **GREEDY)
    first = session.last.timings
    assert first.decode > 0 and first.vision > 0 and first.projector > 0 and first.prefill > 0
    assert first.new_tokens == 8 == session.last.completion_tokens and session.last.finish_reason == "length"
    assert first.prompt_tokens == session.last.prompt_tokens > proc.num_visual_tokens
    session.ask("and then ?", **GREEDY)
    assert session.last.timings.decode == 0 and session.last.timings.vision == 0  # encoded once
