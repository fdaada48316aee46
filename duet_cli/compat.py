"""Every difference between the transformers releases duet supports, in one place.

The engine, stage 1 and the recorder ask this module for the decoder's cache (by whatever name the
installed release passes it), build causal masks through it and read caches off model outputs through
it; nothing else in duet names `past_key_values` or `cache`. The tested range lives here too.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any

# Releases the whole suite has passed on: [first, first untested). Raise the bound only after
# `make check-latest` (and the full suite on the new lock) passed on the newer minor.
TESTED_MIN = (5, 23)
TESTED_BELOW = (5, 26)
TESTED_RANGE = ">=5.23,<5.26"

_OLD_CACHE = "past_key_values"  # transformers <= 5.23
_NEW_CACHE = "cache"  # transformers >= 5.24: past_key_values is a deprecated alias until 5.40


@functools.cache
def cache_kwarg() -> str:
    """The keyword under which the installed transformers hands the KV cache to decoder modules.

    Read off `create_causal_mask`'s own signature (the name the model code itself uses), not guessed
    from a version number; 5.25 also lists the deprecated alias there, so the new name is asked first."""
    from transformers.masking_utils import create_causal_mask

    names = inspect.signature(create_causal_mask).parameters
    if _NEW_CACHE in names:
        return _NEW_CACHE
    if _OLD_CACHE in names:
        return _OLD_CACHE
    raise RuntimeError(  # a release that renamed it again: fail loudly, never run hooks blind
        "transformers.masking_utils.create_causal_mask takes neither 'cache' nor 'past_key_values'; "
        f"this transformers release is outside duet's tested range ({TESTED_RANGE})"
    )


def cache_from(kwargs: dict[str, Any]) -> Any:
    """The KV cache in a forward (pre-)hook's keyword arguments, or None.

    A caller may still pass the deprecated name on a newer release (the model's decorator renames it
    inside `forward`, after the hooks ran), so that one is read too, here and only here."""
    name = cache_kwarg()
    if name in kwargs:
        return kwargs[name]
    return kwargs.get(_OLD_CACHE)


def cache_arg(cache: Any) -> dict[str, Any]:
    """Keyword arguments that hand `cache` to a model's forward under the installed release's name."""
    return {cache_kwarg(): cache}


def output_cache(outputs: Any) -> Any:
    """The KV cache a model forward returned (`.cache` from 5.24 on, `.past_key_values` before)."""
    return getattr(outputs, cache_kwarg(), None)


def causal_mask(
    *,
    config: Any,
    inputs_embeds: Any,
    attention_mask: Any,
    cache: Any,
    position_ids: Any,
    layer_idx: int,
) -> Any:
    """`create_causal_mask` for one decoder layer, sized against that layer's cache."""
    from transformers.masking_utils import create_causal_mask

    return create_causal_mask(
        config=config,
        inputs_embeds=inputs_embeds,
        attention_mask=attention_mask,
        position_ids=position_ids,
        layer_idx=layer_idx,
        **cache_arg(cache),
    )


def decode_mask(
    *,
    config: Any,
    inputs_embeds: Any,
    attention_mask: Any,
    cache: Any,
    position_ids: Any,
    layer_idx: int,
    padded: bool,
    attn_implementation: str,
) -> Any:
    """The mask of a one-token decode step for one layer segment, without `create_causal_mask`'s
    per-call work on SDPA (the attention implementation every shipped profile runs on).

    SDPA reads a one-query step as "attend to every key" when the mask is None, and a boolean
    (B, 1, 1, K) mask (True = attend) otherwise: what `create_causal_mask` builds in that case
    (tests/test_compat.py checks both against it). `padded` says whether the 2-D mask has a zero; it is
    known from the prefill, so no decode step reads tensor values on the host (nor does
    `attn_implementation`, read from the config once per prompt). Other attention implementations go
    through `create_causal_mask`."""
    if attn_implementation == "sdpa":
        return attention_mask.bool()[:, None, None, :] if padded else None
    return causal_mask(
        config=config,
        inputs_embeds=inputs_embeds,
        attention_mask=attention_mask,
        cache=cache,
        position_ids=position_ids,
        layer_idx=layer_idx,
    )


def _release(version: str) -> tuple[int, int]:
    major, minor = version.split(".")[:2]
    return int(major), int("".join(ch for ch in minor if ch.isdigit()) or 0)


def installed_version() -> str:
    """The installed transformers release, from its package metadata (importing nothing)."""
    from importlib import metadata

    return metadata.version("transformers")


def untested_version_message(version: str | None = None) -> str | None:
    """One line when the installed transformers lies outside the tested range, else None."""
    if version is None:
        version = installed_version()
    try:
        release = _release(version)
    except ValueError:
        return f"transformers {version} is not a version duet can read; duet is tested on {TESTED_RANGE}"
    if TESTED_MIN <= release < TESTED_BELOW:
        return None
    return (
        f"transformers {version} is outside duet's tested range ({TESTED_RANGE}); results may be wrong. "
        "Reinstall with the project's constraints.txt to get the tested set"
    )
