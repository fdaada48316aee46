"""`duet eval` never scores predictions made under other settings: a rerun with another setting is refused
in one line before the model loads, a path profile names its file by name and hash inside --out, a second
process on one --out is refused, corrupt resume state names file and line, and nothing scored is an error."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from duet_cli import cli
from duet_cli.evaluate.store import read_rows

ROOT = Path(__file__).resolve().parents[1]
ARGS = ["-B", "synth", "-p", "baseline", "--limit", "2", "--max-new-tokens", "3", "--device", "cpu"]


def duet_eval(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str
) -> tuple[int, list[str]]:
    """`duet eval ARGS` in-process through the real entry point: exit code and the stderr lines."""
    capsys.readouterr()
    monkeypatch.setattr(sys, "argv", ["duet", "eval", *args])
    with pytest.raises(SystemExit) as info:
        cli.main()
    code = info.value.code if isinstance(info.value.code, int) else 1
    return code, [line for line in capsys.readouterr().err.splitlines() if line.strip()]


def no_model(monkeypatch: pytest.MonkeyPatch) -> None:
    from duet_cli import runtime

    monkeypatch.setattr(runtime, "load_model", lambda *a, **k: pytest.fail("model loaded"))


@pytest.fixture(scope="module")
def first_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One finished run: 2 synth records, baseline only."""
    out = tmp_path_factory.mktemp("first")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sys, "argv", ["duet", "eval", *ARGS, "--out", str(out)])
        with pytest.raises(SystemExit) as info:
            cli.main()
    assert info.value.code == 0
    return out


def copy_of(first_run: Path, tmp_path: Path) -> Path:
    out = tmp_path / "out"
    shutil.copytree(first_run, out)
    return out


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        (["--max-new-tokens", "4"], "max_new_tokens 3 (now 4)"),
        (["--seed", "1"], "seed 0 (now 1)"),
        (["--dtype", "bfloat16"], 'dtype "float32" (now "bfloat16")'),
        (["--max-pixels", "200000"], "pixels [null, null] (now [null, 200000])"),
        (["-m", "OTHER"], 'model "tiny-llava" (now "'),
    ],
)
def test_a_rerun_with_other_settings_is_refused(
    change: list[str],
    fragment: str,
    first_run: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = copy_of(first_run, tmp_path)
    if change[0] == "-m":  # another model folder (refused before anything would load it)
        (tmp_path / "other").mkdir()
        change = ["-m", str(tmp_path / "other")]
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file() and p.name != ".duet-eval.lock"}
    no_model(monkeypatch)
    code, lines = duet_eval(monkeypatch, capsys, *ARGS, *change, "--out", str(out))
    assert code == 1 and len(lines) == 1, lines
    preds = out / "synth" / "baseline.jsonl"
    assert f"{preds} was made with other settings: " in lines[0] and fragment in lines[0]
    assert "use another --out or delete" in lines[0] and "internal error" not in lines[0]
    after = {p: p.read_bytes() for p in out.rglob("*") if p.is_file() and p.name != ".duet-eval.lock"}
    assert after == before  # old predictions and results.json untouched, nothing scored


