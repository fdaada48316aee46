"""Family adapters: every path into a transformers model lives here, dispatched on `config.model_type`."""

from __future__ import annotations

from typing import Any

from duet_cli.errors import ModelNotFoundError
from duet_cli.families.base import FamilyAdapter
from duet_cli.families.llava import LlavaAdapter
from duet_cli.families.qwen2_5_vl import Qwen25VLAdapter
from duet_cli.families.video_llava import VideoLlavaAdapter

_ADAPTERS: dict[str, FamilyAdapter] = {
    "llava": LlavaAdapter(),
    "qwen2_5_vl": Qwen25VLAdapter(),
    "video_llava": VideoLlavaAdapter(),
}


def get_adapter(model: Any) -> FamilyAdapter:
    """The adapter for a loaded model (or a config), by its `model_type`."""
    config = getattr(model, "config", model)
    model_type = getattr(config, "model_type", None)
    try:
        return _ADAPTERS[model_type]  # type: ignore[index]
    except KeyError:
        supported = ", ".join(sorted(_ADAPTERS))
        raise ModelNotFoundError(
            f"model type {model_type!r} is not supported by duet (supported: {supported})"
        ) from None


__all__ = ["FamilyAdapter", "get_adapter"]
