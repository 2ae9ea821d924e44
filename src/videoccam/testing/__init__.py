"""Test helpers: tiny random-weight checkpoints, and synthetic media (no network, seconds on CPU).

``make_tiny_checkpoint(path)`` writes a complete folder (config, safetensors weights, tokenizer,
image processor, processor config, generation config) that ``from_pretrained`` loads like a real
checkpoint: a 2-layer SigLIP on 32x32 frames (16 visual tokens per frame), a CCAM projector with
8 queries and a 2-layer causal LM (Qwen2 by default; Llama and Phi-3 selectable).

:mod:`videoccam.testing.media` writes videos, GIFs and frame folders whose every frame shows its
own index (``write_test_video``, ``read_test_pattern``, ...), and the general encoder ``write_video``;
its public functions are importable from here too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast, SiglipImageProcessorPil

from videoccam.configuration import VideoCCAMConfig
from videoccam.constants import IMAGE_TOKEN, PLACEHOLDER_TOKENS, VIDEO_TOKEN
from videoccam.modeling import VideoCCAMForConditionalGeneration
from videoccam.processing.chat_templates import get_chat_format
from videoccam.processing.processor import VideoCCAMProcessor
from videoccam.testing.media import (
    make_test_frame,
    read_test_pattern,
    write_frame_folder,
    write_test_gif,
    write_test_video,
    write_video,
)

__all__ = [
    "TEXT_FAMILIES", "TINY_IMAGE_SIZE", "make_test_frame", "make_tiny_checkpoint", "make_tiny_model",
    "make_tiny_processor", "make_tiny_tokenizer", "read_test_pattern", "tiny_config", "write_frame_folder",
    "write_test_gif", "write_test_video", "write_video",
]

TINY_IMAGE_SIZE = 32
SPECIAL_TOKENS = (
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|user|>", "<|assistant|>", "<|system|>", "<|end|>",
    "<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>", *PLACEHOLDER_TOKENS,
)
# Each text family uses the chat format of its real counterpart.
TEXT_FAMILIES: dict[str, tuple[dict[str, Any], str]] = {
    "qwen2": ({"model_type": "qwen2"}, "chatml"),
    "llama": ({"model_type": "llama"}, "llama3"),
    "phi3": ({"model_type": "phi3", "pad_token_id": None}, "phi3"),
}
_CORPUS = (
    "what happens in the video ? the red square moves left then the blue circle appears . "
    "which colour came first ? describe the clip . is the video played forward or reversed ? "
    "a green triangle , a yellow star , count the objects : one two three four five . yes no "
    "The answer is A B C D . Question : Options : Answer with the option's letter from the given choices directly ."
)


def make_tiny_tokenizer(vocab_size: int = 320) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained on a small corpus (any text encodes) with chat specials."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS), show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator([_CORPUS] * 4, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|endoftext|>",
        additional_special_tokens=list(PLACEHOLDER_TOKENS), clean_up_tokenization_spaces=False,
    )


def tiny_config(tokenizer: PreTrainedTokenizerFast, text_family: str = "qwen2",
                **overrides: Any) -> VideoCCAMConfig:
    """A tiny :class:`VideoCCAMConfig` for ``tokenizer``; ``overrides`` set top-level fields or
    ``projector_config`` / ``text_config`` / ``vision_config`` entries (dicts are merged)."""
    if text_family not in TEXT_FAMILIES:
        raise ValueError(f"text_family must be one of {sorted(TEXT_FAMILIES)}, got {text_family!r}")
    family, _ = TEXT_FAMILIES[text_family]
    hidden = 64
    text = {
        **family, "hidden_size": hidden, "intermediate_size": 128, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": len(tokenizer),
        "max_position_embeddings": 4096, "eos_token_id": tokenizer.eos_token_id, "tie_word_embeddings": False,
        **overrides.pop("text_config", {}),
    }
    if text_family != "phi3":
        text["pad_token_id"] = tokenizer.pad_token_id
    vision = {
        "model_type": "siglip_vision_model", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
        "num_attention_heads": 2, "image_size": TINY_IMAGE_SIZE, "patch_size": 8,
        **overrides.pop("vision_config", {}),
    }
    projector = {
        "num_query": 8, "hidden_size": 32, "cross_hidden_size": vision["hidden_size"], "num_heads": 4,
        "num_key_value_heads": 2, "intermediate_size": 64, "output_size": text["hidden_size"], "dropout": 0.0,
        "attention_dropout": 0.0, **overrides.pop("projector_config", {}),
    }
    return VideoCCAMConfig(
        vision_config=vision, text_config=text, projector_config=projector,
        image_token_id=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        video_token_id=tokenizer.convert_tokens_to_ids(VIDEO_TOKEN), **overrides,
    )


def make_tiny_processor(tokenizer: PreTrainedTokenizerFast, config: VideoCCAMConfig,
                        chat_format: str = "chatml") -> VideoCCAMProcessor:
    """Processor matching ``config``: Q from the projector config, 32x32 SigLIP preprocessing."""
    tokenizer.chat_template = get_chat_format(chat_format).template
    image_processor = SiglipImageProcessorPil(size={"height": TINY_IMAGE_SIZE, "width": TINY_IMAGE_SIZE})
    return VideoCCAMProcessor(
        image_processor=image_processor, tokenizer=tokenizer,
        num_visual_tokens=config.num_visual_tokens, chat_format=chat_format,
    )


def make_tiny_model(text_family: str = "qwen2", seed: int = 0, **config_overrides: Any,
                    ) -> tuple[VideoCCAMForConditionalGeneration, VideoCCAMProcessor]:
    """A seeded tiny random model and its processor, in memory."""
    tokenizer = make_tiny_tokenizer()
    config = tiny_config(tokenizer, text_family, **config_overrides)
    torch.manual_seed(seed)
    model = VideoCCAMForConditionalGeneration(config).eval()
    return model, make_tiny_processor(tokenizer, config, TEXT_FAMILIES[text_family][1])


def make_tiny_checkpoint(path: str | Path, text_family: str = "qwen2", seed: int = 0,
                         **config_overrides: Any) -> Path:
    """Write a complete tiny random-weight checkpoint folder loadable with ``from_pretrained``.

    Args:
        path: output folder (created).
        text_family: ``"qwen2"`` (default), ``"llama"`` or ``"phi3"``.
        seed: weight initialisation seed.
        config_overrides: :class:`VideoCCAMConfig` fields, e.g. ``projector_config={"mask": "none"}``.

    Returns:
        The folder path.
    """
    path = Path(path)
    model, processor = make_tiny_model(text_family, seed, **config_overrides)
    model.generation_config.update(**processor.generation_defaults())  # stop at the template's end of turn
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path
