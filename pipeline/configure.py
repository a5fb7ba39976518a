"""Stage configure: resolve params.yaml into one small JSON file per job of the other stages.

    python -m pipeline.configure --params params.yaml --out results/configs --sources data/sources

Writes <out>/experiments/<exp>.json (the experiment's resolved config: defaults merged with its
overrides; what train reads), <out>/replicates/<exp>.json for an experiment of `replicates:`
(the configs of its further runs, seed + 1 .. seed + N - 1; what replicate reads),
<out>/datasets/<ds>.json (the data set's entry; prepare) and <out>/datasets/<ds>.source.json (its
source only; download), and <out>/study.json (the study's name, and each experiment's data set,
model, description, reported figure and config digests; the report shows only outputs made from
those configs), and <out>/code/<stage>.json (per model, <out>/code/<stage>/<model>.json, or per
experiment, <out>/code/<stage>/<exp>.json: see CODE_STAGES): the sha256 of each file of the code
that stage's jobs run, each job's code dependency under both tools.

<sources>/<ds> is a link to the data set's local files (a `folder` source's folder or archive;
for a published data set a one-line file): the download stage's dependency. DVC hashes what it
links to, so an image added, removed or replaced in a folder reruns that data set's chain; for
Snakemake, which compares modification times, a directory source's config carries the digest of
its listing.

A file is rewritten only when its content changes, and files of jobs no longer in the study are
removed. So each downstream job depends on exactly the params it uses: a new global `lr` changes
only the configs of the experiments that inherit it. DVC runs this as a stage; the Snakefile calls
`configure()` when it is parsed (Snakemake reruns a job when an input file is newer than its
outputs, whoever built them, so a config file that changes exactly when its content does is
what makes its reruns precise).
"""
from __future__ import annotations

import argparse
import functools
import hashlib
import json
import os
from pathlib import Path

from pipeline import imports, stage
from pipeline import params as params_mod

# How each stage's jobs depend on their code: through one manifest, one small file per job in
# place of twenty code files (at 1,000 experiments both tools spend most of a no-op on each job's
# dependencies). A manifest changes exactly when a file it lists does, so both tools rerun exactly
# the jobs whose code changed. None: one manifest for the stage; "model": one per registered model,
# for a stage run per experiment (a job then depends on its own model's family only); "exp": one
# per job, with its model family's code, where the job's template cannot name the model (DVC's
# replicate jobs iterate `replicates:`, whose items are run counts). (tests/test_wiring.py holds
# this to the stage table.)
CODE_STAGES = {"download": None, "prepare": None, "stats": None, "train": "model", "evaluate": "model",
               "replicate": "exp", "report": None}


def code_manifest(name: str) -> str:
    """The manifest's path in configure's folder: code/<stage>.json, code/<stage>/{model}.json or
    code/<stage>/{exp}.json."""
    per = CODE_STAGES[name]
    return f"code/{name}/{{{per}}}.json" if per else f"code/{name}.json"


def code_files(params: dict) -> dict[str, dict]:
    """Every stage's manifest: relative path -> {file: sha256} of what the stage's jobs run."""
    families = imports.model_families()

    @functools.cache
    def digest(f: str) -> str:
        return hashlib.sha256((imports.ROOT / f).read_bytes()).hexdigest()

    def digests(code: tuple[str, ...], model: str | None = None) -> dict[str, str]:
        return {f: digest(f) for f in code if model is None or f == families[model] or f not in families.values()}
    found = {}
    for name, per in CODE_STAGES.items():
        code = imports.code_deps(f"pipeline.{name}")
        if per is None:
            found[code_manifest(name)] = digests(code)
        elif per == "model":
            found.update({code_manifest(name).format(model=m): digests(code, m) for m in families})
        else:
            found.update({code_manifest(name).format(exp=e): digests(code, params["experiments"][e]["model"]["name"])
                          for e in params["replicates"]})
    return found


def check_local_sources(params: dict) -> None:
    """A `folder` source must exist: its link (below) would dangle, and Snakemake would keep an
    existing report whose inputs it cannot rebuild, and say there is nothing to do."""
    for name, ds in params["datasets"].items():
        path = ds["source"].get("path")
        if ds["source"]["kind"] == "folder" and not Path(path).expanduser().exists():
            raise stage.PipelineError(f"datasets.{name}.source.path: {path} does not exist; put the images or "
                                      f"archive there, or point source.path at them")


def listing_digest(folder: Path) -> str:
    """sha256 of a folder's listing: every file's relative name, size, modification time, inode and
    status-change time (stat only, no reading). Part of a directory source's config, so that
    Snakemake, which compares times of the files it is given, sees a file added, removed or
    replaced anywhere inside. The ctime is what sees a replacement that keeps size and mtime
    (`cp -p`, `rsync -a`, `touch -r`): the kernel sets it on every write, and no call sets it back."""
    h = hashlib.sha256()
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(f for f in files if not f.startswith(".")):
            st = os.stat(os.path.join(root, name))
            h.update(f"{os.path.relpath(os.path.join(root, name), folder)}\0{st.st_size}\0{st.st_mtime_ns}\0"
                     f"{st.st_ino}\0{st.st_ctime_ns}\n".encode())
    return h.hexdigest()


