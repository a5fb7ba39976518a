"""Stage train: train one experiment and keep its best-on-val checkpoint.

    python -m pipeline.train --config results/digits_mlp/config.json \
        --prepared data/prepared/digits --stats data/stats/digits.json \
        --model results/digits_mlp/model.pt --history results/digits_mlp/history.csv \
        --metrics results/digits_mlp/train.json

history.csv has one row per epoch (train/val loss and accuracy, lr) and is what `dvc plots`
draws; train.json (best val accuracy, epochs, train time, resolved config, library versions)
is what `dvc exp show` lists.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from pipeline import stage


def train(config: dict, prepared: Path, stats_path: Path, model: Path, history: Path, metrics: Path) -> dict:
    from pipeline import engine  # torch is imported only once there is work to do
    return engine.fit(config, prepared, json.loads(stats_path.read_text()), model, history, metrics)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for name in ("config", "prepared", "stats", "model", "history", "metrics"):
        ap.add_argument(f"--{name}", required=True, type=Path)
    ap.add_argument("--log", type=Path)
    args = ap.parse_args(argv)
    stage.setup_logging(args.log)
    config = json.loads(args.config.read_text())
    inputs = [args.config, args.prepared, args.stats]
    outputs = [args.model, args.history, args.metrics]
    stage.run_stage("train", config, inputs, outputs,
                    lambda: train(config, args.prepared, args.stats, *outputs))


if __name__ == "__main__":
    stage.cli(main)
