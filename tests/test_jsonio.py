"""Atomic writes, early writability checks, provenance and JSON encoding of output files."""

from __future__ import annotations

import json
import os
import stat
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

import duet_cli
from duet_cli.errors import InputError
from duet_cli.reports import jsonio
from duet_cli.reports.jsonio import atomic_write_bytes, atomic_write_text, check_writable, provenance, to_json
from duet_cli.trace import ReductionTrace, SampleTrace


def test_atomic_write_creates_parents_and_replaces(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "out.json"
    atomic_write_text(target, "first ✓")
    assert target.read_text(encoding="utf-8") == "first ✓"
    atomic_write_bytes(target, b"second")
    assert target.read_bytes() == b"second"
    assert sorted(p.name for p in target.parent.iterdir()) == ["out.json"]


def test_atomic_write_gives_the_file_a_normal_mode(tmp_path: Path) -> None:
    target = tmp_path / "out.txt"
    atomic_write_text(target, "x")
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask


@pytest.mark.parametrize("error", [OSError(28, "No space left on device"), RuntimeError("boom")])
def test_failed_replace_leaves_target_untouched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error: Exception
) -> None:
    target = tmp_path / "out.json"
    target.write_text("old")

    def broken_replace(src: object, dst: object) -> None:
        raise error

    monkeypatch.setattr(jsonio.os, "replace", broken_replace)
    expected = InputError if isinstance(error, OSError) else RuntimeError
    with pytest.raises(expected) as info:
        atomic_write_text(target, "new")
    if expected is InputError:
        assert "\n" not in str(info.value) and "No space left" in str(info.value)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_failed_write_midway_leaves_target_untouched(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "out.json"
    target.write_text("old")

    def broken_fsync(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(jsonio.os, "fsync", broken_fsync)
    with pytest.raises(InputError, match="Input/output error"):
        atomic_write_text(target, "new")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_write_under_a_regular_file_is_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    with pytest.raises(InputError, match="cannot create folder") as info:
        atomic_write_text(blocker / "sub" / "out.json", "{}")
    assert "\n" not in str(info.value)


def test_write_onto_a_folder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="is a folder"):
        atomic_write_text(tmp_path, "{}")
    with pytest.raises(InputError, match="is a folder"):
        check_writable(tmp_path)


def test_check_writable_accepts_new_nested_paths_and_leaves_nothing(tmp_path: Path) -> None:
    check_writable(tmp_path / "new" / "deeper" / "out.json")
    check_writable(tmp_path / "out.json")
    assert list(tmp_path.iterdir()) == []


def test_check_writable_under_a_regular_file(tmp_path: Path) -> None:
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    with pytest.raises(InputError, match="is a file, not a folder") as info:
        check_writable(blocker / "sub" / "out.json")
    assert "\n" not in str(info.value)


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX permissions")
def test_check_writable_on_a_read_only_folder(tmp_path: Path) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        if os.access(ro, os.W_OK):
            pytest.skip("permissions are not enforced for this user (root)")
        with pytest.raises(InputError, match="not writable"):
            check_writable(ro / "out.json")
        with pytest.raises(InputError):
            check_writable(ro / "sub" / "out.json")
        with pytest.raises(InputError):
            atomic_write_text(ro / "out.json", "{}")
        assert list(ro.iterdir()) == []
    finally:
        ro.chmod(0o700)


def test_provenance_keys() -> None:
    prov = provenance(
        profile_name="duet-192",
        profile_hash="abc123",
        profile={"vision": {"dominant": 300}},
        model="tiny-llava",
        dtype="float32",
        device="cpu",
        seed=0,
    )
    assert set(prov) >= {
        "duet",
        "torch",
        "transformers",
        "python",
        "platform",
        "created_utc",
        "profile_name",
        "profile_hash",
        "profile",
        "model",
        "dtype",
        "device",
        "seed",
    }
    assert prov["duet"] == duet_cli.__version__
    assert prov["profile"] == {"vision": {"dominant": 300}} and prov["seed"] == 0
    assert prov["created_utc"].endswith("+00:00")
    json.loads(to_json(prov))


class FakeScalar:
    """Stands in for a numpy/torch scalar without importing either."""

    def item(self) -> float:
        return 1.5


class FakeTensor:
    def tolist(self) -> list[int]:
        return [1, 2]


@dataclass
class Point:
    x: int
    where: Path


def test_to_json_handles_dataclasses_paths_tuples_and_scalars() -> None:
    obj = {
        "point": Point(1, Path("/tmp/a.png")),
        "pair": (1, 2),
        "scalar": FakeScalar(),
        "tensor": FakeTensor(),
        "path": Path("x/y"),
    }
    text = to_json(obj)
    assert json.loads(text) == {
        "point": {"x": 1, "where": "/tmp/a.png"},
        "pair": [1, 2],
        "scalar": 1.5,
        "tensor": [1, 2],
        "path": "x/y",
    }
    assert text.startswith('{\n  "point"')  # indent 2, insertion order
    with pytest.raises(TypeError):
        to_json({"x": object()})


def test_to_json_uses_the_trace_to_dict() -> None:
    tr = ReductionTrace(
        profile="p",
        num_layers=2,
        samples=[SampleTrace(images=[], unreduced_visual_tokens=4, visual_tokens_in=4, ledger=[4, 2])],
    )
    data = json.loads(to_json(tr))
    assert data["avg_visual_tokens"] == 3.0
    assert data["samples"][0]["segments"] == [[1, 1, 4], [2, 2, 2]]


def test_to_json_real_scalars() -> None:
    np = pytest.importorskip("numpy")
    assert json.loads(to_json({"a": np.float32(0.5), "b": np.arange(3)})) == {"a": 0.5, "b": [0, 1, 2]}


def test_check_writable_probes_with_a_real_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """os.access can say yes on a read-only mount; the probe file catches it."""

    def refuse(*args: object, **kwargs: object) -> int:
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(jsonio.os, "open", refuse)
    with pytest.raises(InputError, match="Read-only file system"):
        check_writable(tmp_path / "out.json")


def test_check_writable_refuses_an_input_and_ignores_names_that_are_not_files(tmp_path: Path) -> None:
    data = tmp_path / "data.json"
    data.write_text("[]")
    alias = tmp_path / "alias.json"
    alias.symlink_to(data.name)
    for out in (data, alias):
        with pytest.raises(InputError) as info:
            check_writable(out, ["duet-192", None, tmp_path / "missing.png", data])
        assert (
            str(info.value) == f"cannot write {out}: it is the input file {data}; choose another output file"
        )
    check_writable(tmp_path / "new.json", ["duet-192", None, data])  # a new file is never an input
    assert data.read_text() == "[]"


def test_check_not_replacing_refuses_inputs_inside_a_replaced_folder(tmp_path: Path) -> None:
    model = tmp_path / "out" / "model"
    (model / "sub").mkdir(parents=True)
    jsonio.check_not_replacing([model], [tmp_path / "out", "tiny-llava", None])  # the parent is fine
    with pytest.raises(
        InputError, match=r"lies inside .*model, which this run replaces: choose another --out"
    ):
        jsonio.check_not_replacing([model], [model / "sub"])
    with pytest.raises(InputError, match=r"model is .*model, which this run replaces"):
        jsonio.check_not_replacing([model], [model])


class SafetensorError(Exception):
    """Named like safetensors' own error type, which carries I/O failures as text."""


def test_write_failure_recognises_disk_faults_only() -> None:
    enospc = OSError(28, "No space left on device")
    assert str(jsonio.write_failure("checkpoint", "/o/step-1", enospc)) == (
        "cannot write checkpoint /o/step-1: No space left on device"
    )
    st = SafetensorError("Error while serializing: I/O error: Disk quota exceeded (os error 122)")
    assert str(jsonio.write_failure("the model", "/o/model", st)) == (
        "cannot write the model /o/model: Disk quota exceeded (os error 122)"
    )
    assert jsonio.write_failure("x", "y", SafetensorError("tensor is not contiguous")) is None  # a bug
    assert jsonio.write_failure("x", "y", ValueError("boom")) is None


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="chown needs root")
def test_atomic_write_as_root_keeps_the_replaced_files_owner(tmp_path: Path) -> None:
    target = tmp_path / "out.json"
    target.write_text("old")
    os.chown(target, 1234, 5678)
    atomic_write_text(target, "new")
    st = target.stat()
    assert (st.st_uid, st.st_gid) == (1234, 5678) and target.read_text() == "new"
