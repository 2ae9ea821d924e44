"""The Hugging Face calling conventions: ``processor(text=, images=, videos=)``,
``processor.apply_chat_template(..., tokenize=True)`` and ``pipeline("image-text-to-text")``.

Each path must give literally the same model inputs (and so the same greedy tokens) as the
conversation API ``processor(conversations, media)`` for the same prompt.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoProcessor, GenerationConfig, pipeline

from conftest import random_frames
from videoccam.assets import default_model_path
from videoccam.testing import make_tiny_checkpoint, make_tiny_model
from videoccam.testing.media import write_test_video

PROMPT_VIDEO_IMAGE = "<|im_start|>user\n<video>\nthen <image> ?<|im_end|>\n<|im_start|>assistant\n"
KEYS = {"input_ids", "attention_mask", "pixel_values", "frame_counts"}


@pytest.fixture(scope="module")
def tiny():
    return make_tiny_model()


@pytest.fixture(scope="module")
def proc(tiny):
    return tiny[1]


@pytest.fixture(scope="module")
def stopping_checkpoint(tmp_path_factory):
    """Seed 1: its greedy answers below end with a stop word before max_new_tokens (checked in the tests),
    so they also test that generate stops at the chat template's end of turn."""
    return make_tiny_checkpoint(tmp_path_factory.mktemp("tiny-seed1"), seed=1)


def image(seed: int) -> Image.Image:
    return Image.fromarray(random_frames(1, seed)[0])


def assert_same_inputs(a, b):
    assert set(a) == set(b) == KEYS
    for key in KEYS:
        assert a[key].dtype == b[key].dtype, key
        assert torch.equal(a[key], b[key]), key


def typed(video, img, question=" ?"):
    """One user turn, typed parts: a video, text, an image, text."""
    return [{"role": "user", "content": [
        {"type": "video", "video": video}, {"type": "text", "text": "\nthen "}, {"type": "image", "image": img},
        {"type": "text", "text": question}]}]


# --------------------------------------------------------------------------- processor(text=...)


def test_text_call_equals_conversation_api_video(proc):
    frames = random_frames(3, 0)
    prompt = "<|im_start|>user\n<video>\nwhat happens ?<|im_end|>\n<|im_start|>assistant\n"
    conv = proc([{"role": "user", "content": "<video>\nwhat happens ?"}], [frames])
    assert_same_inputs(proc(text=prompt, videos=frames), conv)
    assert conv["frame_counts"].tolist() == [3]
    assert int((conv["input_ids"] == proc.video_token_id).sum()) == proc.num_visual_tokens


def test_text_call_follows_placeholder_order(proc):
    """A <video> before an <image> in the text: the video's frames come first, whatever the argument order."""
    frames, img = random_frames(3, 0), image(1)
    conv = proc([{"role": "user", "content": "<video>\nthen <image> ?"}], [frames, img])
    out = proc(text=PROMPT_VIDEO_IMAGE, images=[img], videos=[frames])
    assert_same_inputs(out, conv)
    assert out["frame_counts"].tolist() == [3, 1]
    swapped = PROMPT_VIDEO_IMAGE.replace("<video>\nthen <image>", "<image>\nthen <video>")
    assert proc(text=swapped, images=[img], videos=[frames])["frame_counts"].tolist() == [1, 3]


def test_text_batch_with_flat_or_nested_media(proc):
    """Two prompts (left-padded): flat media lists and per-prompt lists give the conversation API's batch."""
    v0, v1, img = random_frames(2, 0), random_frames(4, 1), image(2)
    texts = [PROMPT_VIDEO_IMAGE,
             "<|im_start|>user\n<video>\na much longer question about the clip ?<|im_end|>\n<|im_start|>assistant\n"]
    conv = proc([[{"role": "user", "content": "<video>\nthen <image> ?"}],
                 [{"role": "user", "content": "<video>\na much longer question about the clip ?"}]],
                [[v0, img], [v1]])
    assert conv["attention_mask"][0, 0] == 0  # really padded
    assert_same_inputs(proc(text=texts, images=[img], videos=[v0, v1]), conv)
    assert_same_inputs(proc(text=texts, images=[[img], []], videos=[[v0], [v1]]), conv)


def test_text_call_video_forms(proc):
    frames = random_frames(3, 0)
    prompt = "<|im_start|>user\n<video> ?<|im_end|>\n<|im_start|>assistant\n"
    ref = proc(text=prompt, videos=frames)
    assert_same_inputs(proc(text=prompt, videos=np.stack(frames)), ref)  # [T, H, W, 3]
    assert_same_inputs(proc(text=prompt, videos=[[Image.fromarray(f) for f in frames]]), ref)


