"""Switching the running study: one command, nothing lost, params.yaml left as DVC writes it."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from pipeline import params as P
from pipeline import study

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    shutil.copytree(ROOT / "studies", tmp_path / "studies")
    return tmp_path


def switch(ws: Path, name: str, **flags) -> dict:
    study.switch(ws / "params.yaml", ws / "studies", name, **flags)
    return P.load(ws / "params.yaml")


@pytest.mark.parametrize("other", ["seed", "cifar10_local"])
def test_a_round_trip_through_any_study_leaves_params_yaml_byte_identical(workspace, other):
    switch(workspace, other)
    switch(workspace, "demo")
    assert (workspace / "params.yaml").read_text() == (ROOT / "params.yaml").read_text()


def test_switching_copies_the_study_and_keeps_the_defaults_and_comments(workspace):
    before = P.load(workspace / "params.yaml")
    after = switch(workspace, "cifar10_local")
    local = P.read_yaml(workspace / "studies/cifar10_local.yaml")
    assert after["study"] == "cifar10_local"
    assert after["experiments"] == local["experiments"] and after["datasets"] == local["datasets"]
    assert {k: after[k] for k in P.training_keys()} == {k: before[k] for k in P.training_keys()}
    text = (workspace / "params.yaml").read_text()
    assert "# float > 0. Learning rate" in text and "# the 20th epoch, as the seed reported it" in text
    # back again: the demo as it was, byte for byte
    switch(workspace, "demo")
    assert (workspace / "params.yaml").read_text() == (ROOT / "params.yaml").read_text()


def test_an_edited_study_is_never_lost(workspace):
    text = (workspace / "params.yaml").read_text()
    (workspace / "params.yaml").write_text(text.replace("model: {name: mlp, hidden: [64]}",
                                                        "model: {name: mlp, hidden: [128]}", 1))
    with pytest.raises(P.ParamsError, match=r"running study 'demo' was edited .* --save .* --discard"):
        switch(workspace, "seed")
    assert P.load(workspace / "params.yaml")["study"] == "demo"            # nothing written
    switch(workspace, "seed", save=True)
    saved = P.read_yaml(workspace / "studies/demo.yaml")
    assert saved["experiments"]["digits_mlp"]["model"]["hidden"] == [128]
    assert saved["description"].startswith("cheap experiments covering")          # the file's own keys kept
    assert switch(workspace, "demo")["experiments"]["digits_mlp"]["model"]["hidden"] == [128]


def test_unknown_and_invalid_studies_are_one_line(workspace):
    with pytest.raises(P.ParamsError, match=r"studies/nope.yaml: no such study file \(studies: cifar10_local, demo, seed\)"):
        switch(workspace, "nope")
    (workspace / "studies/bad.yaml").write_text(
        "datasets: {d: {source: {kind: sklearn_digits}, test_fraction: 0.2, val_fraction: 0.2, split_seed: 0}}\n"
        "experiments: {x: {dataset: d, model: {name: mlp}, lrr: 1}}\n")
    with pytest.raises(P.ParamsError, match=r"studies/bad.yaml: .*did you mean 'lr'"):
        switch(workspace, "bad")


def test_a_switch_names_the_defaults_it_keeps_that_differ_from_the_commit(workspace, capsys):
    """`dvc exp run -S lr=0.01` writes a training default, which belongs to no study: a switch
    (even with --discard) keeps it, and says so, naming it and the committed value."""
    import subprocess
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"],
                ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "study"]):
        subprocess.run(cmd, cwd=workspace, check=True)
    switch(workspace, "seed")
    assert capsys.readouterr().err.rstrip().endswith("The training defaults stay as they are, as committed.")
    switch(workspace, "demo")
    text = (workspace / "params.yaml").read_text()
    (workspace / "params.yaml").write_text(text.replace("\nlr: 0.05 ", "\nlr: 0.01 ", 1))
    for name in ("seed", "demo"):
        after = switch(workspace, name, discard=True)
        assert after["lr"] == 0.01
        assert capsys.readouterr().err.rstrip().endswith(
            "these differ from the last commit: lr: 0.01 (committed: 0.05)")
