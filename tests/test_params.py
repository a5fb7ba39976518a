"""params.yaml validation and resolution: every bad input gets one line naming the key."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from conftest import unit_params
from pipeline import params as P

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def good() -> dict:
    return unit_params()


def broken(good: dict, edit) -> dict:
    p = copy.deepcopy(good)
    edit(p)
    return p


def first_experiment(p: dict) -> dict:
    return next(iter(p["experiments"].values()))


@pytest.mark.parametrize("edit, expected", [
    (lambda p: p.update(lrr=0.1), "(top level): Additional properties are not allowed ('lrr' was unexpected)"),
    (lambda p: p.pop("lr"), "'lr' is a required property"),
    (lambda p: p.update(lr=0), "lr: 0 is less than or equal to the minimum of 0"),
    (lambda p: p.update(lr=-0.1), "lr: -0.1 is less than or equal to the minimum of 0"),
    (lambda p: p.update(lr="fast"), "lr: 'fast' is not of type 'number'"),
    (lambda p: p.update(lr=float("nan")), "lr: nan is not a finite number; set a number"),   # YAML .nan
    (lambda p: p.update(lr=float("inf")), "lr: inf is not a finite number"),
    (lambda p: first_experiment(p).update(lr=float("inf")), "experiments.digits_mlp.lr: inf is not a finite number"),
    (lambda p: p["datasets"]["digits"].update(val_fraction=float("nan")), "datasets.digits.val_fraction: nan is not"),
    (lambda p: p.update(epochs=0), "epochs: 0 is less than the minimum of 1"),
    (lambda p: p.update(batch_size=-4), "batch_size: -4 is less than the minimum of 1"),
    (lambda p: p.update(optimizer="adagrad"), "optimizer: 'adagrad' is not one of"),
    (lambda p: p.update(device="tpu"), "device: 'tpu' does not match"),
    (lambda p: p.update(precision="fp16"), "precision: 'fp16' is not one of ['auto', 'fp32', 'bf16']"),
    (lambda p: first_experiment(p).update(precision="half"), "precision: 'half' is not one of"),
    (lambda p: p.update(compile="yes"), "compile: 'yes' is not one of [False, True, 'reduce-overhead']"),
    (lambda p: p.update(deterministic=1), "deterministic: 1 is not of type 'boolean'"),
    (lambda p: p["datasets"]["digits"].update(val_fraction=1.0), "datasets.digits.val_fraction: 1.0 is greater than or equal to the maximum of 1"),
    (lambda p: p["datasets"]["digits"].update(val_fraction=-0.1), "datasets.digits.val_fraction: -0.1 is less than the minimum of 0"),
    (lambda p: p.update(checkpoint="best"), "checkpoint: 'best' is not one of ['best_val', 'last']"),
    (lambda p: p.update(normalize="unit"), "normalize: 'unit' is not one of ['dataset', 'imagenet', 'half', 'none']"),
    (lambda p: first_experiment(p).update(reported=57), "reported: 57 is not of type 'object'"),
    (lambda p: first_experiment(p).update(reported={"top1": 57}), "reported: 'split' is a required property"),
    (lambda p: first_experiment(p).update(reported={"split": "train", "top1": 57}), "reported.split: 'train' is not one of ['val', 'test']"),
    (lambda p: first_experiment(p).update(reported={"split": "val", "top1": 57, "chnage": "x"}), "did you mean 'change' for 'chnage'?"),
    (lambda p: first_experiment(p).update(reported={"split": "val", "top1": 5, "base": "nope"}), "reported.base: 'nope' is not an experiment of this study"),
    (lambda p: p["datasets"]["digits"].update(test_per_class=0), "datasets.digits.test_per_class: 0 is less than the minimum of 1"),
    (lambda p: first_experiment(p)["model"].update(name="resnet9000"), "model.name: 'resnet9000' is not one of"),
    (lambda p: first_experiment(p).update(lr=-1), "lr: -1 is less than or equal to the minimum of 0"),
    (lambda p: first_experiment(p).update(learning_rate=0.1), "'learning_rate' was unexpected"),
    (lambda p: first_experiment(p).update(dataset="imagenet21k"), "dataset: unknown data set 'imagenet21k'"),
    (lambda p: first_experiment(p).pop("model"), "'model' is a required property"),
    # replicates: {experiment: runs >= 2}; the count as a training key (before) says where it went
    (lambda p: p.update(replicates={"digits_mlp": 1}), "replicates.digits_mlp: 1 is less than the minimum of 2"),
    (lambda p: p.update(replicates={"digits_mpl": 3}), "replicates.digits_mpl: not an experiment of this study"),
    (lambda p: p.pop("replicates"), "'replicates' is a required property"),
    (lambda p: p.update(replicates=3), "replicates: 3: replicates is a mapping at the top level now"),
    (lambda p: first_experiment(p).update(replicates=3),
     "experiments.digits_mlp.replicates: 3: replicates is a mapping at the top level now, of the experiments run "
     "more than once: `replicates: {<experiment>: <runs>}`"),
])
def test_bad_params_fail_with_the_key_named(good, edit, expected):
    with pytest.raises(P.ParamsError) as e:
        P.validate(broken(good, edit))
    message = str(e.value)
    assert expected in message
    assert "\n" not in message and message.startswith("params.yaml: ")


def test_a_typo_gets_the_closest_key_suggested(good):
    with pytest.raises(P.ParamsError, match=r"\('lrr' was unexpected\) \(did you mean 'lr' for 'lrr'\?\)"):
        P.validate(broken(good, lambda p: p.update(lrr=0.1)))
    with pytest.raises(P.ParamsError, match=r"did you mean 'epochs' for 'epoch'\?"):
        P.validate(broken(good, lambda p: first_experiment(p).update(epoch=3)))


def test_invalid_yaml_is_one_line_naming_the_file(tmp_path):
    f = tmp_path / "params.yaml"
    f.write_text("lr: [0.1\nepochs: 3\n")
    with pytest.raises(P.ParamsError, match=r"params.yaml: not valid YAML: .*line"):
        P.load(f)


@pytest.mark.parametrize("text, expected", [
    ("", "params.yaml: empty (no YAML in it); restore it from git: git checkout "),
    ("# only a comment\n", "params.yaml: empty (no YAML in it); restore it from git: git checkout "),
    (None, "params.yaml: file not found; restore it from git: git checkout "),
    ("lr: 0.1\nlr: 0.2\n", 'params.yaml: not valid YAML: while constructing a mapping in "<unicode string>", line 1, '
                           'column 1 found duplicate key "lr" with value "0.2" (original value: "0.1") in '
                           '"<unicode string>", line 2, column 1'),
])
def test_an_empty_missing_or_twice_keyed_params_file_is_one_line_with_the_fix(tmp_path, text, expected):
    f = tmp_path / "params.yaml"
    if text is not None:
        f.write_text(text)
    with pytest.raises(P.ParamsError) as e:
        P.load(f)
    assert str(e.value).startswith(f"{tmp_path}/{expected}") and "\n" not in str(e.value), str(e.value)
    if text is None or not text.strip(" \n").startswith("lr"):
        assert str(e.value).endswith(f"git checkout {f}")


def test_params_yaml_is_read_as_dvc_reads_it():
    """YAML 1.2, as DVC's parser: no octal `010`, no boolean `yes`/`on`, 1e-3 a number."""
    from dvc.utils.serialize import parse_yaml
    text = "epochs: 010\nnesterov: yes\nx: on\nlr: 1e-3\ny: 1e-05\nz: 0o10\n"
    parsed = P._parse(text)
    assert parsed == parse_yaml(text, "params.yaml") == {"epochs": 10, "nesterov": "yes", "x": "on", "lr": 0.001,
                                                         "y": 1e-05, "z": 8}
    assert yaml.safe_load(text)["epochs"] == 8 and yaml.safe_load(text)["nesterov"] is True   # YAML 1.1's