@pytest.mark.parametrize("kwargs, match", [
    ({"videos": [random_frames(2, 0), random_frames(2, 1)]},
     "1 <image> and 1 <video> placeholders but 0 images and 2 videos"),
    ({"images": [image(0)], "videos": [random_frames(2, 0)], "text": "<video> only"},
     "0 <image> and 1 <video> placeholders but 1 images and 1 videos"),
    ({"videos": [42]}, "videos: unsupported media item of type int"),
])
def test_text_call_count_errors_name_both_counts(proc, kwargs, match):
    kwargs = {"text": PROMPT_VIDEO_IMAGE, **kwargs}
    with pytest.raises(ValueError, match=match):
        proc(**kwargs)


def test_text_call_rejects_mixed_conventions(proc):
    conv = [{"role": "user", "content": "hi"}]
    with pytest.raises(ValueError, match="not both"):
        proc(conv, text="hi")
    with pytest.raises(ValueError, match="pass prompts that are already rendered as text="):
        proc("<|im_start|>user\nhi")
    with pytest.raises(ValueError, match="return_labels and text_only need conversations"):
        proc(text="hi", return_labels=True)
    with pytest.raises(TypeError, match="unexpected keyword arguments"):
        proc(conv, num_frames=4)
    with pytest.raises(TypeError, match="bogus"):
        proc(text="hi", bogus=1)
    with pytest.raises(ValueError, match="padded to the longest"):
        proc(text="hi", padding="max_length")


def test_positional_api_still_prepends_missing_placeholders(proc):
    a = proc([{"role": "user", "content": "what happens ?"}], [random_frames(2, 0)])
    b = proc([{"role": "user", "content": "<video>\nwhat happens ?"}], [random_frames(2, 0)])
    assert torch.equal(a["input_ids"], b["input_ids"])


# --------------------------------------------------------------------------- apply_chat_template


def test_apply_chat_template_renders_placeholders(proc):
    conv = typed(random_frames(3, 0), image(1))
    assert proc.apply_chat_template(conv, add_generation_prompt=True) == PROMPT_VIDEO_IMAGE
    assert proc.apply_chat_template([conv, conv], add_generation_prompt=True) == [PROMPT_VIDEO_IMAGE] * 2
    no_header = proc.apply_chat_template(conv)  # transformers' default: add_generation_prompt=False
    assert no_header == PROMPT_VIDEO_IMAGE.removesuffix("<|im_start|>assistant\n")


def test_apply_chat_template_tokenize_equals_conversation_api(proc):
    frames, img = random_frames(3, 0), image(1)
    conv = typed(frames, img)
    ref = proc(conv)  # the conversation API, typed parts
    assert_same_inputs(ref, proc([{"role": "user", "content": "<video>\nthen <image> ?"}], [frames, img]))
    out = proc.apply_chat_template(conv, tokenize=True, return_dict=True, add_generation_prompt=True,
                                   return_tensors="pt")
    assert_same_inputs(out, ref)
    ids = proc.apply_chat_template(conv, tokenize=True, add_generation_prompt=True)
    assert torch.equal(ids, ref["input_ids"])


def test_apply_chat_template_batch_and_path_parts(proc, tmp_path):
    """A batch (left-padded); an image under "path" (a file) instead of "image"."""
    frames, img = random_frames(3, 0), image(1)
    img.save(tmp_path / "still.png")
    long_q = [{"role": "user", "content": [{"type": "image", "path": str(tmp_path / "still.png")},
                                          {"type": "text", "text": " a much longer question about the clip ?"}]}]
    batch = [typed(frames, img), long_q]
    out = proc.apply_chat_template(batch, tokenize=True, return_dict=True, add_generation_prompt=True)
    ref = proc([[{"role": "user", "content": "<video>\nthen <image> ?"}],
                [{"role": "user", "content": "<image> a much longer question about the clip ?"}]],
               [[frames, img], [img]])
    assert_same_inputs(out, ref)


def test_num_frames_reaches_video_files(proc, tmp_path):
    """transformers' num_frames option (in processor_kwargs, as a keyword, or to __call__) samples video files."""
    clip = write_test_video(tmp_path / "clip.mp4", num_frames=20, fps=10)
    conv = [{"role": "user", "content": [{"type": "video", "path": str(clip)}, {"type": "text", "text": "\n?"}]}]
    ref = proc(conv, video_kwargs={"num_frames": 5})
    assert ref["frame_counts"].tolist() == [5]
    for kwargs in ({"processor_kwargs": {"num_frames": 5}}, {"num_frames": 5}):
        out = proc.apply_chat_template(conv, tokenize=True, return_dict=True, add_generation_prompt=True, **kwargs)
        assert_same_inputs(out, ref)
    prompt = proc.apply_chat_template(conv, add_generation_prompt=True)
    assert_same_inputs(proc(text=prompt, videos=str(clip), num_frames=5), ref)


