"""VideoCCAMProcessor: conversations + media -> model inputs (ids, mask, labels, pixel values).

The processor owns token expansion: every ``<image>`` / ``<video>`` placeholder becomes exactly
``num_visual_tokens`` copies of its special token (Q = ``projector_config.num_query``), so the
sequence length, labels, padding and KV cache are known before the model runs.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from transformers import BatchFeature, ProcessorMixin

from videoccam.processing.chat_templates import KNOWN_STOP_WORDS, get_chat_format
from videoccam.processing.video import Video, load_video
from videoccam.processing.video_images import IMAGE_SUFFIXES

logger = logging.getLogger(__name__)

IGNORE_INDEX = -100
STILL_IMAGE_SUFFIXES = IMAGE_SUFFIXES - {".gif"}  # a GIF may be animated: it gets a <video> placeholder

Frames = list  # a list of PIL images or uint8 [H, W, 3] arrays


class VideoCCAMProcessor(ProcessorMixin):
    """Tokenizer + SigLIP image processor + chat template for Video-CCAM models.

    Args:
        image_processor: a SigLIP image processor (its config owns size and normalisation).
        tokenizer: a tokenizer in which ``image_token`` and ``video_token`` are single special tokens.
        chat_template: a Jinja template; default: the tokenizer's own, else ``chat_format``.
        num_visual_tokens: Q, tokens per media item (must equal the model's ``projector_config.num_query``).
        image_token / video_token: the placeholder strings.
        chat_format: built-in template used when neither ``chat_template`` nor the tokenizer has one
            (``"chatml"``, ``"phi3"`` or ``"llama3"``).
        num_frames: frames sampled from a video file when the call does not say.
    """

    def __init__(self, image_processor=None, tokenizer=None, chat_template: str | None = None,
                 num_visual_tokens: int = 1024, image_token: str = "<image>", video_token: str = "<video>",
                 chat_format: str = "chatml", num_frames: int = 16, **kwargs: Any) -> None:
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
        self._placeholder_re = re.compile(f"({re.escape(image_token)}|{re.escape(video_token)})")
        self._stop_words = fmt.stop_words

    def _single_token_id(self, token: str) -> int:
        ids = self.tokenizer.encode(token, add_special_tokens=False)
        if len(ids) != 1:
            raise ValueError(
                f"the tokenizer splits the placeholder {token!r} into {len(ids)} tokens; add it as a special "
                f"token (tokenizer.add_special_tokens({{'additional_special_tokens': [{token!r}]}}))"
            )
        return ids[0]

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

    # ------------------------------------------------------- chat template
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
                images=..., videos=...)`` gives them.
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
        conversations, _ = _as_batch(conversation, None)
        single = isinstance(conversation[0], dict)
        call_kwargs = {k: kwargs.pop(k) for k in list(kwargs) if k in _CALL_OPTIONS}  # rest: template vars
        call_kwargs.update(processor_kwargs or {})
        template_kwargs = {"tools": tools, "documents": documents,
                           "continue_final_message": continue_final_message, **kwargs}
        prompts, images, videos = [], [], []
        for b, conv in enumerate(conversations):
            messages, items = self._normalise_conversation(conv, [], b)
            kinds = self._placeholders(messages)
            images += [item for kind, item in zip(kinds, items) if kind == self.image_token]
            videos += [item for kind, item in zip(kinds, items) if kind == self.video_token]
            prompts.append(self._render(messages, add_generation_prompt, chat_template, **template_kwargs))
        if not tokenize:
            return prompts[0] if single else prompts
        if return_tensors not in (None, "auto", "pt"):
            raise ValueError(f"only return_tensors='pt' is supported, got {return_tensors!r}")
        out = self(text=prompts, images=images or None, videos=videos or None, **call_kwargs)
        return out if return_dict else out["input_ids"]

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
                first user message.
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
        conversations, media = _as_batch(conversations, media)
        ids_batch, labels_batch, weights_batch, pixel_values, frame_counts = [], [], [], [], []
        weighted = False  # does a message of the batch carry a loss weight?
        for b, (conv, items) in enumerate(zip(conversations, media)):
            messages, items = self._normalise_conversation(conv, items, b, text_only)
            weighted = weighted or any("weight" in msg for msg in messages)
            kinds = self._placeholders(messages)
            for kind, item in zip(kinds, items):
                pixel_values.append(self._media_pixels(kind, item, video_kwargs, f"conversation {b}"))
                frame_counts.append(pixel_values[-1].shape[0])
            ids, labels, weights = self._tokenize(messages, add_generation_prompt, return_labels, len(kinds), b)
            ids_batch.append(ids)
            labels_batch.append(labels)
            weights_batch.append(weights)
        data = self._pad(ids_batch, labels_batch if return_labels else None, padding_side,
                         weights_batch if return_labels and weighted else None)
        return _batch_feature(data, pixel_values)

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
        items = self._match_media(kinds, _flatten_media(images, _is_image_item, "images"),
                                  _flatten_media(videos, _is_video_item, "videos"))
        ids_batch, pixel_values = [], []
        for b, (prompt, prompt_kinds, prompt_items) in enumerate(zip(texts, kinds, items)):
            for kind, item in zip(prompt_kinds, prompt_items):
                pixel_values.append(self._media_pixels(kind, item, video_kwargs, f"text {b}"))
            enc = self._encode(prompt, len(prompt_kinds), f"text {b}", add_special_tokens=add_special_tokens)
            ids = enc["input_ids"]
            ids_batch.append(self._expand_placeholders(ids, [IGNORE_INDEX] * len(ids), [0.0] * len(ids))[0])
        return _batch_feature(self._pad(ids_batch, None, padding_side), pixel_values)

    def _match_media(self, kinds: list[list[str]], images: list, videos: list) -> list[list]:
        """Per prompt, its media items in placeholder order: each ``<image>`` takes the next of
        ``images``, each ``<video>`` the next of ``videos``; ``ValueError`` naming both counts unless
        every item has a placeholder of its kind."""
        num_images = sum(k == self.image_token for prompt in kinds for k in prompt)
        num_videos = sum(k == self.video_token for prompt in kinds for k in prompt)
        if num_images != len(images) or num_videos != len(videos):
            raise ValueError(
                f"the text holds {num_images} {self.image_token} and {num_videos} {self.video_token} "
                f"placeholders but {len(images)} images and {len(videos)} videos were given; write one "
                "placeholder per media item where it belongs in the prompt"
            )
        queues = {self.image_token: iter(images), self.video_token: iter(videos)}
        return [[next(queues[k]) for k in prompt] for prompt in kinds]

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
                raise ValueError(f"kinds must give 'image' or 'video' for each of the {len(items)} items, got {kinds!r}")
            tokens = [self.image_token if k == "image" else self.video_token for k in kinds]
        pixels = [self._media_pixels(tok, item, video_kwargs, f"media item {i}")
                  for i, (tok, item) in enumerate(zip(tokens, items))]
        return BatchFeature(data={
            "pixel_values": torch.cat(pixels),  # [N, 3, H, W]
            "frame_counts": torch.tensor([p.shape[0] for p in pixels], dtype=torch.long),  # [M]
        })

    def _media_pixels(self, placeholder: str, item: Any, video_kwargs: dict[str, Any] | None,
                      where: str) -> torch.Tensor:
        """One media item under its placeholder token -> ``[n, 3, H, W]`` preprocessed frames."""
        frames = self.load_media(item, video_kwargs)
        if placeholder == self.image_token and len(frames) != 1:
            raise ValueError(f"{where}: an {self.image_token} placeholder got {len(frames)} frames")
        # frames are [H, W, 3] (arrays) or PIL images: say so, or a frame 1, 3 or 4 px high is taken
        # for channels-first by the image processor's guess and garbled
        return self.image_processor(images=frames, return_tensors="pt",
                                    input_data_format="channels_last")["pixel_values"]  # [n, 3, H, W]

    def _normalise_conversation(self, conv: list, items: list, b: int,
                                text_only: bool = False) -> tuple[list[dict], list]:
        """Typed parts -> strings with placeholders; check counts; prepend missing placeholders."""
        messages, inline = [], []
        for i, msg in enumerate(conv):
            if not isinstance(msg, dict) or "role" not in msg or "content" not in msg:
                raise ValueError(f"conversation {b}, message {i}: expected a dict with 'role' and 'content'")
            message = {"role": msg["role"], "content": self._content_to_text(msg["content"], inline, b, i)}
            if "weight" in msg:
                message["weight"] = check_turn_weight(msg["weight"], msg["role"], f"conversation {b}, message {i}")
            messages.append(message)
        if inline and items:
            raise ValueError(f"conversation {b}: media given both inline (typed parts) and in `media`")
        if inline and text_only:
            raise ValueError(f"conversation {b}: text_only=True but media given inline (typed parts)")
        items = inline or list(items)
        count = sum(len(self._placeholder_re.findall(m["content"])) for m in messages)
        if text_only:
            return messages, []
        if count == 0 and items:
            first_user = next((m for m in messages if m["role"] == "user"), None)
            if first_user is None:
                raise ValueError(f"conversation {b}: media given but there is no user message to attach them to")
            tags = "".join(f"{self.placeholder_for(item)}\n" for item in items)
            first_user["content"] = tags + first_user["content"]
        elif count != len(items):
            raise ValueError(
                f"conversation {b}: {count} {self.image_token}/{self.video_token} placeholders but "
                f"{len(items)} media items"
            )
        return messages, items

    def _content_to_text(self, content: Any, inline: list, b: int, i: int) -> str:
        if isinstance(content, str):
            return content
        if not isinstance(content, list):
            raise ValueError(f"conversation {b}, message {i}: content must be a string or a list of parts")
        text = []
        for part in content:
            kind = part.get("type") if isinstance(part, dict) else None
            if kind == "text":
                text.append(part["text"])
            elif kind in ("image", "video"):
                source = next((key for key in (kind, "path", "url") if key in part), None)
                if source is None:
                    raise ValueError(f"conversation {b}, message {i}: a {kind!r} part needs a {kind!r} "
                                     "(or 'path' / 'url') field")
                inline.append(part[source])
                text.append(self.image_token if kind == "image" else self.video_token)
            else:
                raise ValueError(f"conversation {b}, message {i}: unknown content part type {kind!r}")
        return "".join(text)

    def placeholder_for(self, item: Any) -> str:
        """The placeholder a media item gets when none is written: ``image_token`` for one frame (a
        PIL image, an ``[H, W, 3]`` array, a still-image path), else ``video_token``."""
        single = isinstance(item, Image.Image) or (isinstance(item, np.ndarray) and item.ndim == 3) or (
            isinstance(item, (str, Path)) and Path(item).suffix.lower() in STILL_IMAGE_SUFFIXES
        )
        return self.image_token if single else self.video_token

    def load_media(self, item: Any, video_kwargs: dict[str, Any] | None = None) -> Frames:
        """One media item -> its frames.

        Accepts a PIL image or ``[H, W, 3]`` array (one frame), a list of them, a ``[T, H, W, 3]``
        array, a :class:`~videoccam.processing.video.Video`, or a path (image file, video file,
        frame folder) decoded with :func:`~videoccam.processing.video.load_video`.
        """
        if isinstance(item, Image.Image):
            return [item.convert("RGB")]
        if isinstance(item, np.ndarray):
            if item.ndim == 3:
                return [item]
            if item.ndim == 4:
                return list(item)
            raise ValueError(f"a media array must be [H, W, 3] or [T, H, W, 3], got shape {item.shape}")
        if isinstance(item, str) and item.startswith(("http://", "https://")):
            raise ValueError(f"remote media are not fetched: download {item} and pass the local path")
        if isinstance(item, (str, Path)):
            return list(load_video(item, **{"num_frames": self.num_frames, **(video_kwargs or {})}).frames)
        if isinstance(item, Sequence) and not isinstance(item, str):
            if len(item) == 0:
                raise ValueError("a media item is an empty list of frames")
            return [f.convert("RGB") if isinstance(f, Image.Image) else f for f in item]
        if isinstance(item, Video):
            return list(item.frames)
        raise ValueError(f"unsupported media item of type {type(item).__name__}")

    def _render(self, messages: list[dict], add_generation_prompt: bool, chat_template: str | None = None,
                **template_kwargs: Any) -> str:
        """Messages with string contents -> the prompt. ``template_kwargs``: ``continue_final_message``,
        ``tools``, ``documents`` and template variables, as the tokenizer's ``apply_chat_template``
        takes them."""
        return self.tokenizer.apply_chat_template(
            messages, chat_template=chat_template or self.chat_template, tokenize=False,
            add_generation_prompt=add_generation_prompt, **template_kwargs,
        )

    def _tokenize(self, messages: list[dict], add_generation_prompt: bool, return_labels: bool,
                  num_media: int, b: int) -> tuple[list[int], list[int], list[float]]:
        """Token ids, labels and per-token loss weights (0 where the label is -100) of one conversation."""
        text = self._render(messages, add_generation_prompt)
        enc = self._encode(text, num_media, f"conversation {b}", return_offsets_mapping=return_labels)
        ids = enc["input_ids"]
        labels, weights = [IGNORE_INDEX] * len(ids), [0.0] * len(ids)
        if return_labels:
            spans = self._assistant_spans(messages, text, b)
            for i, (start, _) in enumerate(enc["offset_mapping"]):
                span = next((span for span in spans if span[0] <= start < span[2]), None)
                if span is not None:  # the answer's text gets the weight, its end-of-turn marker at most 1
                    labels[i], weights[i] = ids[i], span[3] if start < span[1] else min(span[3], 1.0)
        return self._expand_placeholders(ids, labels, weights)

    def _placeholders(self, messages: list[dict]) -> list[str]:
        """The ``<image>`` / ``<video>`` placeholders of messages with string contents, in reading order."""
        return [m.group(0) for msg in messages for m in self._placeholder_re.finditer(msg["content"])]

    def _encode(self, text: str, num_media: int, where: str, *, add_special_tokens: bool = False,
                return_offsets_mapping: bool = False) -> Any:
        """Tokenize a rendered prompt; ``ValueError`` naming ``where`` unless it holds ``num_media``
        placeholder tokens."""
        enc = self.tokenizer(text, add_special_tokens=add_special_tokens,
                             return_offsets_mapping=return_offsets_mapping)
        found = sum(1 for t in enc["input_ids"] if t in (self.image_token_id, self.video_token_id))
        if found != num_media:
            raise ValueError(
                f"{where}: the rendered prompt holds {found} placeholder tokens but {num_media} were "
                "expected (does the chat template or the text contain stray placeholders?)"
            )
        return enc

    def _expand_placeholders(self, ids: list[int], labels: list[int],
                             weights: list[float]) -> tuple[list[int], list[int], list[float]]:
        """Each placeholder token -> Q copies (label -100, weight 0); other tokens keep label and weight."""
        out_ids, out_labels, out_weights = [], [], []
        for t, lab, w in zip(ids, labels, weights):
            if t in (self.image_token_id, self.video_token_id):
                out_ids += [t] * self.num_visual_tokens
                out_labels += [IGNORE_INDEX] * self.num_visual_tokens
                out_weights += [0.0] * self.num_visual_tokens
            else:
                out_ids.append(t)
                out_labels.append(lab)
                out_weights.append(w)
        return out_ids, out_labels, out_weights

    def _assistant_spans(self, messages: list[dict], text: str, b: int) -> list[tuple[int, int, int, float]]:
        """Assistant turns in the rendered text: ``(start, end of the answer text, end of the turn with its
        end-of-turn marker, loss weight)`` character offsets."""
        spans = []
        for k, msg in enumerate(messages):
            if msg["role"] != "assistant":
                continue
            start = len(self._render(messages[:k], add_generation_prompt=True)) if k else 0
            end_text = self._render(messages[: k + 1], add_generation_prompt=False)
            if not text.startswith(end_text):
                raise ValueError(f"conversation {b}: the chat template is not prefix-stable; cannot locate turn {k}")
            found = text.find(msg["content"], start, len(end_text)) if msg["content"] else -1
            content_end = found + len(msg["content"]) if found >= 0 else len(end_text)
            spans.append((start, content_end, len(end_text), float(msg.get("weight", 1.0))))
        if not spans:
            logger.debug("conversation %d has no assistant turn: all labels are -100", b)
        return spans

    def _pad(self, ids_batch: list[list[int]], labels_batch: list[list[int]] | None,
             padding_side: str, weights_batch: list[list[float]] | None = None) -> dict[str, torch.Tensor]:
        pad_id = self.tokenizer.pad_token_id
        if pad_id is None:
            raise ValueError("the tokenizer has no pad_token; set tokenizer.pad_token before batching")
        length = max(len(x) for x in ids_batch)

        def pad(seq: list[int], value: int) -> list[int]:
            fill = [value] * (length - len(seq))
            return fill + seq if padding_side == "left" else seq + fill

        data = {
            "input_ids": torch.tensor([pad(x, pad_id) for x in ids_batch], dtype=torch.long),
            "attention_mask": torch.tensor([pad([1] * len(x), 0) for x in ids_batch], dtype=torch.long),
        }
        if labels_batch is not None:
            data["labels"] = torch.tensor([pad(x, IGNORE_INDEX) for x in labels_batch], dtype=torch.long)
        if weights_batch is not None:
            data["loss_weights"] = torch.tensor([pad(x, 0.0) for x in weights_batch], dtype=torch.float32)
        return data


def check_turn_weight(weight: Any, role: str, where: str) -> float:
    """A message's loss weight as a float; ``ValueError`` naming ``where`` unless it is a finite number
    >= 0 on an assistant message."""
    if role != "assistant":
        raise ValueError(f"{where}: only assistant turns take a loss weight ('weight'), not {role!r} ones")
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight) or weight < 0:
        raise ValueError(f"{where}: 'weight' must be a finite number >= 0, got {weight!r}")
    return float(weight)


def _as_batch(conversations: list, media: list | None) -> tuple[list[list], list[list]]:
    """Accept one conversation or a batch; pair each with its list of media items."""
    if not isinstance(conversations, list) or not conversations:
        raise ValueError("conversations must be a non-empty list (one conversation, or a batch of them)")
    single = isinstance(conversations[0], dict)
    if single:
        conversations = [conversations]
        media = None if media is None else [media]
    if media is None:
        media = [[] for _ in conversations]
    if len(media) != len(conversations):
        raise ValueError(f"{len(conversations)} conversations but media for {len(media)}")
    return conversations, [[] if m is None else list(m) for m in media]


# __call__ options that apply_chat_template takes from its **kwargs (transformers' legacy place for them)
_CALL_OPTIONS = frozenset({"num_frames", "fps", "video_kwargs", "padding", "padding_side",
                           "add_special_tokens"})


def _batch_feature(data: dict[str, torch.Tensor], pixel_values: list[torch.Tensor]) -> BatchFeature:
    """Padded text tensors + each media item's ``[n, 3, H, W]`` frames -> the model inputs
    (``pixel_values`` / ``frame_counts`` when there are media)."""
    if pixel_values:
        data["pixel_values"] = torch.cat(pixel_values)  # [N, 3, H, W]
        data["frame_counts"] = torch.tensor([p.shape[0] for p in pixel_values], dtype=torch.long)  # [M]
    return BatchFeature(data=data)


def _is_frame(x: Any) -> bool:
    return isinstance(x, Image.Image) or (isinstance(x, np.ndarray) and x.ndim == 3)


def _is_image_item(x: Any) -> bool:
    """One image: a PIL image, an ``[H, W, 3]`` array or a path."""
    return _is_frame(x) or isinstance(x, (str, Path))


def _is_video_item(x: Any) -> bool:
    """One video: a non-empty list of frames, a ``[T, H, W, 3]`` array, a path or a ``Video``."""
    if isinstance(x, (Video, str, Path)) or (isinstance(x, np.ndarray) and x.ndim == 4):
        return True
    return isinstance(x, (list, tuple)) and bool(x) and all(_is_frame(f) for f in x)


def _flatten_media(media: Any, is_item: Callable[[Any], bool], name: str) -> list:
    """``images=`` / ``videos=`` as transformers processors take them (one item, a list, a list per
    prompt, or a stacked array) -> a flat list of items in order."""
    if media is None:
        return []
    if is_item(media):
        return [media]
    if isinstance(media, np.ndarray) and media.ndim in (4, 5):
        return list(media)  # images [N, H, W, 3] / videos [N, T, H, W, 3] -> N items
    if isinstance(media, (list, tuple)):
        return [item for part in media for item in _flatten_media(part, is_item, name)]
    shape = f" of shape {media.shape}" if isinstance(media, np.ndarray) else ""
    raise ValueError(f"{name}: unsupported media item of type {type(media).__name__}{shape}")