def test_every_study_file_is_valid_and_the_running_one_is_its_copy():
    from pipeline import study
    live = P.load(ROOT / "params.yaml")                  # the project's own, whatever its defaults
    for path in sorted((ROOT / "studies").glob("*.yaml")):
        study.load_study(path, live)                      # raises on any bad key
    assert not study.edited(live, ROOT / "studies"), "params.yaml's study differs from its file in studies/"


def test_experiment_config_merges_defaults_with_overrides(good):
    p = broken(good, lambda p: p.update(lr=0.123, epochs=7))
    name, exp = next((n, e) for n, e in p["experiments"].items() if "lr" not in e)
    own = next(n for n, e in p["experiments"].items() if "lr" in e)
    cfg = P.experiment_config(p, name)
    assert cfg["lr"] == 0.123 and cfg["epochs"] == 7 and cfg["name"] == name
    assert cfg["model"] == exp["model"] and cfg["dataset"] == exp["dataset"]
    assert P.experiment_config(p, own)["lr"] == p["experiments"][own]["lr"]
    assert set(P.training_keys()) <= set(cfg)
    assert "replicates" not in cfg          # how many runs is no part of how one run trains


def test_replicates_are_the_experiments_config_with_the_next_seeds(good):
    p = broken(good, lambda p: p.update(seed=5))
    name = next(iter(p["experiments"]))
    own = P.experiment_config(p, name)
    assert P.replicate_configs(p, name) == []                        # not in replicates: one run
    p["replicates"][name] = 3
    assert P.experiment_config(p, name) == own                       # run 0 unchanged: nothing retrains
    runs = P.replicate_configs(p, name)
    assert [(r["replicate"], r["seed"]) for r in runs] == [(1, 6), (2, 7)]
    assert [{k: v for k, v in r.items() if k not in ("seed", "replicate")} for r in runs] == [
        {k: v for k, v in own.items() if k != "seed"}] * 2         # nothing else differs
    p["replicates"][name] = 5
    assert P.replicate_configs(p, name)[:2] == runs                  # raising N leaves the first runs as they were


