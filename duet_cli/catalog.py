"""The model catalog (`models/*.yaml`) and model resolution: catalog name, local folder or hub id.

Resolution never waits on the network for more than a couple of seconds: offline, an uncached hub id
fails at once with one line that says what to do.
"""

from __future__ import annotations

import difflib
import functools
import os
import re
import socket
import threading
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlparse

from duet_cli.dims import ModelDims, dims_from_config
from duet_cli.errors import ModelNotFoundError
from duet_cli.inputs import yamlfile
from duet_cli.inputs.userfiles import PROFILE_BYTES
from duet_cli.resources import models_dir

DEFAULT_MODEL = "synth-llava"  # the bundled trained model every command uses when no -m is given
MODEL_ENV = "DUET_MODEL"  # overrides the default model (a catalog name, a folder or a hub id)


def default_model() -> str:
    """The model a command uses without -m: $DUET_MODEL when set, else the bundled DEFAULT_MODEL."""
    return os.environ.get(MODEL_ENV, "").strip() or DEFAULT_MODEL


_CARD_KEYS = (
    "name",
    "family",
    "description",
    "chat_template",
    "default_profile",
    "untrained",
    "architecture",
)
ARCHITECTURE_KEYS: dict[str, tuple[str, ...]] = {
    "vision": (
        "image_size",
        "patch_size",
        "hidden_size",
        "intermediate_size",
        "num_layers",
        "num_heads",
        "feature_layer",
        "select_strategy",
    ),
    "text": (
        "hidden_size",
        "intermediate_size",
        "num_layers",
        "num_heads",
        "num_kv_heads",
        "vocab_size",
        "head_dim",
    ),
}
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
_PROBE_TIMEOUT_S = 2.0


@dataclass(frozen=True)
class ModelCard:
    name: str
    family: str
    hub_id: str | None
    path: Path | None  # absolute folder of a bundled model
    description: str
    chat_template: str  # "USER: <image>\n{question} ASSISTANT:"
    default_profile: str
    untrained: bool
    architecture: dict[str, Any]  # {"vision": {...}, "text": {...}}: see ARCHITECTURE_KEYS
    image_aspect: str | None = None  # LLaVA families: "pad" or "crop" (absent: the processor's crop)


@dataclass(frozen=True)
class ResolvedModel:
    spec: str  # what the user typed
    source: str  # local folder path or hub id, to pass to from_pretrained
    card: ModelCard | None
    local_files_only: bool


# ---------------------------------------------------------------------------------------------------------
# Cards


def _parse_card(file: Path, root: Path) -> ModelCard:
    data = yamlfile.load(file, f"model card {file}", "model card", PROFILE_BYTES, error=ModelNotFoundError)
    if not isinstance(data, dict):
        raise ModelNotFoundError(f"model card {file} is not a mapping")
    missing = [k for k in _CARD_KEYS if k not in data]
    if "hub_id" not in data and "path" not in data:
        missing.append("hub_id or path")
    arch = data.get("architecture")
    if not isinstance(arch, dict):
        arch = {}
        if "architecture" in data:
            missing.append("architecture (as a mapping)")
    else:
        for part, keys in ARCHITECTURE_KEYS.items():
            section = arch.get(part)
            if not isinstance(section, dict):
                missing.append(f"architecture.{part}")
                continue
            missing.extend(f"architecture.{part}.{k}" for k in keys if k not in section)
    if missing:
        raise ModelNotFoundError(f"model card {file} is missing: {', '.join(missing)}")
    aspect = data.get("image_aspect")
    if aspect is not None and aspect not in ("pad", "crop"):
        raise ModelNotFoundError(f"model card {file}: image_aspect must be pad or crop, not {aspect!r}")
    return ModelCard(
        name=str(data["name"]),
        family=str(data["family"]),
        hub_id=str(data["hub_id"]) if data.get("hub_id") else None,
        path=(root / str(data["path"])).resolve() if data.get("path") else None,
        description=str(data["description"]),
        chat_template=str(data["chat_template"]),
        default_profile=str(data["default_profile"]),
        untrained=bool(data["untrained"]),
        architecture=arch,
        image_aspect=str(aspect) if aspect is not None else None,
    )


@functools.lru_cache(maxsize=4)
def _load_cards(root: Path) -> tuple[ModelCard, ...]:
    return tuple(_parse_card(f, root) for f in sorted(root.glob("*.yaml")))


def list_cards() -> list[ModelCard]:
    """Every catalog card, sorted by name."""
    return sorted(_load_cards(models_dir()), key=lambda c: c.name)


def _names() -> list[str]:
    return [c.name for c in list_cards()]


