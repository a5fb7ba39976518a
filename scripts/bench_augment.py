"""Milliseconds per batch of each augmentation op on the CPU, against another git revision's
pipeline/augment.py on the same draws, with the largest pixel difference between the two.

    python scripts/bench_augment.py --against HEAD~1 [--threads 2]

Batches: 256 CIFAR-sized images (32 px) and 64 at seed 001's 128 px. A difference of 0 means the
two revisions give the same bytes.
"""
from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from pipeline import augment  # noqa: E402

OPS = [{"name": "crop", "padding": 4}, {"name": "hflip"}, {"name": "grayscale", "p": 0.16},
       {"name": "rotation", "degrees": 30}, {"name": "color_jitter", "brightness": 0.2, "contrast": 0.2},
       {"name": "color_jitter", "brightness": 0.4, "contrast": 0.4, "saturation": 0.4},
       {"name": "random_resized_crop"}]


def module_at(rev: str, folder: Path):
    path = folder / "augment_at_rev.py"
    path.write_text(subprocess.run(["git", "show", f"{rev}:pipeline/augment.py"], cwd=ROOT, check=True,
                                   capture_output=True, text=True).stdout)
    spec = importlib.util.spec_from_file_location("augment_at_rev", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def ms_per_batch(module, op: dict, x: torch.Tensor, repeats: int = 5) -> tuple[float, torch.Tensor]:
    out = module.apply([op], x, torch.Generator().manual_seed(1))
    start = time.perf_counter()
    for _ in range(repeats):
        module.apply([op], x, torch.Generator().manual_seed(1))
    return (time.perf_counter() - start) / repeats * 1000, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--against", required=True, help="git revision to compare with")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        before = module_at(args.against, Path(tmp))
        print(f"{'op':<70} {'batch':>14} {args.against:>10} {'now':>8} {'max diff':>9}")
        for shape in ((256, 3, 32, 32), (64, 3, 128, 128)):
            x = torch.randint(0, 256, shape, dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
            for op in OPS:
                t_before, a = ms_per_batch(before, op, x)
                t_now, b = ms_per_batch(augment, op, x)
                diff = (a.int() - b.int()).abs().max().item()
                print(f"{str(op):<70} {'x'.join(map(str, shape)):>14} {t_before:8.1f}ms {t_now:6.1f}ms {diff:9d}")


if __name__ == "__main__":
    main()
