"""JSONL batch files: records, path resolution, and one-line errors naming file and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from duet_cli.errors import InputError
from duet_cli.inputs.batchfile import BatchItem, read_batch


def write(tmp_path: Path, text: str, name: str = "batch.jsonl") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_records_and_relative_paths(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '{"question": "What colour?", "image": "imgs/a.png", "id": "first"}\n'
        "\n"
        '{"question": "Compare.", "images": ["b.png", "/abs/c.png"], "id": 7}\r\n'
        "   \n"
        '{"question": "Again?", "image": "~/d.png"}\n',
    )
    items = read_batch(path)
    assert items[0] == BatchItem(
        images=[tmp_path / "imgs" / "a.png"], question="What colour?", line=1, id="first"
    )
    assert items[1].images == [tmp_path / "b.png", Path("/abs/c.png")]
    assert (items[1].line, items[1].id) == (3, "7")
    assert items[2].images == [Path.home() / "d.png"] and items[2].id is None and items[2].line == 5


def test_relative_paths_resolve_against_the_file_not_the_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sub = tmp_path / "data"
    sub.mkdir()
    write(sub, '{"question": "q", "image": "x.png"}\n')
    monkeypatch.chdir(tmp_path)
    (item,) = read_batch("data/batch.jsonl")
    assert item.images == [sub / "x.png"]
    assert item.images[0].is_absolute()


def test_images_are_not_checked_here(tmp_path: Path) -> None:
    (item,) = read_batch(write(tmp_path, '{"question": "q", "image": "missing.png"}'))
    assert not item.images[0].exists()


def test_utf8_bom_and_line_separator_inside_a_string(tmp_path: Path) -> None:
    path = tmp_path / "batch.jsonl"
    path.write_bytes('\ufeff{"question": "a\u2028b", "image": "x.png"}\n'.encode())
    (item,) = read_batch(path)
    assert item.question == "a\u2028b"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            '{"question": "q", "image": "a.png"}\n\n{"question": "q" "image": "a.png"}',
            ":3: not valid JSON (Expecting ',' delimiter)",
        ),
        ('["q", "a.png"]', ":1: expected a JSON object, got a list"),
        ('{"image": "a.png"}', ':1: missing "question"'),
        ('{"question": "  ", "image": "a.png"}', ':1: "question" is empty'),
        ('{"question": 3, "image": "a.png"}', ':1: "question" must be a string, got a number'),
        ('{"question": "q"}', ':1: missing "image" (or "images")'),
        ('{"question": "q", "image": ["a.png"]}', ':1: "image" must be a string, got a list'),
        ('{"question": "q", "image": ""}', ":1: empty image path"),
        ('{"question": "q", "images": "a.png"}', ':1: "images" must be a list of strings, got a string'),
        ('{"question": "q", "images": []}', ':1: "images" is empty'),
        ('{"question": "q", "images": ["a.png", null]}', ':1: "images"[1] must be a string, got null'),
        ('{"question": "q", "image": "a.png", "images": ["b.png"]}', ":1: give either"),
        ('{"question": "q", "image": "a.png", "id": true}', ':1: "id" must be a string or an integer'),
        (
            '{"question": "q", "image": "a.png", "id": "x"}\n{"question": "q", "image": "a.png", "id": "x"}',
            ":2: duplicate \"id\" 'x' (first on line 1)",
        ),
    ],
)
def test_errors_name_file_and_line(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(InputError) as info:
        read_batch(path)
    msg = str(info.value)
    assert msg.startswith(str(path) + ":")
    assert message in msg
    assert "\n" not in msg


@pytest.mark.parametrize("text", ["", "\n\n  \n"])
def test_empty_file(tmp_path: Path, text: str) -> None:
    with pytest.raises(InputError, match="no records"):
        read_batch(write(tmp_path, text))


def test_missing_file_folder_and_binary(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="batch file not found"):
        read_batch(tmp_path / "nope.jsonl")
    with pytest.raises(InputError, match="is a folder"):
        read_batch(tmp_path)
    binary = tmp_path / "bin.jsonl"
    binary.write_bytes(b"\xff\xfe\x00\x81")
    with pytest.raises(InputError, match="not UTF-8"):
        read_batch(binary)
