"""The one place that knows which transformers release is installed and what it renamed.

transformers 5.24 renamed the KV cache from ``past_key_values`` to ``cache`` everywhere: the
forward keyword of every model, the field of every model output, and the key that ``generate``
carries between steps (the old names still work through deprecation shims that warn). The
project supports both sides of the rename with one code base: model code talks to the LLM and to
``generate`` with :data:`CACHE_NAME`, and its own API accepts both names.
"""

from __future__ import annotations

from typing import Any

from transformers.modeling_outputs import CausalLMOutputWithPast

#: The installed transformers' name for the KV cache: ``"cache"`` (5.24 and newer) or ``"past_key_values"``.
CACHE_NAME: str = "cache" if "cache" in CausalLMOutputWithPast.__dataclass_fields__ else "past_key_values"
#: The other name, which this project's own API still accepts.
OTHER_CACHE_NAME: str = "past_key_values" if CACHE_NAME == "cache" else "cache"


def pick_cache(cache: Any, past_key_values: Any) -> Any:
    """The KV cache given under either name (``cache=`` or ``past_key_values=``); both at once is an error."""
    if cache is not None and past_key_values is not None:
        raise ValueError("pass the KV cache as cache= or as past_key_values=, not both")
    return cache if cache is not None else past_key_values


def enable_activation_checkpointing(model: Any) -> None:
    """Turn on non-reentrant activation checkpointing of a ``PreTrainedModel``.

    transformers 5.23 renamed ``gradient_checkpointing_enable`` to ``activation_checkpointing_enable``
    (the old name warns); releases before it have only the old name.
    """
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def crop_cache(cache: Any, length: int) -> None:
    """Keep the first ``length`` tokens of a ``DynamicCache``.

    ``crop`` takes the length to keep before transformers 5.2x and refuses a positive value after
    (it then takes minus the number of tokens to remove); a negative count means the same on both.
    """
    remove = cache.get_seq_length() - length
    if remove > 0:
        cache.crop(-remove)
