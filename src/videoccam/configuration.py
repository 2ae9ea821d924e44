"""Configuration of a Video-CCAM model.

Field names follow the released Video-CCAM v1.2 ``config.json`` (``projector_config`` with
``num_query``, ``hidden_size``, ``cross_hidden_size``, ...), so such a file parses. The number of
visual tokens a media item becomes is owned by :attr:`CCAMProjectorConfig.num_query`.
"""

from __future__ import annotations

import difflib
import functools
from typing import Any, Literal, get_args

from huggingface_hub.dataclasses import strict
from transformers import AutoConfig, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec
from transformers.generation import GenerationConfig

from videoccam.constants import TemporalRope
from videoccam.errors import ConfigError
from videoccam.positions import decode_step

ProjectorMask = Literal["ccam", "none"]  # CCAM's causal cross-attention mask, or plain cross-attention
PROJECTOR_MASKS: tuple[str, ...] = get_args(ProjectorMask)
# the projector's one implementation of the masked cross-attention; the field stays so that config.json files
# written while there were two (``"path": "dense"``) still load
ProjectorPath = Literal["dense"]
PROJECTOR_PATHS: tuple[str, ...] = get_args(ProjectorPath)
PROJECTOR_DECISION = "docs/experiments/2026-12-05-projector-decision.md"


# keys that transformers itself writes into or reads from a config.json beyond the dataclass fields (its
# own and older versions' to_dict, the BC ones __post_init__ pops); every other extra key is a typo
_TRANSFORMERS_KEYS = frozenset({
    "model_type", "transformers_version", "architectures", "auto_map", "dtype", "torch_dtype", "name_or_path",
    "_name_or_path", "_commit_hash", "output_attentions", "output_hidden_states", "return_dict", "use_return_dict",
    "attn_implementation", "_attn_implementation", "_attn_implementation_internal", "_attn_implementation_autoset",
    "experts_implementation", "_experts_implementation", "_experts_implementation_internal", "per_layer_config",
    "num_labels", "id2label", "label2id", "problem_type", "chunk_size_feed_forward", "is_encoder_decoder",
    "is_decoder", "add_cross_attention", "cross_attention_hidden_size", "tie_encoder_decoder", "torchscript",
    "pruned_heads", "finetuning_task", "tokenizer_class", "prefix", "task_specific_params", "tf_legacy_loss",
    "use_bfloat16", "bos_token_id", "pad_token_id", "eos_token_id", "sep_token_id", "decoder_start_token_id",
    "rope_scaling", "rope_theta", "rope_parameters", "layer_types", "use_cache", "tie_word_embeddings",
})


@functools.cache
def _transformers_keys() -> frozenset[str]:
    base = PreTrainedConfig()
    generation = GenerationConfig._get_default_generation_params().keys()
    return _TRANSFORMERS_KEYS | set(base.to_dict()) | set(base.__dataclass_fields__) | set(generation)


def projector_fields() -> tuple[str, ...]:
    """The fields :class:`CCAMProjectorConfig` declares (``num_query``, ``hidden_size``, ..., ``path``)."""
    return tuple(CCAMProjectorConfig.__annotations__)


def check_known_keys(kwargs: dict[str, Any], known: tuple[str, ...], prefix: str) -> None:
    """Raise :class:`ConfigError` naming the first of ``kwargs`` (a config's extra keys) that neither the
    config (``known``) nor transformers knows, with the closest known field as a hint."""
    unknown = sorted(set(kwargs) - _transformers_keys())
    if unknown:
        close = difflib.get_close_matches(unknown[0], known, n=1)
        hint = f" (did you mean {prefix}{close[0]}?)" if close else f"; known fields: {', '.join(known)}"
        raise ConfigError(f"unknown config key {prefix}{unknown[0]!r}{hint}")


def check_projector_path(value: object, name: str = "projector_config.path") -> None:
    """Raise :class:`ConfigError` naming ``name`` unless ``value`` is ``"dense"``; for ``"streaming"`` (a path
    that existed until 2026-12) the message says that it was removed, why, and what to use instead."""
    if value == "streaming":
        raise ConfigError(
            f"{name}: the 'streaming' projector path was removed (7.5-12.6x slower than 'dense' on an H100, see "
            f"{PROJECTOR_DECISION}); use 'dense', which computes the same outputs"
        )
    if value not in PROJECTOR_PATHS:
        raise ConfigError(f"{name} must be 'dense' (the only projector path), got {value!r}")


