"""Seconds per training step/epoch of a seed model on CPU with random CIFAR-sized batches.

    python scripts/bench_cpu_epoch.py --experiment cifarnet_best --steps 5

Uses the experiment's resolved config from studies/seed.yaml with params.yaml's defaults, random uint8 images of the
data set's shape, its augmentation, loss and optimizer; reports the median step time and the
implied time for one epoch of `--train-size` images. A timing, not a test.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # run from anywhere, without installing
from pipeline import augment, inference, params, recipes
from pipeline.config import TrainConfig

SHAPES = {"cifar10": (3, 32, 10), "cifar100": (3, 32, 100), "tiny_imagenet": (3, 64, 200), "cub200": (3, 256, 200)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--experiment", default="cifarnet_best")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--train-size", type=int, default=45_000)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    p = params.load(Path(__file__).resolve().parents[1] / "params.yaml")
    scope = {**p, **params.read_yaml(Path(__file__).resolve().parents[1] / "studies" / "seed.yaml")}
    config = TrainConfig.from_dict({**params.experiment_config(scope, args.experiment), "device": "cpu",
                                     "pretrained": None})
    c, size, k = SHAPES[config.dataset]
    meta = {"channels": c, "image_size": [size, size], "classes": [str(i) for i in range(k)]}
    model = inference.build_model(config, meta, {"mean": [0.5] * c, "std": [0.25] * c})
    optimizer = recipes.make_optimizer(config, model.parameters())
    loss_fn, g = recipes.make_loss(config), torch.Generator().manual_seed(0)
    b = config.batch_size
    x = torch.randint(0, 256, (b, c, size, size), dtype=torch.uint8, generator=g)
    y = torch.randint(0, k, (b,), generator=g)
    model.train()
    times = []
    for _ in range(args.steps + 1):                     # the first step warms up and is not counted
        t = time.perf_counter()
        optimizer.zero_grad()
        loss_fn(model(augment.apply(config.augment, x, g)), y).backward()
        optimizer.step()
        times.append(time.perf_counter() - t)
    step = statistics.median(times[1:])
    print(f"{args.experiment}: batch {b} at {c}x{size}x{size}, {args.threads} threads, torch {torch.__version__}: "
          f"{step:.3f} s/step, {step * args.train_size / b:.0f} s per {args.train_size}-image epoch")


if __name__ == "__main__":
    main()
