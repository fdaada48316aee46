"""Training checkpoints, written atomically: a complete `step-NNNNNNNN/` folder or nothing.

    OUT/checkpoints/step-00000040/
        trainable.safetensors   the trainable parameters (frozen ones come from --model on resume)
        optim.pt                optimizer + scheduler state dicts (rank 0; every rank when sharded)
        rng-rank{r}.pt          torch / cuda / python RNG states of rank r
        state.json              step, run settings, loss history, running totals

Every file goes into a hidden temporary folder that is renamed into place with `os.replace` once all
ranks have written and fsynced; a run killed mid-save leaves the previous checkpoint untouched (the
stale temporary folder is removed by the next save). Everything is read back with weights_only=True.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from duet_cli.errors import InputError
from duet_cli.inputs.userfiles import JSON_BYTES, GiB, check_regular, read_text
from duet_cli.reports.jsonio import write_failure

KILL_IN_SAVE_ENV = "DUET_TRAIN_KILL_IN_SAVE"  # test hook: SIGKILL while writing the checkpoint of step N
_STEP = re.compile(r"^step-(\d{8})$")
CHECKPOINT_BYTES = 1024 * GiB  # optimizer state of a large model; a bound, not a real limit


def checkpoint_root(out: Path) -> Path:
    return out / "checkpoints"


def latest(out: Path) -> Path | None:
    """The newest complete checkpoint folder, or None."""
    root = checkpoint_root(out)
    if not root.is_dir():
        return None
    steps = sorted(
        (int(m[1]), p) for p in root.iterdir() if (m := _STEP.match(p.name)) and (p / "state.json").is_file()
    )
    return steps[-1][1] if steps else None


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _write(path: Path, data: bytes) -> None:
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


@contextlib.contextmanager
def _disk_faults(tmp: Path, final: Path) -> Iterator[None]:
    """A write the disk refuses (full, over a quota or size limit) is one line naming the checkpoint;
    the half-written temporary folder goes, and the previous checkpoint stays as it was."""
    try:
        yield
    except Exception as exc:
        failure = write_failure("checkpoint", final, exc)
        if failure is None:
            raise
        shutil.rmtree(tmp, ignore_errors=True)
        raise failure from None


def _torch_bytes(obj: Any) -> bytes:
    import io

    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save(
    out: Path,
    step: int,
    *,
    accelerator: Any,
    weights: dict[str, torch.Tensor] | None,
    optim_state: dict[str, Any] | None,
    state: dict[str, Any],
    sharded_optimizer: bool,
    keep: int,
) -> Path:
    """Write checkpoint `step` on every rank (collective: call it on all ranks), keep the newest `keep`."""
    root = checkpoint_root(out)
    final = root / f"step-{step:08d}"
    tmp = root / f".tmp-step-{step:08d}"
    rank, main = accelerator.process_index, accelerator.is_main_process
    if main:
        try:
            root.mkdir(parents=True, exist_ok=True)
            for stale in root.glob(".tmp-step-*"):
                shutil.rmtree(stale, ignore_errors=True)
            tmp.mkdir()
        except OSError as exc:
            raise InputError(f"cannot write checkpoint {tmp}: {exc.strerror or exc}") from None
    accelerator.wait_for_everyone()
    kill = int(os.environ.get(KILL_IN_SAVE_ENV, "0") or 0) == step
    with _disk_faults(tmp, final):
        if main and weights is not None:
            from safetensors.torch import save_file

            save_file(
                {k: v.detach().contiguous().cpu() for k, v in weights.items()},
                str(tmp / "trainable.safetensors"),
            )
            if kill:
                os.kill(os.getpid(), signal.SIGKILL)
        if optim_state is not None and (main or sharded_optimizer):
            name = f"optim-rank{rank}.pt" if sharded_optimizer else "optim.pt"
            _write(tmp / name, _torch_bytes(optim_state))
        _write(tmp / f"rng-rank{rank}.pt", _torch_bytes(rng_state()))
    accelerator.wait_for_everyone()
    if main:
        with _disk_faults(tmp, final):
            _write(tmp / "state.json", (json.dumps(state, indent=1) + "\n").encode())
        _fsync_dir(tmp)
        if final.exists():  # a rerun past a step that was already saved: replace it
            shutil.rmtree(final)
        os.replace(tmp, final)
        _fsync_dir(root)
        done = sorted(p for p in root.iterdir() if _STEP.match(p.name))
        for old in done[:-keep] if keep > 0 else []:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def _load_torch(path: Path) -> Any:
    import pickle

    check_regular(path, "checkpoint file", CHECKPOINT_BYTES)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:  # torch's own text is several lines advising to turn weights_only off
        raise InputError(
            f"checkpoint file {path} holds more than tensors and plain data, and duet refuses to unpickle "
            "it (that could run code it carries)"
        ) from None
    except (OSError, RuntimeError, EOFError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0].split(". ")[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"cannot read checkpoint file {path}: {first}") from None


def load_state(folder: Path) -> dict[str, Any]:
    path = folder / "state.json"
    try:
        state = json.loads(read_text(path, "checkpoint state", JSON_BYTES))
    except (ValueError, RecursionError) as exc:
        raise InputError(f"cannot read checkpoint {path}: {str(exc).splitlines()[0]}") from None
    if not isinstance(state, dict):
        raise InputError(f"cannot read checkpoint {path}: not a JSON object")
    return state


def load_weights(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    path = folder / "trainable.safetensors"
    try:
        return load_file(str(path))
    except (OSError, Exception) as exc:  # safetensors raises its own error type
        raise InputError(f"cannot read checkpoint weights {path}: {exc}") from None


def load_optim(folder: Path, rank: int) -> dict[str, Any] | None:
    for name in (f"optim-rank{rank}.pt", "optim.pt"):
        if (folder / name).is_file():
            return dict(_load_torch(folder / name))
    return None


def load_rng(folder: Path, rank: int) -> dict[str, Any] | None:
    path = folder / f"rng-rank{rank}.pt"
    return dict(_load_torch(path)) if path.is_file() else None
