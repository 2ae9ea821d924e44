"""TC-LLaVA temporal options wired into the model: ``frame_block_mask``, ``temporal_rope``, ``rope_gamma``.

The LLM weights of the tiny models are drawn with ``initializer_range=0.3`` (``STRONG``) so that mask
and position effects are far above float noise and change greedy tokens; with the default 0.02
every option gives the same tokens and a broken wiring would go unnoticed.
"""

from __future__ import annotations

import functools

import pytest
import torch
from transformers import PreTrainedModel

from conftest import random_frames
from videoccam import ConfigError, VideoCCAMForConditionalGeneration
from videoccam.testing import make_tiny_checkpoint, make_tiny_model

FAMILIES = ("qwen2", "llama", "phi3")
VIDEO_Q = [{"role": "user", "content": "describe the clip . <video> what happens in the video ?"}]
MIXED_Q = [{"role": "user", "content": "<image> then <video> which colour came first ?"}]
TEXT_Q = [{"role": "user", "content": "which colour came first ? describe the clip ."}]
TEXT_Q2 = [{"role": "user", "content": "yes no"}]
# (frame_block_mask, temporal_rope, rope_gamma): every combination, "frame" with a fractional gamma
MODES = (("none", 1.0), ("tc", 1.0), ("frame", 0.5))
COMBOS = [(fb, mode, gamma) for fb in (False, True) for mode, gamma in MODES]
EXTRA_QWEN2 = [(True, "tc", 0.5), (True, "frame", 1.0), (True, "tc", 0.0)]



def fresh(family="qwen2", fb=False, mode="none", gamma=1.0, impl="sdpa"):
    """A tiny model with large LLM/projector weights; the same weights for every option (same seed)."""
    model, proc = make_tiny_model(
        family, frame_block_mask=fb, temporal_rope=mode, rope_gamma=gamma,
        text_config={"initializer_range": 0.3}, projector_config={"initializer_range": 0.3},
    )
    if impl != "sdpa":
        model.set_attn_implementation(impl)
    return model, proc


@functools.cache
def cached_model(family="qwen2", fb=False, mode="none", gamma=1.0):
    """Shared read-only models (never mutate them)."""
    return fresh(family, fb, mode, gamma)


def video_batch(proc):
    """Left-padded batch: text, a 5-frame video (blocks 2,2,1,2,1 of Q=8); an image, a 3-frame video."""
    return proc([VIDEO_Q, MIXED_Q], [[random_frames(5, 1)], [random_frames(1, 2)[0], random_frames(3, 3)]])


def media_of(inputs):
    return {k: inputs[k] for k in ("pixel_values", "frame_counts") if k in inputs}


def banned_ids(model):
    """Tokens generate never picks here: placeholders (suppress_tokens) and EOS (min_new_tokens)."""
    eos = model.generation_config.eos_token_id
    eos = [eos] if isinstance(eos, int) else list(eos or [])
    return list(model.generation_config.suppress_tokens) + eos


def greedy_recompute(model, inputs, steps):
    """Greedy decoding without a cache: the whole sequence (with pixel_values) is re-run for every token.

    Each call is a prefill, so the model rebuilds mask and positions over prompt + generated tokens.
    Returns ``(tokens [B, steps], raw logits [B, steps, V])``.
    """
    ids, mask, media = inputs["input_ids"], inputs["attention_mask"], media_of(inputs)
    tokens, raw = [], []
    with torch.no_grad():
        for _ in range(steps):
            logits = model(input_ids=ids, attention_mask=mask, use_cache=False, **media).logits[:, -1]
            raw.append(logits.clone())
            logits[:, banned_ids(model)] = float("-inf")
            nxt = logits.argmax(-1, keepdim=True)
            tokens.append(nxt)
            ids = torch.cat([ids, nxt], 1)
            mask = torch.cat([mask, torch.ones_like(nxt)], 1)
    return torch.cat(tokens, 1), torch.stack(raw, 1)


def greedy_generate(model, inputs, steps):
    """KV-cached greedy ``generate``: ``(new tokens [B, steps], raw logits [B, steps, V])``."""
    out = model.generate(**inputs, max_new_tokens=steps, min_new_tokens=steps, do_sample=False,
                         output_logits=True, return_dict_in_generate=True)
    return out.sequences[:, inputs["input_ids"].shape[1]:], torch.stack(out.logits, 1)


