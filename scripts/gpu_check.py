"""One command for the first GPU: what this project wants measured on CUDA, in one JSON file.

    make gpu-check                                            # = python scripts/gpu_check.py --out benchmarks
    python scripts/gpu_check.py --tiny --device cpu --out /tmp/check   # the same code, tiny (tests/test_gpu_check.py)

Needs no network: the CIFAR-10 JPEG archive at offline/cifar10-jpeg.tar.gz (or --data; docs/design.md: "The
first GPU" says what to copy beside the checkout). Each part runs in a scratch copy of the checkout
(your workspace is left alone), is timed, and is recorded as ok or with its error; the command exits
1 if any part failed. The parts:

1. bench: scripts/bench_train.py, the seeds' loops against the engine (cifarnet_best, ResNet-18 at 224).
2. cifar10: seed 002's two CIFAR-10 experiments (studies/cifar10_local.yaml) on the real CIFAR-10 at
   the seed's protocol (all 50,000 training images, 20 epochs, the last one tested) through
   snakemake: test top-1 beside the seed's figures, and train times.
3. smoke: the seed study at smoke scale on the device (scripts/smoke_workspace.py) through snakemake.
4. deterministic: cifarnet_best_jpeg with `deterministic: true`, trained twice: the same weights and
   history, bit for bit.

--tiny runs each part at a tiny scale (bench: a few steps and images, batches / 8; cifar10:
`smoke: true`; smoke: two of the seed study's experiments; deterministic: one epoch).
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))
from smoke_workspace import copy_checkout, edit_params, seed_smoke  # noqa: E402

CIFAR10 = ("cifarnet_best_jpeg", "cifarnet_worst_jpeg")
TINY_SMOKE = ["tinynet", "resnet18_birds_lastlayer"]


def _env(work: Path) -> dict:
    env = dict(os.environ, TORCH_HOME=str(work / "torch"), TQDM_DISABLE="1")
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"   # this venv's snakemake
    return env


def _snakemake(project: Path, env: dict) -> float:
    start = time.perf_counter()
    p = subprocess.run(["snakemake", "--cores", "all", "--keep-going"], cwd=project, env=env,
                       capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"snakemake failed ({p.returncode}):\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    return time.perf_counter() - start


def bench(args, work: Path) -> dict:
    import bench_train
    argv = ["--data", str(args.data), "--device", args.device]
    argv += ["--steps", "2", "--warmup", "1", "--per-class", "20", "--batch-divisor", "8"] if args.tiny else []
    return bench_train.main(argv)


def cifar10(args, work: Path) -> dict:
    """Seed 002's CIFAR-10 experiments through snakemake; leaves the workspace for `deterministic`."""
    from pipeline import sources
    project = copy_checkout(work / "cifar10")
    env = _env(work)
    subprocess.run([sys.executable, "-m", "pipeline.study", "cifar10_local"], cwd=project, env=env, check=True,
                   capture_output=True)

    def setup(doc):
        doc["device"], doc["smoke"] = args.device, args.tiny
        source = doc["datasets"]["cifar10_jpeg"]["source"]
        source["path"], source["md5"] = str(args.data.resolve()), sources.archives._md5(args.data)
    edit_params(project, setup)
    seconds = _snakemake(project, env)
    study = json.loads((project / "results/configs/study.json").read_text())
    out = {"snakemake_s": round(seconds, 1), "smoke": args.tiny, "experiments": {}}
    for name in CIFAR10:
        d = project / "results/experiments" / name
        train, test, run = (json.loads((d / f).read_text()) for f in ("train.json", "test.json", "run.json"))
        out["experiments"][name] = {
            "test_top1": round(100 * test["test_acc"], 2), "test_loss": round(test["test_loss"], 4),
            "seed_top1": (study["experiments"][name]["reported"] or {}).get("top1"),
            "epochs": train["epochs_run"], "train_time_s": train["train_time_s"],
            "epoch_times_s": run.get("epoch_times_s"), "device": run.get("device")}
    out["project"] = str(project)
    return out


def smoke(args, work: Path) -> dict:
    project = copy_checkout(work / "smoke")
    env = _env(work)
    params = seed_smoke(project, work, env, only=TINY_SMOKE if args.tiny else None)
    edit_params(project, lambda doc: doc.__setitem__("device", args.device))
    seconds = _snakemake(project, env)
    tested = {n: json.loads((project / "results/experiments" / n / "test.json").read_text())["test_acc"]
              for n in params["experiments"]}
    return {"snakemake_s": round(seconds, 1), "experiments": len(tested), "all_tested": len(tested) == len(params["experiments"])}


