"""Training throughput: the seeds' own loops, as they ran, against this pipeline's engine; same device,
model, batch and augmentation, on the real CIFAR-10 (../shared/data/cifar10-jpeg.tar.gz).

    python scripts/bench_train.py --out benchmarks/bench_train.json               # what gpu-check runs
    python scripts/bench_train.py --device cpu --steps 3 --warmup 1 --per-class 40   # a smoke run

The JPEGs are decoded once into CIFAR-10's own python archive (the pickled batches the seeds loaded),
so that both sides read the same pixels the way they did:
(a) the seeds: torchvision's CIFAR10 class (the whole split in memory, PIL per image), their
    transforms, a DataLoader with their workers (2: the course starter, seed 002; 4: seed 003),
    fp32 NCHW, the loss read back every step as their loops did;
(b) the engine: the pipeline's download + prepare + stats of that archive (timed: a one-time cost),
    then uint8 images resident on the device, batched per-sample augmentation there, no host sync
    per step; run three times: fp32, bf16 autocast, and its defaults (`precision: auto`: bf16 on
    CUDA, fp32 on the CPU; channels_last on CUDA).
Cases: seed 002's cifarnet_best (32 px, batch 256, RandomCrop(32, padding=4) + horizontal flip,
0.5/0.5 normalisation, 20 epochs) and seed 003's ResNet-18 at 224 px (batch 64,
RandomResizedCrop(224) + horizontal flip, ImageNet normalisation, 14 epochs).
Three ratios per case: data path (engine fp32 / seeds, both fp32), precision (engine bf16 / engine
fp32), total (engine defaults / seeds); and the total with the engine's prepare cost spread over the
seed's epochs. Also the engine's TFLOP/s (torch.utils.flop_counter). Writes all of it, with the
device, versions and command, to --out.
"""
from __future__ import annotations

import argparse
import dataclasses
import io
import json
import os
import pickle
import platform
import shlex
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from pipeline import data, engine, inference, params, recipes  # noqa: E402
from pipeline.config import TrainConfig  # noqa: E402

CASES = {   # model -> the seed's batch, workers, epochs, normalisation; the engine's recipe keys
    "cifarnet_best": {"batch": 256, "workers": 2, "epochs": 20, "model": {"name": "cifarnet_best"},
                      "input_size": None, "normalize": "half",
                      "augment": [{"name": "crop", "padding": 4}, {"name": "hflip"}]},
    "resnet18_224": {"batch": 64, "workers": 4, "epochs": 14, "model": {"name": "tv_resnet", "arch": "resnet18"},
                     "input_size": 224, "normalize": "imagenet",
                     "augment": [{"name": "random_resized_crop"}, {"name": "hflip"}]},
}
MEAN_STD = {"half": ([0.5] * 3, [0.5] * 3), "imagenet": ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])}


def seeds_transform(case: str):
    from torchvision import transforms as T
    geometry = [T.RandomCrop(32, padding=4)] if case == "cifarnet_best" else [T.RandomResizedCrop(224)]
    return T.Compose([*geometry, T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(*MEAN_STD[CASES[case]["normalize"]])])


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def seeds_cifar10(source: dict, raw: Path, transform):
    """torchvision's CIFAR10 as the seed loaded it, over the raw folder the download stage verified:
    its member md5s are those recorded then (the bench's archive is a cut of the real one)."""
    from pipeline.sources import cifar
    tv, md5s = cifar._tv_class("cifar10"), cifar._expected_md5s(source, raw)
    verified = type(tv.__name__, (tv,), {"train_list": [[n, md5s[n]] for n, _ in tv.train_list],
                                         "test_list": [[n, md5s[n]] for n, _ in tv.test_list],
                                         "meta": {**tv.meta, "md5": md5s[tv.meta["filename"]]}})
    return verified(root=raw, train=True, transform=transform)


