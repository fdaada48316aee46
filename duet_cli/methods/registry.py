"""The reduction-method registry (peft-style: one config class per method, registered once per stage),
the field validators method configs share, and the validation of one profile section by its method,
so every profile error reads `dotted.path[i]: message`.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ValidationError
from pydantic_core import PydanticCustomError

from duet_cli.errors import ProfileError
from duet_cli.inputs.bounded import MAX_ERRORS, clip, show

Stage = Literal["vision", "llm"]
STAGES: tuple[Stage, ...] = ("vision", "llm")


@dataclass
class MethodSpec:
    """One registered method: its name, the stage it runs in and its pydantic config class.

    `apply` is filled in by the engine that knows how to hook the method into a model.
    """

    name: str
    stage: Stage
    config_cls: type[BaseModel]
    apply: Callable[..., Any] | None = None


_REGISTRY: dict[Stage, dict[str, MethodSpec]] = {stage: {} for stage in STAGES}


def register_method(name: str, stage: Stage, config_cls: type[BaseModel]) -> MethodSpec:
    """Register `config_cls` as method `name` of `stage`; registering a different class twice is a bug."""
    if stage not in _REGISTRY:
        raise ValueError(f"unknown stage {stage!r} (stages: {', '.join(STAGES)})")
    existing = _REGISTRY[stage].get(name)
    if existing is not None and existing.config_cls is not config_cls:
        raise ValueError(f"method {name!r} is already registered for stage {stage!r}")
    if existing is None:
        existing = MethodSpec(name=name, stage=stage, config_cls=config_cls)
        _REGISTRY[stage][name] = existing
    return existing


def available(stage: Stage) -> list[str]:
    """Names of the methods registered for `stage`, sorted."""
    return sorted(_REGISTRY.get(stage, {}))


def get_method(name: str, stage: Stage) -> MethodSpec:
    """The spec registered as `name` for `stage`; ProfileError with a did-you-mean otherwise."""
    spec = _REGISTRY.get(stage, {}).get(name)
    if spec is not None:
        return spec
    names = available(stage)
    msg = f"{stage}.method: unknown method {show(name)}."
    close = difflib.get_close_matches(name, names, n=1)
    if close:
        msg += f" Did you mean: {', '.join(close)}?"
    msg += f" Available: {', '.join(names) or '(none)'}"
    others = [s for s in STAGES if s != stage and name in _REGISTRY[s]]
    if others:
        msg += f" ({show(name)} is a {others[0]}-stage method: put it under '{others[0]}:')"
    raise ProfileError(msg)


# ---- shared field validators: used as `Annotated[int, BeforeValidator(count(1))]` in method configs ----


def suggest(word: str, options: Sequence[str]) -> str:
    """' (did you mean 'x'?)' for the closest option, or the list of allowed options."""
    close = difflib.get_close_matches(word, list(options), n=1)
    if close:
        return f" (did you mean {close[0]!r}?)"
    return f" (allowed: {', '.join(options)})"


def count(minimum: int) -> Callable[[object], int]:
    """Before-validator: an integer (not a bool, not a float) >= `minimum`."""

    def check(value: object) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise PydanticCustomError("duet_type", "expected an integer, got {got}", {"got": show(value)})
        if value < minimum:
            raise PydanticCustomError(
                "duet_range", "must be >= {minimum} (got {got})", {"minimum": minimum, "got": show(value)}
            )
        return value

    return check


def fraction(*, closed: bool) -> Callable[[object], float]:
    """Before-validator: a finite number (not a bool) in [0, 1] (`closed`) or in (0, 1) (open)."""

    def check(value: object) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise PydanticCustomError("duet_type", "expected a number, got {got}", {"got": show(value)})
        try:
            number = float(value)
        except OverflowError:  # an integer too large for a float
            number = math.inf
        if not math.isfinite(number):
            raise PydanticCustomError(
                "duet_type", "expected a finite number, got {got}", {"got": show(value)}
            )
        if closed and not 0.0 <= number <= 1.0:
            raise PydanticCustomError("duet_range", "must be in [0, 1] (got {got})", {"got": show(value)})
        if not closed and not 0.0 < number < 1.0:
            raise PydanticCustomError(
                "duet_range", "must be strictly between 0 and 1 (got {got})", {"got": show(value)}
            )
        return number

    return check


def choice(*options: str) -> Callable[[object], str]:
    """Before-validator: one of `options`, with a did-you-mean for near misses."""

    def check(value: object) -> str:
        if not isinstance(value, str):
            raise PydanticCustomError("duet_type", "expected a string, got {got}", {"got": show(value)})
        if value not in options:
            raise PydanticCustomError(
                "duet_choice",
                "must be one of {options}, got {got}{hint}",
                {"options": ", ".join(options), "got": show(value), "hint": suggest(value, options)},
            )
        return value

    return check


def issues_error(issues: list[tuple[str, str]]) -> PydanticCustomError:
    """One pydantic error carrying several (path suffix, message) issues of a field or a whole config.

    A message may say `{path}` for the dotted path of the field (or section) it was raised on; the
    profile loader expands each issue into its own `path+suffix: message` line.
    """
    text = "; ".join(
        f"{suffix.lstrip('.') or 'config'}: {msg.replace('{path}', 'this field')}" for suffix, msg in issues
    )
    return PydanticCustomError("duet_issues", "{text}", {"text": text, "issues": issues})


def strictly_increasing(values: Sequence[float]) -> list[tuple[str, str]]:
    """Issues for entries that are not greater than the entry before them."""
    return [
        (f"[{i}]", f"must be > {{path}}[{i - 1}] ({values[i]} <= {values[i - 1]})")
        for i in range(1, len(values))
        if values[i] <= values[i - 1]
    ]


def non_increasing(values: Sequence[float]) -> list[tuple[str, str]]:
    """Issues for entries that are greater than the entry before them."""
    return [
        (f"[{i}]", f"must be <= {{path}}[{i - 1}] ({values[i]} > {values[i - 1]})")
        for i in range(1, len(values))
        if values[i] > values[i - 1]
    ]


def dotted(prefix: str, loc: Sequence[int | str]) -> str:
    """`prefix.key[i]...`; a key the user wrote is cut to a few dozen characters."""
    path = prefix
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else f".{clip(str(part))}"
    return path


def error_lines(exc: ValidationError, prefix: str, fields: Sequence[str]) -> list[str]:
    """One `prefix.path[i]: message` line per problem pydantic found in a config (issues expanded)."""
    lines: list[str] = []
    errors = exc.errors(include_url=False)
    # A misspelt key also leaves its field missing: the did-you-mean line says it all. Only the first
    # few unknown keys get a suggestion: an error line shows no more (20,000 of them took seconds).
    extras = [e for e in errors if e["type"] == "extra_forbidden"][:MAX_ERRORS]
    misspelt = {close for e in extras for close in difflib.get_close_matches(str(e["loc"][-1]), fields, n=1)}
    hinted = 0
    for error in errors:
        kind, loc = error["type"], error["loc"]
        path = dotted(prefix, loc)
        if kind == "missing" and len(loc) == 1 and loc[0] in misspelt:
            continue
        if kind == "duet_issues":
            for suffix, msg in error["ctx"]["issues"]:
                lines.append(f"{path}{suffix}: {msg.replace('{path}', path)}")
        elif kind == "extra_forbidden":
            hinted += 1
            lines.append(
                f"{path}: unknown field{suggest(str(loc[-1]), fields) if hinted <= MAX_ERRORS else ''}"
            )
        elif kind == "invalid_key":
            lines.append(f"{prefix}.{clip(str(loc[-1]))}: unknown field (keys must be strings)")
        elif kind == "missing":
            lines.append(f"{path}: required field is missing")
        elif kind == "list_type":
            lines.append(f"{path}: expected a list, got {show(error['input'])}")
        else:
            lines.append(f"{path}: {clip(error['msg'], 200)}")
    return lines


def parse_stage(section: object, stage: Stage, errors: list[str]) -> BaseModel | None:
    """Validate one profile section with the config class its `method` names; problems go to `errors`."""
    if section is None:
        return None
    if not isinstance(section, dict):
        errors.append(f"{stage}: expected a mapping with a 'method' key, got {show(section)}")
        return None
    method = section.get("method")
    if not isinstance(method, str):
        got = "missing" if method is None else f"expected a string, got {show(method)}"
        errors.append(f"{stage}.method: {got} (available: {', '.join(available(stage))})")
        return None
    try:
        spec = get_method(method, stage)
    except ProfileError as exc:
        errors.append(str(exc))
        return None
    try:
        return spec.config_cls.model_validate(section)
    except ValidationError as exc:
        errors.extend(error_lines(exc, stage, list(spec.config_cls.model_fields)))
        return None
