"""Generation glue of :class:`~videoccam.modeling.VideoCCAMForConditionalGeneration`.

:class:`VideoCCAMOutput` is what the model's ``forward`` returns; :class:`VideoCCAMGenerationMixin` is
the ``transformers`` ``GenerationMixin`` with the model's two hooks (``visual_embeds`` reach the prefill
only; the prefill's ``rope_delta`` is carried to the decode steps) and the v1.2 ``chat`` convenience
API. The model class inherits it; nothing here is used on its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from os import PathLike
from typing import TYPE_CHECKING, Any

import torch
from transformers import GenerationMixin
from transformers.cache_utils import Cache
from transformers.modeling_outputs import ModelOutput

from videoccam.engine import encode_pixels, generate_answers
from videoccam.hf_compat import CACHE_NAME, OTHER_CACHE_NAME
from videoccam.media_expansion import MEDIA_KEYS, expand_media, items_per_prompt
from videoccam.processing.video import Video
from videoccam.projector import ProjectorOutput
from videoccam.timings import StageClock, Timings

if TYPE_CHECKING:
    from videoccam.processing.processor import VideoCCAMProcessor


@dataclass
class VideoCCAMOutput(ModelOutput):
    """Output of :meth:`VideoCCAMForConditionalGeneration.forward`.

    Attributes:
        loss: next-token cross-entropy over labelled tokens, when ``labels`` were given.
        logits: ``[B, S, V]`` (or the kept positions with ``logits_to_keep``).
        cache: the LLM's KV cache. The field has the installed transformers' name (``cache`` from 5.24 on,
            ``past_key_values`` before, which ``generate`` reads); the other name is a read-only alias, so
            ``out.cache`` and ``out.past_key_values`` both work on every supported release.
        hidden_states / attentions: from the LLM, when requested.
        frame_ids: ``[B, S]`` per-token frame index of this forward's tokens (-1 = text), when media were given.
        rope_delta: ``[B, 1]``, with ``temporal_rope != "none"``: the offset that continues the prefill's
            temporal positions while decoding (pass it back as ``rope_delta=`` on cached decode steps;
            ``generate`` does this itself).
    """

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    if CACHE_NAME == "cache":
        cache: Cache | None = None
    else:
        past_key_values: Cache | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None
    frame_ids: torch.Tensor | None = None
    rope_delta: torch.Tensor | None = None


def _cache_alias(self: VideoCCAMOutput) -> Cache | None:
    return getattr(self, CACHE_NAME)


setattr(VideoCCAMOutput, OTHER_CACHE_NAME, property(_cache_alias, doc="The KV cache (alias of the field)."))


class VideoCCAMGenerationMixin(GenerationMixin):
    """``GenerationMixin`` with the hooks of a Video-CCAM model, and :meth:`chat`.

    Mixed into :class:`~videoccam.modeling.VideoCCAMForConditionalGeneration`, whose docstring says where
    ``rope_delta`` lives (returned by ``forward``, carried by these hooks, never stored on the module).
    """

    def prepare_inputs_for_generation(self, input_ids: torch.LongTensor, inputs_embeds: torch.Tensor | None = None,
                                      **kwargs: Any) -> dict[str, Any]:
        """GenerationMixin hook: hand ``visual_embeds`` to the prefill only, as ``generate`` does ``pixel_values``.

        Mirrors ``MULTIMODAL_INPUTS_TO_DROP_OUTSIDE_PREFILL`` of ``transformers.generation.utils``: the
        precomputed visual tokens are dropped on cached decode steps (the KV cache holds them) and kept
        when every step recomputes the whole sequence (``use_cache=False``). Every other argument, the
        cache under whichever name the installed transformers uses, passes through untouched.
        """
        # generate passes everything by keyword; inputs_embeds is named so that generate sees it is forwarded
        model_inputs = super().prepare_inputs_for_generation(input_ids, inputs_embeds=inputs_embeds, **kwargs)
        if not kwargs.get("is_first_iteration", False) and kwargs.get("use_cache", True):
            model_inputs.pop("visual_embeds", None)
        return model_inputs

    def _expand_inputs_for_generation(self, expand_size: int = 1, is_encoder_decoder: bool = False,
                                      input_ids: torch.LongTensor | None = None,
                                      **model_kwargs: Any) -> tuple[torch.LongTensor | None, dict[str, Any]]:
        """GenerationMixin hook: copy each prompt's media items whole for beams / ``num_return_sequences``.

        ``generate`` repeats tensors row by row, which is right for ``input_ids`` ``[B, S]`` but would
        repeat ``pixel_values`` ``[N, 3, H, W]`` frame by frame. The media (``pixel_values`` +
        ``frame_counts``, or ``visual_embeds``) are taken out, each prompt's items (its placeholder
        tokens / Q) copied ``expand_size`` times in the order of the copied rows, and the rest is
        expanded by ``GenerationMixin``.
        """
        if expand_size == 1:
            return input_ids, model_kwargs
        media = {key: model_kwargs.pop(key) for key in MEDIA_KEYS if model_kwargs.get(key) is not None}
        if media and input_ids is not None and input_ids.shape[1] > 0:
            cfg = self.config
            items = items_per_prompt(input_ids, (cfg.image_token_id, cfg.video_token_id),
                                     cfg.num_visual_tokens)  # [B] media items per prompt
            media = expand_media(media, items, expand_size)
        # else: no placeholders to read (inputs_embeds only): forward does not use the media, keep them as given
        input_ids, model_kwargs = super()._expand_inputs_for_generation(
            expand_size=expand_size, is_encoder_decoder=is_encoder_decoder, input_ids=input_ids, **model_kwargs
        )
        model_kwargs.update(media)
        return input_ids, model_kwargs

    def _update_model_kwargs_for_generation(self, outputs: ModelOutput, model_kwargs: dict[str, Any],
                                            *args: Any, **kwargs: Any) -> dict[str, Any]:
        """GenerationMixin hook: also carry the prefill's ``rope_delta`` to the next decode steps."""
        model_kwargs = super()._update_model_kwargs_for_generation(outputs, model_kwargs, *args, **kwargs)
        if isinstance(outputs, VideoCCAMOutput) and outputs.rope_delta is not None:
            model_kwargs["rope_delta"] = outputs.rope_delta
        return model_kwargs

    @torch.no_grad()
    def chat(self, messages: list, media: list | None, processor: VideoCCAMProcessor, *,
             video_kwargs: dict[str, Any] | None = None, visual_embeds: ProjectorOutput | None = None,
             **generate_kwargs: Any) -> list[str]:
        """Answer a batch of conversations (the released v1.2 convenience API).

        Args:
            messages: a batch of conversations, each a list of ``{"role", "content"}`` messages with
                ``<image>``/``<video>`` placeholders (or typed content parts); a single conversation
                is accepted too.
            media: for each conversation, its media as in v1.2: a list of frames (PIL images or
                ``[H, W, 3]`` uint8 arrays; an image is one frame), a PIL image, a path or a
                :class:`~videoccam.processing.video.Video`; or a list of such items (one per
                placeholder) for several media; ``None`` for none.
            processor: the :class:`~videoccam.processing.processor.VideoCCAMProcessor` of this model.
            video_kwargs: sampling options for video paths (``num_frames``, ``sample``, ``fps``, ...).
            visual_embeds: the media already encoded (:meth:`get_visual_embeds` of all the batch's
                media, in placeholder order) in place of ``media``, which must then be None; the
                messages must hold the placeholders. :class:`~videoccam.session.ChatSession` uses this
                to encode a video once for a whole conversation.
            generate_kwargs: passed to :meth:`generate` (``max_new_tokens``, ``do_sample``,
                ``streamer``, ...).

        Returns:
            One answer string per conversation (special tokens skipped, stripped). The same path as
            :class:`videoccam.pipeline.Pipeline`, which also returns token counts and timings.
        """
        if messages and isinstance(messages[0], dict):  # one conversation
            messages, media = [messages], None if media is None else [media]
        clock, timings = StageClock(self.device), Timings()
        if visual_embeds is not None:
            if media is not None:
                raise ValueError("chat takes either media or precomputed visual_embeds, not both")
            inputs = processor(messages, None, add_generation_prompt=True, padding_side="left", return_tensors="pt",
                               text_only=True).to(self.device)
            visual = visual_embeds
        else:
            items = None if media is None else [_media_items(m) for m in media]
            with clock.stage(timings, "preprocess"):  # decoding included
                inputs = processor(messages, items, add_generation_prompt=True, padding_side="left",
                                   return_tensors="pt", video_kwargs=video_kwargs).to(self.device)
            pixel_values, frame_counts = inputs.pop("pixel_values", None), inputs.pop("frame_counts", None)
            visual = None if pixel_values is None else encode_pixels(self, pixel_values, frame_counts, timings, clock)
        answers = generate_answers(self, processor, inputs, visual, clock=clock, **generate_kwargs)
        return [answer.text for answer in answers]


def _media_items(media: Any) -> list:
    """One conversation's ``chat`` media -> a list of items (a list of frames is one item)."""
    if media is None:
        return []
    if isinstance(media, (list, tuple)) and media and all(
        isinstance(m, (list, tuple, str, PathLike, Video)) for m in media
    ):
        return list(media)
    return [media]