def logits(model, inputs, **kw):
    with torch.no_grad():
        return model(**inputs, **kw).logits


# ---------------------------------------------------------------------------------------------
# options off / text only: exactly the plain LLM
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
def test_text_only_frame_equals_off_and_tc_equals_scaled_arange(family):
    off, proc = cached_model(family)
    inputs = proc([TEXT_Q, TEXT_Q2])  # left padded, no media
    real = inputs["attention_mask"].bool()
    arange = (inputs["attention_mask"].cumsum(-1) - 1).clamp(min=0)  # per-sample arange over real tokens
    ref = logits(off, inputs, position_ids=arange)
    frame = logits(cached_model(family, False, "frame", 0.5)[0], inputs)
    torch.testing.assert_close(frame[real], ref[real], atol=0, rtol=0)

    gamma = 0.5
    tc_model = cached_model(family, False, "tc", gamma)[0]
    with torch.no_grad():
        hf = tc_model.language_model(
            inputs_embeds=tc_model.get_input_embeddings()(inputs["input_ids"]),
            attention_mask=inputs["attention_mask"], position_ids=arange * (1 + gamma),
        ).logits
    torch.testing.assert_close(logits(tc_model, inputs)[real], hf[real], atol=0, rtol=0)
    assert (hf[real] - ref[real]).abs().max() > 1e-2  # the scaled positions matter

    # frame_block_mask with no media is causal + padding: the same logits (4-D bool mask vs 2-D)
    block = logits(cached_model(family, True, "frame", 0.5)[0], inputs)
    torch.testing.assert_close(block[real], ref[real], atol=1e-5, rtol=0)


# ---------------------------------------------------------------------------------------------
# the frame-block mask: what each token may see
# ---------------------------------------------------------------------------------------------


def test_text_before_the_video_ignores_the_frames():
    model, proc = cached_model("qwen2", True, "tc", 1.0)
    a = proc(VIDEO_Q, [random_frames(4, 1)])
    b = proc(VIDEO_Q, [random_frames(4, 2)])
    first_visual = int((a["input_ids"][0] == proc.video_token_id).nonzero()[0, 0])
    la, lb = logits(model, a), logits(model, b)
    torch.testing.assert_close(la[0, :first_visual], lb[0, :first_visual], atol=1e-6, rtol=0)
    assert (la[0, first_visual:] - lb[0, first_visual:]).abs().amax(-1).min() > 1e-3


@pytest.mark.parametrize("mode", ["none", "tc"])
def test_visual_token_sees_its_own_block_never_later_blocks(mode):
    """Perturb embeddings through the ``inputs_embeds`` path (frame_ids/media_ids from ``merge_visual``)."""
    model, proc = cached_model("qwen2", True, mode, 1.0)
    plain = cached_model("qwen2", False, mode, 1.0)[0]  # same weights, causal
    inputs = proc(VIDEO_Q, [random_frames(4, 1)])  # Q=8, 4 frames: blocks of 2 tokens
    with torch.no_grad():
        merged = model.merge_visual(inputs["input_ids"], model.get_input_embeddings()(inputs["input_ids"]),
                                    inputs["pixel_values"], inputs["frame_counts"])
    vis = (merged.frame_ids[0] >= 0).nonzero()[:, 0]
    assert merged.frame_ids[0, vis].tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    i, same_block_later, later_blocks = int(vis[2]), int(vis[3]), int(vis[4])  # block 1 = vis[2:4]

    def last_hidden(m, embeds):
        with torch.no_grad():
            out = m(inputs_embeds=embeds, attention_mask=inputs["attention_mask"], frame_ids=merged.frame_ids,
                    media_ids=merged.media_ids, output_hidden_states=True)
        return out.hidden_states[-1][0, i]

    x = merged.inputs_embeds
    bump_same = x.clone()
    bump_same[0, same_block_later] += 1.0
    bump_later = x.clone()
    bump_later[0, later_blocks:] += 1.0  # blocks 2, 3 and all text after the video
    base = last_hidden(model, x)
    assert (last_hidden(model, bump_same) - base).abs().max() > 1e-3
    assert (last_hidden(model, bump_later) - base).abs().max() < 1e-6
    assert (last_hidden(plain, bump_same) - last_hidden(plain, x)).abs().max() < 1e-6  # causal: blind
    # the inputs_embeds path gives the input_ids path's logits
    with torch.no_grad():
        via_embeds = model(inputs_embeds=x, attention_mask=inputs["attention_mask"],
                           frame_ids=merged.frame_ids, media_ids=merged.media_ids).logits
    torch.testing.assert_close(via_embeds, logits(model, inputs), atol=1e-6, rtol=0)


