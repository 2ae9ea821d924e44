"""How custom masks and positions reach Hugging Face causal LMs (transformers 5.23), proven on tiny models.

Findings (read from ``masking_utils.py``, ``modeling_{qwen2,llama,phi3}.py``, ``integrations/
sdpa_attention.py``, ``integrations/flex_attention.py`` and ``generation/utils.py``, then tested below):

(a) Prefill mask. Pass a 4-D mask ``[B, 1, S, S]`` as the plain ``attention_mask=`` kwarg of
    ``Qwen2/Llama/Phi3ForCausalLM.forward``. ``create_causal_mask`` (and
    ``create_sliding_window_causal_mask``) return any 4-D tensor or ``BlockMask`` as is
    (``_preprocess_mask_arguments`` exits early), so it reaches every layer unchanged. No dict is
    needed (only Qwen2 accepts a ``{"full_attention": m}`` dict; Llama/Phi3 do not), and
    ``or_mask_function`` / ``block_sequence_ids`` are not needed either.
    The form depends on ``model.config._attn_implementation``, so use
    ``masks.to_hf_attention_mask(mask, attn_implementation=..., dtype=model.dtype)``:
      - ``"sdpa"``: bool (True = attend) or additive float; both give the same logits.
      - ``"eager"``: additive float only (0 / ``finfo(dtype).min``). Eager computes
        ``scores + mask``, so a bool mask is **silently wrong** (it adds 0/1).
      - ``"flex_attention"``: a ``BlockMask``. A dense tensor goes into a ``score_mod``, and on CPU with
        torch 2.13 that crashes the process (``free(): invalid next size``). The ``BlockMask`` is built
        from ``masks.LLMMaskRule.mask_mod`` (a predicate over the per-token metadata, no ``[B, S, S]``
        tensor); it works but compiles for about 15 s on CPU, so that test is marked ``slow``.
      - ``"flash_attention_2/3/4"``: ``flash_attention_mask`` keeps only the 2-D padding mask and
        drops every mask function. A custom pattern is lost silently, so reject these backends.
    A real query must never attend padding. A padding query row must not be all False (it
    attends itself), or SDPA returns NaN. Caveat: with a 4-D mask the sliding window of Qwen2/
    Phi3 configs that enable it is not applied (the mask is used as is for those layers too).

(b) Positions. ``position_ids`` (``[B, S]``, long or float32) go only to the rotary embedding
    (``freqs = position_ids[..., None].float() * inv_freq``, computed in fp32) in all three
    families. Fractional positions work. Integer positions passed explicitly equal the default.
    Masks never read them when a mask is given: a 4-D mask exits early, and a 2-D mask turns
    packed-sequence detection off.
    **Pitfall:** with ``attention_mask=None`` and no cache (``use_cache=False``, e.g. training),
    ``find_packed_sequence_indices`` splits the sequence wherever ``diff(position_ids) != 1``.
    TC positions (step 1+gamma) would then make every token its own "document". So always pass a mask.
    Another note: Phi-3 ``longrope`` / ``dynamic`` RoPE pick their frequencies from ``max(position_ids)+1``.
    TC positions are larger, so they switch to the long factors earlier.

(c) KV-cached decoding after a custom prefill (the recipe tested below):
      mask = masks.llm_attention_mask(frame_ids, media_ids, padding_mask, frame_block=...)
      pos, rope_delta = positions.position_ids(frame_ids, media_ids, padding_mask, mode=..., gamma=...)
      cache = DynamicCache(config=model.config)
      out = model(inputs_embeds=x, attention_mask=masks.to_hf_attention_mask(mask,
                  attn_implementation=model.config._attn_implementation, dtype=model.dtype),
                  position_ids=pos, cache=cache, use_cache=True)   # past_key_values= before 5.24
      mask2d = padding_mask.long()                                  # [B, S], 0 on the left padding
      per step:  cache_position = cache.get_seq_length() + torch.arange(1)   # raw slot, padding included
                 mask2d = torch.cat([mask2d, mask2d.new_ones(B, 1)], 1)      # [B, S + t + 1]
                 out = model(inputs_embeds=embed(next_tok)[:, None], attention_mask=mask2d,
                             position_ids=positions.decode_position_ids(cache_position, rope_delta,
                                                                        mode=..., gamma=...),
                             cache=cache, use_cache=True)
    This matches full recomputation token for token. With the options off it matches
    ``model.generate``. transformers 5.x has no ``cache_position`` argument anymore: derive
    it from ``cache.get_seq_length()``.
    ``generate()`` cannot carry a 4-D ``attention_mask``: with ``input_ids`` it raises "must be 2D",
    and with ``inputs_embeds`` it fails with a shape ``RuntimeError`` at the first decode step. Its
    ``_update_model_kwargs_for_generation`` advances ``position_ids`` by +1 per step, which is wrong
    for ``"tc"``. It also sets ``attention_mask=None`` when the 2-D mask is all ones. So a model that
    supports ``generate`` must build the 4-D mask inside its own ``forward`` when the cache is empty
    (``cache is None or cache.get_seq_length() == 0``). In
    ``prepare_inputs_for_generation`` (``is_first_iteration`` tells prefill from decode) it must
    replace ``position_ids`` by ``decode_position_ids(cache_position, rope_delta)``, keeping
    ``rope_delta`` from the prefill (as Qwen2-VL keeps ``rope_deltas``).
"""

