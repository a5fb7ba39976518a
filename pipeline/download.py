"""Stage download: fetch one data set's raw archive(s) into its raw directory.

    python -m pipeline.download --params params.yaml --dataset digits --out data/raw/digits
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

from pipeline import params as params_mod
from pipeline import sources, stage

log = logging.getLogger("pipeline.download")


def download(source_cfg: dict, out: Path) -> None:
    """Fill `out` (created here) with the verified raw files of the source."""
    with stage.atomic_path(out) as tmp:
        tmp.mkdir()
        sources.fetch(source_cfg, tmp)
    log.info("raw files in %s: %s", out, ", ".join(sorted(p.name for p in out.iterdir())))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", required=True, type=Path)
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--log", type=Path)
    args = ap.parse_args(argv)
    stage.setup_logging(args.log)
    source = params_mod.dataset_config(params_mod.load(args.params), args.dataset)["source"]
    stage.run_stage("download", source, [], [args.out], lambda: download(source, args.out))


if __name__ == "__main__":
    stage.cli(main)
