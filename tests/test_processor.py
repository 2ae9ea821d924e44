import numpy as np
import pytest
import torch
from conftest import random_frames
from PIL import Image

from videoccam.processing.chat_templates import CHAT_FORMATS, get_chat_format
from videoccam.testing import make_tiny_model

Q = 8


@pytest.fixture(scope="module")
def proc():
    return make_tiny_model()[1]


def decode_labelled(proc, inputs, i=0):
    ids, labels = inputs["input_ids"][i], inputs["labels"][i]
    return proc.tokenizer.decode(ids[labels != -100])


def test_placeholders_expand_to_num_query_tokens(proc):
    inputs = proc([{"role": "user", "content": "<video>\nhi"}], [random_frames(3, 0)])
    ids = inputs["input_ids"][0]
    assert int((ids == proc.video_token_id).sum()) == Q
    where = (ids == proc.video_token_id).nonzero().flatten()
    assert torch.equal(where, torch.arange(where[0], where[0] + Q))  # one contiguous run
    assert inputs["pixel_values"].shape == (3, 3, 32, 32)
    assert inputs["frame_counts"].tolist() == [3]


def test_golden_chatml_prompt(proc):
    inputs = proc([{"role": "user", "content": "<image> hi"}], [random_frames(1, 0)[0]])
    text = proc.tokenizer.decode(inputs["input_ids"][0])
    assert text == "<|im_start|>user\n" + "<image>" * Q + " hi<|im_end|>\n<|im_start|>assistant\n"


@pytest.mark.parametrize("name, expected", [
    ("phi3", "<|user|>\nQ<|end|>\n<|assistant|>\nA<|end|>\n<|assistant|>\n"),
    ("chatml", "<|im_start|>user\nQ<|im_end|>\n<|im_start|>assistant\nA<|im_end|>\n<|im_start|>assistant\n"),
    ("llama3", "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nQ<|eot_id|>"
               "<|start_header_id|>assistant<|end_header_id|>\n\nA<|eot_id|>"
               "<|start_header_id|>assistant<|end_header_id|>\n\n"),
])
def test_builtin_templates_render_literally(proc, name, expected):
    msgs = [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}]
    text = proc.tokenizer.apply_chat_template(msgs, chat_template=get_chat_format(name).template,
                                              tokenize=False, add_generation_prompt=True)
    assert text == expected


def test_stop_words():
    assert CHAT_FORMATS["phi3"].stop_words == ("<|end|>", "<|endoftext|>")
    assert CHAT_FORMATS["chatml"].stop_words == ("<|im_end|>",)
    for family, stop in [("qwen2", "<|im_end|>"), ("phi3", "<|end|>"), ("llama", "<|eot_id|>")]:
        p = make_tiny_model(family)[1]
        assert p.tokenizer.convert_tokens_to_ids(stop) in p.stop_token_ids
        assert p.tokenizer.eos_token_id in p.stop_token_ids


def test_labels_cover_assistant_turns_only(proc):
    conv = [
        {"role": "system", "content": "be brief ."},
        {"role": "user", "content": "<video>\nwhat happens ?"},
        {"role": "assistant", "content": "the red square moves ."},
        {"role": "user", "content": "and then ?"},
        {"role": "assistant", "content": "a blue circle appears ."},
    ]
    inputs = proc(conv, [random_frames(2, 0)], add_generation_prompt=False, return_labels=True)
    assert decode_labelled(proc, inputs) == (
        "the red square moves .<|im_end|>\na blue circle appears .<|im_end|>\n")
    labels, ids = inputs["labels"][0], inputs["input_ids"][0]
    assert (labels[ids == proc.video_token_id] == -100).all()
    keep = labels != -100
    assert torch.equal(labels[keep], ids[keep])


@pytest.mark.parametrize("family", ["qwen2", "llama", "phi3"])
def test_labels_with_each_builtin_template(family):
    p = make_tiny_model(family)[1]
    conv = [{"role": "user", "content": "<image> which colour ?"}, {"role": "assistant", "content": "red ."}]
    inputs = p(conv, [random_frames(1, 0)[0]], add_generation_prompt=False, return_labels=True)
    assert decode_labelled(p, inputs).startswith("red .")


