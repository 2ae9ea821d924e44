"""Q, the visual tokens per media item, is the model's: read from the model folder's ``config.json``.

The number of visual tokens is owned by the projector config (``projector_config.num_query``); the
processor only writes that many placeholder tokens per media item. A processor loaded from a model
folder (or hub repo) that also holds the model's ``config.json`` therefore takes Q from it, and a
``processor_config.json`` that says otherwise is an error, not a silent mismatch that the model
would only report at its first forward pass.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

from transformers.utils import CONFIG_NAME, PROCESSOR_NAME, cached_file

from videoccam.errors import ConfigError

logger = logging.getLogger(__name__)

# from_pretrained's arguments that say where files come from (the rest configure the processor)
HUB_KWARGS = ("cache_dir", "force_download", "proxies", "token", "local_files_only", "revision", "subfolder")


def model_num_query(source: str | os.PathLike, **hub_kwargs: Any) -> int | None:
    """``projector_config.num_query`` of the Video-CCAM ``config.json`` at ``source``; None when there
    is no ``config.json`` there or it is not a Video-CCAM model's. ``ConfigError`` unless it is an
    integer >= 1."""
    if os.path.isfile(source):  # a processor_config.json given as a file: no model beside it
        return None
    resolved = cached_file(source, CONFIG_NAME, _raise_exceptions_for_missing_entries=False,
                           _raise_exceptions_for_connection_errors=False, **hub_kwargs)
    if resolved is None:
        return None
    with open(resolved, encoding="utf-8") as f:
        config = json.load(f)
    if config.get("model_type") != "videoccam":
        return None
    from videoccam.configuration import CCAMProjectorConfig

    projector = config.get("projector_config") or {}
    num_query = projector.get("num_query", CCAMProjectorConfig().num_query)
    if isinstance(num_query, bool) or not isinstance(num_query, int) or num_query < 1:
        raise ConfigError(f"{source}: {CONFIG_NAME}'s projector_config.num_query must be an integer >= 1, "
                          f"got {num_query!r}")
    return num_query


def check_num_visual_tokens(cls: Any, source: str | os.PathLike, processor: Any,
                            kwargs: dict[str, Any]) -> int:
    """The ``num_visual_tokens`` a processor loaded from ``source`` must have.

    Args:
        cls: the processor class (its ``get_processor_dict`` reads ``processor_config.json``).
        source: the folder or hub id given to ``from_pretrained``.
        processor: the processor ``from_pretrained`` built.
        kwargs: the keyword arguments given to ``from_pretrained``.

    Returns:
        ``config.json``'s ``projector_config.num_query`` when there is one, else the processor's own value.

    Raises:
        ConfigError: ``processor_config.json`` and ``config.json`` disagree.
    """
    hub_kwargs = {k: kwargs[k] for k in HUB_KWARGS if k in kwargs}
    num_query = model_num_query(source, **hub_kwargs)
    if num_query is None:
        return processor.num_visual_tokens
    said = cls.get_processor_dict(source, **hub_kwargs)[0].get("num_visual_tokens")
    if said is None:
        logger.debug("%s: num_visual_tokens = %d from %s", source, num_query, CONFIG_NAME)
        return num_query
    if said != num_query:
        raise ConfigError(
            f"{source}: {PROCESSOR_NAME} says num_visual_tokens={said} but {CONFIG_NAME} says "
            f"projector_config.num_query={num_query}; the processor must write exactly num_query tokens per "
            f"media item (fix {PROCESSOR_NAME}, or remove num_visual_tokens from it to take {CONFIG_NAME}'s)"
        )
    return num_query