def test_inputs_embeds_without_frame_ids_raises_when_an_option_is_on():
    model, proc = cached_model("qwen2", False, "frame", 0.5)
    inputs = proc(VIDEO_Q, [random_frames(2, 1)])
    embeds = model.get_input_embeddings()(inputs["input_ids"])
    with pytest.raises(ValueError, match="frame_ids and media_ids"):
        model(inputs_embeds=embeds, attention_mask=inputs["attention_mask"])
    off = cached_model("qwen2")[0]
    with torch.no_grad():
        off(inputs_embeds=embeds, attention_mask=inputs["attention_mask"])  # options off: fine


# ---------------------------------------------------------------------------------------------
# the options really reach attention / RoPE
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
def test_each_option_changes_the_logits(family):
    off, proc = cached_model(family)
    inputs = video_batch(proc)
    real = inputs["attention_mask"].bool()
    ref = logits(off, inputs)
    for fb, mode, gamma in [(True, "none", 1.0), (False, "tc", 1.0), (False, "frame", 0.5)]:
        other = logits(cached_model(family, fb, mode, gamma)[0], inputs)
        diff = (other - ref).abs().amax(-1)[real]
        assert diff.max() > 1e-2, (fb, mode, gamma)
        assert torch.isfinite(other).all()


def test_eager_honours_the_mask_like_sdpa():
    inputs = video_batch(cached_model()[1])
    real = inputs["attention_mask"].bool()
    sdpa = logits(cached_model("qwen2", True, "tc", 1.0)[0], inputs)
    eager_model = fresh("qwen2", True, "tc", 1.0, impl="eager")[0]
    assert eager_model.language_model.config._attn_implementation == "eager"
    eager = logits(eager_model, inputs)
    torch.testing.assert_close(eager[real], sdpa[real], atol=1e-4, rtol=0)
    eager_causal = logits(fresh("qwen2", False, "tc", 1.0, impl="eager")[0], inputs)
    assert (eager[real] - eager_causal[real]).abs().max() > 1e-2


# ---------------------------------------------------------------------------------------------
# generation: KV cache == recomputation, batches, fresh calls, chat
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "family, fb, mode, gamma",
    [(f, *c) for f in FAMILIES for c in COMBOS] + [("qwen2", *c) for c in EXTRA_QWEN2],
)
def test_cached_greedy_equals_recomputation(family, fb, mode, gamma):
    model, proc = cached_model(family, fb, mode, gamma)
    inputs = video_batch(proc)  # two samples, left padded
    steps = 10
    tok_c, log_c = greedy_generate(model, inputs, steps)
    tok_r, log_r = greedy_recompute(model, inputs, steps)
    assert torch.equal(tok_c, tok_r)
    torch.testing.assert_close(log_c, log_r, atol=1e-4, rtol=0)
    assert len(set(tok_c[0].tolist())) > 1  # a non-degenerate continuation


def test_cached_greedy_equals_recomputation_eager():
    model, proc = fresh("qwen2", True, "tc", 1.0, impl="eager")
    inputs = video_batch(proc)
    tok_c, log_c = greedy_generate(model, inputs, 10)
    tok_r, log_r = greedy_recompute(model, inputs, 10)
    assert torch.equal(tok_c, tok_r)
    torch.testing.assert_close(log_c, log_r, atol=1e-4, rtol=0)


@pytest.mark.parametrize("mode, gamma", [("tc", 1.0), ("frame", 0.5)])
def test_batched_left_padded_generation_equals_single(mode, gamma):
    model, proc = cached_model("qwen2", True, mode, gamma)
    convs = [
        VIDEO_Q,
        [{"role": "user", "content": "<image>\ndescribe the clip ."}],
        [{"role": "user", "content": "<video>\nwhich colour came first ? and then what happens ?"}],
    ]
    media = [[random_frames(3, 1)], [random_frames(1, 2)[0]], [random_frames(7, 3)]]
    batch = proc(convs, media)
    assert batch["attention_mask"].sum(1).unique().numel() > 1  # really padded
    tok_b, log_b = greedy_generate(model, batch, 10)
    for i in range(3):
        tok_s, log_s = greedy_generate(model, proc([convs[i]], [media[i]]), 10)
        assert torch.equal(tok_b[i], tok_s[0]), i
        torch.testing.assert_close(log_b[i], log_s[0], atol=1e-4, rtol=0)


