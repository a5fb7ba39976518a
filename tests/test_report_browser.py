"""End to end in real headless Chromium: the demo's report loads every image, lists one leaderboard
row per experiment, and clicking a column header reorders the rows.

By default the report is rendered from a fabricated demo (the demo's data-set shape and experiment
count, outputs written by scripts/report_fixture.py, so no training is needed). Point REPORT_HTML at
a real report (e.g. results/report.html after `snakemake`) to check that one instead; its experiments
are read from REPORT_PARAMS (default: params.yaml). REPORT_SCREENSHOT=path keeps the screenshot.
"""
from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

from conftest import ROOT
from pipeline import params as params_mod
from pipeline import report

sys.path.insert(0, str(ROOT / "scripts"))
from report_browser import Browser, find_chromium  # noqa: E402
from report_fixture import make_study  # noqa: E402

CHROMIUM = find_chromium()
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed "
                                "(Debian: apt-get install -y chromium; .ci/run installs it)")

ROWS = "Array.from(document.querySelectorAll('#leaderboard tbody tr')).map(r => r.dataset.experiment)"


def _sort_key_js(col: int) -> str:
    return (f"Array.from(document.querySelectorAll('#leaderboard tbody tr'))"
            f".map(r => r.cells[{col}].getAttribute('data-sort'))")


@pytest.fixture
def report_html(tmp_path) -> tuple[Path, list[str]]:
    if os.environ.get("REPORT_HTML"):
        params = params_mod.load(os.environ.get("REPORT_PARAMS", ROOT / "params.yaml"))
        return Path(os.environ["REPORT_HTML"]), list(params["experiments"])
    demo = params_mod.load(ROOT / "params.yaml")
    study = make_study(tmp_path, n_experiments=len(demo["experiments"]))
    out = tmp_path / "results" / "report.html"
    report.report(study["study"], tmp_path / "results/experiments", tmp_path / "data/prepared",
                  tmp_path / "data/stats", out, root=tmp_path)
    return out, list(study["study"]["experiments"])


def test_report_in_headless_chromium(report_html, tmp_path):
    html, experiments = report_html
    with Browser(CHROMIUM) as b:
        b.open(html)
        b.evaluate("document.querySelectorAll('details').forEach(d => d.open = true)")  # lazy images too
        images = b.evaluate("Array.from(document.images).map(i => [i.alt, i.complete, i.naturalWidth])")
        assert len(images) >= 2 * len(experiments) + 2, "expected figures per data set and per experiment"
        broken = [alt for alt, complete, width in images if not (complete and width > 0)]
        assert not broken, f"images that did not load: {broken}"

        assert b.evaluate(ROWS) == experiments          # one row per experiment, in params.yaml order
        headers = b.evaluate("Array.from(document.querySelectorAll('#leaderboard th')).map(h => h.innerText)")
        col = headers.index("test\ntop-1")
        values = [float(v) if v else None for v in b.evaluate(_sort_key_js(col))]

        def shown() -> tuple[list[str], list[float]]:
            rows = b.evaluate(ROWS)
            return rows, [float(v) for v in b.evaluate(_sort_key_js(col)) if v]   # blanks sort last

        header = "#leaderboard th:nth-child(%d)" % (col + 1)
        b.click(header)
        ascending, up = shown()
        assert sorted(ascending) == sorted(experiments) and up == sorted(v for v in values if v is not None)
        assert b.evaluate(f"document.querySelectorAll('#leaderboard th')[{col}].getAttribute('aria-sort')") == "ascending"
        b.click(header)
        descending, down = shown()
        assert down == up[::-1]
        if len(set(values)) > 1:
            assert ascending != experiments or descending != experiments   # the clicks really moved rows
            assert ascending != descending

        shot = tmp_path / "report.png"
        b.screenshot(shot)
    assert shot.stat().st_size > 10_000
    if os.environ.get("REPORT_SCREENSHOT"):
        shutil.copy(shot, os.environ["REPORT_SCREENSHOT"])


def test_the_leaderboard_fits_a_1024_pixel_window(report_html):
    html, _ = report_html
    with Browser(CHROMIUM, width=1024) as b:
        b.open(html)
        table, room = b.evaluate("(() => { const t = document.getElementById('leaderboard'); "
                                 "return [t.scrollWidth, t.parentElement.clientWidth]; })()")
    assert table <= room, f"the leaderboard is {table} px wide in {room} px: its last columns are cut"
