"""A copy of the project set up for the seed study's smoke run, with no host reachable: the study
switched to `seed` (cifar10_local's experiments folded in), `smoke: true`, official-format
miniature archives in data/downloads/ (their checksums given as a mirror's, `source.md5`), a
miniature CIFAR-10 JPEG archive for cifar10_local, and random weights with torchvision's exact keys
in torchvision's cache layout under <root>/torch (TORCH_HOME), so that the real loading code runs.

Used by tests/test_seed_smoke.py and scripts/gpu_check.py (which runs it on CUDA).
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
import miniatures as mini  # noqa: E402

ARCHIVES = {"cifar10": mini.cifar10, "tiny_imagenet": mini.tiny_imagenet, "cub200": mini.cub200,
            # 10 a class: a 10% val split keeps one of each of the 100 classes
            "cifar100": lambda folder: mini.cifar100(folder, train_per_class=10)}
# each writes its official file name into the folder given


INSTALLED = (".dvc/plots-offline.html",)   # written by `make install` (git-ignored): part of a set-up checkout


def copy_checkout(dest: Path) -> Path:
    """The checkout's tracked and untracked-but-not-ignored files (what a clean checkout plus work in
    progress has) and what `make install` wrote, in a fresh git repository."""
    import shutil
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True,
                           text=True, check=True).stdout.split("\n")
    for f in [*filter(None, files), *INSTALLED]:
        if (ROOT / f).is_file():
            (dest / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / f, dest / f)
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"],
                ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "copy"]):
        subprocess.run(cmd, cwd=dest, check=True, capture_output=True)
    return dest


def stand_in_weights(torch_home: Path, archs: set[str]) -> None:
    import torch
    import torchvision
    from pipeline.models import tv_resnet
    for arch in sorted(archs):
        # TORCH_HOME for this look-up only: torch.hub.set_dir would stay in force for the rest of
        # the process (a test worker's later tests included), whatever TORCH_HOME they set
        before = os.environ.get("TORCH_HOME")
        os.environ["TORCH_HOME"] = str(torch_home)
        try:
            _, path = tv_resnet.weights_file(arch)
        finally:
            if before is None:
                os.environ.pop("TORCH_HOME")
            else:
                os.environ["TORCH_HOME"] = before
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(torchvision.models.get_model(arch, weights=None).state_dict(), path)


def edit_params(project: Path, change) -> None:
    """Edit params.yaml as a user would (ruamel's round trip keeps the comments)."""
    from ruamel.yaml import YAML
    yaml = YAML()
    path = project / "params.yaml"
    doc = yaml.load(path)
    change(doc)
    yaml.dump(doc, path)


def seed_smoke(project: Path, root: Path, env: dict, only: list[str] | None = None) -> dict:
    """Set `project` up for the smoke run (see the module's doc); `only`: keep these experiments
    (and the parents they start from). Returns the params it will run with."""
    from pipeline import params as P
    subprocess.run([sys.executable, "-m", "pipeline.study", "seed"], cwd=project, env=env, check=True)
    downloads = project / "data/downloads"
    downloads.mkdir(parents=True, exist_ok=True)
    md5 = {kind: mini.md5(make(downloads)) for kind, make in ARCHIVES.items()}
    jpeg = mini.tar_of_folder(mini.image_folder(root / "jpeg", {f"c{i}": 6 for i in range(10)}, split_dirs=True),
                              root / "cifar10-jpeg.tar.gz", "cifar10")
    local = P.read_yaml(project / "studies/cifar10_local.yaml")

    def smoke(doc):
        doc["smoke"] = True
        for ds in doc["datasets"].values():
            if ds["source"]["kind"] in md5:
                ds["source"]["md5"] = md5[ds["source"]["kind"]]     # the miniature stands in as a mirror's file
        for name, ds in local["datasets"].items():
            doc["datasets"][name] = {**ds, "source": {"kind": "folder", "path": str(jpeg), "md5": mini.md5(jpeg)}}
        doc["experiments"].update(local["experiments"])
        if only:
            keep, todo = set(), list(only)
            while todo:
                name = todo.pop()
                keep.add(name)
                parent = doc["experiments"][name].get("pretrained")
                if parent not in (None, "imagenet"):
                    todo.append(parent)
            for name in [n for n in doc["experiments"] if n not in keep]:
                del doc["experiments"][name]
                doc["replicates"].pop(name, None)
            used = {e["dataset"] for e in doc["experiments"].values()}
            for name in [d for d in doc["datasets"] if d not in used]:
                del doc["datasets"][name]
    edit_params(project, smoke)
    params = P.load(project / "params.yaml")
    stand_in_weights(root / "torch", {e["model"]["arch"] for e in params["experiments"].values()
                                      if e.get("pretrained") == "imagenet"})
    return params
