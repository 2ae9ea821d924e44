"""Build the model and processor a run starts from, and make the stage's parameters trainable.

Three sources (``ModelSettings``): a videoccam checkpoint folder (a previous stage's output or a
released checkpoint); two pretrained base backbones, a SigLIP vision model and a causal LM, joined
by a freshly initialised projector; or the same backbones built from configs with random weights
(``from_scratch``, used by the synthetic benchmark and the tests).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModelForCausalLM,
    AutoProcessor,
    AutoTokenizer,
    PreTrainedTokenizerBase,
    SiglipImageProcessorPil,
    SiglipVisionModel,
)

from videoccam.configuration import CCAMProjectorConfig, VideoCCAMConfig, temporal_overrides
from videoccam.constants import DEFAULT_NUM_FRAMES, IMAGE_TOKEN, PLACEHOLDER_TOKENS, VIDEO_TOKEN
from videoccam.errors import ConfigError
from videoccam.modeling import VideoCCAMForConditionalGeneration
from videoccam.processing.processor import VideoCCAMProcessor
from videoccam.projector import CCAMProjector
from videoccam.train.adapter_folder import attach_adapters, is_adapter_folder, read_base_settings
from videoccam.train.config import LoraSettings, ModelSettings, StageSettings

logger = logging.getLogger(__name__)

# model.tokenizer names that need no files: the tiny byte-level BPE of videoccam.testing (any text
# encodes; chat specials and placeholders included), which the shipped tiny configs build on
BUILTIN_TOKENIZERS = ("builtin:tiny",)
COMPONENTS = ("vision_model", "projector", "language_model")


def _prepare_tokenizer(tokenizer: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    """Add the ``<image>``/``<video>`` placeholders (as special tokens) and a pad token if missing."""
    missing = [t for t in PLACEHOLDER_TOKENS if t not in tokenizer.get_vocab()]
    if missing:
        tokenizer.add_special_tokens({"additional_special_tokens": missing}, replace_extra_special_tokens=False)
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ConfigError("model.tokenizer: the tokenizer has neither a pad nor an eos token")
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_tokenizer(source: str) -> PreTrainedTokenizerBase:
    """``model.tokenizer`` (or ``model.llm``): a builtin name (:data:`BUILTIN_TOKENIZERS`), a folder or a
    hub id."""
    if source == "builtin:tiny":
        from videoccam.testing import make_tiny_tokenizer

        return make_tiny_tokenizer()
    if source.startswith("builtin:"):
        raise ConfigError(f"model.tokenizer={source}: unknown builtin tokenizer "
                          f"(known: {', '.join(BUILTIN_TOKENIZERS)})")
    return AutoTokenizer.from_pretrained(source)


def _load_checkpoint(settings: ModelSettings, dtype: torch.dtype) -> VideoCCAMForConditionalGeneration:
    """``from_pretrained(model.checkpoint)``; a source that is neither a folder here nor a loadable hub
    id is a ConfigError naming it (not transformers' repo-id complaint about a mistyped path)."""
    kwargs: dict[str, Any] = {"dtype": dtype, "attn_implementation": settings.attn_implementation,
                              **temporal_overrides(settings)}
    try:
        return VideoCCAMForConditionalGeneration.from_pretrained(settings.checkpoint, **kwargs)
    except (OSError, ValueError) as err:
        if Path(settings.checkpoint).is_dir():  # a real folder that failed to load: its own error says why
            raise
        raise ConfigError(f"model.checkpoint={settings.checkpoint}: no such folder (from {Path.cwd()}), and "
                          f"it did not load as a hub id ({err}); give a previous stage's final/ folder, e.g. "
                          "the output.dir/final of its run") from err


def _projector_config(settings: ModelSettings, vision_hidden: int, text_hidden: int) -> dict[str, Any]:
    return {"cross_hidden_size": vision_hidden, "output_size": text_hidden, **settings.projector}


def _make_processor(tokenizer: PreTrainedTokenizerBase, image_processor: Any, config: VideoCCAMConfig,
                    settings: ModelSettings, num_frames: int) -> VideoCCAMProcessor:
    return VideoCCAMProcessor(
        image_processor=image_processor, tokenizer=tokenizer, num_visual_tokens=config.num_visual_tokens,
        chat_format=settings.chat_format, num_frames=num_frames,
    )


def _sub_config(source: str | None, overrides: dict[str, Any], key: str) -> dict[str, Any]:
    """A backbone config as a dict: the source's config (if any) updated with the overrides."""
    base: dict[str, Any] = {}
    if source is not None:
        loaded = AutoConfig.from_pretrained(source)
        if key == "vision_config" and loaded.model_type == "siglip":  # a full SigLIP: take its vision tower
            loaded = loaded.vision_config
        base = loaded.to_dict()
    merged = {**base, **overrides}
    if "model_type" not in merged:
        raise ConfigError(f"model.{key}: needs a model_type (or a model.{'vision' if key == 'vision_config' else 'llm'}"
                          " source to read the config from)")
    return merged


def build_model(settings: ModelSettings, num_frames: int = DEFAULT_NUM_FRAMES,
                ) -> tuple[VideoCCAMForConditionalGeneration, VideoCCAMProcessor]:
    """The model (weights in ``settings.dtype``, projector float32) and processor described by ``settings``."""
    dtype = getattr(torch, settings.dtype)
    if settings.checkpoint is not None:
        if is_adapter_folder(settings.checkpoint):  # a previous stage saved as adapters
            model, processor = load_trained(settings.checkpoint)
            model.to(dtype)
        else:
            model = _load_checkpoint(settings, dtype)
            processor = AutoProcessor.from_pretrained(settings.checkpoint)
        _set_projector_options(model, settings.projector)
        processor.num_frames = num_frames
        return model, processor

    tokenizer = _prepare_tokenizer(load_tokenizer(settings.tokenizer or settings.llm))
    if settings.from_scratch:
        return _build_from_scratch(settings, tokenizer, num_frames)

    vision = SiglipVisionModel.from_pretrained(settings.vision, dtype=dtype, **settings.vision_config)
    llm = AutoModelForCausalLM.from_pretrained(
        settings.llm, dtype=dtype, attn_implementation=settings.attn_implementation, **settings.text_config
    )
    if len(tokenizer) > llm.get_input_embeddings().num_embeddings:
        llm.resize_token_embeddings(len(tokenizer))
    config = _joint_config(settings, tokenizer, vision.config.to_dict(), llm.config.to_dict())
    with torch.device("meta"):  # the backbones are swapped in below; don't allocate them twice
        model = VideoCCAMForConditionalGeneration(config)
    model.vision_model = vision
    model.language_model = llm
    torch.manual_seed(settings.seed)
    model.projector = CCAMProjector(config.projector_config)
    model.projector.apply(model._init_weights)
    model.config.text_config = llm.config
    model.generation_config.suppress_tokens = [config.image_token_id, config.video_token_id]
    image_processor = AutoImageProcessor.from_pretrained(settings.vision)
    return model, _make_processor(tokenizer, image_processor, config, settings, num_frames)


def load_trained(path: str | Path, **kwargs: Any) -> tuple[VideoCCAMForConditionalGeneration, VideoCCAMProcessor]:
    """Load a run's final folder: a full checkpoint, or adapters on top of their rebuilt base.

    ``kwargs`` go to ``from_pretrained`` for full checkpoints (dtype, device_map, TC options, ...).
    """
    path = Path(path)
    if not is_adapter_folder(path):
        return (VideoCCAMForConditionalGeneration.from_pretrained(path, **kwargs),
                AutoProcessor.from_pretrained(path))
    model, _ = build_model(read_base_settings(path))
    return attach_adapters(model, path).eval(), AutoProcessor.from_pretrained(path)


def _set_projector_options(model: VideoCCAMForConditionalGeneration, options: dict[str, Any]) -> None:
    """Apply ``model.projector`` options to a loaded checkpoint, e.g. ``mask=none`` to continue a stage
    with plain cross-attention (the ablation). Only the weight-free ``PROJECTOR_CHECKPOINT_OPTIONS``
    can reach here: :meth:`TrainConfig.validate` refuses the others, naming the key."""
    if not options:
        return
    config = model.config.projector_config
    CCAMProjectorConfig(**{**config.to_dict(), **options})  # validates the values (ConfigError)
    for key, value in options.items():
        setattr(config, key, value)  # the projector reads its config at every forward
    logger.info("projector options on top of the checkpoint: %s", options)


def _joint_config(settings: ModelSettings, tokenizer: PreTrainedTokenizerBase, vision: dict[str, Any],
                  text: dict[str, Any]) -> VideoCCAMConfig:
    return VideoCCAMConfig(
        vision_config=vision, text_config=text,
        projector_config=_projector_config(settings, vision["hidden_size"], text["hidden_size"]),
        image_token_id=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        video_token_id=tokenizer.convert_tokens_to_ids(VIDEO_TOKEN),
        vision_select_layer=settings.vision_select_layer,
        **temporal_overrides(settings),
    )


def _build_from_scratch(settings: ModelSettings, tokenizer: PreTrainedTokenizerBase, num_frames: int,
                        ) -> tuple[VideoCCAMForConditionalGeneration, VideoCCAMProcessor]:
    vision = _sub_config(settings.vision, settings.vision_config, "vision_config")
    text = _sub_config(settings.llm, settings.text_config, "text_config")
    text.update(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    if settings.image_size is not None:
        vision["image_size"] = settings.image_size
    config = _joint_config(settings, tokenizer, vision, text)
    config.text_config._attn_implementation = settings.attn_implementation
    torch.manual_seed(settings.seed)
    model = VideoCCAMForConditionalGeneration(config).to(getattr(torch, settings.dtype))
    size = config.vision_config.image_size
    image_processor = SiglipImageProcessorPil(size={"height": size, "width": size})
    return model, _make_processor(tokenizer, image_processor, config, settings, num_frames)


# ---------------------------------------------------------------- stage: what trains
def _lora_config(settings: LoraSettings, exclude: str | None = None) -> Any:
    from peft import LoraConfig

    return LoraConfig(r=settings.r, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
                      target_modules=settings.target_modules, exclude_modules=exclude, bias="none")


def unused_vision_modules(model: VideoCCAMForConditionalGeneration) -> str | None:
    """A regex of the vision modules whose output never reaches the projector: the encoder layers at
    and after ``vision_select_layer``'s hidden state (hidden state 0 is the patch embedding, k the
    output of layer k-1), the post-layernorm and the pooling head. They never get a gradient, so they
    are neither trained nor given LoRA (DDP would also fail on their unused parameters)."""
    num_layers = model.config.vision_config.num_hidden_layers
    select = model.config.vision_select_layer
    index = select if select >= 0 else num_layers + 1 + select  # into hidden_states (num_layers + 1 entries)
    unused = "|".join(str(i) for i in range(index, num_layers))
    return r"(.*\.)?(head|post_layernorm)(\..*)?" + (rf"|(.*\.)?layers\.({unused})\..*" if unused else "")


def apply_stage(model: VideoCCAMForConditionalGeneration, stage: StageSettings) -> None:
    """Freeze / unfreeze / wrap with LoRA as the stage says (in place).

    The projector always trains. With LoRA, ``model.language_model`` (and ``model.vision_model``)
    become PEFT models wrapping the original modules; :func:`unwrap_lora` merges them back.
    """
    model.requires_grad_(False)
    model.projector.requires_grad_(True)
    if stage.llm_mode == "full":
        model.language_model.requires_grad_(True)
    elif stage.llm_mode == "lora":
        from peft import get_peft_model

        model.language_model = get_peft_model(model.language_model, _lora_config(stage.llm_lora))
    unused = unused_vision_modules(model)
    if stage.train_vision == "lora":
        from peft import get_peft_model

        model.vision_model = get_peft_model(model.vision_model, _lora_config(stage.vision_lora, exclude=unused))
    elif stage.train_vision == "full":
        model.vision_model.requires_grad_(True)
        for name, module in model.vision_model.named_modules():
            if name and re.fullmatch(unused, name):
                module.requires_grad_(False)
    for param in model.parameters():  # trainable weights are float32 masters whatever the base dtype
        if param.requires_grad and param.dtype != torch.float32:
            param.data = param.data.float()


def has_lora(module: nn.Module) -> bool:
    from peft import PeftModel

    return isinstance(module, PeftModel)


def unwrap_lora(model: VideoCCAMForConditionalGeneration, merge: bool = True) -> dict[str, nn.Module]:
    """Replace PEFT-wrapped components by plain ones (LoRA merged when ``merge``) and return the
    PEFT wrappers by component name (for saving adapters)."""
    wrappers = {}
    for name in ("vision_model", "language_model"):
        module = getattr(model, name)
        if has_lora(module):
            wrappers[name] = module
            setattr(model, name, module.merge_and_unload() if merge else module.get_base_model())
    return wrappers


def trainable_summary(model: nn.Module) -> list[tuple[str, int, int]]:
    """``(component, trainable, total)`` parameter counts per top-level component."""
    rows = []
    for name, child in model.named_children():
        total = sum(p.numel() for p in child.parameters())
        trainable = sum(p.numel() for p in child.parameters() if p.requires_grad)
        rows.append((name, trainable, total))
    return rows


def format_summary(rows: list[tuple[str, int, int]]) -> str:
    lines = [f"{'component':<16}{'trainable':>16}{'total':>16}{'%':>8}"]
    for name, trainable, total in [*rows, ("all", sum(r[1] for r in rows), sum(r[2] for r in rows))]:
        share = 100.0 * trainable / total if total else 0.0
        lines.append(f"{name:<16}{trainable:>16,}{total:>16,}{share:>8.2f}")
    return "\n".join(lines)