def _unknown(spec: str, what: str = "unknown model") -> ModelNotFoundError:
    names = _names()
    close = difflib.get_close_matches(spec, names, n=3, cutoff=0.6)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    return ModelNotFoundError(f"{what} {spec!r}.{hint} Available: {', '.join(names)}")


def get_card(name: str) -> ModelCard:
    for card in list_cards():
        if card.name == name:
            return card
    raise _unknown(name)


def _card_for_hub_id(repo_id: str) -> ModelCard | None:
    return next((c for c in list_cards() if c.hub_id == repo_id), None)


# ---------------------------------------------------------------------------------------------------------
# Resolution


def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def _hub_reachable(timeout: float = _PROBE_TIMEOUT_S) -> bool:
    """TCP connect to the hub endpoint, bounded in time (DNS included: it runs in a daemon thread)."""
    endpoint = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    host = endpoint.hostname or "huggingface.co"
    port = endpoint.port or (80 if endpoint.scheme == "http" else 443)
    result: list[bool] = []

    def probe() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=probe, name="duet-hub-probe", daemon=True)
    thread.start()
    thread.join(timeout + 0.5)
    return bool(result and result[0])


def _in_hf_cache(repo_id: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - transformers depends on huggingface_hub
        return False
    try:
        return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)
    except Exception:  # a malformed id or cache entry means: not usable from the cache
        return False


def _resolve_hub(spec: str, repo_id: str, card: ModelCard | None) -> ResolvedModel:
    if _in_hf_cache(repo_id):
        return ResolvedModel(spec=spec, source=repo_id, card=card, local_files_only=True)
    offline = _env_true("HF_HUB_OFFLINE") or _env_true("TRANSFORMERS_OFFLINE")
    if offline or not _hub_reachable():
        why = "offline mode is set" if offline else "the Hugging Face hub cannot be reached"
        raise ModelNotFoundError(
            f"model {repo_id!r} is not available offline: not a local folder and not in the Hugging Face "
            f"cache, and {why} (download it once with network access, or pass a local folder)"
        )
    return ResolvedModel(spec=spec, source=repo_id, card=card, local_files_only=False)


def _local_folder(spec: str, folder: Path, card: ModelCard | None) -> ResolvedModel:
    if not folder.is_dir():
        raise ModelNotFoundError(f"model path {str(folder)!r} is a file, not a model folder")
    if not (folder / "config.json").is_file():
        raise ModelNotFoundError(f"model folder {str(folder)!r} has no config.json")
    return ResolvedModel(spec=spec, source=str(folder.resolve()), card=card, local_files_only=True)


def resolve_model(spec: str) -> ResolvedModel:
    """Catalog name, local folder or hub id (`owner/name`) -> what to pass to `from_pretrained`."""
    spec = spec.strip()
    if not spec:
        raise ModelNotFoundError(f"model name is empty. Available: {', '.join(_names())}")
    for card in list_cards():
        if card.name == spec:
            if card.path is not None:
                return _local_folder(spec, card.path, card)
            assert card.hub_id is not None  # _parse_card requires one of the two
            return _resolve_hub(spec, card.hub_id, card)
    folder = Path(spec).expanduser()
    try:
        exists = folder.exists()
    except OSError as exc:
        raise ModelNotFoundError(f"model path {spec!r} cannot be read: {exc.strerror or exc}") from exc
    if exists:
        return _local_folder(spec, folder, None)
    if _HUB_ID.match(spec):
        return _resolve_hub(spec, spec, _card_for_hub_id(spec))
    if spec.startswith((".", "/", "~")) or os.sep in spec or "/" in spec:
        raise ModelNotFoundError(f"model folder {spec!r} does not exist")
    raise _unknown(spec)


# ---------------------------------------------------------------------------------------------------------
# Dims


def _config_view(card: ModelCard) -> Any:
    """The few config attributes `dims_from_config` reads, from a card's architecture numbers."""
    vision, text = card.architecture["vision"], card.architecture["text"]
    return SimpleNamespace(
        model_type=card.family,
        vision_config=SimpleNamespace(
            image_size=int(vision["image_size"]), patch_size=int(vision["patch_size"])
        ),
        vision_feature_select_strategy=str(vision["select_strategy"]),
        text_config=SimpleNamespace(num_hidden_layers=int(text["num_layers"])),
    )


def dims_for(spec: str) -> ModelDims:
    """ModelDims from a catalog card (no I/O) or from a resolved model's config.json (offline-safe)."""
    if spec in _names():
        return dims_from_config(_config_view(get_card(spec)))
    resolved = resolve_model(spec)
    if resolved.card is not None:
        return dims_from_config(_config_view(resolved.card))
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(resolved.source, local_files_only=resolved.local_files_only)
    except Exception as exc:  # one line, whatever transformers raised
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelNotFoundError(f"cannot read the config of model {spec!r}: {first}") from exc
    return dims_from_config(config)
