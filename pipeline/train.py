"""Stage train: train one experiment and keep its checkpoint (the best on val, or the last epoch's).

    python -m pipeline.train --config results/configs/experiments/digits_mlp.json \
        --prepared data/prepared/digits --stats data/stats/digits.json \
        --model results/experiments/digits_mlp/model.pt --live results/experiments/digits_mlp/live \
        --metrics results/experiments/digits_mlp/train.json --run results/experiments/digits_mlp/run.json \
        --layers results/experiments/digits_mlp/layers.csv --experiments results/experiments

--config is the experiment's resolved config, as the configure stage writes it. live/ is the
per-epoch log, written through DVCLive after each epoch (pipeline/live.py: what `dvc exp show` and
`dvc plots show` read): train loss (the training objective: label-smoothed or multi-margin where the
recipe says so, averaged over the epoch's steps) and accuracy, val loss (plain cross-entropy, as
evaluate's test loss, so the two compare) and accuracy (none without a val split), and the epoch's
lr. train.json (the kept epoch, its val accuracy and train loss, epochs
run, train time) holds its scalars; run.json holds the resolved config, library
versions, device and parameter counts; layers.csv is the model's layer table (pipeline/layers.py).
--experiments is the folder holding other experiments' checkpoints, read only when the config's
`pretrained:` names one (<experiments>/<name>/model.pt).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from pipeline import stage
from pipeline.config import TrainConfig


def train(config: TrainConfig, prepared: Path, stats_path: Path, model: Path, live: Path, metrics: Path,
          run: Path, layers: Path | None = None, experiments: Path | None = None) -> dict:
    from pipeline import engine  # torch is imported only once there is work to do
    out = engine.TrainOutputs(model, live, metrics, run, layers)
    parent = engine.parent_checkpoint(config, experiments)     # `pretrained: <experiment>`'s checkpoint
    return engine.fit(config, prepared, json.loads(stats_path.read_text()), out, parent)


EXP = stage.EXP
ROW = stage.Stage(   # the row (pipeline/wiring.py builds both tools from it)
    "train", "experiments", gpus="devices",
    deps={"config": "results/configs/experiments/{exp}.json", "prepared": stage.DS, "stats": "data/stats/{dataset}.json"},
    outs={"model": stage.Out(f"{EXP}/model.pt"), "live": stage.Out(f"{EXP}/live", "live", report="experiments"),
          "metrics": stage.Out(f"{EXP}/train.json", report="experiments"), "run": stage.Out(f"{EXP}/run.json"),
          "layers": stage.Out(f"{EXP}/layers.csv")},
    args={"experiments": "results/experiments"},      # parents' checkpoints (`pretrained: <exp>`)
    help={"layers": "layer table to write (CSV)", "experiments": "folder of other experiments' checkpoints"})

def parser() -> argparse.ArgumentParser:
    """The command line, from the row."""
    return ROW.parser(__doc__)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = parser().parse_args(argv[1:] if argv[:1] == ["--"] else argv)   # ("--": as relaunched by torchrun)
    rank = int(os.environ.get("RANK", 0))           # under torchrun (devices > 1): rank 0 logs to the file
    stage.setup_logging(args.log if rank == 0 else None, append="LOCAL_RANK" in os.environ)
    config = TrainConfig.from_dict(stage.read_json(args.config), source=str(args.config))
    devices = config.devices
    if devices > 1 and "LOCAL_RANK" not in os.environ:   # not yet under torchrun: relaunch there
        from pipeline import distributed
        code = distributed.relaunch(devices, "pipeline.train", argv, config.device)
        if code != 0:
            raise stage.PipelineError(f"experiment {config.name}: training on {devices} devices failed "
                                      f"(torchrun exit {code}; the ranks' errors are above)")
        return
    train(config, args.prepared, args.stats, args.model, args.live, args.metrics, args.run,
          args.layers, args.experiments)


if __name__ == "__main__":
    stage.cli(main, on_failure=stage.failure_report)
