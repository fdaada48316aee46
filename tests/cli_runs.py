"""Running `duet` in-process through its console-script entry point, as a user's shell would."""

from __future__ import annotations

import re
import sys

import pytest

from duet_cli import cli

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def plain(text: str) -> str:
    return ANSI.sub("", text)


def run_main(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> tuple[int, str, str]:
    """`duet ARGV` through `duet_cli.cli.main`: (exit code, stdout, stderr), colours stripped."""
    monkeypatch.setattr(sys, "argv", ["duet", *argv])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    stdout, stderr = capsys.readouterr()
    code = exit_info.value.code
    code = 0 if code is None else code
    assert isinstance(code, int)
    return code, plain(stdout), plain(stderr)
