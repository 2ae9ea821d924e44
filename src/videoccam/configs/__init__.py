"""Shipped training configs (YAML), usable by name: ``videoccam train qwen2.5-7b-stage1``."""

from __future__ import annotations

from pathlib import Path

CONFIG_DIR = Path(__file__).parent


def shipped_configs() -> dict[str, Path]:
    """Name (file stem) -> path of every shipped training config."""
    return {p.stem: p for p in sorted(CONFIG_DIR.glob("*.yaml"))}


def resolve_config(name_or_path: str) -> Path:
    """A config path as given, else the shipped config of that name."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    shipped = shipped_configs()
    if name_or_path in shipped:
        return shipped[name_or_path]
    from videoccam.errors import ConfigError

    raise ConfigError(f"config {name_or_path!r}: no such file and no shipped config of that name "
                      f"(shipped: {', '.join(shipped)})")
