"""The public inference object: load once, encode media once, answer many questions.

:class:`Pipeline` is what ``videoccam chat``, ``videoccam eval``, the server and the demo use (and
what ``model.chat`` shares its path with, :mod:`videoccam.engine`)::

    from videoccam import Pipeline

    pipe = Pipeline.from_pretrained()                      # the bundled model; or a folder / hub id
    clip = pipe.encode(["examples/first.mp4"])             # decoded and encoded once
    print(pipe.ask(clip, "which colour flashed first ?"))  # "green"
    answers = pipe.chat([[{"role": "user", "content": "which colour flashed first ?"}]] * 2,
                        [clip, clip], max_new_tokens=8)   # one batched generate, left padding
    session = pipe.session(encoded=clip)                   # multi-turn, KV cache kept between turns
    session.ask("which colour flashed first ?"); session.ask("and last ?")

Every :class:`~videoccam.engine.Answer` carries its token counts and per-stage
:class:`~videoccam.timings.Timings`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import torch

from videoccam.devices import resolve_device
from videoccam.engine import Answer, Encoded, answer_batch, encode_media
from videoccam.session import ChatSession

if TYPE_CHECKING:
    from transformers.generation.streamers import BaseStreamer

    from videoccam.modeling import VideoCCAMForConditionalGeneration
    from videoccam.processing.processor import VideoCCAMProcessor

logger = logging.getLogger(__name__)

DTYPES = ("float32", "bfloat16", "float16")


class Pipeline:
    """A model and its processor, with the one inference path.

    Args:
        model: a :class:`~videoccam.modeling.VideoCCAMForConditionalGeneration` (put in eval mode).
        processor: its :class:`~videoccam.processing.processor.VideoCCAMProcessor`.
        model_path: where the model came from (recorded by evaluation manifests and the server).
    """

    def __init__(self, model: VideoCCAMForConditionalGeneration, processor: VideoCCAMProcessor,
                 model_path: str | None = None) -> None:
        self.model = model.eval()
        self.processor = processor
        self.model_path = model_path

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_pretrained(cls, path: str | os.PathLike | None = None, *, device: str | torch.device = "auto",
                        dtype: str | torch.dtype = "float32", attn_implementation: str | None = None,
                        device_map: str | None = None, frame_block_mask: bool | None = None,
                        temporal_rope: str | None = None, rope_gamma: float | None = None) -> Pipeline:
        """Load a model folder or hub id (default: the bundled model) with its processor.

        Args:
            path: a checkpoint folder or hub id; None = the bundled default model.
            device: ``auto`` (CUDA, then MPS, then CPU) or a device name; ignored with ``device_map``.
            dtype: ``float32``, ``bfloat16`` or ``float16`` (or a ``torch.dtype``).
            attn_implementation: the LLM's attention backend (``sdpa``, ``eager``, ...).
            device_map: spread the model with accelerate (``auto``, ...) instead of ``device``.
            frame_block_mask, temporal_rope, rope_gamma: TC-LLaVA options over the checkpoint's.

        Raises:
            ModelFileError: a local folder lacks its config, tokenizer or weights (each named).
            ValueError: an unknown device or dtype, or ``device_map`` without accelerate.
        """
        from transformers import AutoProcessor

        from videoccam.assets import default_model_path
        from videoccam.loading import check_tokenizer, check_weights, local_model_folder
        from videoccam.modeling import VideoCCAMForConditionalGeneration

        resolved = None if device_map is not None else resolve_device(device)  # fail before loading
        torch_dtype = _torch_dtype(dtype)
        model_path = str(path) if path is not None else str(default_model_path())
        folder = local_model_folder(model_path)
        if folder is not None:  # each fault named before transformers reads the folder
            check_tokenizer(folder)
            check_weights(folder)
        processor = AutoProcessor.from_pretrained(model_path)
        overrides = {"frame_block_mask": frame_block_mask, "temporal_rope": temporal_rope, "rope_gamma": rope_gamma,
                     "attn_implementation": attn_implementation}
        kwargs: dict[str, Any] = {"dtype": torch_dtype, **{k: v for k, v in overrides.items() if v is not None}}
        if device_map is None:
            model = VideoCCAMForConditionalGeneration.from_pretrained(model_path, **kwargs).to(resolved)
        else:
            require_accelerate(device_map)
            model = VideoCCAMForConditionalGeneration.from_pretrained(model_path, device_map=device_map, **kwargs)
        logger.info("model %s on %s (%s)", model_path, model.device, torch_dtype)
        return cls(model, processor, model_path)

    @property
    def device(self) -> torch.device:
        return self.model.device

    # ------------------------------------------------------------------ media
    def encode(self, media: Sequence[Any], *, kinds: Sequence[str] | None = None,
               video_kwargs: dict[str, Any] | None = None) -> Encoded:
        """Decode and encode media items once (:func:`videoccam.engine.encode_media`): the result can
        be asked about any number of times, in :meth:`ask`, :meth:`chat` and :meth:`session`.

        Args:
            media: paths (video files, frame folders, images), PIL images, arrays, frame lists or
                decoded :class:`~videoccam.processing.video.Video` s, in placeholder order.
            kinds: ``"image"`` / ``"video"`` per item (default: one frame or a still image is an image).
            video_kwargs: sampling for video paths (``num_frames``, ``sample``, ``fps``, ``start``, ...;
                ``num_frames`` defaults to the processor's).
        """
        return encode_media(self.model, self.processor, media, kinds=kinds, video_kwargs=video_kwargs)

    # ------------------------------------------------------------------ answers
    def chat(self, conversations: Sequence[list[dict]], encoded: Sequence[Encoded | None] | None = None, *,
             on_text: Callable[[int, str], None] | None = None, streamer: BaseStreamer | None = None,
             **generate_kwargs: Any) -> list[Answer]:
        """Answer a batch of conversations in one ``generate`` (:func:`videoccam.engine.answer_batch`).

        Args:
            conversations: each a list of ``{"role", "content"}`` messages ending with a user turn.
            encoded: per conversation its encoded media (or None); one placeholder per item opens the
                first user message when none is written.
            on_text: called with ``(conversation index, text delta)`` while the answers are produced.
            streamer: a ``generate`` streamer besides.
            generate_kwargs: ``max_new_tokens`` (default 512), ``do_sample``, ``temperature``, ...
        """
        return answer_batch(self.model, self.processor, conversations, encoded, on_text=on_text, streamer=streamer,
                            **generate_kwargs)

    def ask(self, encoded: Encoded | None, question: str, **generate_kwargs: Any) -> str:
        """One question about encoded media (or none): the answer's text."""
        return self.chat([[{"role": "user", "content": question}]], [encoded], **generate_kwargs)[0].text

    def session(self, media: Sequence[Any] = (), *, encoded: Encoded | None = None,
                kinds: Sequence[str] | None = None, video_kwargs: dict[str, Any] | None = None,
                reuse_cache: bool = True) -> ChatSession:
        """A multi-turn :class:`~videoccam.session.ChatSession` (media encoded once, KV cache kept)."""
        return ChatSession(self.model, self.processor, media, kinds=kinds, video_kwargs=video_kwargs,
                           encoded=encoded, reuse_cache=reuse_cache)


def _torch_dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise ValueError(f"dtype {dtype!r}: expected one of {', '.join(DTYPES)}")
    return getattr(torch, dtype)


def require_accelerate(device_map: str, flag: str = "device_map", alternative: str = "a device") -> None:
    """``ValueError`` unless accelerate, which ``device_map`` needs, is installed (naming ``flag``)."""
    import importlib.util

    try:
        found = importlib.util.find_spec("accelerate") is not None
    except (ImportError, ValueError):  # ValueError: None in sys.modules
        found = False
    if not found:
        raise ValueError(f"{flag} {device_map} needs the accelerate package: pip install accelerate "
                         f"(or use {alternative})")
