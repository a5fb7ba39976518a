"""The configure stage's per-job config files and evaluate's metric arithmetic."""
from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from conftest import unit_params
from pipeline import configure, evaluate, imports, models
from pipeline import params as P
from pipeline.config import TrainConfig
from pipeline.stage import PipelineError

ROOT = Path(__file__).resolve().parents[1]


def test_configure_writes_one_file_per_job_and_keeps_unchanged_ones(tmp_path):
    params = unit_params()
    inherits = [n for n, e in params["experiments"].items() if "lr" not in e]
    own = [n for n, e in params["experiments"].items() if "lr" in e]
    out, links = tmp_path / "configs", tmp_path / "sources"
    written = configure.configure(params, out, links)
    manifests = len(configure.code_files(params))    # each stage's code, per model for an experiment's
    assert len(written) == 1 + 3 * len(params["datasets"]) + len(params["experiments"]) + manifests   # + a link each
    assert manifests == 4 + 2 * len(models.MODELS)
    assert not (out / "replicates").exists()   # every experiment runs once here: no replicate job, no config
    for n in params["experiments"]:
        assert json.loads((out / f"experiments/{n}.json").read_text()) == P.experiment_config(params, n)
    ds = next(iter(params["datasets"]))
    assert json.loads((out / f"datasets/{ds}.source.json").read_text()) == params["datasets"][ds]["source"]
    study = json.loads((out / "study.json").read_text())
    assert list(study["experiments"]) == list(params["experiments"])          # params.yaml's order
    assert configure.configure(params, out, links) == []                     # nothing rewritten

    # a new global lr: exactly the configs of the experiments that inherit it, and study.json (the
    # report's record of each experiment's config digest)
    params = {**params, "lr": params["lr"] * 2}
    written = configure.configure(params, out, links)
    assert sorted(written) == sorted([str(out / "study.json"), *(str(out / f"experiments/{n}.json") for n in inherits)])
    assert own and not set(written) & {str(out / f"experiments/{n}.json") for n in own}

    # an experiment run 3 times: its replicate job's config (runs 1 and 2) and code manifest, and
    # study.json (the runs' digests); nothing else. Run once again: both removed
    n = own[0]
    written = configure.configure({**params, "replicates": {n: 3}}, out, links)
    assert sorted(written) == sorted(str(out / f) for f in ("study.json", f"replicates/{n}.json", f"code/replicate/{n}.json"))
    runs = json.loads((out / f"replicates/{n}.json").read_text())["runs"]
    assert [(r["replicate"], r["seed"]) for r in runs] == [(1, params["seed"] + 1), (2, params["seed"] + 2)]
    families, model = imports.model_families(), params["experiments"][n]["model"]["name"]
    code = json.loads((out / f"code/replicate/{n}.json").read_text())
    assert "pipeline/replicate.py" in code and set(code) & set(families.values()) == {families[model]}
    configure.configure(params, out, links)
    assert not (out / f"replicates/{n}.json").exists() and not (out / f"code/replicate/{n}.json").exists()

    # an experiment removed from the study: its config goes too
    gone = inherits[0]
    fewer = {**params, "experiments": {n: e for n, e in params["experiments"].items() if n != gone}}
    fewer = {**fewer, "experiments": {n: {k: v for k, v in e.items() if k != "pretrained" or v != gone}
                                      for n, e in fewer["experiments"].items()}}
    configure.configure(fewer, out, links)
    assert not (out / f"experiments/{gone}.json").exists()