@pytest.mark.parametrize("edit, key, fix", [
    ({}, "checkpoint", "set checkpoint: last"),
    ({"checkpoint": "last", "scheduler": {"name": "plateau"}}, "scheduler", "choose another scheduler"),
    ({"checkpoint": "last", "early_stopping": 3}, "early_stopping", "set early_stopping: 0"),
])
def test_what_needs_a_val_split_fails_on_a_data_set_without_one(good, edit, key, fix):
    def no_val(p):
        p["datasets"]["digits"]["val_fraction"] = 0
        for e in p["experiments"].values():
            e.update(checkpoint="last", early_stopping=0, scheduler={"name": "none"})
        first_experiment(p).update({"checkpoint": "best_val", **edit})
    with pytest.raises(P.ParamsError) as e:
        P.validate(broken(good, no_val))
    name = next(iter(good["experiments"]))
    assert str(e.value).startswith(f"params.yaml: experiments.{name}.{key}: ")
    assert "needs a val split, but data set digits has val_fraction: 0; " + fix in str(e.value)
    ok = broken(good, no_val)
    first_experiment(ok).update(checkpoint="last", scheduler={"name": "none"}, early_stopping=0)
    assert P.validate(ok)


def test_report_only_keys_do_not_reach_the_training_config(good):
    p = broken(good, lambda p: first_experiment(p).update(reported={"split": "test", "top1": 12.5}, description="x"))
    name = next(iter(p["experiments"]))
    cfg = P.experiment_config(p, name)
    assert "reported" not in cfg and "description" not in cfg
    assert cfg == P.experiment_config(good, name)


def test_the_schema_file_is_what_snakemake_validates_against(good):
    from snakemake.utils import validate
    validate(copy.deepcopy(good), str(P.SCHEMA_PATH))          # the good file passes
    with pytest.raises(Exception, match="lrr"):
        validate(broken(good, lambda p: p.update(lrr=1)), str(P.SCHEMA_PATH))