@strict
class CCAMProjectorConfig(PreTrainedConfig):
    """The CCAM projector: Q learnable queries cross-attending to all frames' visual tokens.

    Args:
        num_query: Q, the number of learnable queries = visual tokens handed to the LLM per media item.
        hidden_size: width of the queries and of attention inside the projector.
        cross_hidden_size: width of the visual tokens (the vision encoder's hidden size).
        num_heads: attention heads (self- and cross-attention).
        num_key_value_heads: key/value heads (grouped-query attention when < ``num_heads``).
        intermediate_size: SwiGLU hidden width.
        hidden_act: only ``"swiglu"`` is supported (as in the released checkpoints).
        attention_bias: bias on the q/k/v/o projections.
        mlp_bias: bias on the MLP projections.
        dropout: residual dropout (training only).
        attention_dropout: attention-probability dropout (training only).
        layer_norm_eps: LayerNorm epsilon.
        output_size: LLM hidden size; the final linear maps ``hidden_size -> output_size``.
        num_layers: number of projector blocks.
        mask: ``"ccam"`` (causal cross-attention mask) or ``"none"`` (plain cross-attention, the
            frame-order-invariant ablation baseline).
        causal_query_self_attention: query i may attend query k only if ``g(k) <= g(i)``.
        initializer_range: std of the normal init of the queries and linear weights.
        path: only ``"dense"`` (kept so that config files naming it load); the removed ``"streaming"`` is a
            :class:`ConfigError` that says so.
    """

    model_type = "ccam_projector"
    base_config_key = "projector_config"

    num_query: int = 1024
    hidden_size: int = 1024
    cross_hidden_size: int = 1152
    num_heads: int = 16
    num_key_value_heads: int = 16
    intermediate_size: int = 4096
    hidden_act: str = "swiglu"
    attention_bias: bool = True
    mlp_bias: bool = True
    dropout: float = 0.1
    attention_dropout: float = 0.1
    layer_norm_eps: float = 1e-5
    output_size: int = 3584
    num_layers: int = 1
    mask: ProjectorMask = "ccam"
    causal_query_self_attention: bool = True
    initializer_range: float = 0.02
    path: ProjectorPath = "dense"

    def __post_init__(self, **kwargs):
        check_known_keys(kwargs, projector_fields(), "projector_config.")
        super().__post_init__(**kwargs)
        _check_positive(self, "num_query", "hidden_size", "cross_hidden_size", "num_heads",
                        "num_key_value_heads", "intermediate_size", "output_size", "num_layers")
        if self.hidden_size % self.num_heads:
            raise ConfigError(
                f"projector_config.hidden_size ({self.hidden_size}) must be divisible by "
                f"projector_config.num_heads ({self.num_heads})"
            )
        if self.num_heads % self.num_key_value_heads:
            raise ConfigError(
                f"projector_config.num_heads ({self.num_heads}) must be divisible by "
                f"projector_config.num_key_value_heads ({self.num_key_value_heads})"
            )
        if self.hidden_act != "swiglu":
            raise ConfigError(f"projector_config.hidden_act must be 'swiglu', got {self.hidden_act!r}")
        if self.mask not in PROJECTOR_MASKS:
            raise ConfigError(f"projector_config.mask must be one of {PROJECTOR_MASKS}, got {self.mask!r}")
        check_projector_path(self.path)

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads


