"""The wheel carries models/ and profiles/ as package data, and an installed copy finds them."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_ships_models_and_profiles(tmp_path: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            str(ROOT),
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("duet_cli-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped_profiles = {p.name for p in (ROOT / "profiles").glob("*.yaml")}
    assert {f"duet_cli/_data/profiles/{n}" for n in shipped_profiles} <= names
    assert "duet_cli/_data/models/tiny-llava.yaml" in names
    assert "duet_cli/_data/models/tiny-llava/model.safetensors" in names
    assert not any(n.startswith(("models/", "profiles/")) for n in names)  # no top-level `models` package

    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
        check=True,
        capture_output=True,
    )
    probe = (
        "from duet_cli.resources import profiles_dir, models_dir; from duet_cli.profiles import load_profile;"
        "from duet_cli.catalog import get_card;"
        "print(profiles_dir()); print(load_profile('duet-192').name); print(get_card('tiny-llava').path)"
    )
    env = {**os.environ, "PYTHONPATH": str(target)}
    out = subprocess.run(
        [sys.executable, "-c", probe], check=True, capture_output=True, text=True, env=env, cwd=tmp_path
    )
    lines = out.stdout.splitlines()
    assert lines[0].startswith(str(target))
    assert lines[1] == "duet-192"
    assert lines[2].startswith(str(target))
