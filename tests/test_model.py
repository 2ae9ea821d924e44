import pytest
import torch
from transformers import AutoModelForCausalLM, AutoModelForImageTextToText, AutoProcessor

import videoccam  # noqa: F401  (registers the Auto classes)
from conftest import random_frames
from videoccam import VideoCCAMForConditionalGeneration
from videoccam.testing import make_tiny_model

QUESTION = [{"role": "user", "content": "<video>\nwhat happens in the video ?"}]


def greedy_recompute(model, inputs, steps):
    """Greedy decoding without a cache: the whole sequence is re-run for every new token."""
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    media = {k: inputs[k] for k in ("pixel_values", "frame_counts") if k in inputs}
    out = []
    for _ in range(steps):
        logits = model(input_ids=ids, attention_mask=mask, use_cache=False, **media).logits[:, -1]
        logits[:, model.generation_config.suppress_tokens] = float("-inf")
        nxt = logits.argmax(-1, keepdim=True)
        out.append(nxt)
        ids = torch.cat([ids, nxt], 1)
        mask = torch.cat([mask, torch.ones_like(nxt)], 1)
    return torch.cat(out, 1)


@pytest.mark.parametrize("family", ["qwen2", "llama", "phi3"])
def test_cached_greedy_equals_recomputation(family):
    model, proc = make_tiny_model(family)
    inputs = proc(QUESTION, [random_frames(5, seed=1)])
    steps = 12
    cached = model.generate(**inputs, max_new_tokens=steps, min_new_tokens=steps, do_sample=False)
    cached = cached[:, inputs["input_ids"].shape[1]:]
    assert cached.shape[1] == steps
    assert torch.equal(cached, greedy_recompute(model, inputs, steps))


def test_batched_left_padded_generation_equals_single():
    model, proc = make_tiny_model()
    convs = [
        QUESTION,
        [{"role": "user", "content": "<image>\ndescribe the clip ."}],
        [{"role": "user", "content": "<video>\nwhich colour came first ? and then what happens ?"}],
    ]
    media = [[random_frames(3, 1)], [random_frames(1, 2)[0]], [random_frames(7, 3)]]
    kwargs = dict(max_new_tokens=10, min_new_tokens=10, do_sample=False)
    batch = proc(convs, media)
    assert batch["attention_mask"].sum(1).unique().numel() > 1  # really padded
    batched = model.generate(**batch, **kwargs)[:, batch["input_ids"].shape[1]:]
    for i in range(3):
        single_inputs = proc([convs[i]], [media[i]])
        single = model.generate(**single_inputs, **kwargs)[:, single_inputs["input_ids"].shape[1]:]
        assert torch.equal(batched[i], single[0]), i


def test_sampling_is_seeded():
    model, proc = make_tiny_model()
    inputs = proc(QUESTION, [random_frames(4, 1)])
    runs = []
    for _ in range(2):
        torch.manual_seed(7)
        runs.append(model.generate(**inputs, max_new_tokens=8, do_sample=True, temperature=1.0, top_p=0.9))
    assert torch.equal(runs[0], runs[1])


def test_never_generates_placeholder_tokens():
    model, proc = make_tiny_model()
    ids = [proc.image_token_id, proc.video_token_id]
    with torch.no_grad():
        model.get_output_embeddings().bias = None
        model.get_output_embeddings().weight[ids] += 50.0  # make them the most likely tokens
    out = model.generate(**proc(QUESTION, [random_frames(2, 1)]), max_new_tokens=5, do_sample=False)
    assert not torch.isin(out[:, -5:], torch.tensor(ids)).any()


def test_loss_matches_llm_loss_on_assistant_tokens():
    model, proc = make_tiny_model()
    conv = QUESTION + [{"role": "assistant", "content": "the red square moves left ."}]
    inputs = proc(conv, [random_frames(3, 1)], add_generation_prompt=False, return_labels=True,
                  padding_side="right")
    out = model(**inputs)
    logits, labels = out.logits[0, :-1], inputs["labels"][0, 1:]
    keep = labels != -100
    expected = torch.nn.functional.cross_entropy(logits[keep], labels[keep])
    torch.testing.assert_close(out.loss, expected)
    out.loss.backward()
    assert model.projector.query.grad is not None and model.projector.query.grad.abs().sum() > 0


def test_options_off_equal_plain_hf_llm_on_same_embeddings(tiny_checkpoint, tmp_path):
    model = VideoCCAMForConditionalGeneration.from_pretrained(tiny_checkpoint).eval()
    proc = AutoProcessor.from_pretrained(tiny_checkpoint)
    model.language_model.save_pretrained(tmp_path / "llm")
    plain = AutoModelForCausalLM.from_pretrained(tmp_path / "llm").eval()
    inputs = proc([QUESTION, [{"role": "user", "content": "<image> hi"}]],
                  [[random_frames(4, 1)], [random_frames(1, 2)]])
    with torch.no_grad():
        merged = model.merge_visual(inputs["input_ids"], model.get_input_embeddings()(inputs["input_ids"]),
                                    inputs["pixel_values"], inputs["frame_counts"])
        ours = model(**inputs).logits
        positions = (inputs["attention_mask"].cumsum(-1) - 1).clamp(min=0)
        ref = plain(inputs_embeds=merged.inputs_embeds, attention_mask=inputs["attention_mask"],
                    position_ids=positions).logits
        ours_pos = model(**inputs, position_ids=positions).logits
    real = inputs["attention_mask"].bool()
    torch.testing.assert_close(ours_pos[real], ref[real], atol=0, rtol=0)
    assert ours.shape == ref.shape


