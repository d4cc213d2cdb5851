"""The LayoutSAM-Eval suite from files in the hub dataset's format, its digests, and ContextGen's
subset read from a pack archive the test builds."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path
from types import SimpleNamespace

import pytest

from eligen_bench.errors import InputError
from eligen_bench.hashing import file_sha256
from eligen_bench.suite import read_suite
from eligen_bench.suites import contextgen_subset as cg
from eligen_bench.suites import layoutsam as ls

from layoutsam_fixture import RECORDS, table, write_layoutsam_fixture


def reference_boxes(boxes, width, height):
    """Transcription of adjust_and_normalize_bboxes (HuiZhang0812/CreatiLayout@860d8bd:
    dataset/layoutsam_benchmark.py:5-15)."""
    out = []
    for x1, y1, x2, y2 in boxes:
        out.append([round(x1 / width, 3), round(y1 / height, 3), round(x2 / width, 3), round(y2 / height, 3)])
    return out


def test_records_become_layouts_in_split_order(tmp_path) -> None:
    suite = ls.load_layoutsam_eval(write_layoutsam_fixture(tmp_path))
    assert [layout.id for layout in suite.layouts] == ["layoutsam-0000", "layoutsam-0001", "layoutsam-0002"]
    for layout, record in zip(suite.layouts, RECORDS, strict=True):
        assert (layout.width, layout.height) == (record["width"], record["height"])
        assert layout.prompt == record["global_caption"]
        assert [list(e.bbox) for e in layout.entities] == [
            [min(v, 1.0) for v in box] for box in reference_boxes(record["boxes"], record["width"], record["height"])]
        assert [e.prompt for e in layout.entities] == record["regions"]  # '/' kept: the scorer strips it
    # 1199.6 / 1200 rounds to 1.0; 1021 / 1024 = 0.99707 rounds to 0.997 (three decimals, not floor)
    assert suite.layouts[1].entities[1].bbox[3] == 1.0 and suite.layouts[2].entities[0].bbox[2] == 0.997
    assert suite.layouts[0].entities[1].description == "a thin black metal lamp post"
    assert suite.layouts[1].entities[0].description == "a fluffy grey cat lying down"
    assert any("line breaks" in note for note in suite.notes)
    assert any("not checked" in note for note in suite.notes)
    assert suite.layouts[0].source == "layoutsam-eval:test[0]:sa_11.jpg"


def test_suite_file_round_trip_keeps_descriptions(tmp_path, capsys) -> None:
    from eligen_bench.cli import main

    write_layoutsam_fixture(tmp_path / "src")
    assert main(["suite", "build", "layoutsam", "--dir", str(tmp_path / "src"), "--out", str(tmp_path / "s.jsonl")]) == 0
    suite = read_suite(tmp_path / "s.jsonl")
    assert suite.hash == ls.load_layoutsam_eval(tmp_path / "src").hash
    assert suite.layouts[0].entities[0].description.startswith("a bright red")
    assert "3 layouts, 5 entities" in capsys.readouterr().out


@pytest.mark.parametrize(("change", "expected"), [
    ({"boxes": [[10, 10, 10.2, 50]]}, "empty after the reference's rounding"),
    ({"boxes": [[10, 10, 3000, 50]]}, "outside"),
    ({"regions": ["a", "b"]}, "1 boxes, 2 region captions"),
    ({"regions": ["  "]}, "region_captions[0]"),
])
def test_bad_records_name_the_record(tmp_path, change, expected) -> None:
    record = {**RECORDS[2], **change}
    write_layoutsam_fixture(tmp_path, [RECORDS[0], record], shards=1)
    with pytest.raises(InputError) as info:
        ls.load_layoutsam_eval(tmp_path)
    assert expected in str(info.value) and "test[1]" in str(info.value)


def test_bbox_literal_is_parsed_never_run(tmp_path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    bad = table([RECORDS[2]]).to_pylist()
    bad[0]["bbox_list"] = "__import__('os').system('false')"
    (tmp_path / "data").mkdir()
    pq.write_table(pa.Table.from_pylist(bad, schema=table([RECORDS[2]]).schema),
                   tmp_path / "data" / "test-00000-of-00001.parquet")
    with pytest.raises(InputError, match="not a Python list literal"):
        ls.load_layoutsam_eval(tmp_path)


def test_missing_shards_are_refused(tmp_path) -> None:
    write_layoutsam_fixture(tmp_path, shards=2)
    (tmp_path / "data" / "test-00001-of-00002.parquet").unlink()
    with pytest.raises(InputError, match="incomplete"):
        ls.load_layoutsam_eval(tmp_path)


def fake_hub(files: dict[str, bytes]):
    """Test doubles of the hub: a tree listing with LFS digests, and a snapshot that writes files."""
    import hashlib

    entries = [SimpleNamespace(path=p, lfs=SimpleNamespace(sha256=hashlib.sha256(b).hexdigest(), size=len(b)))
               for p, b in files.items()]
    api = SimpleNamespace(list_repo_tree=lambda *a, **k: entries)

    def snapshot(repo_id, *, repo_type, revision, local_dir, allow_patterns):
        assert (repo_id, repo_type, revision) == (ls.REPO_ID, "dataset", ls.REVISION)
        for path in allow_patterns:
            (Path(local_dir) / path).parent.mkdir(parents=True, exist_ok=True)
            (Path(local_dir) / path).write_bytes(files[path])

    return api, snapshot


def fixture_files(tmp_path) -> dict[str, bytes]:
    src = write_layoutsam_fixture(tmp_path / "src")
    return {f"data/{p.name}": p.read_bytes() for p in sorted((src / "data").iterdir())}


def test_download_verifies_digests_and_writes_sums(tmp_path) -> None:
    files = fixture_files(tmp_path)
    api, snapshot = fake_hub(files)
    dest = ls.download_layoutsam_eval(tmp_path / "cache", api=api, snapshot=snapshot)
    sums = ls.read_sums(dest)
    assert sums["revision"] == ls.REVISION and set(sums["files"]) == set(files)
    assert ls.check_sums(dest) == {p: d for p, (d, _) in sums["files"].items()}
    # A second call trusts nothing but the recorded digests: a corrupted file is named.
    (dest / "data" / "test-00000-of-00002.parquet").write_bytes(b"x" * len(files["data/test-00000-of-00002.parquet"]))
    with pytest.raises(InputError, match="sha256 .* differs"):
        ls.download_layoutsam_eval(dest, api=api, snapshot=snapshot)


def test_download_refuses_a_file_that_differs_from_the_hub_record(tmp_path) -> None:
    files = fixture_files(tmp_path)
    api, _ = fake_hub(files)
    _, snapshot = fake_hub({p: b + b"!" for p, b in files.items()})
    with pytest.raises(InputError, match="bytes, expected|differs"):
        ls.download_layoutsam_eval(tmp_path / "cache", api=api, snapshot=snapshot)
    assert not (tmp_path / "cache" / ls.SUMS_FILE).exists()


def test_a_known_published_digest_is_enforced(tmp_path, monkeypatch) -> None:
    write_layoutsam_fixture(tmp_path, shards=1)
    monkeypatch.setattr(ls, "KNOWN_SHA256", {"data/test-00000-of-00001.parquet": "0" * 64})
    with pytest.raises(InputError, match="differs from the published"):
        ls.load_layoutsam_eval(tmp_path)


def test_pinned_split_counts_are_checked(tmp_path) -> None:
    files = fixture_files(tmp_path)
    api, snapshot = fake_hub(files)
    dest = ls.download_layoutsam_eval(tmp_path / "cache", api=api, snapshot=snapshot)
    with pytest.raises(InputError, match="3 records and 5 boxes; the pinned split holds 5000 and 19133"):
        ls.load_layoutsam_eval(dest)  # the fixture is not the real split, yet its sums name the pin
    # ...which only the pinned revision's folder is held to: another revision's is not.
    text = (dest / ls.SUMS_FILE).read_text().replace(ls.REVISION, "f" * 40)
    (dest / ls.SUMS_FILE).write_text(text)
    suite = ls.load_layoutsam_eval(dest)
    assert len(suite.layouts) == 3 and any("checked against SHA256SUMS" in note for note in suite.notes)


def make_pack(path: Path, items: list, member: str = "layoutsam_reference_pack/layoutsam_sampled.json",
              extra: dict[str, bytes] | None = None) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in {member: json.dumps(items).encode(), **(extra or {})}.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_contextgen_subset_reads_the_json_member_only(tmp_path, monkeypatch) -> None:
    pack = make_pack(tmp_path / "pack.tar.gz", [{"index": 2, "global_caption": "x"}, {"index": 0}],
                     extra={"layoutsam_reference_pack/reference_images/0000_00.jpg": b"\xff\xd8"})
    monkeypatch.setattr(cg, "PACK_SHA256", file_sha256(pack))
    rows, note = cg.subset_rows(pack)
    assert rows == [0, 2] and "2 split rows" in note and not (tmp_path / "layoutsam_reference_pack").exists()
    suite = ls.build_layoutsam_suite(write_layoutsam_fixture(tmp_path / "src"), "contextgen-1k", pack)
    assert [layout.id for layout in suite.layouts] == ["layoutsam-0000", "layoutsam-0002"]
    assert suite.name == "layoutsam-eval-contextgen1k" and any("ContextGen 1K subset" in n for n in suite.notes)


def test_contextgen_pack_with_another_digest_is_refused(tmp_path) -> None:
    pack = make_pack(tmp_path / "pack.tar.gz", [{"index": 0}])
    with pytest.raises(InputError, match="is not the pinned pack's"):
        cg.subset_rows(pack)


@pytest.mark.parametrize(("items", "expected"), [
    ([{"index": 1}, {"index": 1}], "repeats"),
    ([{"index": -1}], "non-negative"),
    ([{"index": True}], "non-negative"),
    ({"index": 1}, "non-empty list"),
])
def test_bad_subset_files(tmp_path, items, expected) -> None:
    path = tmp_path / "layoutsam_sampled.json"
    path.write_text(json.dumps(items))
    with pytest.raises(InputError, match=expected):
        cg.subset_rows(path)


def test_subset_rows_outside_the_split_are_refused(tmp_path) -> None:
    path = tmp_path / "layoutsam_sampled.json"
    path.write_text(json.dumps([{"index": 0}, {"index": 7}]))
    with pytest.raises(InputError, match=r"row\(s\) \[7\] outside the split's 3 records"):
        ls.build_layoutsam_suite(write_layoutsam_fixture(tmp_path / "src"), "contextgen-1k", path)


def test_pack_with_links_or_two_members_is_refused(tmp_path, monkeypatch) -> None:
    pack = tmp_path / "pack.tar.gz"
    with tarfile.open(pack, "w:gz") as tar:
        info = tarfile.TarInfo("a/layoutsam_sampled.json")
        info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(info)
    monkeypatch.setattr(cg, "PACK_SHA256", file_sha256(pack))
    with pytest.raises(InputError, match="expected one regular file"):
        cg.subset_rows(pack)


def test_pack_url_names_the_pinned_commit() -> None:
    assert cg.pack_url() == ("https://media.githubusercontent.com/media/nenhang/ContextGen/"
                             "f22fa907554253bd64b0456fcb7ad085ffc3242c/bench/sample_scripts/layoutsam/"
                             "layoutsam_reference_pack.tar.gz")
