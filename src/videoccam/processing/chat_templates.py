"""Built-in chat templates (Jinja, rendered by the tokenizer) and their stop words.

Used when the tokenizer has no chat template of its own. Templates and stop words follow the
released Video-CCAM models (reference/video-ccam.md 1.5): no system prompt is injected.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ChatFormat:
    name: str
    template: str
    stop_words: tuple[str, ...]


PHI3 = ChatFormat(
    name="phi3",
    template=(
        "{% for message in messages %}<|{{ message['role'] }}|>\n{{ message['content'] }}<|end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
    ),
    stop_words=("<|end|>", "<|endoftext|>"),
)

CHATML = ChatFormat(
    name="chatml",
    template=(
        "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
        "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    ),
    stop_words=("<|im_end|>",),
)

LLAMA3 = ChatFormat(
    name="llama3",
    template=(
        "<|begin_of_text|>{% for message in messages %}<|start_header_id|>{{ message['role'] }}<|end_header_id|>"
        "\n\n{{ message['content'] }}<|eot_id|>{% endfor %}"
        "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
    ),
    stop_words=("<|eot_id|>", "<|end_of_text|>"),
)

CHAT_FORMATS: dict[str, ChatFormat] = {f.name: f for f in (PHI3, CHATML, LLAMA3)}

# Stop words recognised in tokenizers that bring their own template (Qwen, Yi, Phi-3, Llama 3).
KNOWN_STOP_WORDS: tuple[str, ...] = ("<|im_end|>", "<|end|>", "<|endoftext|>", "<|eot_id|>", "<|end_of_text|>")


def get_chat_format(name: str) -> ChatFormat:
    """The built-in format called ``name`` (``"phi3"``, ``"chatml"`` or ``"llama3"``)."""
    if name not in CHAT_FORMATS:
        raise ValueError(f"unknown chat format {name!r}; built-in formats: {sorted(CHAT_FORMATS)}")
    return CHAT_FORMATS[name]
