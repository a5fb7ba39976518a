"""scripts/ops_per_step.py: the operator counts the README quotes, on two seed experiments."""
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_a_step_is_counted_with_its_views_apart_and_augmentation_adds_launches(tmp_path):
    # its own process: the script swaps the imported pipeline package for the revision it counts
    subprocess.run([sys.executable, str(ROOT / "scripts/ops_per_step.py"), "--only", "basenet", "basenet_aug",
                    "--out", str(tmp_path / "ops.json")], check=True, capture_output=True)
    counts = json.loads((tmp_path / "ops.json").read_text())["experiments"]
    plain, aug = counts["basenet"], counts["basenet_aug"]
    for c in (plain, aug):
        assert c["launching"] + c["views"] == c["ops_per_step"] and 0 < c["views"] < c["ops_per_step"]
    # the same net and optimizer: the augmentation (crop, flips, jitter, grayscale) is the difference
    assert aug["launching"] > plain["launching"] + 50
    # the multi-tensor update: a handful of launches for all of basenet's tensors, not a few per tensor
    assert plain["top"].get("add_", 0) < 10
