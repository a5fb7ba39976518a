"""scripts/gpu_check.py (`make gpu-check`) at a tiny scale on the CPU, so that the one command the
first GPU runs cannot rot: every part runs and records real numbers."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import miniatures as mini
from conftest import ROOT, tool_env

pytestmark = pytest.mark.integration


def jpeg_archive(tmp: Path, train: int = 20, test: int = 4) -> Path:
    """CIFAR-10's JPEG layout (cifar10-jpeg/{train,test}/<class>/NNNN.jpg, 32 px), a few per class."""
    path = tmp / "cifar10-jpeg.tar.gz"
    members = {f"cifar10-jpeg/{split}/class{c}/{i:04d}.jpg": mini.image_bytes(c, (32, 32), "JPEG")
               for split, n in (("train", train), ("test", test)) for c in range(10) for i in range(n)}
    return mini.write_tar(path, members)


def test_the_gpu_check_runs_every_part_at_a_tiny_scale_on_the_cpu(tmp_path):
    out = tmp_path / "benchmarks"
    p = subprocess.run([sys.executable, "scripts/gpu_check.py", "--tiny", "--device", "cpu",
                        "--data", str(jpeg_archive(tmp_path)), "--out", str(out)],
                       cwd=ROOT, env=tool_env(), capture_output=True, text=True, timeout=1800)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    [path] = out.glob("gpu-check-*.json")
    report = json.loads(path.read_text())
    assert report["device"] == "cpu" and report["tiny"] and report["torch"]
    parts = report["parts"]
    assert {name: part["status"] for name, part in parts.items()} == dict.fromkeys(
        ("bench", "cifar10", "smoke", "deterministic"), "ok"), parts

    bench = {row["case"]: row for row in parts["bench"]["results"]}
    assert set(bench) == {"cifarnet_best", "resnet18_224"}
    for row in bench.values():   # the ratios are the recorded throughputs' quotients, to 3 significant figures
        assert min(row["seeds_images_s"], row["engine_fp32_images_s"], row["engine_bf16_images_s"]) > 0
        assert row["ratio_data_path"] == pytest.approx(row["engine_fp32_images_s"] / row["seeds_images_s"], rel=5e-3)
        assert row["ratio_precision"] == pytest.approx(row["engine_bf16_images_s"] / row["engine_fp32_images_s"], rel=5e-3)
        assert row["ratio_total"] == pytest.approx(row["engine_auto_images_s"] / row["seeds_images_s"], rel=5e-3)
        assert row["ratio_total_with_prepare"] <= row["ratio_total"]
    assert parts["bench"]["train_images"] == 200 and parts["bench"]["engine_prepare_s"] > 0

    cifar10 = parts["cifar10"]["experiments"]
    assert set(cifar10) == {"cifarnet_best_jpeg", "cifarnet_worst_jpeg"}
    assert cifar10["cifarnet_best_jpeg"]["seed_top1"] == 86.70
    assert all(0 <= e["test_top1"] <= 100 and e["epochs"] == 1 and e["device"] == "cpu" for e in cifar10.values())

    assert parts["smoke"]["experiments"] >= 2 and parts["smoke"]["all_tested"]
    assert parts["deterministic"]["identical_weights"] and parts["deterministic"]["identical_history"]
