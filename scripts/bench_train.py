"""Training throughput: the seeds' own loop against this pipeline's engine, same device, same model,
batch size and augmentation, on the real CIFAR-10 JPEGs.

    python scripts/bench_train.py --data ../shared/data/cifar10-jpeg.tar.gz --out benchmarks/bench_train.json
    python scripts/bench_train.py --device cpu --models cifarnet_best --steps 3 --warmup 1   # a smoke run

(a) the seeds' way: torchvision ImageFolder over the extracted JPEG folders, a DataLoader (one worker
    per core, pinned memory), PIL transforms, fp32, the loss read back every step as their loops did;
(b) the engine with its defaults (params.yaml): uint8 images resident on the device, batched
    per-sample augmentation there, bf16 autocast and channels_last on CUDA, no host sync per step.
Cases: cifarnet_best at 32 px, batch 256, RandomCrop(32, padding=4) + horizontal flip; torchvision
ResNet-18 at 224 px, batch 64, Resize(256) + RandomResizedCrop(224) + horizontal flip. Prints
images/s of each and the ratio, and the engine's achieved TFLOP/s (FLOPs of one training step
counted by torch.utils.flop_counter); writes them with the device, versions and command to --out.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from pipeline import data, engine, inference, params, recipes  # noqa: E402
from pipeline.prepare import prepare  # noqa: E402

CASES = {   # model -> batch, seeds' torchvision transforms, the engine's recipe keys
    "cifarnet_best": {"batch": 256, "model": {"name": "cifarnet_best"}, "input_size": None,
                      "augment": [{"name": "crop", "padding": 4}, {"name": "hflip"}]},
    "resnet18_224": {"batch": 64, "model": {"name": "tv_resnet", "arch": "resnet18"}, "input_size": 224,
                     "augment": [{"name": "random_resized_crop"}, {"name": "hflip"}]},
}


def seeds_transform(case: str, mean, std):
    from torchvision import transforms as T
    geometry = ([T.RandomCrop(32, padding=4)] if case == "cifarnet_best"
                else [T.Resize(256), T.RandomResizedCrop(224)])
    return T.Compose([*geometry, T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(mean, std)])


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def seeds_loop(case: str, cfg: dict, meta: dict, stats: dict, train_dir: Path, device, steps, warmup) -> float:
    """images/s of the seeds' DataLoader loop (fp32, NCHW, loss.item() each step)."""
    from torch.utils.data import DataLoader
    from torchvision.datasets import ImageFolder
    workers = len(os.sched_getaffinity(0))
    ds = ImageFolder(str(train_dir), transform=seeds_transform(case, stats["mean"], stats["std"]))
    loader = DataLoader(ds, batch_size=cfg["batch_size"], shuffle=True, num_workers=workers,
                        pin_memory=device.type == "cuda", drop_last=True, persistent_workers=True)
    net = _plain_net(cfg, meta, device)
    optimizer = recipes.make_optimizer(cfg, net.parameters())
    loss_fn = torch.nn.CrossEntropyLoss()
    net.train()
    it, done, start = iter(loader), 0, None
    for step in range(warmup + steps):
        if step == warmup:
            sync(device)
            start = time.perf_counter()
        x, y = next(it)
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        optimizer.zero_grad()
        loss = loss_fn(net(x), y)
        loss.backward()
        optimizer.step()
        loss.item()                                   # the seeds printed a running loss
        done += len(y) if step >= warmup else 0
    sync(device)
    return done / (time.perf_counter() - start)


def _plain_net(cfg: dict, meta: dict, device):
    """The registered model alone (no normalise/resize front: the seeds' transforms did that)."""
    from pipeline import models
    size = cfg["input_size"] or meta["image_size"][0]
    return models.build(cfg["model"], meta["channels"], (size, size), len(meta["classes"])).to(device)