def seeds_loop(case: str, cfg: TrainConfig, meta: dict, dataset, device, steps, warmup) -> float:
    """images/s of the seed's DataLoader loop (fp32, NCHW, loss.item() each step)."""
    from torch.utils.data import DataLoader
    loader = DataLoader(dataset, batch_size=cfg.batch_size, shuffle=True, num_workers=CASES[case]["workers"],
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


def _plain_net(cfg: TrainConfig, meta: dict, device):
    """The registered model alone (no normalise/resize front: the seeds' transforms did that)."""
    from pipeline import models
    size = cfg.input_size or meta["image_size"][0]
    return models.build(cfg.model, meta["channels"], (size, size), len(meta["classes"])).to(device)


def engine_loop(cfg: TrainConfig, prepared: Path, stats: dict, device, steps, warmup) -> tuple[float, float]:
    """(images/s, TFLOP/s) of the engine's own epoch loop over (warmup + steps) batches."""
    meta = data.load_meta(prepared)
    split = data.load_split(prepared, "train", device)
    n = (warmup + steps) * cfg.batch_size
    model = inference.build_model(cfg, meta, stats).to(device)
    nhwc, precision = inference.channels_last(model, device), inference.autocast(cfg, device)
    if nhwc:
        model = model.to(memory_format=torch.channels_last)
    optimizer = recipes.make_optimizer(cfg, model.parameters())
    loss_fn = recipes.make_loss(cfg)
    g, ag = torch.Generator().manual_seed(0), torch.Generator().manual_seed(1)
    step = engine.Step(model, loss_fn, optimizer, precision, nhwc)
    run = lambda k: engine.run_epoch(step, data.Split(split.images[:k], split.labels[:k]), cfg,  # noqa: E731
                                     {"shuffle": g, "augment": ag}, "engine")
    run(warmup * cfg.batch_size)                   # cuDNN autotuning, allocator warm-up
    sync(device)
    start = time.perf_counter()
    run(n - warmup * cfg.batch_size)
    sync(device)
    images_s = (n - warmup * cfg.batch_size) / (time.perf_counter() - start)
    return images_s, images_s * flops_per_image(model, cfg, split, loss_fn, precision, nhwc) / 1e12


def flops_per_image(model, cfg, split, loss_fn, precision, nhwc) -> float:
    """FLOPs of one training step (forward + backward) per image, as torch's flop counter sees them."""
    from torch.utils.flop_counter import FlopCounterMode
    x, y = split.images[:cfg.batch_size], split.labels[:cfg.batch_size]
    with FlopCounterMode(display=False) as counter, precision:
        loss_fn(model(data.memory_format(x, nhwc)), y).backward()
    return counter.get_total_flops() / len(y)


def cifar_archive(jpegs: Path, out: Path, per_class: int | None) -> Path:
    """CIFAR-10's python archive (cifar-10-python.tar.gz: data_batch_1..5, test_batch, batches.meta)
    holding the JPEG archive's decoded images; `per_class` keeps that many training images per class."""
    from PIL import Image
    files: dict[str, bytes] = {}
    with tarfile.open(jpegs) as tar:   # in the archive's order: a .tar.gz cannot seek back cheaply
        for m in tar:
            if m.isfile() and m.name.endswith(".jpg"):
                files[m.name] = tar.extractfile(m).read()
    classes = sorted({name.split("/")[-2] for name in files})
    splits: dict[str, list] = {"train": [], "test": []}
    taken: dict[tuple, int] = {}
    for name in sorted(files):
        split, cls = name.split("/")[-3], name.split("/")[-2]
        if per_class and taken.get((split, cls), 0) >= (per_class if split == "train" else max(1, per_class // 5)):
            continue
        taken[(split, cls)] = taken.get((split, cls), 0) + 1
        img = np.asarray(Image.open(io.BytesIO(files[name])).convert("RGB"))
        if img.shape != (32, 32, 3):
            raise SystemExit(f"error: {jpegs}: {name} is {img.shape[1]}x{img.shape[0]}, not CIFAR's 32x32")
        splits[split].append((img.transpose(2, 0, 1).reshape(-1), classes.index(cls)))
    members = {}
    train = splits["train"]
    for b in range(5):   # CIFAR's row layout: R plane, G plane, B plane
        part = train[b::5]
        members[f"cifar-10-batches-py/data_batch_{b + 1}"] = {
            "batch_label": f"training batch {b + 1} of 5", "labels": [label for _, label in part],
            "data": np.stack([row for row, _ in part]), "filenames": [f"{b}_{i}.png" for i in range(len(part))]}
    members["cifar-10-batches-py/test_batch"] = {
        "batch_label": "testing batch 1 of 1", "labels": [label for _, label in splits["test"]],
        "data": np.stack([row for row, _ in splits["test"]]), "filenames": [f"t{i}.png" for i in range(len(splits["test"]))]}
    members["cifar-10-batches-py/batches.meta"] = {"label_names": classes, "num_cases_per_batch": 10000, "num_vis": 3072}
    path = out / "cifar-10-python.tar.gz"
    with tarfile.open(path, "w:gz", compresslevel=1) as tar:
        for name, obj in members.items():
            blob = pickle.dumps(obj)
            info = tarfile.TarInfo(name)
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    return path


def engine_data(archive: Path, work: Path) -> tuple[dict, Path, dict, float]:
    """The pipeline's own download, prepare and stats of the archive (val split 0, as seed 002 ran):
    (source, prepared folder, stats, seconds taken)."""
    from pipeline.prepare import prepare
    from pipeline.sources import archives, fetch
    from pipeline.stats import channel_stats
    source = {"kind": "cifar10", "archive_dir": str(archive.parent), "md5": archives._md5(archive)}
    start = time.perf_counter()
    fetch(source, work / "raw")
    prepare({"source": source, "val_fraction": 0, "split_seed": 0}, work / "raw", work / "prepared")
    stats = channel_stats(np.load(work / "prepared" / "train_images.npy", mmap_mode="r"))
    return source, work / "prepared", stats, time.perf_counter() - start


def sig(x: float, digits: int) -> float:
    """x rounded to `digits` significant figures (monotone: a <= b gives sig(a) <= sig(b))."""
    return float(f"{x:.{digits}g}")


def measure(case: str, defaults: dict, meta: dict, seeds_data, prepared: Path, stats: dict, prepare_s: float,
            device, steps: int, warmup: int, batch_divisor: int = 1) -> dict:
    c = CASES[case]
    batch = max(1, c["batch"] // batch_divisor)
    cfg = TrainConfig.from_dict({**defaults, "name": case, "dataset": "cifar10", "device": str(device), "lr": 0.01,
                                 "batch_size": batch, "model": c["model"], "input_size": c["input_size"],
                                 "augment": c["augment"], "normalize": c["normalize"]})
    engine.seed_everything(0, device)
    seeds = seeds_loop(case, cfg, meta, seeds_data, device, steps, warmup)
    ours = {p: engine_loop(dataclasses.replace(cfg, precision=p), prepared, stats, device, steps, warmup)
            for p in ("fp32", "bf16", "auto")}
    epoch_images = meta["counts"]["train"]
    amortised = epoch_images / (epoch_images / ours["auto"][0] + prepare_s / c["epochs"])
    # Throughputs to 4 significant figures (at a tiny scale they are well under 1 image/s) and the
    # ratios from those recorded figures, to 3: a reader's own division gives the ratio shown.
    seeds_rec, rec = sig(seeds, 4), {p: sig(v[0], 4) for p, v in ours.items()}
    row = {"case": case, "batch": batch, "seeds_workers": c["workers"], "epochs": c["epochs"],
           "seeds_images_s": seeds_rec,
           **{f"engine_{p}_images_s": v for p, v in rec.items()},
           "engine_auto_tflops": round(ours["auto"][1], 3),
           "ratio_data_path": sig(rec["fp32"] / seeds_rec, 3),
           "ratio_precision": sig(rec["bf16"] / rec["fp32"], 3),
           "ratio_total": sig(rec["auto"] / seeds_rec, 3),
           "ratio_total_with_prepare": sig(sig(amortised, 4) / seeds_rec, 3)}
    print(f"{case:14s} seeds {seeds:8.1f} img/s | engine fp32 {ours['fp32'][0]:8.1f}  bf16 {ours['bf16'][0]:8.1f}  "
          f"auto {ours['auto'][0]:8.1f} | data path {row['ratio_data_path']}x  precision {row['ratio_precision']}x  "
          f"total {row['ratio_total']}x ({row['ratio_total_with_prepare']}x with prepare)", flush=True)
    return row


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared/data/cifar10-jpeg.tar.gz",
                    help="the CIFAR-10 JPEG archive (class folders under train/ and test/)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--models", nargs="+", default=list(CASES), choices=list(CASES))
    ap.add_argument("--steps", type=int, default=50, help="timed steps per loop")
    ap.add_argument("--warmup", type=int, default=10, help="untimed steps first")
    ap.add_argument("--per-class", type=int, help="training images per class (default: all 5,000)")
    ap.add_argument("--batch-divisor", type=int, default=1, help="the seeds' batch sizes divided by this (tiny runs)")
    ap.add_argument("--out", type=Path, help="write the figures here (JSON)")
    args = ap.parse_args(argv)
    device = inference.pick_device(args.device)
    defaults = {k: v for k, v in params.load(ROOT / "params.yaml").items()
                if k in params.training_keys()}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        start = time.perf_counter()
        archive = cifar_archive(args.data, tmp, args.per_class)
        decode_s = time.perf_counter() - start
        source, prepared, stats, prepare_s = engine_data(archive, tmp / "engine")
        meta = data.load_meta(prepared)
        rows = []
        for case in args.models:
            seeds_data = seeds_cifar10(source, tmp / "engine/raw", seeds_transform(case))
            rows.append(measure(case, defaults, meta, seeds_data, prepared, stats, prepare_s, device,
                                args.steps, args.warmup, args.batch_divisor))
    result = {"command": " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv)),
              "device": str(device),
              "device_name": torch.cuda.get_device_name() if device.type == "cuda" else platform.processor() or "cpu",
              "cores": len(os.sched_getaffinity(0)), "torch": torch.__version__, "cuda": torch.version.cuda,
              "steps": args.steps, "warmup": args.warmup, "train_images": meta["counts"]["train"],
              "jpeg_decode_s": round(decode_s, 1), "engine_prepare_s": round(prepare_s, 1), "results": rows}
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    main()
