"""Model set-ups that a profile cannot run on are refused here, up front, with one clear sentence.

What works: a single device (CPU, CUDA, MPS), any dtype, bitsandbytes 8/4-bit linear layers (the
ranking calls the layers' own modules), `device_map` that keeps the decoder on one device, beam search
and sampling. What is refused with an llm stage: static/offloaded caches, decoders spread over several
devices or offloaded to disk, `torch.compile`d models, and assisted decoding (refused at decode time).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from duet_cli.errors import UnsupportedSetupError


def _is_compiled(model: nn.Module) -> bool:
    return isinstance(model, torch._dynamo.eval_frame.OptimizedModule) or hasattr(model, "_orig_mod")


def check_model_setup(model: nn.Module, resolved: Any) -> None:
    if _is_compiled(model):
        raise UnsupportedSetupError(
            "torch.compile'd models cannot take a duet profile (hooks change shapes per prompt); "
            "apply the profile to the uncompiled model"
        )
    if not resolved.llm_layers:
        return
    cache_impl = getattr(getattr(model, "generation_config", None), "cache_implementation", None)
    if cache_impl not in (None, "dynamic"):
        raise UnsupportedSetupError(
            f"generation_config.cache_implementation={cache_impl!r}: an llm stage needs the dynamic cache "
            "(each layer keeps its own length); set it to None or use a vision-only profile"
        )
    device_map = getattr(model, "hf_device_map", None) or {}
    places = {str(v) for k, v in device_map.items() if "language_model" in k or k in ("", "model")}
    if any(p in ("disk", "meta") for p in places):
        raise UnsupportedSetupError("an llm stage cannot run on a decoder offloaded to disk")
    if len(places) > 1:
        raise UnsupportedSetupError(
            f"an llm stage needs the decoder on one device, but device_map spreads it over {sorted(places)}; "
            "use a vision-only profile or a device_map that keeps the language model on one device"
        )
