"""VideoCCAMProcessor: conversations + media -> model inputs (ids, mask, labels, pixel values).

The processor owns token expansion: every ``<image>`` / ``<video>`` placeholder becomes exactly
``num_visual_tokens`` copies of its special token (Q = ``projector_config.num_query``, read from the
model's ``config.json`` when the processor is loaded from a model folder), so the sequence length,
labels, padding and KV cache are known before the model runs. It also owns the two rules the
training data shares with it: exact token counts without media (:meth:`VideoCCAMProcessor.count_tokens`)
and one placeholder per media item when none is written (:meth:`VideoCCAMProcessor.prepend_placeholders`).

The work is done in the modules next to this one:

- :mod:`~videoccam.processing.messages`: conversations and typed parts -> messages with placeholders;
- :mod:`~videoccam.processing.media`: media items -> frames -> pixel values;
- :mod:`~videoccam.processing.tokenization`: rendered prompts -> ids, labels, padding, token counts;
- :mod:`~videoccam.processing.chat_call`: ``apply_chat_template``, transformers' messages entry point;
- :mod:`~videoccam.processing.model_config`: Q checked against the model's ``config.json``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

import torch
from transformers import BatchFeature, ProcessorMixin

from videoccam.constants import DEFAULT_NUM_FRAMES, IMAGE_TOKEN, VIDEO_TOKEN
from videoccam.processing import media as media_lib
from videoccam.processing import tokenization
from videoccam.processing.chat_call import ChatTemplateMixin
from videoccam.processing.chat_templates import KNOWN_STOP_WORDS, get_chat_format
from videoccam.processing.media import STILL_IMAGE_SUFFIXES, Frames, MediaKind
from videoccam.processing.messages import (
    SEGMENTS,
    as_batch,
    check_turn_weight,
    find_placeholders,
    normalise_conversation,
    placeholder_pattern,
    prepend_placeholders,
    segments_of,
    without_segments,
)
from videoccam.processing.model_config import check_num_visual_tokens
from videoccam.processing.tokenization import IGNORE_INDEX

logger = logging.getLogger(__name__)

__all__ = ["IGNORE_INDEX", "STILL_IMAGE_SUFFIXES", "Frames", "VideoCCAMProcessor", "check_turn_weight"]


class VideoCCAMProcessor(ChatTemplateMixin, ProcessorMixin):
    """Tokenizer + SigLIP image processor + chat template for Video-CCAM models.

    Args:
        image_processor: a SigLIP image processor (its config owns size and normalisation).
        tokenizer: a tokenizer in which ``image_token`` and ``video_token`` are single special tokens.
        chat_template: a Jinja template; default: the tokenizer's own, else ``chat_format``.
        num_visual_tokens: Q, tokens per media item (must equal the model's ``projector_config.num_query``;
            :meth:`from_pretrained` checks it against the folder's ``config.json``).
        image_token / video_token: the placeholder strings.
        chat_format: built-in template used when neither ``chat_template`` nor the tokenizer has one
            (``"chatml"``, ``"phi3"`` or ``"llama3"``).
        num_frames: frames sampled from a video file when the call does not say.
    """

    def __init__(self, image_processor=None, tokenizer=None, chat_template: str | None = None,
                 num_visual_tokens: int = 1024, image_token: str = IMAGE_TOKEN,
                 video_token: str = VIDEO_TOKEN, chat_format: str = "chatml",
                 num_frames: int = DEFAULT_NUM_FRAMES, **kwargs: Any) -> None:
        self.num_visual_tokens = num_visual_tokens
        self.image_token = image_token
        self.video_token = video_token
        self.chat_format = chat_format
        self.num_frames = num_frames
        fmt = get_chat_format(chat_format)
        if chat_template is None and tokenizer is not None and not tokenizer.chat_template:
            chat_template = fmt.template
        super().__init__(image_processor, tokenizer, chat_template=chat_template, **kwargs)
        self.image_token_id = self._single_token_id(image_token)
        self.video_token_id = self._single_token_id(video_token)
        self._placeholder_re = placeholder_pattern(image_token, video_token)
        self._stop_words = fmt.stop_words

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike,
                        **kwargs: Any) -> VideoCCAMProcessor:
        """transformers' ``from_pretrained`` (``AutoProcessor`` comes here too), with Q taken from the model.

        When the folder (or hub repo) also holds the model's ``config.json``, ``num_visual_tokens`` is
        its ``projector_config.num_query``: taken from there when ``processor_config.json`` does not
        say, checked against it when it does.

        Raises:
            ConfigError: ``processor_config.json`` and ``config.json`` disagree on Q; the message
                names both files and both values.
        """
        processor = super().from_pretrained(pretrained_model_name_or_path, **kwargs)
        processor.num_visual_tokens = check_num_visual_tokens(cls, pretrained_model_name_or_path, processor,
                                                              kwargs)
        return processor

    def _single_token_id(self, token: str) -> int:
        ids = self.tokenizer.encode(token, add_special_tokens=False)
        if len(ids) != 1:
            raise ValueError(
                f"the tokenizer splits the placeholder {token!r} into {len(ids)} tokens; add it as a special "
                f"token (tokenizer.add_special_tokens({{'additional_special_tokens': [{token!r}]}}))"
            )
        return ids[0]

    @property
    def visual_token_ids(self) -> frozenset[int]:
        """The ids of the two placeholder tokens."""
        return frozenset((self.image_token_id, self.video_token_id))

    @property
    def stop_token_ids(self) -> list[int]:
        """EOS plus the template's stop words that exist in the vocabulary."""
        vocab = self.tokenizer.get_vocab()
        ids = [vocab[w] for w in (*self._stop_words, *KNOWN_STOP_WORDS) if w in vocab]
        if self.tokenizer.eos_token_id is not None:
            ids.append(self.tokenizer.eos_token_id)
        return sorted(set(ids))

    def generation_defaults(self) -> dict[str, Any]:
        """What ``generate`` needs to stop and pad as ``model.chat`` does: ``eos_token_id``
        (:attr:`stop_token_ids`) and ``pad_token_id``. Written into a checkpoint's
        ``generation_config.json``, so that plain ``generate`` and the transformers pipeline stop at
        the chat template's end of turn too."""
        return {"eos_token_id": self.stop_token_ids, "pad_token_id": self.tokenizer.pad_token_id}

    # ------------------------------------------------------------------ call
    def __call__(self, conversations: list | None = None, media: list | None = None, *,
                 text: str | list[str] | None = None, images: Any = None, videos: Any = None,
                 add_generation_prompt: bool = True, return_labels: bool = False, padding_side: str = "left",
                 return_tensors: str = "pt", video_kwargs: dict[str, Any] | None = None,
                 text_only: bool = False, **kwargs: Any) -> BatchFeature:
        """Tokenize a batch of conversations and preprocess their media.

        Two calling conventions:

        - ``processor(conversations, media, ...)``: messages, rendered with the chat template here.
        - ``processor(text=..., images=..., videos=...)``: the keyword convention of transformers'
          multimodal processors (Qwen2-VL, LLaVA-OneVision): ``text`` is a prompt (or a list of prompts)
          already rendered, e.g. by :meth:`apply_chat_template` with ``tokenize=False``, holding the
          ``<image>``/``<video>`` placeholders. See :meth:`_call_text` for how media are matched to them.

        Args:
            conversations: one conversation (a list of ``{"role", "content"}``) or a batch of them.
                ``content`` is a string with ``<image>``/``<video>`` placeholders, or a list of typed
                parts (``{"type": "text", "text": ...}``, ``{"type": "image", "image": ...}``,
                ``{"type": "video", "video": ...}``).
            media: per conversation, its media items in placeholder order (see :meth:`load_media`).
                If a conversation has media but no placeholder, one per item is prepended to its
                first user message (:meth:`prepend_placeholders`).
            add_generation_prompt: end with the assistant header (inference).
            return_labels: add ``labels`` (assistant tokens only; everything else -100). When an
                assistant message has a ``"weight"`` (a number >= 0; default 1), ``loss_weights
                [B, S]`` (float) comes too: that weight on the tokens of the message's text,
                ``min(weight, 1)`` on its end-of-turn marker, 1 on other labelled tokens, 0 elsewhere.
            padding_side: ``"left"`` (generation) or ``"right"`` (training).
            video_kwargs: sampling options for video files (``num_frames``, ``sample``, ``fps``, ...).
            text_only: tokenize only: the placeholders written in the text are expanded to Q tokens
                each, but no media are given or loaded (their visual tokens come from elsewhere, e.g.
                ``visual_embeds`` from :meth:`~videoccam.modeling.VideoCCAMForConditionalGeneration.get_visual_embeds`,
                which :class:`~videoccam.session.ChatSession` caches); ``media`` must be None.
            text, images, videos: the keyword convention (instead of ``conversations`` / ``media``;
                ``add_generation_prompt`` does not apply: the prompt is already rendered).
            kwargs: with ``text`` only, the transformers processor options this processor understands:
                ``num_frames`` and ``fps`` (added to ``video_kwargs``), ``add_special_tokens`` (default
                False: the chat template writes the special tokens), ``padding`` (True or
                ``"longest"``: batches are always padded to the longest prompt) and ``audio`` (None).

        Returns:
            ``input_ids [B, S]``, ``attention_mask [B, S]``, and when media are present
            ``pixel_values [N, 3, H, W]`` and ``frame_counts [M]``; ``labels [B, S]`` on request, and
            ``loss_weights [B, S]`` with it when a message of the batch has a weight.
        """
        if return_tensors != "pt":
            raise ValueError(f"only return_tensors='pt' is supported, got {return_tensors!r}")
        if padding_side not in ("left", "right"):
            raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
        keyword_call = text is not None or images is not None or videos is not None
        if keyword_call:
            if conversations is not None or media is not None:
                raise ValueError("pass either conversations (with media) or text= (with images= / videos=), "
                                 "not both")
            if return_labels or text_only:
                raise ValueError("return_labels and text_only need conversations; text= takes rendered "
                                 "prompts")
            return self._call_text(text, images, videos, padding_side=padding_side, video_kwargs=video_kwargs,
                                   **kwargs)
        if kwargs:
            raise TypeError(f"unexpected keyword arguments {sorted(kwargs)}; transformers processor options "
                            "(num_frames, fps, padding, add_special_tokens) go with text=")
        if conversations is None:
            raise ValueError("nothing to process: pass conversations (and media), or text= (and images= / "
                             "videos=)")
        if isinstance(conversations, str) or (
                isinstance(conversations, list) and conversations and isinstance(conversations[0], str)):
            raise ValueError("the first argument takes conversations (lists of {'role', 'content'} "
                             "messages); pass prompts that are already rendered as text=")
        if text_only and media is not None:
            raise ValueError("text_only=True tokenizes the text alone: pass media=None")
        conversations, media = as_batch(conversations, media)
        ids_batch, labels_batch, weights_batch, pixel_values = [], [], [], []
        weighted = False  # does a message of the batch carry a loss weight?
        for b, (conv, items) in enumerate(zip(conversations, media, strict=True)):
            messages, items = self._normalise_conversation(conv, items, b, text_only)
            weighted = weighted or any("weight" in msg for msg in messages)
            kinds = find_placeholders(messages, self._placeholder_re)
            for kind, item in zip(kinds, items, strict=False):  # text_only: kinds, no items
                pixel_values.append(self._media_pixels(kind, item, video_kwargs, f"conversation {b}"))
            ids, labels, weights = tokenization.tokenize_conversation(
                self.tokenizer, self._render, messages, add_generation_prompt=add_generation_prompt,
                return_labels=return_labels, num_media=len(kinds), visual_ids=self.visual_token_ids,
                num_visual_tokens=self.num_visual_tokens, b=b)
            ids_batch.append(ids)
            labels_batch.append(labels)
            weights_batch.append(weights)
        data = tokenization.pad_batch(ids_batch, labels_batch if return_labels else None, padding_side,
                                      self.tokenizer.pad_token_id,
                                      weights_batch if return_labels and weighted else None)
        return tokenization.batch_feature(data, pixel_values)

    def _call_text(self, text: str | list[str], images: Any, videos: Any, *, padding_side: str,
                   video_kwargs: dict[str, Any] | None, num_frames: int | None = None,
                   fps: float | None = None, add_special_tokens: bool = False, padding: bool | str = True,
                   audio: Any = None) -> BatchFeature:
        """The keyword convention: rendered prompts + flat media lists -> model inputs.

        Media order: ``images`` and ``videos`` are each flattened into one list for the whole batch
        (a nested per-prompt list, as transformers' ``apply_chat_template`` passes, flattens to the
        same thing). Then the placeholders of all prompts are read in order (prompt 0 first, left to
        right): each ``<image>`` takes the next image and each ``<video>`` the next video. So with
        both kinds, ``pixel_values`` / ``frame_counts`` follow the placeholders' order in the text,
        not the order of the two arguments. Each placeholder is expanded to Q tokens by the same
        code as the conversation path.
        """
        if audio is not None:
            raise ValueError("this model takes no audio")
        if padding not in (True, "longest"):
            raise ValueError(f"padding={padding!r} is not supported: batches are always padded to the "
                             "longest prompt (padding=True); padding_side picks the side")
        texts = [text] if isinstance(text, str) else text
        if not isinstance(texts, (list, tuple)) or not texts or not all(isinstance(t, str) for t in texts):
            raise ValueError("text must be a prompt string or a non-empty list of them (the rendered chat "
                             "template with <image>/<video> placeholders); for messages use "
                             "apply_chat_template")
        video_kwargs = {**(video_kwargs or {}), **({} if num_frames is None else {"num_frames": num_frames}),
                        **({} if fps is None else {"fps": fps})}
        kinds = [self._placeholder_re.findall(t) for t in texts]  # per prompt, its placeholders in order
        images = media_lib.flatten_media(images, media_lib.is_image_item, "images")
        videos = media_lib.flatten_media(videos, media_lib.is_video_item, "videos")
        items = media_lib.match_media(kinds, images, videos, self.image_token, self.video_token)
        ids_batch, pixel_values = [], []
        for b, (prompt, prompt_kinds, prompt_items) in enumerate(zip(texts, kinds, items, strict=True)):
            for kind, item in zip(prompt_kinds, prompt_items, strict=True):
                pixel_values.append(self._media_pixels(kind, item, video_kwargs, f"text {b}"))
            ids = self.tokenizer(prompt, add_special_tokens=add_special_tokens)["input_ids"]  # a rendered prompt
            tokenization.check_placeholders(ids, len(prompt_kinds), self.visual_token_ids, f"text {b}")
            no_labels, no_weights = [IGNORE_INDEX] * len(ids), [0.0] * len(ids)
            ids_batch.append(tokenization.expand_placeholders(
                ids, no_labels, no_weights, self.visual_token_ids, self.num_visual_tokens)[0])
        data = tokenization.pad_batch(ids_batch, None, padding_side, self.tokenizer.pad_token_id)
        return tokenization.batch_feature(data, pixel_values)

    # ------------------------------------------------------------------ text without media
    def count_tokens(self, conversations: Sequence[list[dict]], num_media: Sequence[int] | None = None, *,
                     add_generation_prompt: bool = False, batch_size: int = 1024) -> list[int | None]:
        """Exact token counts of conversations, media neither loaded nor decoded.

        Each count is the length of the ``input_ids`` this processor gives the conversation with its
        media (``__call__`` with the same ``add_generation_prompt``, no padding): its text tokens
        under the chat template plus Q (``num_visual_tokens``) per placeholder. Batches of
        ``batch_size`` conversations are rendered and tokenized at once, so a million training
        records are counted in seconds.

        Args:
            conversations: a batch of conversations, ``{"role", "content"}`` messages whose contents
                hold their placeholders (typed parts count as their placeholders; media written
                without any placeholder are not counted: give such conversations
                :meth:`prepend_placeholders` first).
            num_media: per conversation, the number of media items it has; where the rendered text
                holds another number of placeholder tokens (a stray ``<image>`` in a template or a
                question), its count is ``None``. Default: no check.
            add_generation_prompt: count the assistant header too (inference prompts; False for
                training records, which end with the answer).
            batch_size: conversations rendered and tokenized per tokenizer call.

        Returns:
            One count (or ``None``) per conversation, in order.
        """
        if conversations and isinstance(conversations[0], dict):
            raise ValueError("count_tokens takes a batch of conversations (a list of lists of messages)")
        texts = []
        for b, conv in enumerate(conversations):  # typed parts -> placeholders; media ignored
            if all(isinstance(msg, dict) and isinstance(msg.get("content"), str) for msg in conv):
                texts.append([{**msg, SEGMENTS: segments_of(msg, self._placeholder_re)} for msg in conv])
            else:
                texts.append(self._normalise_conversation(conv, [], b)[0])
        return tokenization.count_tokens(self.tokenizer, self.chat_template, texts, num_media,
                                         self.visual_token_ids, self.num_visual_tokens,
                                         add_generation_prompt=add_generation_prompt, batch_size=batch_size)

    def prepend_placeholders(self, messages: list[dict], kinds: Sequence[MediaKind]) -> list[dict]:
        """Media without placeholders: one each opens the first user message, when none is written.

        The rule of ``__call__`` (which picks the kinds by :meth:`placeholder_for`) and of the
        training data: when no message holds a placeholder, the first user message is opened with
        one ``<image>`` / ``<video>`` per item of ``kinds``, in order, each followed by a newline.
        Messages that hold a placeholder come back as they are (whether the count matches the media
        is the caller's check).

        Args:
            messages: ``{"role", "content"}`` messages with string contents (not modified).
            kinds: per media item, ``"image"`` or ``"video"``.

        Returns:
            A new list of messages.

        Raises:
            ValueError: an unknown kind, or media to attach but no user message.
        """
        tokens = {"image": self.image_token, "video": self.video_token}
        if any(kind not in tokens for kind in kinds):
            raise ValueError(f"kinds must be 'image' or 'video', got {list(kinds)!r}")
        return prepend_placeholders(messages, [tokens[kind] for kind in kinds], pattern=self._placeholder_re)

    # ------------------------------------------------------------------ media
    def preprocess_media(self, items: Sequence[Any], kinds: Sequence[str] | None = None,
                         video_kwargs: dict[str, Any] | None = None) -> BatchFeature:
        """Media items alone (no text) -> ``pixel_values [N, 3, H, W]`` and ``frame_counts [M]``.

        Args:
            items: media items as in :meth:`load_media`, in placeholder order.
            kinds: per item ``"image"`` or ``"video"``; default :meth:`placeholder_for` decides. An
                image must give exactly one frame.
            video_kwargs: sampling options for video files.
        """
        items = list(items)
        if not items:
            raise ValueError("preprocess_media needs at least one media item")
        if kinds is None:
            tokens = [self.placeholder_for(item) for item in items]
        else:
            if len(kinds) != len(items) or any(k not in ("image", "video") for k in kinds):
                raise ValueError(f"kinds must give 'image' or 'video' for each of the {len(items)} items, "
                                 f"got {kinds!r}")
            tokens = [self.image_token if k == "image" else self.video_token for k in kinds]
        pixels = [self._media_pixels(tok, item, video_kwargs, f"media item {i}")
                  for i, (tok, item) in enumerate(zip(tokens, items, strict=True))]
        return BatchFeature(data={
            "pixel_values": torch.cat(pixels),  # [N, 3, H, W]
            "frame_counts": torch.tensor([p.shape[0] for p in pixels], dtype=torch.long),  # [M]
        })

    def placeholder_for(self, item: Any) -> str:
        """The placeholder a media item gets when none is written: ``image_token`` for one frame (a
        PIL image, an ``[H, W, 3]`` array, a still-image path), else ``video_token``."""
        return self.image_token if media_lib.media_kind(item) == "image" else self.video_token

    def load_media(self, item: Any, video_kwargs: dict[str, Any] | None = None) -> Frames:
        """One media item -> its frames.

        Accepts a PIL image or ``[H, W, 3]`` array (one frame), a list of them, a ``[T, H, W, 3]``
        array, a :class:`~videoccam.processing.video.Video`, or a path (image file, video file,
        frame folder) decoded with :func:`~videoccam.processing.video.load_video` (``num_frames``
        frames unless ``video_kwargs`` says otherwise). Arrays are channels-last.
        """
        return media_lib.load_media(item, self.num_frames, video_kwargs)

    def _media_pixels(self, placeholder: str, item: Any, video_kwargs: dict[str, Any] | None,
                      where: str) -> torch.Tensor:
        """One media item under its placeholder token -> ``[n, 3, H, W]`` preprocessed frames."""
        frames = self.load_media(item, video_kwargs)
        if placeholder == self.image_token and len(frames) != 1:
            raise ValueError(f"{where}: an {self.image_token} placeholder got {len(frames)} frames")
        return media_lib.preprocess_frames(self.image_processor, frames)  # [n, 3, H, W]

    # ------------------------------------------------------------------ text
    def _normalise_conversation(self, conv: list, items: list, b: int,
                                text_only: bool = False) -> tuple[list[dict], list]:
        """Typed parts -> strings with placeholders; check counts; prepend missing placeholders
        (:func:`~videoccam.processing.messages.normalise_conversation`). Media are not loaded."""
        return normalise_conversation(conv, items, b, image_token=self.image_token,
                                      video_token=self.video_token, placeholder_for=self.placeholder_for,
                                      text_only=text_only)

    def _render(self, messages: list[dict], add_generation_prompt: bool, chat_template: str | None = None,
                **template_kwargs: Any) -> str:
        """Messages with string contents -> the prompt. ``template_kwargs``: ``continue_final_message``,
        ``tools``, ``documents`` and template variables, as the tokenizer's ``apply_chat_template``
        takes them. The messages' private segments (:data:`~videoccam.processing.messages.SEGMENTS`)
        are not shown to the template."""
        return self.tokenizer.apply_chat_template(
            without_segments(messages), chat_template=chat_template or self.chat_template, tokenize=False,
            add_generation_prompt=add_generation_prompt, **template_kwargs,
        )
