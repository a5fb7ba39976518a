"""Load, validate and resolve params.yaml, the one source of truth for both orchestrators.

Light on purpose (ruamel.yaml + jsonschema only): the Snakefile and every stage import it, and an
up-to-date check must not pay for importing torch.
"""
from __future__ import annotations

import copy
import difflib
import functools
import json
import math
from pathlib import Path

import jsonschema

SCHEMA_PATH = Path(__file__).with_name("params.schema.yaml")
REPORT_ONLY_KEYS = ("description", "reported")


class ParamsError(ValueError):
    """params.yaml is unreadable or invalid; the message names the file and the key."""


def _parse(text: str) -> object:
    """YAML read exactly as DVC reads params.yaml (ruamel's safe loader: YAML 1.2, a duplicate key
    an error), so that both tools see the same values: `010` is 10 and `yes` a string, where
    PyYAML's YAML 1.1 makes them 8 and true."""
    from ruamel.yaml import YAML
    return YAML(typ="safe").load(text)


@functools.cache
def load_schema() -> dict:
    """The parsed schema (cached: read once per process; treat it as read-only)."""
    return _parse(SCHEMA_PATH.read_text())


def training_keys() -> list[str]:
    """The keys that are top-level defaults and per-experiment overrides (lr, epochs, ...): the
    schema's $defs/training, where each is declared once."""
    return list(load_schema()["$defs"]["training"]["properties"])


def _key_path(error: jsonschema.ValidationError) -> str:
    return ".".join(str(p) for p in error.absolute_path) or "(top level)"


def _did_you_mean(error: jsonschema.ValidationError) -> str:
    """For an unknown key, the closest key the schema allows there (a typo'd `lrr` -> `lr`)."""
    if error.validator not in ("additionalProperties", "unevaluatedProperties"):
        return ""
    allowed = list(error.schema.get("properties", {}))
    if error.schema.get("$ref") == "#/$defs/training":   # the top level, an experiment
        allowed += training_keys()
    extra = [k for k in error.instance if k not in allowed]
    hints = [f"did you mean {m[0]!r} for {k!r}?" for k in extra
             if (m := difflib.get_close_matches(k, allowed, n=1))]
    return f" ({'; '.join(hints)})" if hints else ""


def _non_finite(node: object, path: tuple = ()) -> tuple | None:
    """The key path of the first nan or inf (YAML's .nan, .inf), which JSON Schema's `number`
    accepts and no comparison refuses: nan > 0 and nan <= 0 are both false."""
    if isinstance(node, float) and not math.isfinite(node):
        return path
    children = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    return next((found for key, child in children if (found := _non_finite(child, (*path, key))) is not None), None)


def check_schema(instance: object, schema: dict, source: str, prefix: str = "") -> None:
    if (where := _non_finite(instance)) is not None:
        value = functools.reduce(lambda node, key: node[key], where, instance)
        raise ParamsError(f"{source}: {prefix}{'.'.join(map(str, where)) or '(top level)'}: {value} is not a "
                          f"finite number; set a number")
    validator = jsonschema.Draft202012Validator(schema)
    error = jsonschema.exceptions.best_match(validator.iter_errors(instance))
    if error is not None:
        # the same words for an unknown key wherever it is ("unevaluated" is JSON Schema's jargon)
        message = error.message.replace("Unevaluated properties are not allowed", "Additional properties are not allowed")
        raise ParamsError(f"{source}: {prefix}{_key_path(error)}: {message}{_did_you_mean(error)}")


def validate(params: object, source: str = "params.yaml") -> dict:
    """Return params if they satisfy the schema and cross-references; else raise ParamsError."""
    _check_old_replicates(params, source)
    check_schema(params, load_schema(), source)
    missing = [key for key in training_keys() if key not in params]
    if missing:
        raise ParamsError(f"{source}: (top level): {missing[0]!r} is a required property: every training key has "
                          f"its default at the top level (see the schema's $defs/training)")
    check_study(params, params, source)
    return params


