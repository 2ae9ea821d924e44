"""VideoCCAMForConditionalGeneration: SigLIP -> CCAM projector -> any Hugging Face causal LM.

This module holds the model: vision encoding, the multimodal merge, the TC-LLaVA prefill and
``forward``. Its output type, the ``generate`` hooks and ``chat`` are in :mod:`videoccam.generation`;
masks, positions and the projector in their own modules.

Shape notation: B batch, S sequence, M media items in the batch, N frames of all items,
C=3 channels, P visual tokens per frame, Dv vision width, Q visual tokens per item, D LLM width.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from transformers import AutoModel, AutoModelForCausalLM, PreTrainedModel
from transformers import initialization as init
from transformers.cache_utils import Cache

from videoccam.configuration import VideoCCAMConfig
from videoccam.errors import ConfigError, PromptTooLongError
from videoccam.generation import VideoCCAMGenerationMixin, VideoCCAMOutput
from videoccam.hf_compat import CACHE_NAME, pick_cache
from videoccam.loading import check_weights, local_model_folder
from videoccam.masks import MASK_CAPABLE_ATTN_IMPLEMENTATIONS, LLMMaskRule, to_hf_attention_mask
from videoccam.positions import decode_position_ids, decode_step
from videoccam.positions import position_ids as temporal_position_ids
from videoccam.projector import CCAMProjector, ProjectorOutput

logger = logging.getLogger(__name__)


@dataclass
class MultimodalEmbeddings:
    """The LLM input after the visual tokens were scattered in.

    Attributes:
        inputs_embeds: ``[B, S, D]``.
        frame_ids: ``[B, S]`` long; -1 for text and padding, else the frame block of the visual token.
        media_ids: ``[B, S]`` long; -1 for text and padding, else the ordinal of the media item in its sample.
    """

    inputs_embeds: torch.Tensor
    frame_ids: torch.Tensor
    media_ids: torch.Tensor


class VideoCCAMPreTrainedModel(PreTrainedModel):
    config_class = VideoCCAMConfig
    config: VideoCCAMConfig
    base_model_prefix = ""
    input_modalities = ("image", "video", "text")
    supports_gradient_checkpointing = True
    _no_split_modules = ["CCAMProjector"]
    _skip_keys_device_placement = ["cache", "past_key_values"]
    _supports_flash_attn = True
    _supports_sdpa = True
    _supports_flex_attn = True
    _supports_attention_backend = True

    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.projector_config.initializer_range
        if isinstance(module, CCAMProjector):
            init.normal_(module.query, mean=0.0, std=std)
        elif isinstance(module, nn.Linear):
            init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            init.ones_(module.weight)
            init.zeros_(module.bias)


class VideoCCAMForConditionalGeneration(VideoCCAMPreTrainedModel, VideoCCAMGenerationMixin):
    """Video-CCAM: a SigLIP vision encoder, a CCAM projector and a causal LM, as one HF model.

    The processor writes Q placeholder tokens (``image_token_id`` / ``video_token_id``) per media
    item; :meth:`forward` encodes the frames, projects each item to Q tokens and scatters them into
    exactly those positions, then runs the LLM.

    TC-LLaVA options (``config.frame_block_mask``, ``config.temporal_rope``, ``config.rope_gamma``; see
    ``docs/temporal-options.md``) act at prefill, i.e. whenever the KV cache is empty: the model then
    builds the frame-block 4-D mask (:class:`videoccam.masks.LLMMaskRule`) and/or the temporal
    positions (:func:`videoccam.positions.position_ids`) from the per-token frame ids of the merge.
    Decode steps (cache non-empty) are plain causal and take ``decode_position_ids(cache_position,
    rope_delta)``.

    Where ``rope_delta`` lives: it is returned in the output (``VideoCCAMOutput.rope_delta``) and
    carried by ``generate`` in its per-call ``model_kwargs`` (see
    :meth:`_update_model_kwargs_for_generation`), then handed back to :meth:`forward` as
    ``rope_delta=``. Unlike Qwen2-VL's ``self.rope_deltas`` it is never stored on the module, so it
    cannot go stale: each ``generate`` call starts with fresh ``model_kwargs``, a second call (or a
    direct ``forward`` in between, or another thread) never sees the previous prompt's offset, and
    it is per row (``[B, 1]``) so left-padded batches and ``num_return_sequences`` (rows expanded
    before the prefill) are right. A manual cached loop passes ``rope_delta=out.rope_delta``.
    """

    def __init__(self, config: VideoCCAMConfig) -> None:
        super().__init__(config)
        self.vision_model = AutoModel.from_config(config.vision_config)
        self.projector = CCAMProjector(config.projector_config)
        self.language_model = AutoModelForCausalLM.from_config(config.text_config)
        self.post_init()
        # from_pretrained(path, temporal_rope=..., ...) sets config fields after the config's own
        # validation ran, so check the TC options again here, at load time
        if not isinstance(config.frame_block_mask, bool):
            raise ConfigError(f"frame_block_mask must be a bool, got {config.frame_block_mask!r}")
        decode_step(config.temporal_rope, config.rope_gamma)  # ConfigError naming temporal_rope / rope_gamma
        self._check_mask_backend()
        # placeholder ids only ever come from the processor: never generate them
        self.generation_config.suppress_tokens = [config.image_token_id, config.video_token_id]

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: Any, *args: Any, **kwargs: Any):
        """transformers' ``from_pretrained``; a local folder is checked first, so that a missing folder or
        ``config.json`` raises ``ModelNotFoundError`` and an empty or truncated ``.safetensors`` file
        ``ModelFileError``, each naming the path."""
        if isinstance(pretrained_model_name_or_path, (str, os.PathLike)):
            folder = local_model_folder(pretrained_model_name_or_path, kwargs.get("subfolder") or "",
                                        need_config=kwargs.get("config") is None)
            if folder is not None:
                check_weights(folder)
        return super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)

    # --- embeddings (delegated to the LLM, so resizing and tying behave as in the plain model) ---
    def get_input_embeddings(self) -> nn.Module:
        return self.language_model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.language_model.set_input_embeddings(value)

    def get_output_embeddings(self) -> nn.Module:
        return self.language_model.get_output_embeddings()

    def set_output_embeddings(self, value: nn.Module) -> None:
        self.language_model.set_output_embeddings(value)

    # --- vision ---
    def encode_frames(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """``[N, C, H, W] -> [N, P, Dv]``: the vision hidden state at ``vision_select_layer``."""
        chunk = self.config.vision_chunk_size or pixel_values.shape[0]
        dtype = self.vision_model.dtype
        feats = [
            self.vision_model(pixel_values=part.to(dtype), output_hidden_states=True)
            .hidden_states[self.config.vision_select_layer]
            for part in pixel_values.split(chunk)
        ]  # each [n, P, Dv]
        return torch.cat(feats)  # [N, P, Dv]

    def get_visual_embeds(self, pixel_values: torch.Tensor,
                          frame_counts: list[int] | torch.Tensor) -> ProjectorOutput:
        """Frames -> :class:`~videoccam.projector.ProjectorOutput` (``embeds [M, Q, D]``, ``frame_ids [M, Q]``).

        The result can be passed back as ``visual_embeds=`` to :meth:`forward`, :meth:`merge_visual`,
        :meth:`generate` and :meth:`chat` in place of ``pixel_values`` / ``frame_counts``, so that the
        same media are encoded once for several prompts (see :class:`videoccam.session.ChatSession`).
        """
        return self.projector(self.encode_frames(pixel_values), frame_counts)

    def merge_visual(self, input_ids: torch.Tensor, inputs_embeds: torch.Tensor,
                     pixel_values: torch.Tensor | None,
                     frame_counts: list[int] | torch.Tensor | None,
                     visual_embeds: ProjectorOutput | None = None) -> MultimodalEmbeddings:
        """Scatter each media item's Q visual tokens into its Q placeholder positions.

        Media items are matched to runs of placeholders in reading order (sample 0 first). The
        visual tokens come from ``pixel_values`` / ``frame_counts`` (encoded here) or, already
        encoded, from ``visual_embeds`` (a :meth:`get_visual_embeds` result; its ``frame_ids`` drive
        the TC options exactly as a fresh encoding's would).

        Raises:
            ValueError: quoting both numbers, when the placeholder count differs from ``M * Q``; when
                both ``pixel_values`` and ``visual_embeds`` are given.
        """
        placeholder = (input_ids == self.config.image_token_id) | (input_ids == self.config.video_token_id)  # [B, S]
        num_placeholders = int(placeholder.sum())
        frame_ids = torch.full_like(input_ids, -1)
        media_ids = torch.full_like(input_ids, -1)
        if pixel_values is not None and visual_embeds is not None:
            raise ValueError("pass either pixel_values (with frame_counts) or precomputed visual_embeds, not both")
        if pixel_values is None and visual_embeds is None:
            if num_placeholders:
                raise ValueError(
                    f"input_ids contain {num_placeholders} image/video placeholder tokens but no pixel_values "
                    "or visual_embeds were given (0 visual tokens)"
                )
            return MultimodalEmbeddings(inputs_embeds, frame_ids, media_ids)
        if visual_embeds is not None:
            visual = visual_embeds
        else:
            if frame_counts is None:
                frame_counts = [1] * pixel_values.shape[0]  # every frame an image
            visual = self.get_visual_embeds(pixel_values, frame_counts)
        num_media, num_query = visual.frame_ids.shape
        if num_placeholders != num_media * num_query:
            raise ValueError(
                f"found {num_placeholders} image/video placeholder tokens in input_ids but the media give "
                f"{num_media * num_query} visual tokens ({num_media} items x {num_query}); the processor must "
                "expand every <image>/<video> into exactly projector_config.num_query tokens"
            )
        rows, cols = placeholder.nonzero(as_tuple=True)  # each [M*Q], row-major = reading order
        rows_mq = rows.view(num_media, num_query)  # [M, Q]
        if bool((rows_mq != rows_mq[:, :1]).any()):
            raise ValueError("a run of placeholder tokens spans two samples; each media item needs its own run")
        item_row = rows_mq[:, 0].contiguous()  # [M]
        first_item_of_row = torch.searchsorted(item_row, item_row, right=False)  # [M], rows are sorted
        ordinal = torch.arange(num_media, device=rows.device) - first_item_of_row  # [M]
        embeds = inputs_embeds.clone()
        flat = visual.embeds.reshape(-1, visual.embeds.shape[-1])  # [M, Q, D] -> [M*Q, D]
        embeds[rows, cols] = flat.to(embeds.device, embeds.dtype)
        frame_ids[rows, cols] = visual.frame_ids.reshape(-1).to(frame_ids.device)  # [M*Q]
        media_ids[rows, cols] = ordinal[:, None].expand(-1, num_query).reshape(-1)  # [M*Q]
        return MultimodalEmbeddings(embeds, frame_ids, media_ids)

    def _check_mask_backend(self) -> None:
        """Raise if ``frame_block_mask`` is on but the LLM's attention backend would drop the 4-D mask."""
        impl = self.language_model.config._attn_implementation
        if self.config.frame_block_mask and impl not in MASK_CAPABLE_ATTN_IMPLEMENTATIONS:
            raise ConfigError(
                f"frame_block_mask=True needs an attention backend that honours a custom 4-D mask, one of "
                f"{MASK_CAPABLE_ATTN_IMPLEMENTATIONS}, but the language model uses attn_implementation="
                f"{impl!r} (flash attention silently drops custom masks and would run plain causal "
                "attention); load with attn_implementation='sdpa' or set frame_block_mask=False"
            )

    def _temporal_prefill(self, frame_ids: torch.Tensor, media_ids: torch.Tensor,
                          attention_mask: torch.Tensor | None, position_ids: torch.Tensor | None):
        """Prefill mask and positions of the TC options: ``(attention_mask, position_ids, rope_delta)``.

        ``attention_mask`` comes back 4-D (backend form) with ``frame_block_mask``, else as the 2-D
        padding mask (all ones when None: HF would read the temporal position jumps of a mask-less,
        cache-less forward as packed sequences). ``position_ids`` / ``rope_delta`` are the temporal ones
        with ``temporal_rope != "none"``, else the given ``position_ids`` and None.
        """
        cfg = self.config
        batch, seq_len = frame_ids.shape
        if attention_mask is None:
            attention_mask = torch.ones(batch, seq_len, dtype=torch.long, device=frame_ids.device)
        if (not isinstance(attention_mask, torch.Tensor) or attention_mask.ndim != 2
                or tuple(attention_mask.shape) != (batch, seq_len)):
            is_tensor = isinstance(attention_mask, torch.Tensor)
            got = tuple(attention_mask.shape) if is_tensor else type(attention_mask).__name__
            raise ValueError(
                f"frame_block_mask / temporal_rope need the 2-D padding attention_mask [B, S] = "
                f"[{batch}, {seq_len}] at prefill (they build the 4-D mask themselves), got {got}; "
                "static / compileable caches (cache_implementation='static'), whose generate pre-builds "
                "4-D masks, are not supported with these options: use the default dynamic cache"
            )
        padding = attention_mask.to(frame_ids.device) != 0  # [B, S]
        rope_delta = None
        if cfg.temporal_rope != "none":
            position_ids, rope_delta = temporal_position_ids(
                frame_ids, media_ids, padding, mode=cfg.temporal_rope, gamma=cfg.rope_gamma
            )  # [B, S] float32, [B, 1]
        if cfg.frame_block_mask:
            attention_mask = to_hf_attention_mask(
                LLMMaskRule(frame_ids, media_ids, padding, frame_block=True),
                attn_implementation=self.language_model.config._attn_implementation,
                dtype=self.language_model.dtype,
            )  # [B, 1, S, S] (or a BlockMask)
        return attention_mask, position_ids, rope_delta

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.Tensor | None = None,
        frame_counts: list[int] | torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        frame_ids: torch.Tensor | None = None,
        media_ids: torch.Tensor | None = None,
        rope_delta: torch.Tensor | None = None,
        visual_embeds: ProjectorOutput | None = None,
        past_key_values: Cache | None = None,
        **kwargs: Any,
    ) -> VideoCCAMOutput | tuple:
        """Run the model (``return_dict=False``: the output as a tuple, its non-None fields in order).

        Args:
            input_ids: ``[B, S]`` with Q placeholder tokens per media item.
            pixel_values: ``[N, C, H, W]``, the frames of all media items of the batch, in order.
            frame_counts: ``[M]`` frames per media item (an image counts 1); defaults to all 1.
            attention_mask: ``[B, S]`` (1 = real token).
            labels: ``[B, S]``; -100 where no loss is taken (the processor sets it on prompt and
                visual tokens).
            cache: the LLM's KV cache (``past_key_values=`` is accepted too, the name before transformers
                5.24); handed to the LLM under the installed transformers' name.
            position_ids: passed to the LLM, except where ``temporal_rope != "none"`` computes them
                (prefill and decode alike; ``generate``'s +1 positions would be wrong for ``"tc"``).
            frame_ids, media_ids: ``[B, S]``, only read with ``inputs_embeds`` at prefill when a TC
                option is on (take them from :meth:`merge_visual`); with ``input_ids`` they come
                from the merge. -1 marks text and padding.
            rope_delta: ``[B, 1]``, the prefill's ``VideoCCAMOutput.rope_delta``; needed on cached
                decode steps when ``temporal_rope != "none"`` (``generate`` passes it).
            visual_embeds: the media already encoded (a :meth:`get_visual_embeds` result, ``embeds
                [M, Q, D]``, ``frame_ids [M, Q]``), in place of ``pixel_values`` / ``frame_counts``.
                Like ``pixel_values``, ``generate`` hands it over at prefill only.
            Other arguments are passed to the LLM unchanged.

        With both TC options off, everything is passed to the LLM unchanged. Otherwise, at prefill
        (``cache`` None or empty; training and full recomputation included) the 4-D
        frame-block mask and/or temporal positions replace ``attention_mask`` / ``position_ids``,
        and ``attention_mask`` is never None; on decode steps only the positions are replaced.

        Raises:
            ConfigError: ``frame_block_mask`` with an attention backend that drops custom masks.
            PromptTooLongError: (a ``ValueError``) at prefill, the prompt is longer than
                ``text_config.max_position_embeddings``; raised before the vision encoder runs.
            ValueError: a TC option is on and ``inputs_embeds`` come without ``frame_ids`` /
                ``media_ids`` at prefill, or without ``rope_delta`` at a decode step.
        """
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids or inputs_embeds")
        return_dict = kwargs.pop("return_dict", None)  # False: a tuple (as transformers' models), never the LLM's
        cache = pick_cache(cache, past_key_values)
        cfg = self.config
        max_positions = getattr(cfg.text_config, "max_position_embeddings", None)
        prompt_len = (input_ids if input_ids is not None else inputs_embeds).shape[1]
        if max_positions and prompt_len > max_positions and (cache is None or cache.get_seq_length() == 0):
            # at prefill, before the vision encoder: the LLM has no position past max_position_embeddings
            raise PromptTooLongError(
                f"the prompt has {prompt_len} tokens but the LLM has {max_positions} positions "
                f"(text_config.max_position_embeddings = {max_positions}); shorten the prompt or use fewer media"
            )
        temporal = cfg.frame_block_mask or cfg.temporal_rope != "none"
        if cfg.frame_block_mask:
            self._check_mask_backend()  # before any work: the backend may have been switched after init
        out_frame_ids = None
        if inputs_embeds is None:
            merged = self.merge_visual(
                input_ids, self.get_input_embeddings()(input_ids), pixel_values, frame_counts, visual_embeds
            )
            inputs_embeds = merged.inputs_embeds
            has_media = pixel_values is not None or visual_embeds is not None
            out_frame_ids = merged.frame_ids if has_media else None
            frame_ids, media_ids = merged.frame_ids, merged.media_ids
        prefill = cache is None or cache.get_seq_length() == 0
        if temporal and prefill:
            if frame_ids is None or media_ids is None:
                raise ValueError(
                    "frame_block_mask / temporal_rope need the per-token frame_ids and media_ids [B, S] when "
                    "forward gets inputs_embeds: pass frame_ids= and media_ids= from merge_visual(...) "
                    "(-1 for text), or pass input_ids and pixel_values instead"
                )
            attention_mask, position_ids, rope_delta = self._temporal_prefill(
                frame_ids, media_ids, attention_mask, position_ids
            )
        elif temporal and cfg.temporal_rope != "none":  # cached decode step
            if rope_delta is None:
                raise ValueError(
                    f"temporal_rope={cfg.temporal_rope!r}: a decode step with a non-empty KV cache needs the "
                    "prefill's rope_delta [B, 1]; pass rope_delta=<prefill output>.rope_delta "
                    "(generate does this)"
                )
            q_len = inputs_embeds.shape[1]
            device = inputs_embeds.device
            cache_position = cache.get_seq_length() + torch.arange(q_len, device=device)  # [q_len]
            position_ids = decode_position_ids(
                cache_position, rope_delta.to(device), mode=cfg.temporal_rope, gamma=cfg.rope_gamma
            )  # [B, q_len] float32
        out = self.language_model(
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            position_ids=position_ids,
            labels=labels,
            use_cache=use_cache,
            logits_to_keep=logits_to_keep,
            **{CACHE_NAME: cache},
            **kwargs,
        )
        result = VideoCCAMOutput(
            loss=out.loss,
            logits=out.logits,
            **{CACHE_NAME: out.get(CACHE_NAME)},
            hidden_states=out.hidden_states,
            attentions=out.attentions,
            frame_ids=out_frame_ids,
            rope_delta=rope_delta if cfg.temporal_rope != "none" else None,
        )
        return result if return_dict is not False else result.to_tuple()
