"""Operators per training step of every seed experiment: what a GPU would launch, counted on the CPU.

    python scripts/ops_per_step.py --out benchmarks/ops_per_step.json
    python scripts/ops_per_step.py --code /tmp/before --out before.json    # another revision's engine

Each experiment of studies/seed.yaml (and cifar10_local's) is resolved with this checkout's
params (smoke sizes off), then one training step of the engine in --code (default: this checkout)
runs on random images of its data set's shape, under a TorchDispatchMode that counts every ATen
operator dispatched: forward, backward, optimizer and the batch's augmentation, each of which is
one or more kernel launches on a GPU. The optimizer is counted as CUDA runs it (torch's default
there: the multi-tensor `foreach` update, a few launches for all the tensors; the CPU's default
loops over them one by one). The step is counted as the difference between a 2-step and a
1-step epoch (so the epoch's own start and end are not in it). On the CPU with fp32, so autocast's
casts (CUDA, bf16) are not in the count. ImageNet weights are not needed: the same model with
random weights dispatches the same operators; nor the real batch: every operator works on the whole
batch, so a batch of 4 dispatches as many as the recipe's (recorded beside the count).
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COUNT_BATCH = 4
SIZES = {"cifar10": (32, 10), "cifar100": (32, 100), "tiny_imagenet": (64, 200), "cub200": (256, 200)}


def configs() -> dict[str, tuple[dict, dict]]:
    """experiment -> (resolved config, meta of its data set's shape), from this checkout."""
    sys.path.insert(0, str(ROOT))
    from pipeline import params as P
    base = P.load(ROOT / "tests/data/params.yaml")
    for study in ("seed", "cifar10_local"):
        doc = P.read_yaml(ROOT / "studies" / f"{study}.yaml")
        base["datasets"].update(doc["datasets"])
        base["experiments"].update(doc["experiments"])
    base["experiments"] = {n: e for n, e in base["experiments"].items() if not n.startswith("digits")}
    out = {}
    for name in base["experiments"]:
        config = P.experiment_config(base, name)
        ds = P.dataset_config(base, config["dataset"])
        kind = ds["source"]["kind"]
        size, classes = SIZES.get(kind, (ds.get("image_size", 32), 10))
        size = ds.get("image_size", size)
        config.update(pretrained=None, device="cpu", precision="auto", compile=False, threads=1)
        out[name] = (config, {"classes": [str(k) for k in range(classes)], "image_size": [size, size], "channels": 3})
    for module in [m for m in sys.modules if m == "pipeline" or m.startswith("pipeline.")]:
        del sys.modules[module]          # the engine counted may be another revision's
    sys.path.remove(str(ROOT))
    return out


def count_step(config: dict, meta: dict) -> tuple[int, int, Counter]:
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode
    from pipeline import data, engine, recipes
    try:    # engines from the typed config on (issue 39) take one; older ones the resolved dict
        from pipeline.config import TrainConfig
    except ImportError:
        TrainConfig = None

    class Count(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.ops, self.views = Counter(), 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.ops[func.overloadpacket.__name__] += 1
            self.views += func.is_view   # a view changes metadata only: no kernel
            return func(*args, **(kwargs or {}))

    device = torch.device("cpu")
    torch.set_num_threads(1)
    stats = {"mean": [0.5] * 3, "std": [0.25] * 3}
    size, b = meta["image_size"][0], COUNT_BATCH
    config = {**config, "batch_size": b}
    config = TrainConfig.from_dict(config) if TrainConfig else config
    model, nhwc, precision = engine._model_on(device, config, meta, stats, None)
    optimizer = recipes.make_optimizer(config, [p for p in model.parameters() if p.requires_grad])
    for group in optimizer.param_groups:   # as on CUDA, where torch defaults to the multi-tensor (foreach)
        group["foreach"] = True            # update; on the CPU it would loop over the tensors one by one
    loss_fn = recipes.make_loss(config)
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (2 * b, 3, size, size), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, len(meta["classes"]), (2 * b,), generator=g)
    counts = []
    for steps in (1, 2):
        split = data.Split(images[: steps * b], labels[: steps * b])
        with Count() as counter:
            g = {"shuffle": torch.Generator().manual_seed(1), "augment": torch.Generator().manual_seed(2)}
            if hasattr(engine, "Step"):     # the engine's step as one value (issue 39 on)
                engine.run_epoch(engine.Step(model, loss_fn, optimizer, precision, nhwc), split, config, g, "count")
            else:
                engine.run_epoch(model, split, loss_fn, optimizer, config, g["shuffle"], g["augment"], "count",
                                 precision, nhwc)
        counts.append((counter.ops, counter.views))
    per_step, views = counts[1][0] - counts[0][0], counts[1][1] - counts[0][1]
    return sum(per_step.values()), views, per_step


def revision(code: Path) -> str:
    """The commit of the checkout counted (its folder where it is not a git checkout)."""
    import subprocess
    proc = subprocess.run(["git", "-C", str(code), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return proc.stdout.strip() if proc.returncode == 0 else str(code)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--code", type=Path, default=ROOT, help="checkout whose engine is counted (default: this one)")
    ap.add_argument("--only", nargs="+", help="these experiments only")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    todo = configs()
    sys.path.insert(0, str(args.code.resolve()))
    result = {}
    for name, (config, meta) in todo.items():
        if args.only and name not in args.only:
            continue
        n, views, ops = count_step(config, meta)
        result[name] = {"ops_per_step": n, "launching": n - views, "views": views, "batch": config["batch_size"],
                        "top": dict(ops.most_common(5))}
        print(f"{name:28s} {n:6d} ops/step, {n - views:5d} launching  (batch {config['batch_size']}; "
              f"{', '.join(f'{k} {v}' for k, v in ops.most_common(4))})", flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"code": revision(args.code), "experiments": result}, indent=1) + "\n")
    return result


if __name__ == "__main__":
    main()
