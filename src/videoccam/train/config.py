"""The training configuration: a typed dataclass tree, read from YAML, overridden by ``key=value``.

A run is described by one :class:`TrainConfig` (sections ``model``, ``data``, ``stage``, ``optim``,
``engine``, ``output``, and the list ``callbacks``: hooks into the loop, see
:mod:`videoccam.train.callbacks`). :func:`load_config` reads a YAML file, applies dotted overrides such as
``optim.lr=2e-4`` or ``stage.train_llm=full`` (values parsed as YAML scalars), and checks every key
and type: an unknown key or a wrong type raises :class:`~videoccam.errors.ConfigError` naming the
dotted key. :func:`dump_config` writes the resolved tree back as YAML (saved in every run folder).
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from transformers import SchedulerType

from videoccam.constants import DEFAULT_NUM_FRAMES, TemporalRope
from videoccam.errors import ConfigError
from videoccam.train.callbacks import CallbackSpec, build_callbacks

# learning-rate schedules (transformers.SchedulerType values) that step on a metric, not on optimizer steps
METRIC_SCHEDULES = ("reduce_lr_on_plateau", "greedy")
STEP_SCHEDULES = tuple(s.value for s in SchedulerType if s.value not in METRIC_SCHEDULES)
# projector config fields that a checkpoint's projector can change without touching its weights
# ("path" only accepts "dense" since the streaming path was removed; kept so that older YAML files naming it load)
PROJECTOR_CHECKPOINT_OPTIONS: tuple[str, ...] = ("mask", "causal_query_self_attention", "path")


@dataclass
class ModelSettings:
    """Where the model comes from.

    Exactly one source: ``checkpoint`` (a videoccam folder: a previous stage's output or a released
    checkpoint), or the two base backbones ``vision`` + ``llm`` (names or paths; ``from_scratch``
    builds them from their configs with random weights instead of loading weights).
    """

    checkpoint: str | None = None
    vision: str | None = None  # SigLIP vision model (name/path; with from_scratch: a config source, may be None)
    llm: str | None = None  # causal LM (name/path; with from_scratch: a config source, may be None)
    tokenizer: str | None = None  # name/path, or builtin:tiny (no files); default: the llm (or the checkpoint)
    from_scratch: bool = False
    vision_config: dict[str, Any] = field(default_factory=dict)  # overrides / the whole config when from_scratch
    text_config: dict[str, Any] = field(default_factory=dict)
    # CCAMProjectorConfig fields (with model.checkpoint: PROJECTOR_CHECKPOINT_OPTIONS only)
    projector: dict[str, Any] = field(default_factory=dict)
    vision_select_layer: int = -2
    frame_block_mask: bool | None = None  # TC-LLaVA options (None: keep the checkpoint's / the default)
    temporal_rope: TemporalRope | None = None
    rope_gamma: float | None = None
    image_size: int | None = None  # SigLIP input size when from_scratch (default: vision_config.image_size)
    chat_format: str = "chatml"  # used when the tokenizer has no chat template
    attn_implementation: str = "sdpa"
    dtype: Literal["float32", "bfloat16"] = "float32"  # frozen weights; trainable ones are kept in float32
    seed: int = 0  # projector / from-scratch initialisation


@dataclass
class DataSettings:
    """LLaVA-style JSON/JSONL data (see docs/training-data.md)."""

    train: str = ""
    media_root: str | None = None  # default: the folder of the data file
    num_frames: int = DEFAULT_NUM_FRAMES
    sample: str = "random"  # random-segment sampling (training); "uniform" for deterministic frames
    max_length: int | None = None  # samples with more tokens are skipped (counted)
    group_by_length: bool = True
    num_workers: int = 0
    cache_frames: bool = False  # keep clips' resized uint8 frames in memory (deterministic sampling only)
    seed: int = 0  # order of samples and random frame choice


@dataclass
class LoraSettings:
    r: int = 8
    alpha: int = 16
    dropout: float = 0.05
    target_modules: str | list[str] = "all-linear"


@dataclass
class StageSettings:
    """What is trained. ``align``: the projector only. ``instruct``: the projector, the LLM by LoRA
    (default) or fully, and optionally the vision encoder by LoRA or fully (models trained from
    scratch, like the synthetic benchmark's)."""

    name: Literal["align", "instruct"] = "align"
    train_llm: Literal["frozen", "lora", "full"] | None = None  # default: frozen for align, lora for instruct
    train_vision: Literal["frozen", "lora", "full"] = "frozen"
    llm_lora: LoraSettings = field(default_factory=lambda: LoraSettings(r=512, alpha=256, dropout=0.05))
    vision_lora: LoraSettings = field(default_factory=lambda: LoraSettings(r=64, alpha=16, dropout=0.05))
    save_adapter: bool = False  # final output: LoRA merged (default) or kept as adapters

    @property
    def llm_mode(self) -> str:
        if self.train_llm is not None:
            return self.train_llm
        return "frozen" if self.name == "align" else "lora"


@dataclass
class OptimSettings:
    lr: float = 1e-3
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    # a transformers.get_scheduler name, stepped per step: cosine, linear, constant_with_warmup, ...
    schedule: str = "cosine"
    # the schedule's own arguments (get_scheduler's scheduler_specific_kwargs), e.g.
    # {num_decay_steps: 1000} for warmup_stable_decay
    schedule_kwargs: dict[str, Any] = field(default_factory=dict)
    warmup_ratio: float = 0.03
    epochs: int = 1
    max_steps: int | None = None  # optimizer steps; overrides epochs
    micro_batch_size: int = 1  # per process
    grad_accum: int = 1
    max_grad_norm: float | None = 1.0
    seed: int = 0  # dropout and other torch randomness


@dataclass
class EngineSettings:
    strategy: Literal["ddp", "fsdp"] = "ddp"
    precision: Literal["bf16", "fp32"] = "bf16"  # bf16 = autocast (weights and optimizer states stay fp32)
    gradient_checkpointing: bool = False
    backend: str | None = None  # torch.distributed backend; default nccl on CUDA, gloo on CPU
    device: str | None = None  # default: cuda:<local rank> when CUDA is available, else cpu
    find_unused_parameters: bool = False  # DDP: set when some batches skip a trainable module (text-only data)
    compile: bool = False  # torch.compile each block (the FSDP2 units: layers, projector) in place


@dataclass
class OutputSettings:
    dir: str = "runs/videoccam"
    save_every: int = 500  # optimizer steps between checkpoints (0: only the final output)
    keep_last: int = 2
    log_every: int = 1
    tensorboard: bool = False
    progress: bool = True


@dataclass
class TrainConfig:
    model: ModelSettings = field(default_factory=ModelSettings)
    data: DataSettings = field(default_factory=DataSettings)
    stage: StageSettings = field(default_factory=StageSettings)
    optim: OptimSettings = field(default_factory=OptimSettings)
    engine: EngineSettings = field(default_factory=EngineSettings)
    output: OutputSettings = field(default_factory=OutputSettings)
    # hooks into the training loop, each built from its import path (videoccam.train.callbacks)
    callbacks: list[CallbackSpec] = field(default_factory=list)

    def validate(self) -> None:
        """Cross-field checks (types were checked on load); raises ConfigError naming the key."""
        m = self.model
        from videoccam.configuration import projector_fields

        unknown = sorted(set(m.projector) - set(projector_fields()))
        if unknown:
            close = difflib.get_close_matches(unknown[0], projector_fields(), n=1)
            hint = f"did you mean model.projector.{close[0]}?" if close else f"known: {', '.join(projector_fields())}"
            raise ConfigError(f"model.projector.{unknown[0]}: not a projector config field ({hint})")
        if m.checkpoint is not None and (m.vision is not None or m.llm is not None or m.from_scratch):
            raise ConfigError("model.checkpoint excludes model.vision / model.llm / model.from_scratch: "
                              "pick one source")
        if m.checkpoint is None and not m.from_scratch and (m.vision is None or m.llm is None):
            raise ConfigError("model: give model.checkpoint, or both model.vision and model.llm "
                              "(or model.from_scratch)")
        if m.checkpoint is not None:
            for key, backbone in (("vision_config", m.vision_config), ("text_config", m.text_config)):
                if backbone:
                    raise ConfigError(f"model.{key}.{min(backbone)}: a checkpoint keeps its backbones' "
                                      f"configs; model.{key} only applies when building from model.vision / "
                                      "model.llm or from_scratch")
            fixed = sorted(set(m.projector) - set(PROJECTOR_CHECKPOINT_OPTIONS))
            if fixed:
                raise ConfigError(f"model.projector.{fixed[0]}: a checkpoint's projector keeps its architecture; "
                                  f"with model.checkpoint only {', '.join(PROJECTOR_CHECKPOINT_OPTIONS)} can change")
        if m.from_scratch and m.tokenizer is None and m.llm is None:
            raise ConfigError("model.tokenizer is required with model.from_scratch and no model.llm")
        if not self.data.train:
            raise ConfigError("data.train: the training data file is required")
        if self.stage.name == "align" and (self.stage.llm_mode != "frozen" or self.stage.train_vision != "frozen"):
            raise ConfigError("stage.name=align trains the projector only: stage.train_llm / stage.train_vision "
                              "must be frozen (use stage.name=instruct)")
        if self.stage.save_adapter and self.stage.llm_mode == "full":
            raise ConfigError("stage.save_adapter needs stage.train_llm=lora (a fully trained LLM is no adapter)")
        for key in ("micro_batch_size", "grad_accum", "epochs"):
            if getattr(self.optim, key) < 1:
                raise ConfigError(f"optim.{key} must be >= 1, got {getattr(self.optim, key)}")
        if self.optim.max_steps is not None and self.optim.max_steps < 1:
            raise ConfigError(f"optim.max_steps must be >= 1, got {self.optim.max_steps}")
        if self.optim.schedule in METRIC_SCHEDULES:
            raise ConfigError(f"optim.schedule={self.optim.schedule}: the trainer steps its schedule every optimizer "
                              "step, without a metric; pick a step schedule (cosine, linear, warmup_stable_decay, ...)")
        if self.optim.schedule not in STEP_SCHEDULES:
            raise ConfigError(f"optim.schedule={self.optim.schedule!r}: unknown; known: {', '.join(STEP_SCHEDULES)}")
        if not 0.0 <= self.optim.warmup_ratio < 1.0:
            raise ConfigError(f"optim.warmup_ratio must be in [0, 1), got {self.optim.warmup_ratio}")
        if self.output.keep_last < 1:
            raise ConfigError(f"output.keep_last must be >= 1, got {self.output.keep_last}")
        if self.data.num_frames < 1:
            raise ConfigError(f"data.num_frames must be >= 1, got {self.data.num_frames}")
        build_callbacks(self.callbacks)  # fail now on a callback that cannot be built


# ---------------------------------------------------------------- typed (de)serialisation
def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp`` (with the small conversions YAML needs)."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return build_settings(tp, value, key)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError as err:
                errors.append(str(err))
        if len(errors) == 1:  # one type besides None (e.g. a Literal | None): its own, more precise, message
            raise ConfigError(errors[0])
        raise ConfigError(f"{key}: {value!r} matches none of {_type_name(tp)}")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{key}: must be one of {list(args)}, got {value!r}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ConfigError(f"{key}: expected {len(args)} values, got {value!r}")
            return tuple(_coerce(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args, strict=True)))
        return [_coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(value)] if args else list(value)
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is Any:
        return value
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str):  # YAML 1.1 reads "1e-3" as a string
        try:
            return float(value)
        except ValueError:
            pass
    if tp in (int, float, str, bool) and (not isinstance(value, tp) or (tp is int and isinstance(value, bool))):
        raise ConfigError(f"{key}: expected {tp.__name__}, got {value!r}")
    return value