def test_a_folder_source_is_linked_and_its_listing_changes_with_any_file_inside(tmp_path):
    import miniatures as mini
    photos = mini.image_folder(tmp_path / "photos", {"cat": 3, "dog": 3})
    params = {**unit_params(), "datasets": {
        "pets": {"source": {"kind": "folder", "path": str(photos)}, "test_fraction": 0.3, "val_fraction": 0,
                 "split_seed": 0},
        "digits": {"source": {"kind": "sklearn_digits"}, "test_fraction": 0.2, "val_fraction": 0.2, "split_seed": 0}},
        "experiments": {"e": {"dataset": "pets", "model": {"name": "mlp"}, "checkpoint": "last"}}}
    out, links = tmp_path / "configs", tmp_path / "sources"
    configure.configure(params, out, links)
    assert (links / "pets").resolve() == photos.resolve()
    assert not (links / "digits").is_symlink() and "no local files" in (links / "digits").read_text()
    source = out / "datasets/pets.source.json"
    digest = json.loads(source.read_text())["listing_sha256"]
    assert configure.configure(params, out, links) == []
    (photos / "dog" / "001.jpg").unlink()                  # one image deep inside, top folder untouched
    assert configure.configure(params, out, links) == [str(source)]
    assert json.loads(source.read_text())["listing_sha256"] != digest
    (photos / "cat" / "new.png").write_bytes(mini.image_bytes(0, fmt="PNG"))
    assert configure.configure(params, out, links) == [str(source)]
    del params["datasets"]["digits"]                          # a data set leaves the study: its link too
    configure.configure(params, out, links)
    assert sorted(p.name for p in links.iterdir()) == ["pets"]
    shutil.rmtree(photos)
    with pytest.raises(PipelineError, match=r"datasets.pets.source.path: .* does not exist"):
        configure.configure(params, out, links)


@pytest.mark.parametrize("replace", ["cp -p", "rsync -a --checksum", "touch -r"])
def test_a_replacement_keeping_size_and_mtime_changes_the_listing(tmp_path, replace):
    """The three ways a user replaces an image while keeping its size and modification time (plain
    `rsync -a` skips a file of the same size and mtime: --checksum makes it look)."""
    import miniatures as mini
    photos = mini.image_folder(tmp_path / "photos", {"cat": 3, "dog": 3})
    target = photos / "dog" / "001.jpg"
    new = tmp_path / "new.jpg"
    new.write_bytes(bytes(255 - b for b in target.read_bytes()))     # other bytes, the same size
    os.utime(new, ns=(target.stat().st_atime_ns, target.stat().st_mtime_ns))
    before, stat = configure.listing_digest(photos), target.stat()
    if replace == "touch -r":                                       # written in place, then its time put back
        old = tmp_path / "old.jpg"
        shutil.copy2(target, old)
        target.write_bytes(new.read_bytes())
        subprocess.run(["touch", "-r", str(old), str(target)], check=True)
    else:
        subprocess.run([*replace.split(), str(new), str(target)], check=True)
    after = target.stat()
    assert (after.st_size, after.st_mtime_ns) == (stat.st_size, stat.st_mtime_ns)
    assert target.read_bytes() == new.read_bytes()
    assert configure.listing_digest(photos) != before


def test_a_fine_tuned_experiment_carries_its_parents_config(tmp_path):
    params = unit_params()
    child = next(n for n, e in params["experiments"].items() if e.get("pretrained") not in (None, "imagenet"))
    parent = params["experiments"][child]["pretrained"]
    cfg = P.experiment_config(params, child)
    assert cfg["parent"]["config"] == P.experiment_config(params, parent)
    changed = {**params, "experiments": {**params["experiments"],
                                         parent: {**params["experiments"][parent], "seed": 99}}}
    assert P.experiment_config(changed, child) != cfg      # so DVC retrains the child as well
    # configure resolves each experiment once, a child's parent from the parent's own: the same configs
    assert P.experiment_configs(params) == {n: P.experiment_config(params, n) for n in params["experiments"]}
    assert P.experiment_configs(changed)[child] == P.experiment_config(changed, child) != cfg


