"""Screenshots of what a user reads after the demo, at 1024 and 1400 px wide, into docs/screenshots/:
the study's report, `dvc plots show`'s page, and Snakemake's own report (its experiments category
opened on one experiment).

    python scripts/docs_screenshots.py --project <a checkout where `make demo` ran> [--out docs/screenshots]

It runs `dvc plots show` and `snakemake --report` in that checkout first (both read only what the
demo wrote). Needs chromium (Debian: apt-get install -y chromium).
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report_browser import Browser, find_chromium  # noqa: E402

WIDTHS = (1024, 1400)
TALLEST = 3200   # px: the report's overview, leaderboard and comparisons; the rest is per experiment


def click_text(browser: Browser, text: str) -> None:
    """Click the innermost element whose text is `text` (Snakemake's report: a React app)."""
    found = browser.evaluate(f"""(() => {{
        const e = Array.from(document.querySelectorAll('body *')).reverse()
                       .find(e => e.textContent.trim() === {text!r} && e.offsetParent !== null);
        if (e) e.click();
        return !!e; }})()""")
    if not found:
        raise SystemExit(f"error: nothing reads {text!r} in Snakemake's report: has its layout changed?")
    time.sleep(1.5)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--project", type=Path, required=True)
    ap.add_argument("--out", type=Path, default=Path("docs/screenshots"))
    args = ap.parse_args()
    exe = find_chromium()
    if exe is None:
        sys.exit("error: no chromium on PATH; install it (Debian: apt-get install -y chromium)")
    project, out = args.project.resolve(), args.out.resolve()
    subprocess.run(["dvc", "plots", "show", "-o", "dvc_plots"], cwd=project, check=True, capture_output=True)
    subprocess.run(["snakemake", "--report", "results/snakemake-report.html"], cwd=project, check=True,
                   capture_output=True)
    out.mkdir(parents=True, exist_ok=True)
    first = next(iter((project / "results/experiments").iterdir())).name
    for width in WIDTHS:
        for name, page, height in (("report", "results/report.html", TALLEST),
                                   ("dvc-plots", "dvc_plots/index.html", 1600),
                                   ("snakemake-report", "results/snakemake-report.html", 900)):
            with Browser(exe, width=width, height=900) as browser:
                browser.open(project / page)
                time.sleep(2)                         # vega-embed and React draw after the load event
                if name == "snakemake-report":
                    click_text(browser, "experiments")
                    click_text(browser, first)
                browser.screenshot(out / f"{name}-{width}.png", max_height=height)
            print(out / f"{name}-{width}.png")


if __name__ == "__main__":
    main()