def test_generate_from_inputs_embeds_with_frame_ids_equals_input_ids():
    model, proc = cached_model("qwen2", True, "tc", 1.0)
    inputs = video_batch(proc)
    tok, _ = greedy_generate(model, inputs, 8)
    with torch.no_grad():
        merged = model.merge_visual(inputs["input_ids"], model.get_input_embeddings()(inputs["input_ids"]),
                                    inputs["pixel_values"], inputs["frame_counts"])
    out = model.generate(inputs_embeds=merged.inputs_embeds, attention_mask=inputs["attention_mask"],
                         frame_ids=merged.frame_ids, media_ids=merged.media_ids,
                         max_new_tokens=8, min_new_tokens=8, do_sample=False)
    assert torch.equal(out, tok)


def test_fresh_generate_after_another_and_rope_delta_is_required_for_manual_decoding():
    model, proc = cached_model("qwen2", True, "tc", 1.0)
    long_batch = video_batch(proc)
    short = proc(TEXT_Q2, [])
    first, _ = greedy_generate(model, short, 6)
    greedy_generate(model, long_batch, 6)  # a different batch size, length and rope_delta in between
    again, _ = greedy_generate(model, short, 6)
    assert torch.equal(first, again)
    assert torch.equal(first, greedy_recompute(model, short, 6)[0])

    # a manual cached loop must hand rope_delta back
    with torch.no_grad():
        out = model(**short, use_cache=True)
        assert out.rope_delta.shape == (1, 1)
        nxt = out.logits[:, -1:].argmax(-1)
        mask = torch.cat([short["attention_mask"], torch.ones_like(nxt)], 1)
        with pytest.raises(ValueError, match="rope_delta"):
            model(input_ids=nxt, attention_mask=mask, cache=out.cache)
        step = model(input_ids=nxt, attention_mask=mask, cache=out.cache, rope_delta=out.rope_delta)
        full = model(input_ids=torch.cat([short["input_ids"], nxt], 1), attention_mask=mask, use_cache=False)
    torch.testing.assert_close(step.logits[:, -1], full.logits[:, -1], atol=1e-4, rtol=0)


def test_the_cache_goes_by_either_name_on_every_transformers_release():
    """transformers 5.24 renamed past_key_values to cache: the model takes and returns both names."""
    model, proc = cached_model("qwen2", True, "tc", 1.0)
    short = proc(TEXT_Q2, [])
    with torch.no_grad():
        out = model(**short, use_cache=True)
        assert out.cache is out.past_key_values and out.cache.get_seq_length() == short["input_ids"].shape[1]
        nxt = out.logits[:, -1:].argmax(-1)
        mask = torch.cat([short["attention_mask"], torch.ones_like(nxt)], 1)
        old = model(input_ids=nxt, attention_mask=mask, past_key_values=out.cache, rope_delta=out.rope_delta)
        out = model(**short, use_cache=True)
        new = model(input_ids=nxt, attention_mask=mask, cache=out.cache, rope_delta=out.rope_delta)
        with pytest.raises(ValueError, match="not both"):
            model(input_ids=nxt, attention_mask=mask, cache=out.cache, past_key_values=out.cache)
    torch.testing.assert_close(old.logits, new.logits, atol=0, rtol=0)


def test_chat_with_both_options_via_from_pretrained_kwargs(tiny_checkpoint):
    model = VideoCCAMForConditionalGeneration.from_pretrained(
        tiny_checkpoint, frame_block_mask=True, temporal_rope="tc", rope_gamma=1.0
    ).eval()
    assert (model.config.frame_block_mask, model.config.temporal_rope) == (True, "tc")
    from transformers import AutoProcessor

    proc = AutoProcessor.from_pretrained(tiny_checkpoint)
    kwargs = dict(max_new_tokens=6, do_sample=False)
    answers = model.chat([VIDEO_Q, [{"role": "user", "content": "<image>\ndescribe it ."}]],
                         [random_frames(4, 1), [random_frames(1, 2)[0]]], proc, **kwargs)
    assert len(answers) == 2 and all(isinstance(a, str) for a in answers)
    assert model.chat(VIDEO_Q, random_frames(4, 1), proc, **kwargs) == answers[:1]