def test_scores_match_hand_computed_metrics():
    classes = ["a", "b", "c"]
    logits = np.array([[2.0, 1.0, 0.0],    # pred a, true a
                       [0.0, 3.0, 1.0],    # pred b, true c
                       [0.0, 0.0, 5.0],    # pred c, true c
                       [1.0, 0.5, 0.0]])   # pred a, true b
    labels = np.array([0, 2, 2, 1])
    s = evaluate.scores(logits, labels, classes)
    assert s["test_acc"] == 0.5
    assert s["per_class_acc"] == {"a": 1.0, "b": 0.0, "c": 0.5}
    assert s["confusion"].tolist() == [[1, 0, 0], [1, 0, 0], [0, 1, 1]]
    assert s["pred"].tolist() == [0, 1, 2, 0]
    expected_loss = np.mean([-(l[t] - math.log(np.exp(l).sum())) for l, t in zip(logits, labels)])
    assert math.isclose(s["test_loss"], expected_loss, rel_tol=1e-9)
    assert s["test_top5"] == 1.0                              # k = min(5, 3 classes): always right


def test_two_classes_and_a_class_missing_from_the_test_split_score():
    logits = np.array([[2.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    s = evaluate.scores(logits, np.array([0, 1, 1]), ["cat", "dog"])
    assert s["test_acc"] == 2 / 3 and s["test_top5"] == 1.0
    assert s["per_class_acc"] == {"cat": 1.0, "dog": 0.5}
    # 7 classes, class 6 absent from the test labels: top-5 still counts over all 7 columns
    logits = np.tile(np.arange(7.0), (2, 1))           # ranks 6 > 5 > ... > 0
    s = evaluate.scores(logits, np.array([1, 5]), [str(i) for i in range(7)])
    assert s["test_top5"] == 0.5                        # 5 is in the top 5, 1 is not
    assert math.isnan(s["per_class_acc"]["6"]) and s["per_class_acc"]["5"] == 0.0


def test_a_two_class_folder_data_set_runs_through_evaluate_and_the_report(tmp_path):
    import miniatures as mini
    from pipeline import download, engine, prepare, report, stats
    photos = mini.image_folder(tmp_path / "photos", {"cat": 9, "dog": 9}, split_dirs=True)
    params = {**unit_params(), "study": "pets", "epochs": 1, "batch_size": 4,
              "datasets": {"pets": {"source": {"kind": "folder", "path": str(photos)}, "image_size": 8,
                                    "channels": 3, "val_fraction": 0.2, "split_seed": 0}},
              "experiments": {"pets_lenet": {"dataset": "pets", "model": {"name": "lenet"}}}}
    P.validate(params)
    configs = tmp_path / "results/configs"
    configure.configure(params, configs, tmp_path / "data/sources")
    read = lambda rel: json.loads((configs / rel).read_text())  # noqa: E731
    data, exp = tmp_path / "data", tmp_path / "results/experiments/pets_lenet"
    download.download(read("datasets/pets.source.json"), data / "raw/pets")
    prepare.prepare(read("datasets/pets.json"), data / "raw/pets", data / "prepared/pets", workers=1)
    stats.stats(data / "prepared/pets", data / "stats/pets.json")
    engine.fit(TrainConfig.from_dict(read("experiments/pets_lenet.json")), data / "prepared/pets",
               json.loads((data / "stats/pets.json").read_text()), engine.TrainOutputs.in_folder(exp))
    result = evaluate.evaluate(exp / "model.pt", data / "prepared/pets", exp / "test.json", exp / "per_class.csv",
                               exp / "predictions.csv", exp / "confusion.csv")
    assert result["test_top5"] == 1.0 and 0 <= result["test_acc"] <= 1
    ctx = report.report(read("study.json"), tmp_path / "results/experiments", data / "prepared", data / "stats",
                        tmp_path / "results/report.html", root=tmp_path)
    assert ctx["n_ok"] == 1
    html = (tmp_path / "results/report.html").read_text()
    assert f"test top-1 {100 * result['test_acc']:.1f}%" in html
