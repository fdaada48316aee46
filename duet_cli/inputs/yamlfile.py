"""Reading the YAML files duet takes (profiles, model cards): bounded in size before a byte is parsed,
no anchors or aliases (a 469-byte "billion laughs" file expands to gigabytes), no duplicate keys, bounded
nesting, and every problem one line naming the file and its line.
"""

from __future__ import annotations

import os
from typing import Any, NoReturn

import yaml
from yaml.composer import Composer
from yaml.constructor import SafeConstructor
from yaml.resolver import Resolver

from duet_cli.errors import DuetError
from duet_cli.inputs import userfiles
from duet_cli.inputs.bounded import clip, show

MAX_DEPTH = 64  # nested collections; a profile needs 3
MAX_NUMBER_CHARS = 64  # an integer literal longer than this is no count or layer (and int() refuses 4300+)
_MERGE = "tag:yaml.org,2002:merge"


class _Refused(yaml.MarkedYAMLError):
    """Something the strict loader does not accept, at a known place in the file."""


def _refuse(problem: str, node_or_event: Any) -> NoReturn:
    raise _Refused(problem=problem, problem_mark=node_or_event.start_mark)


class _Strict(Composer, SafeConstructor):
    """Refuses anchors, aliases and duplicate keys, and bounds nesting depth (put before a parser)."""

    _depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()  # type: ignore[attr-defined]  # from the parser mixed in
        if isinstance(event, yaml.AliasEvent):
            _refuse(f"YAML aliases are not allowed (found *{clip(str(event.anchor), 30)})", event)
        anchor = getattr(event, "anchor", None)
        if anchor is not None:
            _refuse(f"YAML anchors are not allowed (found &{clip(str(anchor), 30)})", event)
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                _refuse(f"nested more than {MAX_DEPTH} levels deep", event)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        first: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == _MERGE:
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                seen = key in first
            except TypeError:  # unhashable: the base class refuses it, with its own mark
                continue
            if seen:
                _refuse(f"duplicate key {show(key)} (first on line {first[key] + 1})", key_node)
            first[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)

    def construct_object(self, node: Any, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep=deep)
        except (ValueError, OverflowError) as exc:  # a date like 2020-13-45, and the like
            _refuse(f"bad value ({clip(str(exc))})", node)


def _construct_int(loader: Any, node: Any) -> Any:
    if len(str(node.value)) > MAX_NUMBER_CHARS:
        _refuse(f"number too long ({len(str(node.value)):,} characters)", node)
    return loader.construct_yaml_int(node)


if yaml.__with_libyaml__:
    from yaml._yaml import CParser

    class StrictLoader(_Strict, CParser, Resolver):  # type: ignore[misc]
        """libyaml scans and parses (PyYAML's pure-Python scanner needs seconds for a 200 KB file); the
        Python composer, listed first, builds the tree, so anchors, aliases and depth can be refused."""

        def __init__(self, stream: str) -> None:
            CParser.__init__(self, stream)
            SafeConstructor.__init__(self)
            Resolver.__init__(self)
            Composer.__init__(self)

else:  # pragma: no cover - PyYAML wheels ship libyaml

    class StrictLoader(_Strict, yaml.SafeLoader):  # type: ignore[no-redef]
        """The pure-Python safe loader, made strict."""


StrictLoader.add_constructor("tag:yaml.org,2002:int", _construct_int)


def parse(text: str, where: str, error: type[DuetError]) -> Any:
    """The one document in `text` (None when empty), or `error` naming `where` and the line."""
    loader = StrictLoader(text)
    try:
        return loader.get_single_data()
    except _Refused as exc:
        at = f"line {exc.problem_mark.line + 1}: " if exc.problem_mark is not None else ""
        raise error(f"{where}: {at}{exc.problem}") from None
    except yaml.MarkedYAMLError as exc:
        problem = " ".join(str(exc.problem or exc.context or "invalid YAML").split())
        mark = exc.problem_mark or exc.context_mark
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        if exc.problem and exc.context and exc.context_mark is not None:
            problem += f" ({' '.join(exc.context.split())} started at line {exc.context_mark.line + 1})"
        raise error(f"{where}: YAML syntax error{at}: {clip(problem, 200)}") from None
    except yaml.YAMLError as exc:
        detail = " ".join(str(exc).replace('in "<unicode string>",', "at").split())
        raise error(f"{where}: YAML error: {clip(detail, 200)}") from None
    except RecursionError:  # a backstop: MAX_DEPTH stops nesting long before Python's stack does
        raise error(f"{where}: nested too deeply") from None
    finally:
        loader.dispose()


def load(path: str | os.PathLike[str], where: str, what: str, limit: int, *, error: type[DuetError]) -> Any:
    """Read a regular file of at most `limit` bytes and parse it strictly (None when it is empty)."""
    if "\0" in os.fspath(path):  # os.stat would raise ValueError
        raise error(f"{where}: the path contains a NUL character")
    return parse(userfiles.read_text(path, what, limit, error=error), where, error)