from __future__ import annotations

import functools

import pytest
import torch
import transformers as tf
from transformers import DynamicCache, GenerationConfig
from transformers.masking_utils import causal_mask_function, flash_attention_mask

from videoccam.hf_compat import CACHE_NAME
from videoccam.masks import LLMMaskRule, llm_attention_mask, to_hf_attention_mask
from videoccam.positions import decode_position_ids, position_ids

FAMILIES = {
    "qwen2": (tf.Qwen2Config, tf.Qwen2ForCausalLM),
    "llama": (tf.LlamaConfig, tf.LlamaForCausalLM),
    "phi3": (tf.Phi3Config, tf.Phi3ForCausalLM),
}
IMPLS = ("sdpa", "eager")
HIDDEN = 32
T = -1



@functools.cache
def _tiny(family: str) -> torch.nn.Module:
    config_cls, model_cls = FAMILIES[family]
    config = config_cls(
        hidden_size=HIDDEN,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=64,
        max_position_embeddings=256,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        initializer_range=0.3,  # large weights so mask/position effects are far above float noise
    )
    torch.manual_seed(0)
    return model_cls._from_config(config, attn_implementation="sdpa").eval()


def tiny(family: str, impl: str) -> torch.nn.Module:
    model = _tiny(family)
    model.set_attn_implementation(impl)
    assert model.config._attn_implementation == impl
    return model


def batch():
    """Left-padded batch: sample 0 has a video with unequal blocks (3,3,2), sample 1 a video and an image."""
    s0_f = [T, T, 0, 0, 0, 1, 1, 1, 2, 2, T, T, T]
    s0_m = [T, T, 0, 0, 0, 0, 0, 0, 0, 0, T, T, T]
    s1_f = [T] * 3 + [T, 0, 0, 1, 1, T, 0, 0, T, T]
    s1_m = [T] * 3 + [T, 0, 0, 0, 0, T, 1, 1, T, T]
    frame_ids = torch.tensor([s0_f, s1_f])
    media_ids = torch.tensor([s0_m, s1_m])
    padding_mask = torch.tensor([[1] * 13, [0] * 3 + [1] * 10], dtype=torch.bool)
    x = torch.randn(2, 13, HIDDEN, generator=torch.Generator().manual_seed(1))
    return x, frame_ids, media_ids, padding_mask


def run(model, x, mask_bool, pos, **kw):
    impl = model.config._attn_implementation
    am = to_hf_attention_mask(mask_bool, attn_implementation=impl, dtype=model.dtype)
    with torch.no_grad():
        return model(inputs_embeds=x, attention_mask=am, position_ids=pos, **kw)


