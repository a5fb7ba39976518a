"""The demo's experiments trained briefly on the CPU: the reference that engine changes must
reproduce bit for bit (fp32 on a CPU is the pipeline's reproducibility baseline).

    python tests/cpu_reference.py --write      # regenerate tests/data/cpu_histories.json

Only regenerate when a change is *meant* to alter CPU numbers, and say so in the commit.
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
REFERENCE = ROOT / "tests" / "data" / "cpu_histories.json"
EPOCHS = 2


def digits_prepared(out: Path, sizes: tuple[int, int, int] = (200, 100, 100)) -> Path:
    """A prepared data set in the pipeline's format: real 8x8 digit scans, `sizes` train/val/test."""
    from sklearn.datasets import load_digits
    x, y = load_digits(return_X_y=True)
    images = (x.reshape(-1, 8, 8, 1) * 255 / 16).astype(np.uint8)
    out.mkdir(parents=True, exist_ok=True)
    a, b, c = np.cumsum(sizes)
    for split, sl in (("train", slice(0, a)), ("val", slice(a, b)), ("test", slice(b, c))):
        np.save(out / f"{split}_images.npy", images[sl])
        np.save(out / f"{split}_labels.npy", y[sl].astype(np.int64))
    (out / "meta.json").write_text(json.dumps({"classes": [str(i) for i in range(10)], "image_size": [8, 8],
                                               "channels": 1}))
    (out / "stats.json").write_text(json.dumps({"mean": [0.3], "std": [0.35]}))
    return out


def demo_params() -> dict:
    """params.yaml's defaults with the demo study, every experiment at EPOCHS epochs on the CPU."""
    from pipeline import params as P
    p = copy.deepcopy(P.load(ROOT / "params.yaml"))
    p.update({k: v for k, v in P.read_yaml(ROOT / "studies" / "demo.yaml").items() if k in ("datasets", "experiments")})
    p.update(epochs=EPOCHS, device="cpu", threads=1)   # a float sum's order depends on the thread count
    for e in p["experiments"].values():
        e.pop("epochs", None)
        e.pop("early_stopping", None)
    return p


def histories(work: Path) -> dict[str, list[dict]]:
    """Train every demo experiment in order (parents first), on one CPU thread; its per-epoch
    history rows (pipeline/live.py's log), as text."""
    from pipeline import engine, live
    from pipeline import params as P
    from pipeline.config import TrainConfig
    prepared = digits_prepared(work / "prepared")
    stats = json.loads((prepared / "stats.json").read_text())
    p, out = demo_params(), {}
    for name in p["experiments"]:
        d = work / "experiments" / name
        d.mkdir(parents=True)
        config = TrainConfig.from_dict(P.experiment_config(p, name))
        engine.fit(config, prepared, stats, engine.TrainOutputs.in_folder(d, layers=False),
                   engine.parent_checkpoint(config, work / "experiments"))
        frame = live.read_history(d / "live")
        frame[["train_acc", "val_acc"]] /= 100                   # the reference's fractions (to its tolerance)
        out[name] = [{k: repr(int(v) if k == "epoch" else v) for k, v in row.items()} for row in frame.to_dict("records")]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--write", action="store_true", help=f"write {REFERENCE.relative_to(ROOT)}")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        result = histories(Path(tmp))
    text = json.dumps(result, indent=1) + "\n"
    if args.write:
        REFERENCE.write_text(text)
    else:
        sys.stdout.write(text)


if __name__ == "__main__":
    main()
