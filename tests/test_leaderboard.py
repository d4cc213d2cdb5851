"""The cross-run leaderboard: grouping, columns by metric key, the site's files, and the page
itself in a real headless browser (skipped, saying why, when no chromium is installed)."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import shutil
import time
from pathlib import Path

import pandas as pd
import pytest
from test_report import make_run

from eligen_bench import configurations
from eligen_bench.cli import main
from eligen_bench.layout import Entity, Layout
from eligen_bench.suite import Suite

from fixtures import write_small_suite

HOSTILE_PROMPT = 'a <script>alert(1)</script> cat "><img src=x onerror=alert(2)>'
FILL = "harness_plugins:RegionFill"


def hostile_suite() -> Suite:
    def entity(prompt: str, x: float) -> Entity:
        return Entity(prompt, (x, 0.1, x + 0.2, 0.6), category="cat")

    layouts = (
        Layout("one", HOSTILE_PROMPT, (entity(HOSTILE_PROMPT, 0.1),), 64, 64),
        Layout("two", "two things", (entity("a red box", 0.1), entity("a blue box", 0.5)), 64, 64),
        Layout("three", "three things", tuple(entity(f"box {i}", 0.05 + 0.3 * i) for i in range(3)), 64, 64),
        Layout("four", "four things", tuple(entity(f"box {i}", 0.02 + 0.24 * i) for i in range(4)), 64, 64),
    )
    return Suite("hostile", "1", layouts, "layouts with hostile prompts")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """Three harness runs on two suites, and the leaderboard built from them by a glob."""
    root = tmp_path_factory.mktemp("board")
    hostile = root / "hostile.jsonl"
    hostile_suite().write(hostile)
    small = write_small_suite(root / "small.jsonl")
    runs = root / "runs"
    for name, suite, generators in (
        ("good", hostile, "painter=harness_plugins:BoxPainter"),
        ("worse", hostile, "painter=harness_plugins:BoxPainter[skip_every=2]"),
        ("other-suite", small, "painter=harness_plugins:BoxPainter"),
    ):
        assert main(["run", "--suite", str(suite), "--generators", generators, "--metrics", FILL,
                     "--out", str(runs / name), "--no-progress"]) == 0
    (runs / "notes.txt").write_text("not a run", encoding="utf-8")
    out = root / "site"
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        assert main(["leaderboard", str(runs / "*"), "--out", str(out), "--bootstrap-resamples", "200"]) == 0
    return out, buffer.getvalue()


def test_groups_by_suite_and_says_what_it_set_apart(site: tuple[Path, str]) -> None:
    out, printed = site
    data = json.loads((out / "leaderboard.json").read_text(encoding="utf-8"))
    assert [len(g["runs"]) for g in data["groups"]] == [2, 1]
    assert [g["suite"]["name"] for g in data["groups"]] == ["hostile", "small"]
    assert "2 different suites" in printed and "notes.txt: not a run folder" in printed
    page = (out / "index.html").read_text(encoding="utf-8")
    assert "notes.txt" not in page and str(out.parent) not in page  # terminal only: local paths
    assert "notes.txt" not in json.dumps(data)
    first = data["groups"][0]
    rows = {(r["run"], r["bucket"]): r for r in first["rows"]}
    assert {b for _, b in rows} == {"all", "1-2", "3-4"}
    column = first["columns"][0]["id"]
    # The leaderboard's numbers are the per-run report's numbers.
    for run in ("good", "worse"):
        summary = pd.read_csv(out.parent / "runs" / run / "report" / "summary.csv")
        cell = rows[(run, "all")]["cells"][column]
        assert cell["mean"] == pytest.approx(float(summary["mean"].iloc[0]))
        assert cell["ci_low"] <= cell["mean"] <= cell["ci_high"]
    assert rows[("good", "all")]["cells"][column]["mean"] > rows[("worse", "all")]["cells"][column]["mean"]
    assert rows[("good", "1-2")]["layouts"] == 2 and rows[("good", "3-4")]["layouts"] == 2
    assert (out / "provenance" / "good.html").is_file()
    assert json.loads((out / "provenance" / "good" / "manifest.json").read_text())["code_version"]


def test_rows_say_what_they_are_and_publish_no_local_path(tmp_path: Path) -> None:
    checkpoint = tmp_path / "private" / "ckpt" / "step20000.safetensors"
    checkpoint.parent.mkdir(parents=True)
    checkpoint.write_bytes(b"weights")
    run = make_run(tmp_path / "runs", "a")
    manifest = json.loads((run / "manifest.json").read_text(encoding="utf-8"))
    manifest["config"]["generators"]["eligen"] = {"name": "eligen", "settings": {"lora": str(checkpoint),
                                                                                 "lora_scale": 0.5}}
    manifest["configurations"] = {"eligen": {
        "name": "eligen", "title": "EliGen", "changed": {"lora": str(checkpoint), "lora_scale": 0.5},
        "files": configurations.local_files({"lora": str(checkpoint)})}}
    (run / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    site = tmp_path / "site"
    assert main(["leaderboard", str(run), "--out", str(site), "--bootstrap-resamples", "20"]) == 0
    digest = hashlib.sha256(b"weights").hexdigest()
    group = json.loads((site / "leaderboard.json").read_text(encoding="utf-8"))["groups"][0]
    row = next(r for r in group["rows"] if r["generator"] == "eligen" and r["bucket"] == "all")
    assert row["configuration"]["files"]["lora"] == {"name": "step20000.safetensors", "sha256": digest}
    assert row["configuration"]["changed"] == {"lora_scale": 0.5}
    page = (site / "index.html").read_text(encoding="utf-8")
    assert f"eligen; lora_scale=0.5; lora: step20000.safetensors (sha256 {digest[:12]})" in page
    for published in site.rglob("*"):
        if published.suffix in (".html", ".json"):
            assert str(tmp_path) not in published.read_text(encoding="utf-8"), published
    # Ranks and marks: gligen has the best miou, eligen the best VLM success (83.33, 80.00 strict).
    miou = next(c["id"] for c in group["columns"] if c["labels"] == ["miou"])
    rows = {r["generator"]: r for r in group["rows"] if r["bucket"] == "all"}
    assert rows["gligen"]["cells"][miou]["marks"] == {"mean": "best"}
    assert rows["eligen"]["cells"][miou]["marks"] == {"mean": "second"}
    vlm = next(c["id"] for c in group["columns"] if c["name"] == "vlm_success")
    assert rows["eligen"]["cells"][vlm]["marks"] == {"mean": "best", "strict_mean": "best"}
    assert rows["migc"]["cells"][vlm]["strict_mean"] == pytest.approx(100 * 4 / 6)
    # Per column ranks (vlm, miou, pickscore): eligen 1, 2, 1; gligen 3, 1, 2; migc 2, 3, 3.
    assert [rows[g]["rank"] for g in ("eligen", "gligen", "migc")] == [1, 2, 3]
    assert rows["eligen"]["mean_rank"] == pytest.approx(4 / 3)
    assert "strict" in page


def test_one_label_under_two_metric_keys_gets_two_columns(tmp_path: Path, capsys) -> None:
    make_run(tmp_path / "runs", "a")
    make_run(tmp_path / "runs", "b", miou_key="k_miou_v2", miou_shift=0.05)
    assert main(["leaderboard", str(tmp_path / "runs" / "a"), str(tmp_path / "runs" / "b"),
                 "--out", str(tmp_path / "site"), "--bootstrap-resamples", "50"]) == 0
    assert "metric 'miou' was scored with 2 different metric keys" in capsys.readouterr().out
    group = json.loads((tmp_path / "site" / "leaderboard.json").read_text())["groups"][0]
    miou = [c for c in group["columns"] if "miou" in c["labels"]]
    assert sorted(c["key"] for c in miou) == ["k_miou", "k_miou_v2"]
    by_run = {r["run"]: r["cells"] for r in group["rows"] if r["bucket"] == "all" and r["generator"] == "eligen"}
    first, second = (c["id"] for c in sorted(miou, key=lambda c: c["key"]))
    assert first in by_run["a"] and second not in by_run["a"]
    assert second in by_run["b"] and first not in by_run["b"]


def test_bad_inputs_are_one_line_and_keep_the_users_folder(tmp_path: Path, capsys) -> None:
    run = make_run(tmp_path / "runs", "a")
    assert main(["leaderboard", str(tmp_path), "--out", str(tmp_path / "site")]) == 2
    assert "not a run folder" in capsys.readouterr().err
    assert main(["leaderboard", str(tmp_path / "nothing*"), "--out", str(tmp_path / "site")]) == 2
    assert "matches nothing" in capsys.readouterr().err
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("keep me", encoding="utf-8")
    assert main(["leaderboard", str(run), "--out", str(mine), "--bootstrap-resamples", "20"]) == 2
    assert "holds no leaderboard.json" in capsys.readouterr().err
    assert sorted(p.name for p in mine.iterdir()) == ["thesis.tex"]
    (run / "manifest.json").write_text("{broken", encoding="utf-8")
    assert main(["leaderboard", str(run), "--out", str(tmp_path / "site")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "manifest.json" in err[0]
    assert not (tmp_path / "site").exists()


def _browser():  # -> selenium WebDriver
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    if not chromium or not driver_path:
        pytest.skip("no chromium and chromedriver found (Debian: apt-get install chromium chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (the dev extra)")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1400,1000"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(driver_path), options=options)


def _column_values(driver, table, index: int) -> list[float]:
    rows = table.find_elements("css selector", "tbody tr")
    return [float(r.find_elements("tag name", "td")[index].get_attribute("data-v")) for r in rows if r.is_displayed()]


def test_page_in_a_real_browser(site: tuple[Path, str], tmp_path: Path) -> None:
    out, _ = site
    started = time.monotonic()
    driver = _browser()
    try:
        driver.get((out / "index.html").resolve().as_uri())
        errors = [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]
        assert not errors, errors
        broken = driver.execute_script(
            "return Array.from(document.images).filter(i => !i.complete || i.naturalWidth === 0)"
            ".map(i => i.getAttribute('src'));")
        assert broken == [] and len(driver.find_elements("tag name", "img")) >= 5
        table = driver.find_elements("css selector", "table.board")[0]
        headers = table.find_elements("css selector", "thead th")
        index = next(i for i, h in enumerate(headers) if "RegionFill" in h.text)
        # The filter: 'all' shows one row per (run, generator); a bucket shows its own rows only.
        assert len([r for r in table.find_elements("css selector", "tbody tr") if r.is_displayed()]) == 2
        headers[index].click()
        ascending = _column_values(driver, table, index)
        assert ascending == sorted(ascending) and ascending[0] < ascending[-1]
        headers[index].click()
        assert _column_values(driver, table, index) == sorted(ascending, reverse=True)
        from selenium.webdriver.support.ui import Select

        Select(driver.find_element("id", "bucket")).select_by_value("3-4")
        shown = [r for r in driver.find_elements("css selector", "tr[data-bucket]") if r.is_displayed()]
        assert shown and {r.get_attribute("data-bucket") for r in shown} == {"3-4"}
        hidden = [r for r in driver.find_elements("css selector", "tr.row[data-bucket='all']")]
        assert hidden and not any(r.is_displayed() for r in hidden)
        Select(driver.find_element("id", "bucket")).select_by_value("all")
        # Each row names its configuration: the same label 'painter' is two configurations here.
        names = [h.text.split("\n")[0] for h in headers]
        assert names[:4] == ["rank", "run", "label", "configuration"]
        rows = [r for r in table.find_elements("css selector", "tbody tr") if r.is_displayed()]
        configs = {r.find_elements("tag name", "td")[1].text: r.find_elements("tag name", "td")[3].text for r in rows}
        assert configs == {"good": "box-painter; defaults", "worse": "box-painter; skip_every=2"}
        ranks = {r.find_elements("tag name", "td")[1].text: r.find_elements("tag name", "td")[0].text for r in rows}
        assert ranks == {"good": "1", "worse": "2"}
        best = driver.execute_script("return Array.from(document.querySelectorAll('table.board td b'))"
                                     ".filter(b => b.offsetParent !== null).length")
        assert best >= 1  # the best value of the column is marked
        # The image comparisons fit the page's width; one compact notice per run at most.
        assert driver.execute_script("return Array.from(document.querySelectorAll('table.grid'))"
                                     ".every(t => t.getBoundingClientRect().right <= "
                                     "document.documentElement.clientWidth + 1)")
        assert not driver.find_elements("css selector", "div.warn")
        # A prompt holding <script> is shown as text, and ran nothing.
        assert HOSTILE_PROMPT in driver.find_element("tag name", "body").text
        assert driver.execute_script("return document.querySelectorAll('img[onerror]').length") == 0
        assert len(driver.find_elements("tag name", "script")) == 1
        driver.save_screenshot(str(tmp_path / "leaderboard.png"))
        assert (tmp_path / "leaderboard.png").stat().st_size > 1000
        errors = [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]
        assert not errors, errors
    finally:
        driver.quit()
    print(f"browser test: {time.monotonic() - started:.1f} s, screenshot {tmp_path / 'leaderboard.png'}")
