"""Stage configure: write one experiment's resolved config (defaults merged with its overrides).

    python -m pipeline.configure --params params.yaml --experiment digits_mlp \
        --out results/digits_mlp/config.json

Train depends on this file, not on params.yaml, so that changing the global `lr` retrains only
the experiments that inherit it: for the others the file is rewritten byte-identical and both
DVC (content hash) and Snakemake (params trigger) leave their training alone.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from pipeline import params as params_mod
from pipeline import stage


def configure(params: dict, experiment: str, out: Path) -> dict:
    config = params_mod.experiment_config(params, experiment)
    text = json.dumps(config, indent=1, sort_keys=True) + "\n"
    if not (out.exists() and out.read_text() == text):  # unchanged file keeps its mtime
        with stage.atomic_path(out) as tmp:
            tmp.write_text(text)
    return config


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", required=True, type=Path)
    ap.add_argument("--experiment", required=True)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--log", type=Path)
    args = ap.parse_args(argv)
    stage.setup_logging(args.log)
    configure(params_mod.load(args.params), args.experiment, args.out)


if __name__ == "__main__":
    stage.cli(main)
