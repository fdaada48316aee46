"""Why a model folder failed to load, in one line naming the file: a truncated or corrupt weights file,
or a pickle checkpoint that duet refuses to unpickle (torch.load with weights_only=True)."""

from __future__ import annotations

import pickle
from pathlib import Path

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


def _folder(source: str) -> Path | None:
    """The folder the weights were read from: a local folder, or a hub id's cached snapshot."""
    path = Path(source)
    if path.is_dir():
        return path
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(source, "config.json")
    except Exception:  # a malformed id or cache entry: no folder to look into
        return None
    return Path(cached).parent if isinstance(cached, str) else None


def _broken_safetensors(folder: Path) -> Path | None:
    """The first safetensors file whose header does not describe the file (truncated, empty, garbage)."""
    from safetensors import safe_open

    for file in sorted(folder.glob("*.safetensors")):
        try:
            with safe_open(str(file), "pt"):
                pass
        except Exception:  # SafetensorError, or an OS error reading it
            return file
    return None


def _first(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def describe_load_failure(spec: str, source: str, exc: BaseException) -> str:
    """One line for a model that `from_pretrained` could not load, naming the file where it can."""
    folder = _folder(source)
    files = sorted(p for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES) if folder else []
    if isinstance(exc, pickle.UnpicklingError):
        where = str(files[0]) if files else f"a weights file of {source}"
        return (
            f"model '{spec}': {where} is a pickle checkpoint holding more than tensors, and duet refuses "
            "to unpickle it (that could run code it carries); convert it to safetensors from a trusted copy"
        )
    broken = _broken_safetensors(folder) if folder else None
    if broken is not None:
        return f"model '{spec}': weights file {broken} is truncated or corrupt ({_first(exc)})"
    if type(exc).__name__ == "SafetensorError":
        return (
            f"model '{spec}': a safetensors weights file of {source} is truncated or corrupt ({_first(exc)})"
        )
    if isinstance(exc, RuntimeError | EOFError) and files and "zip" in str(exc).lower() + type(exc).__name__:
        reason = _first(exc).split(". ")[0]  # torch adds several sentences of advice
        return f"model '{spec}': weights file {files[0]} is truncated or corrupt ({reason})"
    return f"could not load model '{spec}' from {source}: {_first(exc)}"
