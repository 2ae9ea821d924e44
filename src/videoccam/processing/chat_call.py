"""``apply_chat_template`` of :class:`~videoccam.processing.processor.VideoCCAMProcessor`.

transformers' messages entry point (``processor.apply_chat_template(messages, tokenize=...)``), kept
apart from the processor's own call: it renders the messages with the processor's template and,
with ``tokenize=True``, hands the prompts and their media to the processor's keyword convention
(``processor(text=..., images=..., videos=...)``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from transformers import BatchFeature

from videoccam.processing import tokenization
from videoccam.processing.messages import CALL_OPTIONS, as_batch, find_placeholders

if TYPE_CHECKING:
    import re


class ChatTemplateMixin:
    """``apply_chat_template`` for the processor (which provides ``_normalise_conversation``,
    ``_render``, ``_placeholder_re``, ``image_token``, ``video_token`` and ``__call__``)."""

    _placeholder_re: re.Pattern[str]
    image_token: str
    video_token: str
    tokenizer: Any
    visual_token_ids: frozenset[int]
    num_visual_tokens: int

    def apply_chat_template(
        self,
        conversation: list,
        chat_template: str | None = None,
        tools: list | None = None,
        documents: list | None = None,
        add_generation_prompt: bool = False,
        continue_final_message: bool = False,
        return_assistant_tokens_mask: bool = False,
        tokenize: bool = False,
        return_tensors: str | None = "pt",
        return_dict: bool = False,
        load_audio_from_video: bool = False,
        processor_kwargs: dict[str, Any] | None = None,
        sanitize_control_tokens: bool = False,
        **kwargs: Any,
    ) -> str | list[str] | torch.Tensor | BatchFeature:
        """transformers' ``ProcessorMixin.apply_chat_template``, for messages with typed content parts.

        Overridden rather than inherited: the inherited one hands the typed parts themselves to the
        Jinja template, and the templates of Video-CCAM checkpoints (the tokenizers' own, and the
        built-in ones) print ``message['content']`` as a string. Here typed parts become placeholders
        first, by the same code as the conversation path, so every string template works.

        Args:
            conversation: one conversation (a list of ``{"role", "content"}`` messages) or a batch of
                them. ``content`` is a string with placeholders or a list of typed parts:
                ``{"type": "text", "text": ...}``, ``{"type": "image", "image": ...}``, ``{"type":
                "video", "video": ...}`` (``"path"`` or ``"url"`` in place of the media field, for a
                local file).
            chat_template: a template string; default the processor's.
            tools, documents, continue_final_message: passed to the template.
            add_generation_prompt: end with the assistant header (default False, as in transformers).
            tokenize: False: return the prompt (a string, or a list for a batch) with one
                placeholder per media item. True: the model inputs, as ``__call__(text=prompt,
                images=..., videos=...)`` gives them; except that the messages' text stays text: a
                special-token string written in it (``<|im_end|>``, a ``<video>`` in a ``"text"``
                part) is tokenized as plain text, as ``__call__(conversations)`` does.
            return_dict: with ``tokenize``, the whole ``BatchFeature`` (``input_ids``,
                ``attention_mask``, ``pixel_values``, ``frame_counts``), else ``input_ids`` only.
            return_tensors: ``"pt"`` (None and ``"auto"`` mean the same).
            processor_kwargs: options for ``__call__`` (``num_frames``, ``fps``, ``video_kwargs``,
                ``padding_side``, ...). Those options are also taken from ``kwargs``; other
                ``kwargs`` are template variables.

        Raises:
            ValueError: ``return_assistant_tokens_mask``, ``load_audio_from_video`` or
                ``sanitize_control_tokens`` (not supported: use ``__call__(..., return_labels=True)``
                for training labels); a wrong number of placeholders, as ``__call__`` does.
        """
        unsupported = {"return_assistant_tokens_mask": return_assistant_tokens_mask,
                       "load_audio_from_video": load_audio_from_video,
                       "sanitize_control_tokens": sanitize_control_tokens}
        if any(unsupported.values()):
            names = [k for k, v in unsupported.items() if v]
            raise ValueError(f"{names} not supported by VideoCCAMProcessor; for training labels call "
                             "processor(conversations, media, return_labels=True)")
        conversations, _ = as_batch(conversation, None)
        single = isinstance(conversation[0], dict)
        call_kwargs = {k: kwargs.pop(k) for k in list(kwargs) if k in CALL_OPTIONS}  # rest: template vars
        call_kwargs.update(processor_kwargs or {})
        template_kwargs = {"tools": tools, "documents": documents,
                           "continue_final_message": continue_final_message, **kwargs}
        prompts, images, videos, normalised = [], [], [], []
        for b, conv in enumerate(conversations):
            messages, items = self._normalise_conversation(conv, [], b)
            normalised.append(messages)
            kinds = find_placeholders(messages, self._placeholder_re)
            images += [item for kind, item in zip(kinds, items, strict=True) if kind == self.image_token]
            videos += [item for kind, item in zip(kinds, items, strict=True) if kind == self.video_token]
            prompts.append(self._render(messages, add_generation_prompt, chat_template, **template_kwargs))
        if not tokenize:
            return prompts[0] if single else prompts
        if return_tensors not in (None, "auto", "pt"):
            raise ValueError(f"only return_tensors='pt' is supported, got {return_tensors!r}")
        guarded = [tokenization.has_guarded_text(self.tokenizer, m) for m in normalised]
        if not any(guarded):  # the prompts tokenized whole, as ever
            out = self(text=prompts, images=images or None, videos=videos or None, **call_kwargs)
            return out if return_dict else out["input_ids"]
        # a text segment holds a special-token string: it stays text (tokenization.encode_prompt); the media
        # are processed from the prompts' placeholders alone, in the same order
        kinds = ["".join(find_placeholders(m, self._placeholder_re)) for m in normalised]
        out = self(text=kinds, images=images or None, videos=videos or None, **call_kwargs)
        bos = [self.tokenizer.bos_token_id] if call_kwargs.get("add_special_tokens") and \
            self.tokenizer.bos_token_id is not None else []
        ids_batch = []
        for b, messages in enumerate(normalised):
            def render(msgs: list[dict], agp: bool) -> str:
                return self._render(msgs, agp, chat_template, **template_kwargs)

            ids = bos + tokenization.encode_prompt(self.tokenizer, render, messages, add_generation_prompt)[1]
            tokenization.check_placeholders(ids, len(find_placeholders(messages, self._placeholder_re)),
                                            self.visual_token_ids, f"conversation {b}")
            ids_batch.append(tokenization.expand_placeholders(ids, [0] * len(ids), [0.0] * len(ids),
                                                              self.visual_token_ids, self.num_visual_tokens)[0])
        out.update(tokenization.pad_batch(ids_batch, None, call_kwargs.get("padding_side", "left"),
                                          self.tokenizer.pad_token_id))
        return out if return_dict else out["input_ids"]