def test_pretrained_must_name_an_earlier_experiment_of_the_study_without_cycles(good):
    name, other = list(good["experiments"])[:2]
    p = broken(good, lambda p: p["experiments"][name].update(pretrained="no_such_run"))
    with pytest.raises(P.ParamsError, match=rf"experiments\.{name}\.pretrained: 'no_such_run' is neither"):
        P.validate(p)

    def cycle(p):
        p["experiments"][name]["pretrained"] = other
        p["experiments"][other]["pretrained"] = name
    with pytest.raises(P.ParamsError, match=rf"chain {name} -> {other} -> {name} is a cycle"):
        P.validate(broken(good, cycle))
    with pytest.raises(P.ParamsError, match=rf"experiments\.{name}\.pretrained: '{other}' is listed after"):
        P.validate(broken(good, lambda p: p["experiments"][name].update(pretrained=other)))
    ok = broken(good, lambda p: p["experiments"][other].update(pretrained=name))
    assert P.validate(ok)["experiments"][other]["pretrained"] == name


def test_the_study_must_be_one_of_the_studies_folder(good, tmp_path):
    (tmp_path / "studies").mkdir()
    (tmp_path / "studies" / "demo.yaml").write_text("datasets: {}\n")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({**good, "study": "demo"}))
    assert P.load(tmp_path / "params.yaml")["study"] == "demo"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({**good, "study": "dmeo"}))
    with pytest.raises(P.ParamsError, match=r"study: 'dmeo' is not a study of .*studies/ \(demo\); set it"):
        P.load(tmp_path / "params.yaml")


def test_a_training_key_is_declared_once(good, monkeypatch):
    """One entry in the schema's $defs/training makes a key a top-level default (required there)
    and a per-experiment override, resolved into the experiment's config."""
    schema = copy.deepcopy(P.load_schema())
    schema["$defs"]["training"]["properties"]["warmup"] = {"type": "integer", "minimum": 0}
    monkeypatch.setattr(P, "load_schema", lambda: schema)
    name = next(iter(good["experiments"]))
    p = broken(good, lambda p: (p.update(warmup=1), p["experiments"][name].update(warmup=3)))
    P.validate(p)
    assert P.experiment_config(p, name)["warmup"] == 3
    with pytest.raises(P.ParamsError, match=r"'warmup' is a required property"):
        P.validate(broken(p, lambda p: p.pop("warmup")))
    with pytest.raises(P.ParamsError, match=r"warmup: -1 is less than the minimum of 0"):
        P.validate(broken(p, lambda p: p["experiments"][name].update(warmup=-1)))


def test_resize_before_crop_needs_an_input_size_no_larger(good):
    name = next(iter(good["experiments"]))
    with pytest.raises(P.ParamsError, match=rf"experiments\.{name}\.resize_before_crop: 200 needs an input_size "
                                            r"no larger \(it is None\)"):
        P.validate(broken(good, lambda p: p["experiments"][name].update(resize_before_crop=200, input_size=None)))
    ok = broken(good, lambda p: p["experiments"][name].update(resize_before_crop=256, input_size=224))
    assert P.validate(ok)["experiments"][name]["resize_before_crop"] == 256


def test_an_ablation_base_must_report_on_its_childs_split(good):
    """A test figure minus a val figure is no change (the report's ablation deltas)."""
    def pair(child_split):
        def edit(p):
            a, b = list(p["experiments"])[:2]
            p["experiments"][a]["reported"] = {"split": "val", "top1": 57}
            p["experiments"][b]["reported"] = {"split": child_split, "top1": 63.5, "base": a}
        return edit
    with pytest.raises(P.ParamsError, match=r"reported\.base: '\w+' reports on val, \w+ on test: a change is only "
                                            r"measured on one split"):
        P.validate(broken(good, pair("test")))
    assert P.validate(broken(good, pair("val")))
