"""Stage configure: resolve params.yaml into one small JSON file per job of the other stages.

    python -m pipeline.configure --params params.yaml --out results/configs

Writes <out>/experiments/<exp>.json (the experiment's resolved config: defaults merged with its
overrides; what train reads), <out>/datasets/<ds>.json (the data set's entry; prepare) and
<out>/datasets/<ds>.source.json (its source only; download), and <out>/study.json (the study's
name, and each experiment's data set, model, description, reported figure and config digest;
the report shows only outputs made from that config).

A file is rewritten only when its content changes, and files of jobs no longer in the study are
removed. So each downstream job depends on exactly the params it uses: a new global `lr` changes
only the configs of the experiments that inherit it. DVC runs this as a stage; the Snakefile calls
`configure()` when it is parsed (Snakemake reruns a job when an input file is newer than its
outputs, whoever built them, so a config file that changes exactly when its content does is
what makes its reruns precise).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from pipeline import params as params_mod
from pipeline import stage


def config_files(params: dict) -> dict[str, dict]:
    """Relative path -> content of every config file for this study."""
    files = {"study.json": {
        "study": params["study"], "datasets": sorted(params["datasets"]),
        "experiments": {name: {"dataset": e["dataset"], "model": e["model"]["name"],
                               "description": e.get("description", ""), "reported": e.get("reported"),
                               "config_sha256": params_mod.config_hash(params_mod.experiment_config(params, name))}
                        for name, e in params["experiments"].items()}}}
    for ds in params["datasets"]:
        cfg = params_mod.dataset_config(params, ds)
        files[f"datasets/{ds}.json"] = cfg
        files[f"datasets/{ds}.source.json"] = cfg["source"]
    for exp in params["experiments"]:
        files[f"experiments/{exp}.json"] = params_mod.experiment_config(params, exp)
    return files


def changes(params: dict, out: Path) -> tuple[dict[Path, str], list[Path]]:
    """What configure would do to `out`: (files to write -> their text, files to remove)."""
    wanted = {out / rel: json.dumps(content, indent=1) + "\n"   # in params.yaml's order
              for rel, content in config_files(params).items()}
    write = {path: text for path, text in wanted.items() if not (path.is_file() and path.read_text() == text)}
    # an experiment or data set no longer in the study
    remove = [path for path in (out.rglob("*.json") if out.is_dir() else []) if path not in wanted]
    return write, remove


def configure(params: dict, out: Path) -> list[str]:
    """Bring `out` in line with params; return the files written (unchanged ones keep their mtime)."""
    write, remove = changes(params, out)
    for path, text in write.items():
        with stage.atomic_path(path) as tmp:
            tmp.write_text(text)
    for path in remove:
        path.unlink()
    return [str(path) for path in write]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", required=True, type=Path)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--log", type=Path)
    args = ap.parse_args(argv)
    stage.setup_logging(args.log)
    params = params_mod.load(args.params)
    written = configure(params, args.out)
    total = len(config_files(params))
    stage.log.info("configure: wrote %d of %d config files in %s (the rest were unchanged)",
                   len(written), total, args.out)


if __name__ == "__main__":
    stage.cli(main)