def test_starting_fresh_answers_everything_under_the_new_settings(
    first_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from duet_cli import runtime

    out = copy_of(first_run, tmp_path)
    (out / "synth" / "baseline.jsonl").unlink()  # what the refusal says to do
    real, calls = runtime.run, {"prompts": 0}

    def counting(loaded: object, session: object, prompts: list[object], **kw: object) -> object:
        calls["prompts"] += len(prompts)
        return real(loaded, session, prompts, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(runtime, "run", counting)
    code, lines = duet_eval(monkeypatch, capsys, *ARGS, "--max-new-tokens", "4", "--out", str(out))
    assert code == 0, lines
    assert calls["prompts"] == 2  # every record answered again, none taken from the old run
    made = json.loads((out / "synth" / "baseline.manifest.json").read_text())
    assert made["max_new_tokens"] == 4 and made["profile_hash"]
    doc = json.loads((out / "results.json").read_text())
    assert doc["provenance"]["generation"]["max_new_tokens"] == 4
    assert doc["provenance"]["profile_hash"] == made["profile_hash"]


def test_a_path_profile_writes_inside_out_named_by_name_and_hash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from duet_cli.profiles import load_profile

    folder = tmp_path / "profiles"
    folder.mkdir()
    mine = folder / "mine.yaml"
    shipped = (ROOT / "profiles" / "visionzip-64.yaml").read_text()
    mine.write_text(shipped.replace("name: visionzip-64", "name: mine"))
    out = tmp_path / "out"
    args = [*ARGS[:-4], "-p", str(mine), "--max-new-tokens", "3", "--device", "cpu", "--out", str(out)]
    code, lines = duet_eval(monkeypatch, capsys, *args)
    assert code == 0, lines
    assert sorted(p.name for p in folder.iterdir()) == ["mine.yaml"]  # nothing beside the profile
    first = out / "synth" / f"mine.{load_profile(str(mine)).hash}.jsonl"
    assert len(read_rows(first)) == 2
    # the same file name with other contents is another profile: its own file, the old one not scored
    mine.write_text(mine.read_text().replace("dominant: 54", "dominant: 50"))
    second = out / "synth" / f"mine.{load_profile(str(mine)).hash}.jsonl"
    assert second != first
    code, lines = duet_eval(monkeypatch, capsys, *args)
    assert code == 0, lines
    cells = json.loads((out / "results.json").read_text())["cells"]
    assert [c["predictions"] for c in cells if c["profile"] == str(mine)] == [str(second)]
    assert len(read_rows(second)) == 2 and len(read_rows(first)) == 2


def test_a_second_process_on_one_out_is_refused(
    first_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    out = copy_of(first_run, tmp_path)
    holder = (
        "import sys\nfrom pathlib import Path\nfrom duet_cli.evaluate.lock import out_lock\n"
        "with out_lock(Path(sys.argv[1])):\n    print('held', flush=True)\n    sys.stdin.readline()\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", holder, str(out)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
        with monkeypatch.context() as mp:
            no_model(mp)
            code, lines = duet_eval(monkeypatch, capsys, *ARGS, "--out", str(out))
        assert code == 1 and len(lines) == 1, lines
        assert f"another duet eval (pid {proc.pid}) is already writing to {out}" in lines[0]
        assert "another --out" in lines[0]
    finally:
        proc.communicate("\n", timeout=30)
    code, lines = duet_eval(monkeypatch, capsys, *ARGS, "--out", str(out))
    assert code == 0, lines  # once the first process is done, the folder is free


@pytest.mark.parametrize(
    ("bad", "fragment"),
    [
        (b"garbage\n", "not a JSON prediction row"),
        (b'{"prediction": "red", "error": null}\n', "prediction row without a string 'id'"),
        (b'{"id": "x", "prediction": 3, "error": null}\n', "prediction row with a malformed 'prediction'"),
    ],
)
def test_corrupt_resume_state_names_file_and_line(
    bad: bytes,
    fragment: str,
    first_run: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = copy_of(first_run, tmp_path)
    preds = out / "synth" / "baseline.jsonl"
    lines = preds.read_bytes().splitlines(keepends=True)
    preds.write_bytes(lines[0] + bad + b"".join(lines[1:]))
    no_model(monkeypatch)
    code, err = duet_eval(monkeypatch, capsys, *ARGS, "--out", str(out))
    assert code == 1 and len(err) == 1, err
    assert f"{preds}:2: {fragment}" in err[0] and "internal error" not in err[0]


def test_a_garbage_manifest_is_named(
    first_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    out = copy_of(first_run, tmp_path)
    (out / "synth" / "baseline.manifest.json").write_text("{not json")
    no_model(monkeypatch)
    code, err = duet_eval(monkeypatch, capsys, *ARGS, "--out", str(out))
    assert code == 1 and len(err) == 1, err
    assert f"{out / 'synth' / 'baseline.manifest.json'}: not a JSON predictions manifest" in err[0]


def pope_folder(root: Path, images: list[str], question: str = "Is there a circle?") -> Path:
    """A local POPE folder: random split with one line per image name (files made only for `images`)."""
    (root / "val2014").mkdir(parents=True, exist_ok=True)
    names = ["a.png", "b.png"]
    lines = [
        json.dumps({"question_id": i, "image": n, "text": question, "label": "yes"})
        for i, n in enumerate(names, start=1)
    ]
    (root / "coco_pope_random.json").write_text("\n".join(lines) + "\n")
    for name in images:
        shutil.copy(ROOT / "examples" / "shapes.png", root / "val2014" / name)
    return root


POPE = ["-B", "pope", "--split", "random", "--max-new-tokens", "2", "--device", "cpu"]


def test_changed_data_is_refused_naming_the_row(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    data = pope_folder(tmp_path / "pope", ["a.png", "b.png"])
    out = tmp_path / "out"
    args = [*POPE, "--data", f"pope={data}", "--out", str(out)]
    code, lines = duet_eval(monkeypatch, capsys, *args)
    assert code == 0, lines
    pope_folder(data, [], question="Is there a square?")  # the same ids now ask something else
    no_model(monkeypatch)
    code, lines = duet_eval(monkeypatch, capsys, *args)
    assert code == 1 and len(lines) == 1, lines
    preds = out / "pope" / "baseline.jsonl"
    assert f"{preds}:1: record 'random/1' has changed since it was answered" in lines[0]


def test_every_image_missing_is_an_error_and_some_missing_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    data = pope_folder(tmp_path / "pope", [])
    out = tmp_path / "out"
    args = [*POPE, "--data", f"pope={data}", "--out", str(out)]
    code, lines = duet_eval(monkeypatch, capsys, *args)
    assert code == 1, lines
    assert [line for line in lines if line.startswith("error:")] == [lines[-1]]
    assert "nothing could be scored: no record of pope was answered; first: " in lines[-1]
    assert "a.png" in lines[-1] and not (out / "results.json").exists()
    assert any("pope: 2 of 2 record(s) could not be answered" in line for line in lines)
    pope_folder(data, ["a.png"])  # one image back: it is tried again, the other still fails
    code, lines = duet_eval(monkeypatch, capsys, *args)
    assert code == 0, lines
    warned = [line for line in lines if "could not be answered" in line]
    assert len(warned) == 1 and "pope: 1 of 2 record(s)" in warned[0] and "b.png" in warned[0]
    cell = json.loads((out / "results.json").read_text())["cells"][0]
    assert cell["failures"] == 1 and cell["count"] == 2
