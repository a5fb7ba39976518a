"""Shared fixtures: a throw-away copy of the project for tests that run the stages or the tools."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))   # the tests' helpers that scripts use too (smoke_workspace)
BIN = Path(sys.executable).parent          # the venv's snakemake and dvc live beside its python
# The unit tests' params (defaults and the demo study): a frozen copy, not the live params.yaml.
TEST_PARAMS = ROOT / "tests" / "data" / "params.yaml"


def unit_params() -> dict:
    from pipeline import params
    return params.load(TEST_PARAMS)


def training_defaults() -> dict:
    """The unit params' training defaults, as a resolved config holds them."""
    from pipeline import params
    return {k: v for k, v in unit_params().items() if k in params.training_keys()}


def train_config(**overrides):
    """A typed config (pipeline.config.TrainConfig) of a tiny digits LeNet: the unit params'
    defaults under `overrides`."""
    from pipeline.config import TrainConfig
    return TrainConfig.from_dict({**training_defaults(), "name": "t", "dataset": "digits", "device": "cpu",
                                  "model": {"name": "lenet", "channels": [8], "fc": [32]}, **overrides})


def copy_project(dest: Path) -> Path:
    """The checkout (tracked files, work in progress, what `make install` wrote) in a fresh git repository."""
    from smoke_workspace import copy_checkout
    return copy_checkout(dest)


def files_in(folder: Path) -> dict[str, bytes]:
    """Every file under `folder`, by its path there: two folders compared byte for byte."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def tool_env() -> dict:
    # One torch thread per stage process: tests run on both cores in parallel (pytest -n 2).
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}", PYTHONUNBUFFERED="1",
               OMP_NUM_THREADS="1", TQDM_DISABLE="1")
    env.pop("PYTHONPATH", None)
    return env


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A fresh git repository holding a copy of the project (no data, no results)."""
    return copy_project(tmp_path / "project")


def run(cmd: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    """Run a command with the venv's tools first on PATH; output captured as text."""
    p = subprocess.run(cmd, cwd=cwd, env=tool_env(), capture_output=True, text=True)
    if check and p.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
    return p


def processes_of(pid: int) -> list[int]:
    """Every live process whose parent chain reaches `pid` (its workers, theirs, ...), whichever of
    their threads started them (Snakemake starts jobs from a thread pool)."""
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        kids = []
        for children in Path(f"/proc/{p}/task").glob("*/children"):
            try:
                kids += [int(c) for c in children.read_text().split()]
            except OSError:   # the thread or process ended meanwhile
                pass
        found += kids
        todo += kids
    return found


def command_line(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_text().split("\0")
    except OSError:
        return []


def _xdist_group(nodeid: str) -> str | None:
    """The `xdist_group` mark of a test, read from its module (the controller collects no items)."""
    import importlib
    path, _, name = nodeid.partition("::")
    module = importlib.import_module(Path(path).stem)
    marks = []
    for holder in (module, getattr(module, name.split("[")[0], None)):
        found = getattr(holder, "pytestmark", [])           # a list, or one mark (`pytestmark = ...`)
        marks += found if isinstance(found, list) else [found]
    return next((m.args[0] for m in marks if m.name == "xdist_group"), None)


@pytest.hookimpl(tryfirst=True)
def pytest_xdist_make_scheduler(config, log):
    """`--dist loadgroup` as xdist documents it: tests of one `xdist_group` are one work unit, run
    on one worker (so they share its module fixtures). xdist 3.8 names a unit by suffixing the
    group to the test's nodeid, which pytest 9.2 no longer lets it change: every test ends up a
    unit of its own. Here the controller reads the group from the test's mark instead. Any other
    `--dist` a user asks for is xdist's own."""
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class LoadGroupScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            group = _xdist_group(nodeid)
            return f"group {group}" if group else nodeid
    return LoadGroupScheduling(config, log)


def pytest_collection_modifyitems(items):
    """The order in which xdist hands out work units (pytest.ini: `-n 2 --dist loadgroup
    --no-loadscope-reorder`; a group's tests are one unit, any other test is one). A worker is sent
    its next unit while it still runs one, and keeps it: a scenario sent behind the seed study's
    smoke run (the longest test by far) would wait minutes for it while the other worker idles. So
    the smoke run comes first, then two quick tests (the one unit queued behind it, and the other
    worker's first), then the other end-to-end scenarios, each to whichever worker frees up first,
    and the quick tests last, to even out the end."""
    def rank(item) -> int:
        if item.get_closest_marker("integration") is None:
            return 2
        return 0 if item.module.__name__ == "test_seed_smoke" else 1
    items.sort(key=rank)
    quick = [i for i, item in enumerate(items) if rank(item) == 2 and item.get_closest_marker("xdist_group") is None]
    fillers = [items[i] for i in quick[:2]]
    for item in fillers:
        items.remove(item)
    first = sum(rank(item) == 0 for item in items)
    items[first:first] = fillers