def source_config(dataset: dict) -> dict:
    """A data set's source entry, with a directory source's listing digest."""
    source = dict(dataset["source"])
    if source["kind"] == "folder" and Path(source["path"]).expanduser().is_dir():
        source["listing_sha256"] = listing_digest(Path(source["path"]).expanduser())
    return source


def source_links(params: dict, sources: Path) -> dict[Path, str | Path]:
    """sources/<ds> -> a folder source's folder or archive, to link to (relative where its path is);
    for a published data set, a one-line file saying so (its source config is download's other
    dependency; a link into configure's own output would dangle while DVC reruns configure)."""
    links: dict[Path, str | Path] = {}
    for name, ds in params["datasets"].items():
        if ds["source"]["kind"] == "folder":
            target = Path(ds["source"]["path"]).expanduser()
            links[sources / name] = target if target.is_absolute() else Path(os.path.relpath(target, sources))
        else:
            links[sources / name] = f"{ds['source']['kind']}: a published data set, no local files\n"
    return links


def config_files(params: dict) -> dict[str, dict]:
    """Relative path -> content of every config file for this study."""
    configs = params_mod.experiment_configs(params)
    runs = {name: params_mod.replicate_configs(params, name, config) for name, config in configs.items()}
    files = {"study.json": {
        "study": params["study"], "smoke": params["smoke"], "verdict": params["verdict"], "datasets": sorted(params["datasets"]),
        "experiments": {name: {"dataset": e["dataset"], "model": e["model"]["name"],
                               "description": e.get("description", ""), "reported": e.get("reported"),
                               "config_sha256": params_mod.config_hash(configs[name]),
                               "replicate_sha256": [params_mod.config_hash(c) for c in runs[name]]}
                        for name, e in params["experiments"].items()}}}
    for ds in params["datasets"]:
        cfg = params_mod.dataset_config(params, ds)
        files[f"datasets/{ds}.json"] = cfg
        files[f"datasets/{ds}.source.json"] = source_config(cfg)
    for exp in params["experiments"]:
        files[f"experiments/{exp}.json"] = configs[exp]
    for exp in params["replicates"]:
        files[f"replicates/{exp}.json"] = {"experiment": exp, "runs": runs[exp]}
    files.update(code_files(params))
    return files


def changes(params: dict, out: Path, sources: Path) -> tuple[dict[Path, str | Path], list[Path]]:
    """What configure would do: (config files to write -> their text, and links to make -> their
    target; files and links to remove)."""
    wanted: dict[Path, str | Path] = {out / rel: json.dumps(content, indent=1) + "\n"   # in params.yaml's order
                                      for rel, content in config_files(params).items()}
    wanted.update(source_links(params, sources))

    def current(path: Path, value) -> bool:
        if isinstance(value, Path):
            return path.is_symlink() and os.readlink(path) == str(value)
        return path.is_file() and not path.is_symlink() and path.read_text() == value
    write = {path: value for path, value in wanted.items() if not current(path, value)}
    # an experiment or data set no longer in the study
    links = [path for path in (sources.iterdir() if sources.is_dir() else []) if path.name != "README.md"]
    existing = [*(out.rglob("*.json") if out.is_dir() else []), *links]
    return write, [path for path in existing if path not in wanted]


def configure(params: dict, out: Path, sources: Path) -> list[str]:
    """Bring `out` and `sources` in line with params; return what was written (unchanged files keep
    their mtime)."""
    check_local_sources(params)
    write, remove = changes(params, out, sources)
    for path, value in write.items():
        with stage.atomic_path(path) as tmp:
            tmp.symlink_to(value) if isinstance(value, Path) else tmp.write_text(value)
    for path in remove:
        path.unlink()
    return [str(path) for path in write]


# The row (pipeline/wiring.py builds both tools from it). Resolves params.yaml into one small JSON
# file per job. A file changes only when what that job uses changes, so a new global `lr` retrains
# exactly the experiments that inherit it. It also links data/sources/<ds> to each data set's
# local files (a folder source's folder or archive; a one-line file for a published data set):
# download's dependency, so that DVC hashes a folder's content and an edit inside it reruns that
# data set's chain. The folder is configure's dependency, not an output: DVC then keeps no copy of
# the user's images (an output's links it would copy in), and remakes a missing link by rerunning
# configure. The configs' folder persists under DVC too (DVC would empty it first): a config whose
# content did not change keeps its mtime, so Snakemake, judging by mtime, retrains nothing it does
# not change; configure is then never restored from DVC's run-cache, only rerun (a second or so).
ROW = stage.Stage(
    "configure", None, deps={"sources": "data/sources"},
    outs={"out": stage.Out("results/configs", directory=True, persist=True)},
    # every key of the file: a typo'd key (`lrr:`) then reaches configure's own one-line error
    # instead of DVC's "Parameters 'lr' are missing from 'params.yaml'"
    args={"params": "params.yaml"}, params=("params.yaml",),
    help={"sources": "folder of links to each data set's local files"})

def parser() -> argparse.ArgumentParser:
    """The command line, from the row."""
    return ROW.parser(__doc__)


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    stage.setup_logging(args.log)
    params = params_mod.load(args.params)
    written = configure(params, args.out, args.sources)
    total = len(config_files(params)) + len(params["datasets"])
    stage.log.info("configure: wrote %d of %d config files and links in %s and %s (the rest were unchanged)",
                   len(written), total, args.out, args.sources)


if __name__ == "__main__":
    stage.cli(main)