def test_placeholder_feature_mismatch_raises_with_both_counts():
    model, proc = make_tiny_model()
    inputs = proc(QUESTION, [random_frames(3, 1)])
    ids = inputs["input_ids"].clone()
    ids[0, ids[0] == proc.video_token_id][:1] = 5
    first = (ids[0] == proc.video_token_id).nonzero()[0, 0]
    ids[0, first] = 5  # one placeholder fewer
    with pytest.raises(ValueError, match=r"found 7 image/video placeholder tokens.*8 visual tokens"):
        model(input_ids=ids, pixel_values=inputs["pixel_values"], frame_counts=inputs["frame_counts"])
    with pytest.raises(ValueError, match=r"8 image/video placeholder tokens but no pixel_values"):
        model(input_ids=inputs["input_ids"])


def test_merge_frame_and_media_ids_for_two_items_in_one_sample():
    model, proc = make_tiny_model()
    conv = [{"role": "user", "content": "<video> then <image> ?"}]
    inputs = proc(conv, [random_frames(4, 1), random_frames(1, 2)[0]])
    emb = model.get_input_embeddings()(inputs["input_ids"])
    merged = model.merge_visual(inputs["input_ids"], emb, inputs["pixel_values"], inputs["frame_counts"])
    vis = merged.media_ids[0] >= 0
    assert merged.media_ids[0, vis].tolist() == [0] * 8 + [1] * 8
    assert merged.frame_ids[0, vis].tolist() == [0, 0, 1, 1, 2, 2, 3, 3] + [0] * 8
    assert (merged.frame_ids[0, ~vis] == -1).all()


def test_save_load_identical_logits_and_auto_classes(tmp_path):
    model, proc = make_tiny_model()
    model.save_pretrained(tmp_path)
    proc.save_pretrained(tmp_path)
    loaded = AutoModelForImageTextToText.from_pretrained(tmp_path).eval()
    loaded_proc = AutoProcessor.from_pretrained(tmp_path)
    assert type(loaded) is VideoCCAMForConditionalGeneration
    assert loaded_proc.num_visual_tokens == 8 and loaded_proc.chat_format == "chatml"
    a = proc(QUESTION, [random_frames(3, 1)])
    b = loaded_proc(QUESTION, [random_frames(3, 1)])
    for key in a:
        assert torch.equal(a[key], b[key]), key
    with torch.no_grad():
        assert torch.equal(model(**a).logits, loaded(**b).logits)
    assert loaded.generation_config.suppress_tokens == model.generation_config.suppress_tokens


def test_bf16_and_device_map_loading(tiny_checkpoint):
    model = VideoCCAMForConditionalGeneration.from_pretrained(tiny_checkpoint, dtype=torch.bfloat16,
                                                              device_map="cpu")
    assert model.dtype == torch.bfloat16 and model.projector.query.dtype == torch.bfloat16
    proc = AutoProcessor.from_pretrained(tiny_checkpoint)
    ref = VideoCCAMForConditionalGeneration.from_pretrained(tiny_checkpoint).eval()
    inputs = proc(QUESTION, [random_frames(2, 1)])
    with torch.no_grad():
        low = model(**inputs).logits.float()
        high = ref(**inputs).logits
    assert torch.isfinite(low).all()
    assert (low - high).abs().max() < 0.1 * high.abs().max()
    model.save_pretrained(tiny_checkpoint.parent / "bf16")
    again = VideoCCAMForConditionalGeneration.from_pretrained(tiny_checkpoint.parent / "bf16")
    assert again.projector.query.dtype == torch.bfloat16


def test_chat_batched_api(tiny_checkpoint):
    model = VideoCCAMForConditionalGeneration.from_pretrained(tiny_checkpoint).eval()
    proc = AutoProcessor.from_pretrained(tiny_checkpoint)
    answers = model.chat(
        [QUESTION, [{"role": "user", "content": "<image>\ndescribe it ."}]],
        [random_frames(4, 1), [random_frames(1, 2)[0]]],
        proc, max_new_tokens=6, do_sample=False,
    )
    assert len(answers) == 2 and all(isinstance(a, str) for a in answers)
    single = model.chat(QUESTION, random_frames(4, 1), proc, max_new_tokens=6, do_sample=False)
    assert single == answers[:1]


def test_from_pretrained_projector_path_only_dense(tiny_checkpoint):
    """``projector_path="dense"`` (an older call) still loads; ``"streaming"`` fails naming the removal."""
    from videoccam import ConfigError

    dense = VideoCCAMForConditionalGeneration.from_pretrained(tiny_checkpoint, projector_path="dense")
    assert dense.config.projector_config.path == dense.projector.config.path == "dense"
    with pytest.raises(ConfigError, match=r"projector_path: the 'streaming' projector path was removed"):
        VideoCCAMForConditionalGeneration.from_pretrained(tiny_checkpoint, projector_path="streaming")
    with pytest.raises(ConfigError, match="projector_path must be 'dense'"):
        VideoCCAMForConditionalGeneration.from_pretrained(tiny_checkpoint, projector_path="flash")