# ---------------------------------------------------------------------------------------------
# (a) 4-D masks
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("family", FAMILIES)
def test_plain_causal_via_our_mask_equals_hf_default(family, impl):
    model = tiny(family, impl)
    x, f, m, pad = batch()
    pos, _ = position_ids(f, m, pad, mode="none", gamma=0.0)
    ours = run(model, x, llm_attention_mask(f, m, pad, frame_block=False), pos).logits
    with torch.no_grad():
        hf = model(inputs_embeds=x, attention_mask=pad.long(), position_ids=pos).logits
        # each sample alone, unpadded, everything left to HF defaults
        alone = [model(inputs_embeds=x[b : b + 1, p:]).logits[0] for b, p in ((0, 0), (1, 3))]
    assert torch.allclose(ours[pad], hf[pad], atol=1e-5)
    assert torch.allclose(ours[0], alone[0], atol=1e-5)
    assert torch.allclose(ours[1, 3:], alone[1], atol=1e-5)
    assert torch.isfinite(ours).all()


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("family", FAMILIES)
def test_block_mask_changes_logits_only_from_the_first_visual_token(family, impl):
    model = tiny(family, impl)
    x, f, m, pad = batch()
    pos, _ = position_ids(f, m, pad, mode="none", gamma=0.0)
    plain = run(model, x, llm_attention_mask(f, m, pad, frame_block=False), pos).logits
    block = run(model, x, llm_attention_mask(f, m, pad, frame_block=True), pos).logits
    diff = (plain - block).abs().amax(-1)  # [B, S]
    # sample 0: text prefix slots 0,1 untouched; every block's first token (slots 2,5,8) changed
    assert diff[0, :2].max() < 1e-5
    assert (diff[0, [2, 5, 8]] > 1e-2).all()
    # sample 1 (3 pads): text slot 3 untouched; first tokens of video blocks and of the image changed
    assert diff[1, 3] < 1e-5
    assert (diff[1, [4, 6, 9]] > 1e-2).all()
    assert torch.isfinite(block).all()


@pytest.mark.parametrize("family", FAMILIES)
def test_sdpa_accepts_bool_and_additive_eager_needs_additive(family):
    x, f, m, pad = batch()
    pos, _ = position_ids(f, m, pad, mode="none", gamma=0.0)
    mask = llm_attention_mask(f, m, pad, frame_block=True)
    additive = to_hf_attention_mask(mask, attn_implementation="eager", dtype=torch.float32)
    with torch.no_grad():
        model = tiny(family, "sdpa")
        sdpa_bool = model(inputs_embeds=x, attention_mask=mask, position_ids=pos).logits
        sdpa_add = model(inputs_embeds=x, attention_mask=additive, position_ids=pos).logits
        model = tiny(family, "eager")
        eager_add = model(inputs_embeds=x, attention_mask=additive, position_ids=pos).logits
        eager_bool = model(inputs_embeds=x, attention_mask=mask, position_ids=pos).logits
    assert torch.allclose(sdpa_bool[pad], sdpa_add[pad], atol=1e-5)
    assert torch.allclose(sdpa_bool[pad], eager_add[pad], atol=1e-5)
    # Pitfall: eager adds the bool mask as 0/1 and masks nothing.
    assert (eager_bool[pad] - eager_add[pad]).abs().max() > 1e-2


def test_flash_attention_drops_custom_masks_and_is_rejected():
    # HF's FA mask builder ignores mask_function entirely: a full 2-D mask becomes None (plain causal).
    def everything(b, h, q, k):
        return torch.ones_like(q, dtype=torch.bool)

    ones = torch.ones(1, 4, dtype=torch.bool)
    assert flash_attention_mask(1, 4, 4, mask_function=everything, attention_mask=ones) is None
    assert flash_attention_mask(1, 4, 4, mask_function=causal_mask_function, attention_mask=ones) is None
    mask = llm_attention_mask(*batch()[1:], frame_block=True)
    with pytest.raises(ValueError, match="flash"):
        to_hf_attention_mask(mask, attn_implementation="flash_attention_2", dtype=torch.float32)
    with pytest.raises(ValueError, match="bool mask"):
        to_hf_attention_mask(mask.float(), attn_implementation="sdpa", dtype=torch.float32)


