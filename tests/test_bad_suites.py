"""Suite files and input images of any shape: one line naming file, line, layout and field, exit 2."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

from eligen_bench.cli import main
from eligen_bench.errors import InputError
from eligen_bench.suite import read_suite

LAYOUT = {"id": "a", "prompt": "a beach", "width": 64, "height": 64, "entities": []}
ENTITY = {"prompt": "a boat", "bbox": [0.1, 0.1, 0.5, 0.5]}


def write(path: Path, *lines: object) -> Path:
    path.write_text("\n".join(line if isinstance(line, str) else json.dumps(line, ensure_ascii=False)
                              for line in lines) + "\n", encoding="utf-8")
    return path


def validate_error(capsys, path: Path) -> str:
    assert main(["validate", str(path)]) == 2
    out = capsys.readouterr().out
    problems = [line for line in out.splitlines() if line.startswith("error:")]
    assert len(problems) == 1, out
    return problems[0]


@pytest.mark.parametrize("text, expected", [
    ("[" * 100_000, "s.jsonl:1: malformed JSON (nested too deeply)"),
    ('{"id": ' * 50_000, "s.jsonl:1: malformed JSON"),
])
def test_deep_nesting_is_one_line(tmp_path, capsys, text, expected) -> None:
    path = write(tmp_path / "s.jsonl", text)
    assert expected in validate_error(capsys, path)
    with pytest.raises(InputError, match="s.jsonl:1"):
        read_suite(path)


@pytest.mark.parametrize("header, field", [
    ({"suite": 7}, "suite"),
    ({"suite": "s", "notes": 5}, "notes"),
    ({"suite": "s", "notes": ["fine", 3]}, "notes[1]"),
    ({"suite": "s", "version": {"major": 1}}, "version"),
    ({"suite": "s", "version": True}, "version"),
    ({"suite": "s", "description": ["x"]}, "description"),
    ({"suite": "s", "hash": 12}, "hash"),
    ({"suite": "s", "count": "3"}, "count"),
    ({"suite": "s", "format": 99}, "format"),
    ({"suite": "s", "colour": "red"}, None),
])
def test_header_fields_of_the_wrong_type(tmp_path, capsys, header, field) -> None:
    path = write(tmp_path / "s.jsonl", header, LAYOUT)
    line = validate_error(capsys, path)
    assert line.startswith("error: s.jsonl:1: ")
    if field:
        assert f": {field}: " in line
    else:
        assert "unknown header field" in line


@pytest.mark.parametrize("change, field", [
    ({"id": "a\n"}, "id"),
    ({"id": "a\t"}, "id"),
    ({"prompt": "a beach\n| injected | row |"}, "prompt"),
    ({"prompt": "a beach\u2028more"}, "prompt"),
    ({"prompt": "a\x1b[31m beach"}, "prompt"),
    ({"source": "coco\r"}, "source"),
    ({"source": 12}, "source"),
    ({"entities": [{**ENTITY, "prompt": "a boat\x00"}]}, "entities[0].prompt"),
    ({"entities": [{**ENTITY, "category": "cat\n"}]}, "entities[0].category"),
    ({"init_image": "x.png\n"}, "init_image"),
])
def test_control_characters_are_refused(tmp_path, capsys, change, field) -> None:
    path = write(tmp_path / "s.jsonl", {**LAYOUT, **change})
    line = validate_error(capsys, path)
    assert line.startswith("error: s.jsonl:1: layout ") and f": {field}: " in line


def test_suite_names_with_control_characters_are_refused(tmp_path, capsys) -> None:
    for name in ("mini\n", "mini\r", "mi\x00ni"):
        path = write(tmp_path / "s.jsonl", {"suite": name}, LAYOUT)
        assert "s.jsonl:1: suite: " in validate_error(capsys, path)


@pytest.mark.parametrize("counts", ["é" * 8, "0" * 4 + "\u00ff", "\u2603"])
def test_non_ascii_mask_rle_is_refused(tmp_path, capsys, counts) -> None:
    entity = {**ENTITY, "mask": {"size": [64, 64], "counts": counts}}
    path = write(tmp_path / "s.jsonl", {**LAYOUT, "entities": [entity]})
    line = validate_error(capsys, path)
    assert "s.jsonl:1: layout 'a': entities[0].mask: " in line


def test_mask_size_must_be_bounded_integers(tmp_path, capsys) -> None:
    for size in ([True, 64], [64, 10**12], [-64, 64], "64"):
        entity = {**ENTITY, "mask": {"size": size, "counts": "0"}}
        path = write(tmp_path / "s.jsonl", {**LAYOUT, "entities": [entity]})
        assert "entities[0].mask: size must be" in validate_error(capsys, path)


def cli(*args: str) -> subprocess.CompletedProcess:
    """The command in a subprocess, so a hang fails the test instead of blocking it."""
    return subprocess.run([sys.executable, "-m", "eligen_bench.cli", *args], capture_output=True, text=True,
                          timeout=60)


def test_suite_file_that_is_not_a_regular_file(tmp_path) -> None:
    fifo = tmp_path / "s.jsonl"
    os.mkfifo(fifo)
    result = cli("validate", str(fifo))
    assert result.returncode == 2 and "is not a regular file" in result.stdout
    result = cli("generate", "--suite", str(fifo), "--generators", "flux", "--profile", "tiny", "--dry-run")
    assert result.returncode == 2 and result.stderr.strip().count("\n") == 0
    assert "s.jsonl: is not a regular file" in result.stderr


def test_duplicate_ids_name_both_lines(tmp_path, capsys) -> None:
    path = write(tmp_path / "s.jsonl", LAYOUT, {**LAYOUT, "prompt": "other"})
    assert "s.jsonl:2: id: duplicate layout id (first on line 1)" in validate_error(capsys, path)


def _png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width x height (its data is one row of one pixel)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00\x00\x00\x00"))
            + chunk(b"IEND", b""))


def _inpainting_suite(tmp_path: Path, image: str) -> Path:
    layout = {**LAYOUT, "id": "inpaint", "entities": [ENTITY], "init_image": image}
    return write(tmp_path / "s.jsonl", {"suite": "s"}, layout)


@pytest.mark.parametrize("side", [9000, 30_000, 100_000])
def test_image_header_claiming_a_huge_size_is_refused(tmp_path, capsys, side) -> None:
    (tmp_path / "bomb.png").write_bytes(_png_claiming(side, side))
    line = validate_error(capsys, _inpainting_suite(tmp_path, "bomb.png"))
    assert line.startswith("error: s.jsonl:2: layout 'inpaint': init_image: ")
    assert "bomb.png" in line and ("8192" in line or "DecompressionBomb" in line)


def test_fifo_or_device_as_input_image_does_not_hang(tmp_path) -> None:
    os.mkfifo(tmp_path / "fifo.png")
    for image in ("fifo.png", "/dev/zero"):
        result = cli("validate", str(_inpainting_suite(tmp_path, image)))
        assert result.returncode == 2
        assert "init_image: cannot read input image" in result.stdout and "not a regular file" in result.stdout
