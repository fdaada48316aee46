"""Where predictions live and what of them a rerun may keep: each profile once, its file named by the
profile (plus its hash when it is not a shipped one), and rows kept only when made from today's data.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from duet_cli.evaluate.distributed import Ranks
from duet_cli.evaluate.store import FRESH, numbered_rows
from duet_cli.profiles import Profile, load_profile
from duet_cli.resources import profiles_dir

DIGEST = "input_digest"  # the row field holding manifest.record_digest of the record it answers
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class Chosen:
    """A profile of the run: as the user named it (shown in tables), loaded once, and its file stem."""

    label: str
    profile: Profile
    stem: str


def file_stem(profile: Profile) -> str:
    """A shipped profile's file is its name (unique among shipped ones; the manifest catches an upgrade
    that changed it); any other profile's is its name made file-safe plus its hash, so a path never
    becomes a file name and two different profiles of one name never share a file."""
    source = profile.source
    if source is not None and source.stem == profile.name:
        try:
            if source.resolve().parent == profiles_dir().resolve():
                return profile.name
        except OSError:
            pass
    safe = _UNSAFE.sub("_", profile.name).strip("._")[:64] or "profile"
    return f"{safe}.{profile.hash}"


def choose_profiles(labels: list[str]) -> list[Chosen]:
    """`baseline` first (relative numbers need it), then the rest in the given order, each profile once:
    two names for one file (a shipped name and its path) are one profile. A typo fails here."""
    chosen: dict[str, Chosen] = {}
    for label in dict.fromkeys(["baseline", *labels]):
        profile = load_profile(label)
        stem = file_stem(profile)
        chosen.setdefault(stem, Chosen(label, profile, stem))
    return list(chosen.values())


def final_path(out: Path, benchmark: str, stem: str) -> Path:
    return out / benchmark / f"{stem}.jsonl"


def prediction_path(out: Path, benchmark: str, stem: str, ranks: Ranks) -> Path:
    """The file this process appends to: the final one, or its own rank file under a launcher."""
    return final_path(out, benchmark, stem if ranks.world == 1 else f"{stem}.rank{ranks.rank}")


def rank_parts(final: Path) -> list[Path]:
    """Rank files of `final` left by any launcher run (whatever its world size)."""
    stem = final.name.removesuffix(".jsonl")
    return sorted(final.parent.glob(f"{stem}.rank*.jsonl")) if final.parent.is_dir() else []


def changed(path: Path | str, line: int | None, record_id: str) -> str:
    where = f"{path}:{line}" if line is not None else str(path)
    return (
        f"{where}: record {record_id!r} has changed since it was answered (its prompt, images or videos "
        f"are not the ones in the data now); {FRESH}"
    )


def done_ids(path: Path, digests: dict[str, str]) -> set[str]:
    """Ids answered in `path` from the data as it is now. A failed row (an unreadable image) is not done:
    a rerun tries it again. A row answered from other data is refused, naming file and line."""
    from duet_cli.errors import InputError

    done = set()
    for line, row in numbered_rows(path):
        want = digests.get(row["id"])
        if want is None:  # outside this run's records (another --limit): kept, not scored
            continue
        if row.get(DIGEST) != want:
            raise InputError(changed(path, line, row["id"]))
        if row.get("error") is None:
            done.add(row["id"])
    return done


def check_merged(final: Path, rows: list[dict[str, Any]], digests: dict[str, str]) -> None:
    """The rows about to be scored were made from today's data (each rank checked its own; this is the
    last look before numbers are reported)."""
    from duet_cli.errors import InputError

    for row in rows:
        want = digests.get(row["id"])
        if want is not None and row.get(DIGEST) != want:
            raise InputError(changed(final, None, row["id"]))