@pytest.mark.slow
def test_flex_attention_block_mask_equals_sdpa():
    """``flex_attention`` honours a ``BlockMask`` (about 15 s to compile on CPU, hence slow)."""
    x, f, m, pad = batch()
    pos, _ = position_ids(f, m, pad, mode="tc", gamma=1.0)
    rule = LLMMaskRule(f, m, pad, frame_block=True)  # flex builds its BlockMask from the rule's predicate
    ref = run(tiny("llama", "sdpa"), x, llm_attention_mask(f, m, pad, frame_block=True), pos).logits
    out = run(tiny("llama", "flex_attention"), x, rule, pos).logits
    assert torch.allclose(out[pad], ref[pad], atol=1e-4)


# ---------------------------------------------------------------------------------------------
# (b) float positions go to RoPE only
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
def test_float_positions_reach_rope(family):
    model = tiny(family, "sdpa")
    x = batch()[0][:1]  # [1, 13, H]
    ones = torch.ones(1, 13, dtype=torch.long)
    ar = torch.arange(13)[None]

    def logits(pos):
        with torch.no_grad():
            return model(inputs_embeds=x, attention_mask=ones, position_ids=pos).logits[0]

    with torch.no_grad():
        default = model(inputs_embeds=x).logits[0]
    assert torch.equal(logits(ar), default)
    assert torch.equal(logits(ar.float()), default)
    # RoPE is relative: a uniform fractional shift keeps logits, so fractions are applied consistently
    assert torch.allclose(logits(ar + 0.5), default, atol=1e-4)
    # shifting only the second half by 0.5 changes exactly the second half
    shifted = ar.float().clone()
    shifted[:, 6:] += 0.5
    diff = (logits(shifted) - default).abs().amax(-1)
    assert diff[:6].max() < 1e-5
    assert (diff[6:] > 1e-3).all()


@pytest.mark.parametrize("family", FAMILIES)
def test_positions_never_build_masks_when_a_mask_is_given(family):
    """TC positions (step 2) look like packed sequences to HF; with a mask passed that heuristic is off."""
    model = tiny(family, "sdpa")
    x = batch()[0][:1]
    pos = torch.arange(13, dtype=torch.float32)[None] * 2.0  # "tc" text positions, gamma = 1
    x2 = x.clone()
    x2[:, 0] += 1.0  # perturb the first token only

    def last(inp, **kw):
        with torch.no_grad():
            return model(inputs_embeds=inp, position_ids=pos, use_cache=False, **kw).logits[0, -1]

    ones2d = torch.ones(1, 13, dtype=torch.long)
    mask4d = torch.ones(13, 13, dtype=torch.bool).tril()[None, None]
    for kw in ({"attention_mask": ones2d}, {"attention_mask": mask4d}):
        assert (last(x, **kw) - last(x2, **kw)).abs().max() > 1e-3  # the last token sees the first
    # Pitfall: no mask and no cache -> HF splits at every position jump; the last token sees only itself.
    assert torch.allclose(last(x), last(x2), atol=1e-6)


# ---------------------------------------------------------------------------------------------
# (c) KV-cached decoding after a custom prefill == full recomputation
# ---------------------------------------------------------------------------------------------


def greedy_cached(model, x, f, m, pad, *, mode, gamma, frame_block, steps):
    mask = llm_attention_mask(f, m, pad, frame_block=frame_block)
    pos, rope_delta = position_ids(f, m, pad, mode=mode, gamma=gamma)
    cache = DynamicCache(config=model.config)
    out = run(model, x, mask, pos, **{CACHE_NAME: cache}, use_cache=True)
    logits = [out.logits[:, -1]]
    tokens = [logits[-1].argmax(-1)]
    mask2d = pad.long()
    embed = model.get_input_embeddings()
    for _ in range(steps - 1):
        cache_position = cache.get_seq_length() + torch.arange(1)  # [1], raw slot incl. padding
        mask2d = torch.cat([mask2d, mask2d.new_ones(mask2d.shape[0], 1)], dim=1)  # [B, S + t + 1]
        with torch.no_grad():
            out = model(
                inputs_embeds=embed(tokens[-1])[:, None],  # [B, 1, H]
                attention_mask=mask2d,
                position_ids=decode_position_ids(cache_position, rope_delta, mode=mode, gamma=gamma),
                **{CACHE_NAME: cache},
                use_cache=True,
            )
        logits.append(out.logits[:, -1])
        tokens.append(logits[-1].argmax(-1))
    return torch.stack(tokens, 1), torch.stack(logits, 1)


