"""Switch the study params.yaml runs: copy studies/<name>.yaml's data sets, experiments and
replicates into it.

    python -m pipeline.study                 # list the studies; say which one runs and if it was edited
    python -m pipeline.study seed            # run the seed study from now on (both tools)
    python -m pipeline.study seed --save     # first write params.yaml's edits back to the current study's file
    python -m pipeline.study seed --discard  # or drop them

params.yaml holds the running study in full (`study:`, `datasets:`, `experiments:`, `replicates:`),
plain YAML that `dvc exp run -S` can rewrite, next to the training defaults; studies/ holds every
study, each a file of its own. A switch refuses to lose edits made to the running study in params.yaml unless told to
save or discard them. It writes params.yaml the way `dvc exp run -S` does (comments kept), so a
later `-S lr=...` changes one line. Then run `snakemake` or `dvc repro` / `dvc exp run` as usual.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pipeline import params as params_mod
from pipeline.params import ParamsError
from pipeline.stage import cli

STUDY_KEYS = ("datasets", "experiments", "replicates")
OPTIONAL = {"replicates": {}}   # a study file may leave these out: no experiment runs more than once


def load_study(path: Path, defaults: dict) -> dict:
    """A study file, validated against the schema's study definition and the defaults' cross-checks."""
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in path.parent.glob("*.yaml"))) or "none"
        raise ParamsError(f"{path}: no such study file (studies: {known}); create it with a `datasets:` "
                          f"and an `experiments:` mapping, like studies/demo.yaml")
    study = params_mod.read_yaml(path)
    schema = {**params_mod.load_schema(), "$ref": "#/$defs/study"}   # the $defs, checking a study file
    for key in ("required", "properties", "unevaluatedProperties"):
        schema.pop(key)
    params_mod.check_schema(study, schema, str(path))
    params_mod.check_study(study, defaults, str(path))
    return study


def edited(params: dict, studies: Path) -> bool:
    """Whether params.yaml's running study differs from its file in studies/."""
    path = studies / f"{params['study']}.yaml"
    if not path.is_file():
        return True
    saved = params_mod.read_yaml(path)
    return any(saved.get(k, OPTIONAL.get(k)) != params[k] for k in STUDY_KEYS)


def switch(params_path: Path, studies: Path, name: str, save: bool = False, discard: bool = False) -> None:
    from ruamel.yaml import YAML
    params = params_mod.load(params_path)
    current = params["study"]
    incoming = load_study(studies / f"{name}.yaml", params)
    rt = YAML()   # round-trip: keeps comments
    if edited(params, studies) and not discard:
        if not save:
            raise ParamsError(
                f"{params_path}: the running study {current!r} was edited there since it was copied from "
                f"{studies / (current + '.yaml')}; rerun with --save to write the edits back to that file, "
                f"or --discard to drop them")
        doc, own = rt.load(params_path), studies / f"{current}.yaml"
        saved = rt.load(own) if own.is_file() else {}
        for key in STUDY_KEYS:
            saved[key] = doc[key]
        rt.dump(saved, own)
    doc, new = rt.load(params_path), rt.load(studies / f"{name}.yaml")
    doc["study"] = name
    for key in STUDY_KEYS:
        doc[key] = new.get(key, OPTIONAL.get(key))
        # the comment after the key itself belongs to the study (ruamel keeps it with the key)
        doc.ca.items.pop(key, None)
        if key in new.ca.items:
            doc.ca.items[key] = new.ca.items[key]
    rt.dump(doc, params_path)
    normalise(params_path)
    params_mod.load(params_path)   # a last check of what was written
    print(f"params.yaml now runs study {name!r} ({len(incoming['experiments'])} experiments); "
          f"run snakemake or dvc repro. {kept_defaults(params, params_path)}", file=sys.stderr)


def kept_defaults(params: dict, params_path: Path) -> str:
    """What a switch keeps, in words: the keys no study file holds (the training defaults, smoke,
    verdict), naming those that differ from the last commit's params.yaml (`dvc exp run -S lr=...`
    writes them there, and no study's --discard takes them back)."""
    import subprocess
    kept = [k for k in params if k != "study" and k not in STUDY_KEYS]
    git = subprocess.run(["git", "show", f"HEAD:./{params_path.name}"], cwd=params_path.parent,
                         capture_output=True, text=True)
    if git.returncode != 0:
        return "The training defaults stay as they are (no study file holds them)."
    from ruamel.yaml import YAMLError
    try:
        committed = params_mod._parse(git.stdout)
    except YAMLError:
        committed = None
    committed = committed if isinstance(committed, dict) else {}
    changed = [f"{k}: {json.dumps(params[k])} (committed: {json.dumps(committed.get(k))})" for k in kept
               if params[k] != committed.get(k)]
    if not changed:
        return "The training defaults stay as they are, as committed."
    return (f"The training defaults stay as they are (no study file holds them); these differ from the "
            f"last commit: {', '.join(changed)}")


def normalise(path: Path) -> None:
    """Rewrite `path` exactly as `dvc exp run -S` would (an empty override), so that DVC's own
    later rewrites change only the lines they set."""
    from dvc.utils.hydra import apply_overrides
    apply_overrides(str(path), [])


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("name", nargs="?", help="the study to run: studies/<name>.yaml")
    group = ap.add_mutually_exclusive_group()
    group.add_argument("--save", action="store_true", help="write params.yaml's edits of the running study back")
    group.add_argument("--discard", action="store_true", help="drop params.yaml's edits of the running study")
    ap.add_argument("--params", type=Path, default=Path("params.yaml"))
    ap.add_argument("--studies", type=Path, default=Path("studies"))
    args = ap.parse_args(argv)
    if args.name:
        switch(args.params, args.studies, args.name, args.save, args.discard)
        return
    params = params_mod.load(args.params)
    for path in sorted(args.studies.glob("*.yaml")):
        running = path.stem == params["study"]
        note = " (edited in params.yaml)" if running and edited(params, args.studies) else ""
        print(f"{'*' if running else ' '} {path.stem}{note}: {params_mod.read_yaml(path).get('description', '')}")


if __name__ == "__main__":
    cli(main)