def deterministic(args, work: Path, cifar10_project: Path) -> dict:
    """cifarnet_best_jpeg's resolved config with `deterministic: true`, trained twice by the train stage."""
    import torch
    from pipeline import live
    project = cifar10_project
    config = json.loads((project / "results/configs/experiments/cifarnet_best_jpeg.json").read_text())
    config.update(deterministic=True, **({"epochs": 1} if args.tiny else {}))
    (work / "det.json").write_text(json.dumps(config))
    runs = []
    for k in (1, 2):
        d = work / f"det{k}"
        cmd = [sys.executable, "-m", "pipeline.train", "--config", str(work / "det.json"),
               "--prepared", "data/prepared/cifar10_jpeg", "--stats", "data/stats/cifar10_jpeg.json",
               "--model", str(d / "model.pt"), "--live", str(d / "live"), "--metrics", str(d / "train.json"),
               "--run", str(d / "run.json"), "--layers", str(d / "layers.csv"), "--experiments", "results/experiments"]
        start = time.perf_counter()
        subprocess.run(cmd, cwd=project, env=_env(work), check=True, capture_output=True)
        runs.append((d, time.perf_counter() - start))
    (a, ta), (b, tb) = runs
    sa, sb = (torch.load(d / "model.pt", map_location="cpu", weights_only=False)["state_dict"] for d in (a, b))
    same_weights = sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    same_history = live.read_history(a / "live").equals(live.read_history(b / "live"))
    return {"epochs": config["epochs"], "seconds": [round(ta, 1), round(tb, 1)],
            "identical_weights": same_weights, "identical_history": same_history,
            "ok": same_weights and same_history}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    default = ROOT / "offline/cifar10-jpeg.tar.gz"
    ap.add_argument("--data", type=Path, default=default if default.is_file() else ROOT.parent / "shared/data/cifar10-jpeg.tar.gz",
                    help="the CIFAR-10 JPEG archive (default: offline/cifar10-jpeg.tar.gz)")
    ap.add_argument("--device", default="cuda", help="cuda (default) | cpu | cuda:N")
    ap.add_argument("--tiny", action="store_true", help="every part at a tiny scale (minutes on a CPU)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks", help="folder for the JSON file")
    args = ap.parse_args(argv)
    if not args.data.is_file():
        sys.exit(f"error: {args.data}: no such file; copy the CIFAR-10 JPEG archive there (docs/design.md: The first GPU)")
    import torch
    started = dt.datetime.now(dt.timezone.utc)
    report = {"command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
              "started": started.isoformat(timespec="seconds"), "device": args.device, "tiny": args.tiny,
              "device_name": (torch.cuda.get_device_name() if args.device.startswith("cuda") and torch.cuda.is_available()
                              else platform.processor() or "cpu"),
              "torch": torch.__version__, "cuda": torch.version.cuda, "python": platform.python_version(),
              "cores": len(os.sched_getaffinity(0)), "parts": {}}
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        work = Path(tmp)
        parts = [("bench", lambda: bench(args, work)), ("cifar10", lambda: cifar10(args, work)),
                 ("smoke", lambda: smoke(args, work)),
                 ("deterministic", lambda: deterministic(args, work, Path(report["parts"]["cifar10"]["project"])))]
        for name, part in parts:
            start = time.perf_counter()
            try:
                result = {"status": "ok", **part()}
                if result.get("ok") is False or result.get("all_tested") is False:
                    result["status"] = "failed"
            except Exception as e:  # noqa: BLE001 - one part's failure is recorded, the rest still run
                result = {"status": "failed", "error": f"{e!r}", "traceback": traceback.format_exc()[-3000:]}
            result["seconds"] = round(time.perf_counter() - start, 1)
            report["parts"][name] = result
            print(f"{name:14s} {result['status']:7s} {result['seconds']:8.1f} s", flush=True)
        report["parts"].get("cifar10", {}).pop("project", None)
    report["seconds"] = round((dt.datetime.now(dt.timezone.utc) - started).total_seconds(), 1)
    slug = re.sub(r"[^a-z0-9]+", "-", report["device_name"].lower()).strip("-") or "device"
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"gpu-check-{slug}-{started:%Y%m%dT%H%M%S}.json"
    path.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {path}")
    return 0 if all(p["status"] == "ok" for p in report["parts"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
