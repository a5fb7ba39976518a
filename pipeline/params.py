"""Load, validate and resolve params.yaml, the one source of truth for both orchestrators.

Light on purpose (yaml + jsonschema only): the Snakefile and every stage import it, and an
up-to-date check must not pay for importing torch.
"""
from __future__ import annotations

import copy
import functools
from pathlib import Path

import jsonschema
import yaml

SCHEMA_PATH = Path(__file__).with_name("params.schema.yaml")
REPORT_ONLY_KEYS = ("description", "reported")


class ParamsError(ValueError):
    """params.yaml is unreadable or invalid; the message names the file and the key."""


# libyaml's C parser where PyYAML has it: Snakemake evaluates the Snakefile on every run.
SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@functools.cache
def load_schema() -> dict:
    """The parsed schema (cached: read once per process; treat it as read-only)."""
    return yaml.load(SCHEMA_PATH.read_text(), Loader=SafeLoader)


def training_keys() -> list[str]:
    """The keys that are top-level defaults and per-experiment overrides (lr, epochs, ...)."""
    return list(load_schema()["$defs"]["training"])


def _key_path(error: jsonschema.ValidationError) -> str:
    return ".".join(str(p) for p in error.absolute_path) or "(top level)"


def validate(params: object, source: str = "params.yaml") -> dict:
    """Return params if they satisfy the schema and cross-references; else raise ParamsError."""
    validator = jsonschema.Draft202012Validator(load_schema())
    error = jsonschema.exceptions.best_match(validator.iter_errors(params))
    if error is not None:
        raise ParamsError(f"{source}: {_key_path(error)}: {error.message}")
    scopes = [("", params)] + [(f"studies.{n}.", st) for n, st in params["studies"].items()]
    for prefix, scope in scopes:
        for name, exp in scope["experiments"].items():
            if exp["dataset"] not in scope["datasets"]:
                known = ", ".join(sorted(scope["datasets"]))
                raise ParamsError(
                    f"{source}: {prefix}experiments.{name}.dataset: unknown data set {exp['dataset']!r}; "
                    f"define it under {prefix}datasets: (known: {known})")
        _check_pretrained(params, prefix, scope["experiments"], source)
    return params


def _check_pretrained(params: dict, prefix: str, experiments: dict, source: str) -> None:
    """`pretrained:` is null, imagenet, or another experiment of the same study, with no cycle."""
    def parent(name):
        value = experiments[name].get("pretrained", params.get("pretrained"))
        return None if value in (None, "imagenet") else value
    for name in experiments:
        seen, node = [name], parent(name)
        while node is not None:
            if node not in experiments:
                raise ParamsError(
                    f"{source}: {prefix}experiments.{seen[-1]}.pretrained: {node!r} is neither imagenet nor "
                    f"an experiment of this study; name one of: {', '.join(experiments)}")
            if node in seen:
                raise ParamsError(
                    f"{source}: {prefix}experiments.{name}.pretrained: the chain {' -> '.join(seen + [node])} "
                    f"is a cycle; an experiment can only start from one that does not start from it")
            seen.append(node)
            node = parent(node)


def load(path: str | Path) -> dict:
    """Read and validate a params file."""
    path = Path(path)
    try:
        params = yaml.load(path.read_text(), Loader=SafeLoader)
    except FileNotFoundError:
        raise ParamsError(f"{path}: file not found; pass the project's params.yaml") from None
    except yaml.composer.ComposerError as e:
        if "undefined alias" not in str(e):
            raise ParamsError(f"{path}: not valid YAML: {' '.join(str(e).split())}") from None
        raise ParamsError(
            f"{path}: the study alias in `<<: *NAME` is not defined ({' '.join(str(e).split())}); "
            f"give the study its anchor under studies:, e.g. `seed: &seed` "
            f"(`dvc exp run -S` drops anchors that nothing refers to)") from None
    except yaml.YAMLError as e:
        raise ParamsError(f"{path}: not valid YAML: {' '.join(str(e).split())}") from None
    return validate(params, source=str(path))


def experiment_config(params: dict, name: str) -> dict:
    """The experiment's resolved config: top-level defaults merged with its own overrides."""
    if name not in params["experiments"]:
        raise ParamsError(f"unknown experiment {name!r}; known: {', '.join(sorted(params['experiments']))}")
    exp = copy.deepcopy(params["experiments"][name])
    for key in REPORT_ONLY_KEYS:  # editing these must not retrain anything
        exp.pop(key, None)
    config = {key: params[key] for key in training_keys()}
    config.update(exp)
    config["name"] = name
    return dict(sorted(config.items()))


def dataset_config(params: dict, name: str) -> dict:
    if name not in params["datasets"]:
        raise ParamsError(f"unknown data set {name!r}; known: {', '.join(sorted(params['datasets']))}")
    return copy.deepcopy(params["datasets"][name])