def greedy_recompute(model, x, f, m, pad, *, mode, gamma, frame_block, steps):
    batch_size, seq_len = f.shape
    pos, rope_delta = position_ids(f, m, pad, mode=mode, gamma=gamma)
    embed = model.get_input_embeddings()
    tokens, logits = [], []
    for t in range(steps):
        gen = torch.full((batch_size, t), T)  # metadata of t generated text tokens
        f_t, m_t = torch.cat([f, gen], 1), torch.cat([m, gen], 1)  # [B, S + t]
        pad_t = torch.cat([pad, torch.ones(batch_size, t, dtype=torch.bool)], 1)  # [B, S + t]
        mask = llm_attention_mask(f_t, m_t, pad_t, frame_block=frame_block)  # prompt blocks + causal
        dec = decode_position_ids(seq_len + torch.arange(t), rope_delta, mode=mode, gamma=gamma)
        pos_t = torch.cat([pos, dec.expand(batch_size, -1)], 1)  # [B, S + t]
        x_t = torch.cat([x] + ([embed(torch.stack(tokens, 1))] if tokens else []), 1)  # [B, S + t, H]
        last = run(model, x_t, mask, pos_t, use_cache=False).logits[:, -1]
        logits.append(last)
        tokens.append(last.argmax(-1))
    return torch.stack(tokens, 1), torch.stack(logits, 1)


@pytest.mark.parametrize(
    "mode, gamma, frame_block",
    [("tc", 0.0, True), ("tc", 1.0, True), ("frame", 0.5, True), ("none", 0.0, False)],
)
@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("family", FAMILIES)
def test_cached_greedy_equals_recompute(family, impl, mode, gamma, frame_block):
    model = tiny(family, impl)
    x, f, m, pad = batch()
    kw = dict(mode=mode, gamma=gamma, frame_block=frame_block, steps=10)
    tok_c, log_c = greedy_cached(model, x, f, m, pad, **kw)
    tok_r, log_r = greedy_recompute(model, x, f, m, pad, **kw)
    assert torch.equal(tok_c, tok_r)
    assert torch.allclose(log_c, log_r, atol=1e-4)
    assert len(set(tok_c[0].tolist())) > 1  # a non-degenerate continuation


@pytest.mark.parametrize("family", FAMILIES)
def test_options_off_equals_hf_generate(family):
    model = tiny(family, "sdpa")
    x, f, m, pad = batch()
    tok, _ = greedy_cached(model, x, f, m, pad, mode="none", gamma=0.0, frame_block=False, steps=10)
    gen_cfg = GenerationConfig(max_new_tokens=10, do_sample=False, eos_token_id=None, pad_token_id=0)
    with torch.no_grad():
        hf = model.generate(inputs_embeds=x, attention_mask=pad.long(), generation_config=gen_cfg)
    assert torch.equal(tok, hf[:, -10:])


@pytest.mark.parametrize("family", FAMILIES)
def test_tc_positions_change_decoding(family):
    """Sanity: the temporal positions are really used in cached decoding."""
    model = tiny(family, "sdpa")
    x, f, m, pad = batch()
    _, a = greedy_cached(model, x, f, m, pad, mode="tc", gamma=0.0, frame_block=True, steps=3)
    _, b = greedy_cached(model, x, f, m, pad, mode="tc", gamma=1.0, frame_block=True, steps=3)
    assert (a - b).abs().max() > 1e-2