def _check_old_replicates(params: object, source: str) -> None:
    """`replicates: N` as a training key (a default, or an experiment's own) became the top-level
    mapping `replicates: {<experiment>: N}`: say so, rather than the schema's words for the types."""
    if not isinstance(params, dict):
        return
    experiments = params.get("experiments") if isinstance(params.get("experiments"), dict) else {}
    old = [(f"experiments.{name}.replicates", exp["replicates"]) for name, exp in experiments.items()
           if isinstance(exp, dict) and "replicates" in exp]
    if "replicates" in params and not isinstance(params["replicates"], dict):
        old.insert(0, ("replicates", params["replicates"]))
    if old:
        key, value = old[0]
        raise ParamsError(f"{source}: {key}: {value!r}: replicates is a mapping at the top level now, of the "
                          f"experiments run more than once: `replicates: {{<experiment>: <runs>}}` (runs >= 2; "
                          f"`replicates: {{}}` for none); move each experiment's count there")


def check_study(study: dict, defaults: dict, source: str) -> None:
    """Cross-references of a study (its data sets, `pretrained:` parents and replicated
    experiments) the schema cannot see."""
    for name in study.get("replicates", {}):
        if name not in study["experiments"]:
            raise ParamsError(f"{source}: replicates.{name}: not an experiment of this study; name one of its "
                              f"experiments, or remove the entry")
    for name, exp in study["experiments"].items():
        if exp["dataset"] not in study["datasets"]:
            known = ", ".join(sorted(study["datasets"]))
            raise ParamsError(f"{source}: experiments.{name}.dataset: unknown data set {exp['dataset']!r}; "
                              f"define it under datasets: (known: {known})")
    _check_pretrained(study["experiments"], defaults.get("pretrained"), source)
    _check_val_split(study, defaults, source)
    for name, exp in study["experiments"].items():
        crop, size = (exp.get(k, defaults.get(k)) for k in ("resize_before_crop", "input_size"))
        if crop is not None and (size is None or crop < size):
            raise ParamsError(f"{source}: experiments.{name}.resize_before_crop: {crop} needs an input_size no "
                              f"larger (it is {size}); set input_size, or resize_before_crop: null")
    for name, exp in study["experiments"].items():
        reported = exp.get("reported") or {}
        base = reported.get("base")
        if base is not None and base not in study["experiments"]:
            raise ParamsError(f"{source}: experiments.{name}.reported.base: {base!r} is not an experiment of "
                              f"this study; name the experiment this one changes")
        base_split = (study["experiments"].get(base, {}).get("reported") or {}).get("split", reported.get("split"))
        if base is not None and base_split != reported["split"]:
            raise ParamsError(f"{source}: experiments.{name}.reported.base: {base!r} reports on {base_split}, "
                              f"{name} on {reported['split']}: a change is only measured on one split; "
                              f"name a base reported on {reported['split']}, or drop base")


def _check_val_split(study: dict, defaults: dict, source: str) -> None:
    """What needs a val split (the best-val checkpoint, a plateau schedule, early stopping) fails on
    a data set without one (val_fraction: 0), before any work."""
    for name, exp in study["experiments"].items():
        dataset = exp["dataset"]
        if study["datasets"][dataset]["val_fraction"] > 0:
            continue
        value = {k: exp.get(k, defaults.get(k)) for k in ("checkpoint", "scheduler", "early_stopping")}
        problems = [("checkpoint", value["checkpoint"] != "last", "set checkpoint: last"),
                    ("scheduler", (value["scheduler"] or {}).get("name") == "plateau", "choose another scheduler"),
                    ("early_stopping", bool(value["early_stopping"]), "set early_stopping: 0")]
        for key, bad, fix in problems:
            if bad:
                raise ParamsError(f"{source}: experiments.{name}.{key}: {json.dumps(value[key])} needs a val split, "
                                  f"but data set {dataset} has val_fraction: 0; {fix} for {name}, or give "
                                  f"{dataset} a val_fraction")