def build_settings(cls: type, data: dict[str, Any], prefix: str) -> Any:
    """One settings dataclass from a mapping, type-checked; errors name ``prefix.key``."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for key in data:
        if key not in names:
            where = f"{prefix}.{key}" if prefix else key
            raise ConfigError(f"unknown config key {where!r} (known: {', '.join(sorted(names))})")
    kwargs = {k: _coerce(v, hints[k], f"{prefix}.{k}" if prefix else k) for k, v in data.items()}
    return cls(**kwargs)


def config_from_dict(data: dict[str, Any]) -> TrainConfig:
    """Build and validate a :class:`TrainConfig` from a nested mapping."""
    config = build_settings(TrainConfig, data or {}, "")
    config.validate()
    return config


def config_to_dict(config: TrainConfig) -> dict[str, Any]:
    def plain(value: Any) -> Any:
        if isinstance(value, tuple):
            return [plain(v) for v in value]
        if isinstance(value, list):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value

    return plain(dataclasses.asdict(config))


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``section.key=value`` strings to a nested mapping (values parsed as YAML)."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form section.key=value")
        dotted, raw = item.split("=", 1)
        keys = dotted.strip().split(".")
        node = data
        for k in keys[:-1]:
            child = node.setdefault(k, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override {dotted!r}: {k!r} is not a section")
            node = child
        node[keys[-1]] = yaml.safe_load(raw) if raw.strip() else None
    return data


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> TrainConfig:
    """Read a YAML config (or start from defaults when ``path`` is None) and apply overrides.

    Relative paths inside the config are relative to the working directory, as on the command line.
    """
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"{path}: invalid YAML: {err}") from err
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of sections")
    data = apply_overrides(data, list(overrides or []))
    return config_from_dict(data)


def dump_config(config: TrainConfig, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(config_to_dict(config), sort_keys=False))