def test_apply_chat_template_unsupported_options(proc):
    with pytest.raises(ValueError, match="return_assistant_tokens_mask"):
        proc.apply_chat_template(typed(random_frames(2, 0), image(1)), tokenize=True,
                                 return_assistant_tokens_mask=True)


# --------------------------------------------------------------------------- generate


def test_greedy_generate_is_identical_from_every_path(tiny):
    model, proc = tiny
    frames, img = random_frames(3, 0), image(1)
    conv = typed(frames, img)
    paths = {
        "conversation": proc(conv),
        "text": proc(text=proc.apply_chat_template(conv, add_generation_prompt=True), images=img, videos=frames),
        "chat_template": proc.apply_chat_template(conv, tokenize=True, return_dict=True, add_generation_prompt=True),
    }
    tokens = {}
    for name, inputs in paths.items():
        out = model.generate(**inputs, max_new_tokens=8, do_sample=False, min_new_tokens=8)
        tokens[name] = out[:, inputs["input_ids"].shape[1]:]
    assert len(set(tokens["conversation"][0].tolist())) > 1  # a non-degenerate continuation
    for name in ("text", "chat_template"):
        assert torch.equal(tokens[name], tokens["conversation"]), name
    answer = model.chat(conv, None, proc, max_new_tokens=8, min_new_tokens=8, do_sample=False)[0]
    assert answer == proc.batch_decode(tokens["text"], skip_special_tokens=True)[0]


# --------------------------------------------------------------------------- pipeline


@pytest.mark.parametrize("which", ["tiny", "bundled"])
def test_checkpoint_generation_config_stops_at_the_end_of_turn(stopping_checkpoint, which):
    path = stopping_checkpoint if which == "tiny" else default_model_path()
    config = GenerationConfig.from_pretrained(path)
    proc = AutoProcessor.from_pretrained(path)
    assert len(proc.stop_token_ids) > 1  # the template's end of turn besides EOS
    assert config.eos_token_id == proc.stop_token_ids
    assert config.pad_token_id == proc.tokenizer.pad_token_id


@pytest.fixture(scope="module")
def pipe_and_model(stopping_checkpoint):
    pipe = pipeline("image-text-to-text", model=str(stopping_checkpoint))
    return pipe, pipe.model, pipe.processor


def chat_answer(model, proc, conv, max_new_tokens):
    """model.chat's greedy answer, and whether it stopped at a stop word before max_new_tokens."""
    inputs = proc(conv)
    out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False,
                         eos_token_id=proc.stop_token_ids)
    stopped = out.shape[1] - inputs["input_ids"].shape[1] < max_new_tokens
    return model.chat(conv, None, proc, max_new_tokens=max_new_tokens, do_sample=False), stopped


def test_pipeline_image_answers_like_chat(pipe_and_model):
    pipe, model, proc = pipe_and_model
    assert type(model).__name__ == "VideoCCAMForConditionalGeneration"
    img = Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 48, 3), dtype=np.uint8))
    conv = [{"role": "user", "content": [{"type": "image", "image": img},
                                         {"type": "text", "text": "\ndescribe the clip ."}]}]
    expected, stopped = chat_answer(model, proc, conv, max_new_tokens=24)
    assert stopped  # the answer ends at a stop word: the pipeline must stop there too
    out = pipe(text=conv, max_new_tokens=24, return_full_text=False)
    assert out[0]["generated_text"] == expected[0]
    # the pipeline's plain-text form: a rendered prompt with its <image> placeholder, and the image
    prompt = proc.apply_chat_template(conv, add_generation_prompt=True)
    out = pipe(images=img, text=prompt, max_new_tokens=24, return_full_text=False)
    assert out[0]["generated_text"] == expected[0]


def test_pipeline_video_in_chat_answers_like_chat(pipe_and_model):
    pipe, model, proc = pipe_and_model
    rng = np.random.default_rng(0)
    rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)  # same draws as the search that picked this clip
    frames = [rng.integers(0, 256, (40, 48, 3), dtype=np.uint8) for _ in range(4)]
    conv = [{"role": "user", "content": [{"type": "video", "video": frames},
                                         {"type": "text", "text": "\ndescribe the clip ."}]}]
    expected, stopped = chat_answer(model, proc, conv, max_new_tokens=24)
    assert stopped
    out = pipe(text=conv, max_new_tokens=24, return_full_text=False)
    assert out[0]["generated_text"] == expected[0]