def _check_pretrained(experiments: dict, default: str | None, source: str) -> None:
    """`pretrained:` is null, imagenet, or an experiment listed before this one, with no cycle.

    "Before": DVC's foreach cannot declare the parent's checkpoint as a dependency, and runs stages
    in the order they are listed, so the parent is trained first (see configure's `parent` key).
    """
    order = {name: i for i, name in enumerate(experiments)}

    def parent(name):
        value = experiments[name].get("pretrained", default)
        return None if value in (None, "imagenet") else value
    for name in experiments:
        seen, node = [name], parent(name)
        while node is not None:
            if node not in experiments:
                raise ParamsError(
                    f"{source}: experiments.{seen[-1]}.pretrained: {node!r} is neither imagenet nor "
                    f"an experiment of this study; name one of: {', '.join(experiments)}")
            if node in seen:
                raise ParamsError(
                    f"{source}: experiments.{name}.pretrained: the chain {' -> '.join(seen + [node])} "
                    f"is a cycle; an experiment can only start from one that does not start from it")
            seen.append(node)
            node = parent(node)
    for name in experiments:
        node = parent(name)
        if node is not None and order[node] > order[name]:
            raise ParamsError(f"{source}: experiments.{name}.pretrained: {node!r} is listed after {name!r}; "
                              f"move it above, so that it is trained first")


def read_yaml(path: str | Path, fix: str = "") -> object:
    """Parse a YAML file; a missing, empty or malformed file is one ParamsError naming it (and
    `fix`, what to do where it is missing or empty)."""
    from ruamel.yaml import YAMLError
    path = Path(path)
    try:
        doc = _parse(path.read_text())
    except FileNotFoundError:
        raise ParamsError(f"{path}: file not found{fix}") from None
    except YAMLError as e:
        why = " ".join(str(e).split("To suppress this check")[0].split())   # (ruamel's hint to allow duplicates)
        raise ParamsError(f"{path}: not valid YAML: {why}") from None
    if doc is None:
        raise ParamsError(f"{path}: empty (no YAML in it){fix}")
    return doc


def load(path: str | Path) -> dict:
    """Read and validate a params file. Beside a studies/ folder, `study:` must name one of its files
    (the study the experiments below were copied from: pipeline.study compares and saves to it)."""
    params = validate(read_yaml(path, fix=f"; restore it from git: git checkout {path}"), source=str(path))
    studies = Path(path).parent / "studies"
    if studies.is_dir() and not (studies / f"{params['study']}.yaml").is_file():
        known = ", ".join(sorted(p.stem for p in studies.glob("*.yaml")))
        raise ParamsError(f"{path}: study: {params['study']!r} is not a study of {studies}/ ({known}); set it to "
                          f"the study these experiments belong to, or create {studies}/{params['study']}.yaml")
    return params


# `smoke: true`: every size of the running study shrunk, every code path kept, so that a whole study
# runs in minutes on a CPU (CI runs the seed study so). Figures from it say nothing.
SMOKE = {"epochs": 1,             # each experiment trains one epoch
         "input_size": 64,        # at most: the smallest input every seed model takes (tinynet_deeper's
                                  # six 2x2 pools need 64); the seeds' 128 and 224 px shrink to it
         "image_size": 64,        # at most, where a data set sets one (CUB's 256)
         "train_per_class": 2,    # at most, per data set: no batch of the seed recipes is then a
                                  # lone image (BatchNorm trains on 2 or more)
         "test_per_class": 2,
         "replicates": 2}         # at most: one further run keeps the replicate stage's path (and its jobs)


def _smoke_sizes(config: dict, keys: tuple[str, ...]) -> None:
    for key in keys:
        if key == "epochs":
            config[key] = SMOKE[key]
        elif key in ("train_per_class", "test_per_class"):
            config[key] = min(config.get(key) or SMOKE[key], SMOKE[key])
        elif config.get(key):
            config[key] = min(config[key], SMOKE[key])


