"""The typed config (pipeline/config.py) against the schema it is read by: one field per training
key, each of the type the schema allows; every study's configs read and written back unchanged;
a damaged config file refused in one line; no stage restating a default."""
from __future__ import annotations

import dataclasses
import re
import types
import typing

import pytest

from conftest import ROOT, unit_params
from pipeline import params as P
from pipeline.config import TrainConfig

RESOLVED = {"name", "dataset", "model", "parent", "replicate"}   # what an experiment or params adds
PYTHON = {"integer": int, "number": float, "boolean": bool, "string": str, "null": type(None),
          "array": list, "object": dict}


def schema_types(node: dict) -> set[type]:
    """The Python types a value of this schema node can have (a `number` field is a float, which
    by Python's convention takes an int too)."""
    if "enum" in node or "const" in node:
        return {type(v) for v in node.get("enum", [node.get("const")])}
    if "oneOf" in node:
        return set().union(*(schema_types(n) for n in node["oneOf"]))
    if "if" in node:
        return schema_types(node["then"]) | schema_types(node["else"])
    if "$ref" in node:
        return {dict}     # the scheduler's and others' own schemas: objects
    kinds = node["type"] if isinstance(node["type"], list) else [node["type"]]
    return {PYTHON[k] for k in kinds}


def field_types(annotation) -> set[type]:
    args = typing.get_args(annotation) if isinstance(annotation, types.UnionType) else (annotation,)
    return {typing.get_origin(a) or a for a in args}


def test_one_field_per_training_key_of_the_type_the_schema_allows():
    training = P.load_schema()["$defs"]["training"]["properties"]
    hints = typing.get_type_hints(TrainConfig)
    assert set(hints) - RESOLVED == set(training)
    for key in set(hints) - RESOLVED:
        assert field_types(hints[key]) == schema_types(training[key]), key
    # every training key must be given: its default lives in params.yaml, nowhere else
    required = {f.name for f in dataclasses.fields(TrainConfig) if f.default is dataclasses.MISSING}
    assert required == set(hints) - {"parent", "replicate"}


def every_study() -> list[tuple[str, dict]]:
    """(study, params) for the unit params and each studies/*.yaml under params.yaml's defaults."""
    base = P.load(ROOT / "params.yaml")
    out = [("unit", unit_params())]
    for path in sorted((ROOT / "studies").glob("*.yaml")):
        doc = P.read_yaml(path)
        out.append((path.stem, {**base, "datasets": doc["datasets"], "experiments": doc["experiments"]}))
    return out


@pytest.mark.parametrize("study, params", every_study(), ids=[s for s, _ in every_study()])
def test_every_config_of_every_study_reads_and_writes_back_unchanged(study, params):
    for smoke in (False, True):
        scope = {**params, "smoke": smoke}
        for name in scope["experiments"]:
            for config in [P.experiment_config(scope, name), *P.replicate_configs(scope, name)]:
                typed = TrainConfig.from_dict(config)
                assert typed.to_dict() == config and list(typed.to_dict()) == sorted(config)
                assert typed.sha256 == P.config_hash(config)     # the digest every output carries


@pytest.mark.parametrize("change, message", [
    (lambda c: {**c, "lrr": 0.1}, r"^cfg\.json: unknown key 'lrr': .* rerun the configure stage"),
    (lambda c: {k: v for k, v in c.items() if k != "epochs"}, r"^cfg\.json: 'epochs' is missing: .* configure stage"),
    (lambda c: {**c, "replicates": 3}, r"^cfg\.json: unknown key 'replicates'"),      # a run count: no run's config
    (lambda c: {**c, "epochs": "10"}, r"^cfg\.json: epochs: '10' is not of type 'integer'"),
    (lambda c: {**c, "lr": float("nan")}, r"^cfg\.json: lr: nan is not a finite number"),
    (lambda c: {**c, "scheduler": {"name": "step"}}, r"^cfg\.json: scheduler: 'step_size' is a required property"),
    (lambda c: {**c, "model": {"name": "lenet", "chanels": [4]}}, r"^cfg\.json: model: .*'chanels'"),
    (lambda c: [c], r"^cfg\.json: not a config .* rerun the configure stage"),
])
def test_a_damaged_config_is_one_error_naming_the_file_and_key(change, message):
    config = P.experiment_config(unit_params(), "digits_mlp")
    with pytest.raises(P.ParamsError, match=message):
        TrainConfig.from_dict(change(config), source="cfg.json")


def test_no_stage_restates_a_default():
    """Below params.py (which resolves the config), a training key is read from the TrainConfig:
    never `.get("lr", 0.1)`, whose second argument would be a second default."""
    pattern = re.compile(r"\.get\(\s*[\"'](" + "|".join(P.training_keys()) + r")[\"']\s*,")
    found = [f"{path.relative_to(ROOT)}:{i}: {line.strip()}"
             for path in sorted((ROOT / "pipeline").rglob("*.py")) if path.name != "params.py"
             for i, line in enumerate(path.read_text().splitlines(), 1) if pattern.search(line)]
    assert found == []


def test_frozen():
    config = TrainConfig.from_dict(P.experiment_config(unit_params(), "digits_mlp"))
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.lr = 1.0
    assert dataclasses.replace(config, lr=1.0).lr == 1.0 and config.lr != 1.0