def test_right_and_left_padding(proc):
    convs = [[{"role": "user", "content": "<image> a"}],
             [{"role": "user", "content": "<image> a much longer question about the clip ?"}]]
    media = [[random_frames(1, 0)[0]], [random_frames(1, 1)[0]]]
    left = proc(convs, media)
    right = proc(convs, media, padding_side="right", return_labels=True, add_generation_prompt=False)
    assert left["attention_mask"][0, 0] == 0 and left["attention_mask"][0, -1] == 1
    assert right["attention_mask"][0, 0] == 1 and right["attention_mask"][0, -1] == 0
    assert (right["labels"][right["attention_mask"] == 0] == -100).all()
    pad = proc.tokenizer.pad_token_id
    assert (left["input_ids"][left["attention_mask"] == 0] == pad).all()


def test_typed_content_parts_equal_placeholders(proc):
    frames = random_frames(3, 0)
    img = Image.fromarray(random_frames(1, 1)[0])
    typed = [{"role": "user", "content": [
        {"type": "video", "video": frames}, {"type": "text", "text": "\nthen "}, {"type": "image", "image": img},
        {"type": "text", "text": " ?"}]}]
    plain = [{"role": "user", "content": "<video>\nthen <image> ?"}]
    a, b = proc(typed), proc(plain, [frames, img])
    for key in b:
        assert torch.equal(a[key], b[key]), key


def test_missing_placeholders_are_prepended(proc):
    a = proc([{"role": "user", "content": "what happens ?"}], [random_frames(2, 0)])
    b = proc([{"role": "user", "content": "<video>\nwhat happens ?"}], [random_frames(2, 0)])
    assert torch.equal(a["input_ids"], b["input_ids"])


def test_media_forms(proc):
    arr = np.stack(random_frames(3, 0))  # [T, H, W, 3]
    a = proc([{"role": "user", "content": "<video> ?"}], [arr])
    b = proc([{"role": "user", "content": "<video> ?"}], [[Image.fromarray(f) for f in arr]])
    torch.testing.assert_close(a["pixel_values"], b["pixel_values"])


@pytest.mark.parametrize("content, media, match", [
    ("<video> <video> ?", [random_frames(2, 0)], "2 <image>/<video> placeholders but 1 media items"),
    ("<image> ?", [random_frames(2, 0)], "an <image> placeholder got 2 frames"),
    ("<video> ?", [[]], "empty list of frames"),
    ("<video> ?", [42], "unsupported media item of type int"),
])
def test_bad_input_raises_clear_errors(proc, content, media, match):
    with pytest.raises(ValueError, match=match):
        proc([{"role": "user", "content": content}], media)


def test_bad_conversation_shapes(proc):
    with pytest.raises(ValueError, match="non-empty list"):
        proc([])
    with pytest.raises(ValueError, match="'role' and 'content'"):
        proc([{"text": "hi"}])
    with pytest.raises(ValueError, match="2 conversations but media for 1"):
        proc([[{"role": "user", "content": "a"}], [{"role": "user", "content": "b"}]], [[]])


@pytest.mark.parametrize("shape", [(3, 64, 3), (1, 40, 3)])
def test_thin_frames_are_read_channels_last(proc, shape):
    """A frame 1 or 3 px high is [H, W, 3], not channels-first: every path that hands frames to the
    image processor says so (the image processor alone would guess wrong and garble the pixels)."""
    frame = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    expected = proc.image_processor(images=[frame], return_tensors="pt",
                                    input_data_format="channels_last")["pixel_values"]  # [1, 3, 32, 32]
    as_image = proc([{"role": "user", "content": "<image> ?"}], [frame])["pixel_values"]
    as_pil = proc.preprocess_media([Image.fromarray(frame)], kinds=["image"])["pixel_values"]
    as_video = proc(text="<video> ?", videos=[[frame, frame]])["pixel_values"]  # [2, 3, 32, 32]
    for pixels in (as_image, as_pil, as_video[:1], as_video[1:]):
        torch.testing.assert_close(pixels, expected, rtol=0, atol=0)