def experiment_config(params: dict, name: str, resolved: dict[str, dict] | None = None) -> dict:
    """The experiment's resolved config: top-level defaults merged with its own overrides.

    An experiment fine-tuned from another one (`pretrained: <experiment>`) carries that one's
    resolved config and data set entry under `parent`: whatever retrains the parent changes the
    child's config too, so both tools retrain the child, though DVC cannot list the checkpoint.
    `resolved`: configs already resolved, by name (a parent's is taken from there, not resolved
    again; see experiment_configs).
    """
    if name not in params["experiments"]:
        raise ParamsError(f"unknown experiment {name!r}; known: {', '.join(sorted(params['experiments']))}")
    exp = copy.deepcopy(params["experiments"][name])
    for key in REPORT_ONLY_KEYS:  # editing these must not retrain this run
        exp.pop(key, None)
    config = {key: params[key] for key in training_keys()}
    config.update(exp)
    config["name"] = name
    if params["smoke"]:
        full = config["input_size"]
        _smoke_sizes(config, ("epochs", "input_size"))
        if config["resize_before_crop"]:      # the same geometry, scaled: 256 -> 224 becomes 73 -> 64
            config["resize_before_crop"] = round(config["resize_before_crop"] * config["input_size"] / full)
    if config["pretrained"] not in (None, "imagenet"):
        parent = config["pretrained"]
        parent_config = (resolved or {}).get(parent) or experiment_config(params, parent, resolved)
        config["parent"] = {"config": parent_config,
                            "dataset": dataset_config(params, params["experiments"][parent]["dataset"])}
    return dict(sorted(config.items()))


def experiment_configs(params: dict) -> dict[str, dict]:
    """Every experiment's resolved config, by name, each resolved once: a child's `parent` holds
    its parent's (listed above it: checked), the same dict, so treat them as read-only."""
    resolved: dict[str, dict] = {}
    for name in params["experiments"]:
        resolved[name] = experiment_config(params, name, resolved)
    return resolved


def training_value(params: dict, name: str, key: str):
    """One training key of an experiment: its own, else the top level's (where every default is).
    experiment_config resolves them all; this reads one, at the cost of a lookup (the Snakefile's
    per-job functions)."""
    return params["experiments"][name].get(key, params[key])


def run_count(params: dict, name: str) -> int:
    """How many runs the experiment has: its entry in `replicates`, else 1 (at smoke scale at most
    SMOKE's, which is 2 or more: the replicate jobs are the same at either scale)."""
    n = params["replicates"].get(name, 1)
    return min(n, SMOKE["replicates"]) if params["smoke"] else n


def replicate_configs(params: dict, name: str, config: dict | None = None) -> list[dict]:
    """The experiment's further runs (`replicates: {name: N}`): its resolved config (`config`, where
    already resolved) with seed + i and `replicate: i`, for i = 1 .. N-1 (run 0 is the experiment's
    own). The data split's seed is the data set's, so every run sees the same split; the seed drives
    weights, order, augmentation and dropout."""
    config = config or experiment_config(params, name)
    n = run_count(params, name)
    return [dict(sorted({**config, "seed": config["seed"] + i, "replicate": i}.items())) for i in range(1, n)]


def config_hash(config: dict) -> str:
    """A short digest of a resolved experiment config. Every output of train and evaluate carries
    the one it was made from, and the report shows an output only when that is the current one."""
    import hashlib
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]


def dataset_config(params: dict, name: str) -> dict:
    if name not in params["datasets"]:
        raise ParamsError(f"unknown data set {name!r}; known: {', '.join(sorted(params['datasets']))}")
    config = copy.deepcopy(params["datasets"][name])
    if params["smoke"]:
        _smoke_sizes(config, ("image_size", "train_per_class", "test_per_class"))
    return config
