"""Reduction profiles: load and validate YAML (every error at once, dotted paths), resolve against a
model's dims, and do the exact token arithmetic (keep counts, per-layer ledger, average tokens).
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Protocol, cast

from duet_cli.dims import ModelDims
from duet_cli.errors import ProfileError
from duet_cli.inputs import yamlfile
from duet_cli.inputs.bounded import MAX_ERRORS, clip, error_list
from duet_cli.inputs.userfiles import PROFILE_BYTES
from duet_cli.methods.pyramiddrop.config import Positions, Queries
from duet_cli.methods.registry import parse_stage, show, suggest
from duet_cli.resources import profiles_dir

TOP_LEVEL_FIELDS = ("name", "description", "vision", "llm")


class VisionStage(Protocol):
    """What resolution needs from any stage-1 config (visionzip, random, pool)."""

    @property
    def method(self) -> str: ...
    @property
    def tokens(self) -> int: ...
    def check(self, dims: ModelDims) -> list[str]: ...
    def summary(self) -> str: ...
    def model_dump(self, *, mode: str = ...) -> dict[str, Any]: ...


class LlmStage(Protocol):
    """What resolution needs from any stage-2 config (PyramidDropConfig today)."""

    @property
    def layers(self) -> list[int] | None: ...
    @property
    def at_depth(self) -> list[float] | None: ...
    @property
    def keep_ratios(self) -> list[float]: ...
    @property
    def queries(self) -> Queries: ...
    @property
    def positions(self) -> Positions: ...
    def summary(self) -> str: ...
    def model_dump(self, *, mode: str = ...) -> dict[str, Any]: ...


@dataclass(frozen=True)
class Profile:
    """A validated profile, not yet tied to a model (drop points may still be fractions of depth)."""

    name: str
    description: str
    vision: VisionStage | None
    llm: LlmStage | None
    source: Path | None = None

    def canonical(self) -> dict[str, Any]:
        """What the profile does, defaults filled in (name and description left out)."""
        return {
            "vision": self.vision.model_dump(mode="json") if self.vision is not None else None,
            "llm": self.llm.model_dump(mode="json") if self.llm is not None else None,
        }

    @property
    def hash(self) -> str:
        """First 12 hex digits of the sha256 of the canonical JSON: equal hashes reduce identically."""
        text = json.dumps(self.canonical(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    def to_dict(self) -> dict[str, Any]:
        source = str(self.source) if self.source is not None else None
        head = {"name": self.name, "description": self.description, "hash": self.hash, "source": source}
        return head | self.canonical()


# ---- validation ----


def _error_message(where: str, errors: Sequence[str]) -> str:
    """One line: every error when there are a few, else the first few and how many more."""
    if len(errors) == 1:
        return f"{where}: {errors[0]}"
    return f"{where}: {len(errors):,} errors: {error_list(errors)}"


def parse_profile(data: object, *, where: str, default_name: str, source: Path | None = None) -> Profile:
    """Validate parsed YAML; raise one ProfileError listing every problem, each with its dotted path."""
    if not isinstance(data, dict):
        raise ProfileError(
            f"{where}: expected a mapping at the top level (name, description, vision, llm), "
            f"got {type(data).__name__} {show(data)[:60]}"
        )
    errors: list[str] = []
    for key in data:
        if key not in TOP_LEVEL_FIELDS:
            # a suggestion only where the error line will show it (20,000 of them took seconds)
            hint = suggest(str(key), TOP_LEVEL_FIELDS) if len(errors) < MAX_ERRORS else ""
            errors.append(f"{clip(str(key))}: unknown field{hint}")
    name = data.get("name", default_name)
    if not isinstance(name, str) or not name.strip():
        errors.append(f"name: expected a non-empty string, got {show(name)}")
    description = data.get("description") or ""
    if not isinstance(description, str):
        errors.append(f"description: expected a string, got {show(description)}")
    vision = parse_stage(data.get("vision"), "vision", errors)
    llm = parse_stage(data.get("llm"), "llm", errors)
    if errors:
        raise ProfileError(_error_message(where, errors))
    return Profile(
        name=str(name),
        description=str(description).strip(),
        vision=cast("VisionStage | None", vision),
        llm=cast("LlmStage | None", llm),
        source=source,
    )


# ---- loading ----


def shipped_names() -> list[str]:
    """Names of the profiles shipped in `profiles/`, sorted."""
    return sorted(p.stem for p in profiles_dir().glob("*.yaml"))


def _load_file(path: Path, where: str) -> Profile:
    data = yamlfile.load(path, where, "profile file", PROFILE_BYTES, error=ProfileError)
    if data is None:
        raise ProfileError(f"{where}: the profile file is empty")
    return parse_profile(data, where=where, default_name=path.stem, source=path)


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except (OSError, ValueError):  # a name too long for a path, or one holding a NUL: not a file
        return False


def load_profile(name_or_path: str) -> Profile:
    """A profile from a file path (an existing file, or anything ending .yaml/.yml) or a shipped name."""
    path = Path(name_or_path).expanduser()
    if path.suffix in (".yaml", ".yml") or _is_file(path) or "/" in name_or_path:
        return _load_file(path, where=name_or_path)
    shipped = profiles_dir() / f"{name_or_path}.yaml"
    if _is_file(shipped):
        return _load_file(shipped, where=str(shipped))
    names = shipped_names()
    close = difflib.get_close_matches(name_or_path, names, n=1)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    raise ProfileError(f"unknown profile {show(name_or_path)}.{hint} Available: {', '.join(names)}")


def list_profiles() -> list[Profile]:
    """Every shipped profile, validated, sorted by name."""
    profiles = [_load_file(p, where=str(p)) for p in profiles_dir().glob("*.yaml")]
    return sorted(profiles, key=lambda p: p.name)


# ---- resolution against a model and token arithmetic ----


def _round_half_up(x: Fraction) -> int:
    return math.floor(x + Fraction(1, 2))


def _fmt(x: Fraction) -> str:
    """A decimal with at most 4 places, prefixed by '≈ ' when that is not exact."""
    text = f"{float(x):.4f}".rstrip("0").rstrip(".")
    return text if Fraction(text) == x else f"≈ {text}"


@dataclass(frozen=True)
class ResolvedProfile:
    """A profile tied to one model depth: drop points are 1-based layer counts, all checks passed."""

    name: str
    hash: str
    vision: VisionStage | None
    llm_layers: list[int]
    keep_ratios: list[float]
    queries: Queries
    positions: Positions
    num_layers: int

    def tokens_per_image(self, dims: ModelDims) -> int:
        """Visual tokens one image hands the LLM (N0 for a one-image prompt; on a dynamic-resolution
        model, for its reference image of `dims.unreduced_tokens` tokens)."""
        if self.vision is None:
            return dims.unreduced_tokens
        if dims.dynamic_resolution:
            from duet_cli.engine.stage1_counts import reduced_count

            return reduced_count(self.vision, dims.unreduced_tokens)
        return self.vision.tokens

    def keep_counts(self, n0: int) -> list[int]:
        """floor(n0 * ratio) per drop point, exact (decimal ratios read as written, no float rounding)."""
        return [math.floor(n0 * Fraction(str(r))) for r in self.keep_ratios]

    def segments(self, n0: int) -> list[tuple[int, int, int]]:
        """(first_layer, last_layer, visual tokens) per layer segment, 1-based and inclusive."""
        bounds = [0, *self.llm_layers, self.num_layers]
        counts = [n0, *self.keep_counts(n0)]
        return [(bounds[s] + 1, bounds[s + 1], c) for s, c in enumerate(counts)]

    def ledger(self, n0: int) -> list[int]:
        """Visual tokens seen by each decoder layer, layer 1 first (length `num_layers`)."""
        return [c for first, last, c in self.segments(n0) for _ in range(first, last + 1)]

    def avg_exact(self, n0: int) -> Fraction:
        return Fraction(sum(self.ledger(n0)), self.num_layers)

    def avg_visual_tokens(self, n0: int) -> float:
        """Average visual tokens per decoder layer: the number papers report."""
        return float(self.avg_exact(n0))

    def arithmetic(self, n0: int) -> str:
        """The average written out: '(16*307 + 8*153 + 8*0)/32 = 191.75'."""
        terms = " + ".join(f"{last - first + 1}*{c}" for first, last, c in self.segments(n0))
        return f"({terms})/{self.num_layers} = {_fmt(self.avg_exact(n0))}"


def resolve_profile(profile: Profile, dims: ModelDims) -> ResolvedProfile:
    """Tie `profile` to a model; raise one ProfileError listing everything the model cannot realise."""
    depth = dims.num_layers
    cannot = f"this profile cannot be realised on a model with {depth} decoder layers"
    errors: list[str] = []
    vision = profile.vision
    if vision is not None and not dims.dynamic_resolution:
        # dynamic-resolution families (Qwen2.5-VL) have no fixed token count to check against: stage 1
        # clamps its counts to each image's own tokens (and takes budget-relative counts per image);
        # here every image has the encoder's token count, so relative counts become absolute ones
        absolute = getattr(vision, "absolute", None)
        vision = absolute(dims.vision_tokens) if absolute is not None else vision
        errors.extend(vision.check(dims))
    layers: list[int] = []
    llm = profile.llm
    if llm is not None and llm.at_depth is not None:
        for i, f in enumerate(llm.at_depth):
            layer = _round_half_up(Fraction(str(f)) * depth)
            said = f"llm.at_depth[{i}]: {f} x {depth} layers rounds to layer {layer}"
            if layer < 1:
                errors.append(f"{said}; {cannot}")
            elif layer >= depth:
                errors.append(f"{said} but drops must come before the last layer; {cannot}")
            elif layers and layer <= layers[-1]:
                errors.append(f"{said}, the same as llm.at_depth[{i - 1}]; {cannot}")
            layers.append(layer)
    elif llm is not None:
        layers = list(llm.layers or [])
        for i, layer in enumerate(layers):
            if layer >= depth:
                errors.append(
                    f"llm.layers[{i}]: drop after layer {layer} but the model has {depth} decoder layers"
                    + (" (drops must come before the last layer)" if layer == depth else "")
                )
    if errors:
        user_file = profile.source is not None and profile.source.parent.resolve() != profiles_dir().resolve()
        raise ProfileError(_error_message(str(profile.source) if user_file else profile.name, errors))
    return ResolvedProfile(
        name=profile.name,
        hash=profile.hash,
        vision=vision,
        llm_layers=layers,
        keep_ratios=list(llm.keep_ratios) if llm is not None else [],
        queries=llm.queries if llm is not None else "last",
        positions=llm.positions if llm is not None else "keep",
        num_layers=depth,
    )


def describe(resolved: ResolvedProfile, dims: ModelDims) -> dict[str, Any]:
    """The token arithmetic of a resolved profile for one image (what `duet profiles show` prints)."""
    n0 = resolved.tokens_per_image(dims)
    avg = resolved.avg_exact(n0)
    kept = avg / dims.unreduced_tokens if dims.unreduced_tokens else Fraction(0)
    return {
        "name": resolved.name,
        "hash": resolved.hash,
        "num_layers": resolved.num_layers,
        "vision": resolved.vision.model_dump(mode="json") if resolved.vision is not None else None,
        "tokens_per_image": n0,
        "n0": n0,
        "llm_layers": list(resolved.llm_layers),
        "keep_ratios": list(resolved.keep_ratios),
        "keep_counts": resolved.keep_counts(n0),
        "queries": resolved.queries if resolved.llm_layers else None,
        "positions": resolved.positions if resolved.llm_layers else None,
        "segments": resolved.segments(n0),
        "avg_visual_tokens": float(avg),
        "arithmetic": resolved.arithmetic(n0),
        "unreduced_tokens": dims.unreduced_tokens,
        "kept_fraction": float(kept),
        "reduction": float(1 - kept),
    }
