"""A word-level tokenizer that covers every word of the synthetic world, with ChatML specials."""

from __future__ import annotations

from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from videoccam.constants import IMAGE_TOKEN, VIDEO_TOKEN
from videoccam.processing.chat_templates import get_chat_format
from videoccam.synth.families import world_words
from videoccam.synth.stills import still_words

UNK_TOKEN = "<unk>"
EOS_TOKEN = "<|endoftext|>"
SPECIAL_TOKENS: tuple[str, ...] = (EOS_TOKEN, "<|im_start|>", "<|im_end|>", IMAGE_TOKEN, VIDEO_TOKEN, UNK_TOKEN)
ROLE_WORDS: tuple[str, ...] = ("system", "user", "assistant")


def vocabulary(where: str = "side") -> list[str]:
    """The tokens in id order: the special tokens, then the role names and the world's words (the
    clips' and those of the stills of this ``where`` mode, :func:`~videoccam.synth.stills.make_stills`)."""
    words = sorted(set(world_words()) | set(still_words(where)) | set(ROLE_WORDS))
    return [*SPECIAL_TOKENS, *words]


def build_tokenizer(where: str = "side") -> PreTrainedTokenizerFast:
    """The world's word-level tokenizer (the same for every seed: built from word lists, not data;
    46 tokens, or 49 for the stills of ``where="both"``, which add "at", "top" and "bottom").

    One token per word or punctuation mark (text is lower-cased; anything else is ``<unk>``);
    ``<|endoftext|>`` is eos and pad; ``<|im_start|>``, ``<|im_end|>``, ``<image>`` and
    ``<video>`` are special tokens, and the chat template is ChatML. Offsets are supported, so
    :class:`~videoccam.processing.processor.VideoCCAMProcessor` can label assistant turns.
    """
    vocab = {token: i for i, token in enumerate(vocabulary(where))}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK_TOKEN))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()  # split on whitespace and every punctuation mark
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token=EOS_TOKEN, pad_token=EOS_TOKEN, unk_token=UNK_TOKEN,
        additional_special_tokens=["<|im_start|>", "<|im_end|>", IMAGE_TOKEN, VIDEO_TOKEN],
        clean_up_tokenization_spaces=False, model_max_length=4096,
    )
    tokenizer.chat_template = get_chat_format("chatml").template
    return tokenizer
