"""Write the page template of `dvc plots show` / `dvc plots diff` with vega, vega-lite and vega-embed
inlined, so that the plots draw with no network (`make install` runs this).

    python scripts/dvc_plots_template.py .dvc/plots-offline.html

DVC's own page loads those three scripts from a CDN: offline (this project's premise) it is blank.
.dvc/config names this file as `plots.html_template` (a path relative to .dvc/). The scripts come
from vl-convert-python's bundle (pinned in envs/requirements.txt); `{plot_divs}` is where DVC puts
the plots, and without a `{scripts}` placeholder DVC adds no CDN tags.
"""
from __future__ import annotations

import sys
from pathlib import Path

VEGA_LITE = "5.21"   # DVC's specs are vega-lite v5 (dvc-render); the bundle's newest v5

PAGE = """<!DOCTYPE html>
<html>
<head>
<meta charset="utf-8">
{refresh_tag}
<title>DVC plots</title>
<script>
%s
</script>
<style>table { border-spacing: 15px; }</style>
</head>
<body>
{plot_divs}
</body>
</html>
"""


def main(out: Path) -> None:
    import vl_convert
    bundle = vl_convert.javascript_bundle(vl_version=VEGA_LITE)
    assert "</script>" not in bundle and "{plot_divs}" not in bundle, "the bundle would break the page"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(PAGE % bundle, encoding="utf8")
    tmp.replace(out)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB: vega, vega-lite {VEGA_LITE}, vega-embed)")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(Path(sys.argv[1]))