def engine_loop(cfg: dict, prepared: Path, stats: dict, device, steps, warmup) -> tuple[float, float]:
    """(images/s, TFLOP/s) of the engine's own epoch loop over (warmup + steps) batches."""
    meta = data.load_meta(prepared)
    split = data.load_split(prepared, "train", device)
    n = (warmup + steps) * cfg["batch_size"]
    model = inference.build_model(cfg, meta, stats).to(device)
    nhwc, precision = inference.channels_last(model, device), inference.autocast(cfg, device)
    if nhwc:
        model = model.to(memory_format=torch.channels_last)
    optimizer = recipes.make_optimizer(cfg, model.parameters())
    loss_fn = recipes.make_loss(cfg)
    g, ag = torch.Generator().manual_seed(0), torch.Generator().manual_seed(1)
    run = lambda k: engine.run_epoch(model, data.Split(split.images[:k], split.labels[:k]), loss_fn,  # noqa: E731
                                     optimizer, cfg, g, ag, "engine", precision, nhwc)
    run(warmup * cfg["batch_size"])                   # cuDNN autotuning, allocator warm-up
    sync(device)
    start = time.perf_counter()
    run(n - warmup * cfg["batch_size"])
    sync(device)
    images_s = (n - warmup * cfg["batch_size"]) / (time.perf_counter() - start)
    return images_s, images_s * flops_per_image(model, cfg, split, loss_fn, precision, nhwc) / 1e12


def flops_per_image(model, cfg, split, loss_fn, precision, nhwc) -> float:
    """FLOPs of one training step (forward + backward) per image, as torch's flop counter sees them."""
    from torch.utils.flop_counter import FlopCounterMode
    x, y = split.images[:cfg["batch_size"]], split.labels[:cfg["batch_size"]]
    with FlopCounterMode(display=False) as counter, precision:
        loss_fn(model(data.memory_format(x, nhwc)), y).backward()
    return counter.get_total_flops() / len(y)


def dataset(archive: Path, work: Path) -> tuple[Path, Path, dict]:
    """The JPEG train folders (extracted, for the seeds' ImageFolder) and the pipeline's prepared form."""
    from pipeline.stats import channel_stats
    import numpy as np
    with tarfile.open(archive) as tar:
        tar.extractall(work / "jpeg", filter="data")
    train_dir = next(p for p in (work / "jpeg").rglob("train") if p.is_dir())
    cfg = {"source": {"kind": "folder", "path": str(archive)}, "image_size": 32, "val_fraction": 0.1,
           "split_seed": 0}
    from pipeline.sources import fetch
    (work / "raw").mkdir()
    fetch(cfg["source"], work / "raw")
    prepare(cfg, work / "raw", work / "prepared")
    stats = channel_stats(np.load(work / "prepared" / "train_images.npy", mmap_mode="r"))
    return train_dir, work / "prepared", stats


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared/data/cifar10-jpeg.tar.gz")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--models", nargs="+", default=list(CASES), choices=list(CASES))
    ap.add_argument("--steps", type=int, default=50, help="timed steps per loop")
    ap.add_argument("--warmup", type=int, default=10, help="untimed steps first")
    ap.add_argument("--out", type=Path, help="write the figures here (JSON)")
    args = ap.parse_args()
    device = inference.pick_device(args.device)
    defaults = {k: v for k, v in params.load(ROOT / "params.yaml").items() if k in params.training_keys()}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        train_dir, prepared, stats = dataset(args.data, Path(tmp))
        meta = data.load_meta(prepared)
        for case in args.models:
            c = CASES[case]
            cfg = {**defaults, "name": case, "dataset": "cifar10_jpeg", "device": str(device), "lr": 0.01,
                   "batch_size": c["batch"], "model": c["model"], "input_size": c["input_size"],
                   "augment": c["augment"], "normalize": "dataset"}
            engine.seed_everything(0, device)
            seeds = seeds_loop(case, cfg, meta, stats, train_dir, device, args.steps, args.warmup)
            ours, tflops = engine_loop(cfg, prepared, stats, device, args.steps, args.warmup)
            rows.append({"case": case, "batch": c["batch"], "seeds_images_s": round(seeds, 1),
                         "engine_images_s": round(ours, 1), "ratio": round(ours / seeds, 2),
                         "engine_tflops": round(tflops, 2),
                         "engine_precision": "bf16" if isinstance(inference.autocast(cfg, device), torch.autocast) else "fp32",
                         "engine_channels_last": device.type == "cuda"})
            print(f"{case:14s} batch {c['batch']:3d}  seeds' loop {seeds:9.1f} img/s  engine {ours:9.1f} img/s  "
                  f"ratio {ours / seeds:5.2f}x  engine {tflops:6.2f} TFLOP/s", flush=True)
    result = {"command": " ".join(shlex.quote(a) for a in sys.argv), "device": str(device),
              "device_name": torch.cuda.get_device_name() if device.type == "cuda" else platform.processor() or "cpu",
              "cores": len(os.sched_getaffinity(0)), "torch": torch.__version__,
              "cuda": torch.version.cuda, "steps": args.steps, "warmup": args.warmup, "results": rows}
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
