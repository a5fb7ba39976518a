"""Stage download: fetch one data set's raw files into its raw directory, verified.

    python -m pipeline.download --config results/configs/datasets/cifar10.source.json \
        --source data/sources/cifar10 --out data/raw/cifar10

--config is the data set's `source` entry, as the configure stage writes it; --source the link
configure makes to the data set's local files (what DVC hashes to see an edit inside a folder).
Published archives are looked up in the downloads directory (source.archive_dir, else
$PIPELINE_DOWNLOADS, else data/downloads/) and used offline once their md5 passes; only a missing
one is downloaded. The raw directory holds what was extracted from them and is rebuilt whole, so
an archive a user dropped into it is first moved to the downloads directory, never deleted.
"""
from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from pipeline import sources, stage
from pipeline.sources import archives

log = logging.getLogger("pipeline.download")


def download(source_cfg: dict, out: Path) -> None:
    """Fill `out` (created here) with the verified raw files of the source."""
    with stage.atomic_path(out) as tmp:
        tmp.mkdir()
        sources.fetch(source_cfg, tmp)
    log.info("raw files in %s: %s", out, ", ".join(sorted(p.name for p in out.iterdir())))


def rescue_archive(source_cfg: dict, out: Path) -> None:
    """Move a published archive found in the raw folder to the downloads directory, where it is kept."""
    archive = sources.archive(source_cfg)
    if archive is None or not (out / archive.filename).is_file():
        return
    dest = archives.downloads_dir(source_cfg) / archive.filename
    if dest.exists():
        raise stage.PipelineError(
            f"{archive.filename} is both in {out} and in {dest.parent}; the raw folder is rebuilt by this "
            f"stage, so move your copy out of {out} (keep one)")
    dest.parent.mkdir(parents=True, exist_ok=True)
    os.replace(out / archive.filename, dest)
    log.info("moved %s to %s (the raw folder is rebuilt from it)", out / archive.filename, dest)


ROW = stage.Stage(   # the row (pipeline/wiring.py builds both tools from it)
    "download", "datasets",
    deps={"config": "results/configs/datasets/{ds}.source.json", "source": "data/sources/{ds}"},
    outs={"out": stage.Out("data/raw/{ds}", directory=True)},
    help={"config": "the data set's source entry (JSON)",
          "source": "configure's link to the data set's local files (the dependency the tools track)"})

def parser() -> argparse.ArgumentParser:
    """The command line, from the row."""
    return ROW.parser(__doc__)


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    stage.setup_logging(args.log)
    source = stage.read_json(args.config)
    if not args.source.exists():
        raise stage.PipelineError(f"{args.source}: missing or a broken link; run configure (dvc repro configure, "
                                  f"or any snakemake) to link the data set's files")
    rescue_archive(source, args.out)
    download(source, args.out)


if __name__ == "__main__":
    stage.cli(main)