@strict
class VideoCCAMConfig(PreTrainedConfig):
    """A vision encoder (SigLIP), a CCAM projector and a causal LM.

    Args:
        vision_config: a ``SiglipVisionConfig`` (or its dict).
        text_config: any causal-LM config transformers knows (Qwen2, Llama, Phi-3, ...), or its dict.
        projector_config: a :class:`CCAMProjectorConfig` (or its dict).
        vision_select_layer: which hidden state of the vision encoder feeds the projector
            (``-2``: the penultimate layer, no post-layernorm, as Video-CCAM).
        vision_chunk_size: encode at most this many frames per vision forward (saves memory); None = all.
        image_token_id: placeholder token of an image (one frame).
        video_token_id: placeholder token of a video.
        frame_block_mask: TC-LLaVA frame-wise block-causal attention in the LLM at prefill.
        temporal_rope: ``"none"``, ``"tc"`` (TC-LLaVA dual RoPE) or ``"frame"`` (text step 1, gamma
            added at frame-block boundaries).
        rope_gamma: the gamma of the temporal RoPE modes.
    """

    model_type = "videoccam"
    sub_configs_defaults = {
        "vision_config": SubConfigSpec(config_class=AutoConfig, model_type="siglip_vision_model"),
        "text_config": SubConfigSpec(config_class=AutoConfig, model_type="qwen2"),
        "projector_config": SubConfigSpec(config_class=CCAMProjectorConfig),
    }

    vision_config: dict | PreTrainedConfig | None = None
    text_config: dict | PreTrainedConfig | None = None
    projector_config: dict | PreTrainedConfig | None = None
    vision_select_layer: int = -2
    vision_chunk_size: int | None = None
    image_token_id: int = 151665
    video_token_id: int = 151666
    frame_block_mask: bool = False
    temporal_rope: TemporalRope = "none"
    rope_gamma: float = 1.0
    tie_word_embeddings: bool = False

    def __post_init__(self, **kwargs):
        check_known_keys(kwargs, tuple(VideoCCAMConfig.__annotations__), "")
        super().__post_init__(**kwargs)
        proj, vision, text = self.projector_config, self.vision_config, self.text_config
        if proj.cross_hidden_size != vision.hidden_size:
            raise ConfigError(
                f"projector_config.cross_hidden_size ({proj.cross_hidden_size}) must equal "
                f"vision_config.hidden_size ({vision.hidden_size})"
            )
        if proj.output_size != text.hidden_size:
            raise ConfigError(
                f"projector_config.output_size ({proj.output_size}) must equal "
                f"text_config.hidden_size ({text.hidden_size})"
            )
        if self.image_token_id == self.video_token_id:
            raise ConfigError(f"image_token_id and video_token_id must differ, both are {self.image_token_id}")
        decode_step(self.temporal_rope, self.rope_gamma)  # ConfigError naming temporal_rope / rope_gamma
        _check_select_layer(self.vision_select_layer, vision.num_hidden_layers)
        if self.vision_chunk_size is not None and self.vision_chunk_size < 1:
            raise ConfigError(f"vision_chunk_size must be >= 1 or None, got {self.vision_chunk_size}")
        # the LLM decides weight tying; keep the composite flag in sync (as LLaVA does)
        self.tie_word_embeddings = bool(text.tie_word_embeddings)

    @property
    def num_visual_tokens(self) -> int:
        """Visual tokens per image or video in the LLM sequence (owned by the projector config)."""
        return self.projector_config.num_query

    @property
    def projector_path(self) -> ProjectorPath:
        """``projector_config.path``, always ``"dense"``. Kept settable so that an old
        ``from_pretrained(path, projector_path=...)`` call loads (``"dense"``) or fails naming the removal."""
        return self.projector_config.path

    @projector_path.setter
    def projector_path(self, value: ProjectorPath) -> None:
        check_projector_path(value, "projector_path")
        self.projector_config.path = value


TEMPORAL_OPTIONS = ("frame_block_mask", "temporal_rope", "rope_gamma")


def temporal_overrides(source: object) -> dict[str, object]:
    """The TC-LLaVA options that ``source`` (CLI arguments, training settings) sets, i.e. not None,
    as ``from_pretrained`` / :class:`VideoCCAMConfig` keyword arguments; absent ones keep the
    checkpoint's (or the default) value."""
    given = {name: getattr(source, name) for name in TEMPORAL_OPTIONS}
    return {name: value for name, value in given.items() if value is not None}


def _check_positive(config: PreTrainedConfig, *fields: str) -> None:
    for name in fields:
        value = config.__dict__[name]
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{config.base_config_key}.{name} must be an integer >= 1, got {value!r}")
        if value < 1:
            raise ConfigError(f"{config.base_config_key}.{name} must be >= 1, got {value}")


def _check_select_layer(value: object, num_layers: int) -> None:
    """``vision_select_layer`` indexes the encoder's ``num_layers + 1`` hidden states (the embeddings first)."""
    if isinstance(value, bool) or not isinstance(value, int) or not -(num_layers + 1) <= value <= num_layers:
        raise ConfigError(
            f"vision_select_layer={value!r} is out of range: the vision encoder has {num_layers} layers, so it "
            f"must be an integer in [{-(num_layers + 1)}, {num_layers}] (-2: the penultimate layer)"
        )
