"""Helpers of scripts/check_range.sh: does the locked set meet a transformers release's requirements,
and a one-screen summary of an invariants run (versions that differ from the lock, distinct failures).

    python scripts/range_report.py requirements path/to/transformers-X.dist-info/METADATA
    python scripts/range_report.py summary report.xml constraints.txt MODE
"""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ET
from collections import defaultdict
from email.parser import Parser
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement

WATCHED = (
    "transformers",
    "tokenizers",
    "huggingface-hub",
    "accelerate",
    "torch",
    "torchvision",
    "safetensors",
    "pydantic",
    "typer",
    "rich",
    "pillow",
    "av",
    "qwen-vl-utils",
    "numpy",
)


def requirements(meta_path: str) -> int:
    """Exit 1, naming each, when an installed distribution misses a (non-extra) requirement."""
    meta = Parser().parsestr(Path(meta_path).read_text(encoding="utf-8"))
    bad = []
    for line in meta.get_all("Requires-Dist") or []:
        req = Requirement(line)
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        try:
            have = metadata.version(req.name)
        except metadata.PackageNotFoundError:
            bad.append(f"{req} (not installed)")
            continue
        if not req.specifier.contains(have, prereleases=True):
            bad.append(f"{req} (the lock has {have})")
    for line in bad:
        print(f"error: {meta.get('Name')} {meta.get('Version')} needs {line}", file=sys.stderr)
    return 1 if bad else 0


def _locked(lock: str) -> dict[str, str]:
    pins = {}
    for line in Path(lock).read_text(encoding="utf-8").splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.split("==", 1)
            pins[name.strip().lower().replace("_", "-")] = version.strip()
    return pins


def summary(xml_path: str, lock: str, mode: str) -> int:
    pins = _locked(lock)
    print(f"\n== invariants on the {mode} end of the range ==")
    for name in WATCHED:
        try:
            have = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
        locked = pins.get(name, "-")
        mark = "" if have == locked else "   <- differs from the lock"
        print(f"  {name:16} {have:14} lock {locked}{mark}")
    root = ET.parse(xml_path).getroot()
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    assert suite is not None
    counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    passed = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    print(f"  {passed} passed, {counts['failures'] + counts['errors']} failed, {counts['skipped']} skipped")
    broke: dict[str, list[str]] = defaultdict(list)
    for case in suite.iter("testcase"):
        for tag in ("failure", "error"):
            node = case.find(tag)
            if node is not None:
                first = (node.get("message") or "").strip().splitlines()[:1] or ["(no message)"]
                broke[first[0][:150]].append(f"{case.get('classname')}::{case.get('name')}")
    for message, cases in sorted(broke.items(), key=lambda kv: -len(kv[1]))[:12]:
        print(f"  {len(cases):3}x {message}")
        print(f"       e.g. {cases[0]}")
    if len(broke) > 12:
        print(f"  ... and {len(broke) - 12} more distinct failures")
    return 0


if __name__ == "__main__":
    command, *args = sys.argv[1:]
    sys.exit(requirements(*args) if command == "requirements" else summary(*args))