# ---------------------------------------------------------------------------------------------
# training forward
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fb", [False, True])
def test_training_forward_right_padding_and_never_a_none_mask(fb):
    model, proc = fresh("qwen2", fb, "tc", 1.0)
    convs = [VIDEO_Q + [{"role": "assistant", "content": "the red square moves left ."}],
             [{"role": "user", "content": "<image> hi"}, {"role": "assistant", "content": "yes"}]]
    media = [[random_frames(3, 1)], [random_frames(1, 2)[0]]]
    batch = proc(convs, media, add_generation_prompt=False, return_labels=True, padding_side="right")
    assert not batch["attention_mask"].bool().all()  # really padded
    out = model(**batch, use_cache=False)
    assert torch.isfinite(out.loss)
    out.loss.backward()
    assert model.projector.query.grad.abs().sum() > 0
    with torch.no_grad():
        for i in range(2):
            single = proc([convs[i]], [media[i]], add_generation_prompt=False, padding_side="right")
            n = single["input_ids"].shape[1]
            ref = model(**single, use_cache=False).logits[0]
            torch.testing.assert_close(out.logits[i, :n], ref, atol=1e-4, rtol=0)
            # attention_mask=None with no cache: the model still passes a mask, so HF does not read the
            # "tc" position jumps as packed-sequence boundaries
            no_mask = {k: v for k, v in single.items() if k != "attention_mask"}
            torch.testing.assert_close(model(**no_mask, use_cache=False).logits[0], ref, atol=0, rtol=0)


# ---------------------------------------------------------------------------------------------
# configuration errors and backends
# ---------------------------------------------------------------------------------------------


def test_flash_attention_with_frame_block_mask_raises():
    model, proc = fresh("qwen2", True, "none")
    model.language_model.config._attn_implementation = "flash_attention_2"
    with pytest.raises(ValueError, match="frame_block_mask=True needs .*flash_attention_2"):
        model(**proc(VIDEO_Q, [random_frames(2, 1)]))


def test_flash_attention_with_frame_block_mask_raises_at_load(tmp_path, monkeypatch):
    path = make_tiny_checkpoint(tmp_path)
    # flash-attn is not installed here: let HF accept the name, as it would where the package exists
    monkeypatch.setattr(PreTrainedModel, "_check_and_adjust_attn_implementation",
                        lambda self, impl, **kw: impl or "sdpa")
    with pytest.raises(ConfigError, match="frame_block_mask"):
        VideoCCAMForConditionalGeneration.from_pretrained(path, frame_block_mask=True,
                                                          attn_implementation="flash_attention_2")
    loaded = VideoCCAMForConditionalGeneration.from_pretrained(path, attn_implementation="flash_attention_2")
    assert loaded.language_model.config._attn_implementation == "flash_attention_2"  # options off: allowed


def test_bad_option_values_raise_naming_the_field(tmp_path):
    with pytest.raises(ConfigError, match="temporal_rope"):
        make_tiny_model(temporal_rope="bogus")
    path = make_tiny_checkpoint(tmp_path)
    # from_pretrained kwargs bypass the config's validation; the model checks again at load
    for kwargs, field in [({"temporal_rope": "bogus"}, "temporal_rope"), ({"rope_gamma": -1.0}, "rope_gamma"),
                          ({"frame_block_mask": "yes"}, "frame_block_mask")]:
        with pytest.raises(ConfigError, match=field):
            VideoCCAMForConditionalGeneration.from_pretrained(path, **kwargs)


def test_static_cache_is_rejected_clearly():
    model, proc = cached_model("qwen2", True, "tc", 1.0)
    with pytest.raises(ValueError, match="static"):
        model.generate(**video_batch(proc), max_new_tokens=2, cache_implementation="static")


@pytest.mark.slow
def test_flex_attention_equals_sdpa():
    """``flex_attention`` gets a ``BlockMask`` (compiles for a while on CPU, hence slow)."""
    pytest.importorskip("torch.nn.attention.flex_attention")
    inputs = video_batch(cached_model()[1])
    real = inputs["attention_mask"].bool()
    sdpa = logits(cached_model("qwen2", True, "tc", 1.0)[0], inputs)
    flex = logits(fresh("qwen2", True, "tc", 1.0, impl="flex_attention")[0], inputs)
    torch.testing.assert_close(flex[real], sdpa[real], atol=1e-4, rtol=0)
