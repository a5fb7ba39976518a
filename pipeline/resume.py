"""Resumable training: the whole state after each finished epoch, so a killed run goes on from there.

The state file sits beside the checkpoint as `.<model>.resume` (never under an output's name, so
neither tool takes it for a result; .dvcignore and .gitignore leave it out), is written atomically,
and is removed once the outputs are written. It is keyed by what the run depends on: the resolved
config, the normalisation stats, the prepared data's bytes and the training code. A state with
another key is ignored (logged), never resumed from.
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import random
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
import torch

from pipeline import imports
from pipeline.config import TrainConfig
from pipeline.stage import atomic_path

log = logging.getLogger("pipeline.resume")


def state_path(model_out: Path) -> Path:
    return model_out.with_name(f".{model_out.name}.resume")


def data_digest(stats: dict, prepared: Path) -> str:
    """sha256 of the data a run is made from: the normalisation stats and every file of the prepared
    data set, all splits. In run.json (`data_sha256`): the replicate stage's further runs must be
    made from the same data as the experiment's own."""
    h = hashlib.sha256(json.dumps(stats, sort_keys=True).encode())
    for path in sorted(p for p in Path(prepared).iterdir() if p.is_file() and not p.name.startswith(".")):
        with open(path, "rb") as f:
            h.update(path.name.encode() + b"\0" + hashlib.file_digest(f, "sha256").digest())
    return h.hexdigest()


def run_key(config: TrainConfig, data_sha256: str) -> str:
    """What a run's resume state is made from: its config, its data (data_digest) and the training code."""
    h = hashlib.sha256(json.dumps({"config": config.to_dict(), "data": data_sha256}, sort_keys=True).encode())
    for name in imports.code_deps("pipeline.train"):
        h.update(name.encode() + (imports.ROOT / name).read_bytes())
    return h.hexdigest()


def rng_states(generators: dict[str, torch.Generator]) -> dict:
    """Every random number generator a training epoch draws from."""
    np_state = np.random.get_state()
    return {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
            "python": list(random.getstate()[1]), "python_gauss": random.getstate()[2],
            "numpy": torch.from_numpy(np_state[1].astype(np.int64)), "numpy_pos": int(np_state[2]),
            **{f"gen_{k}": g.get_state() for k, g in generators.items()}}


def set_rng_states(state: dict, generators: dict[str, torch.Generator]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"]:
        torch.cuda.set_rng_state_all(state["cuda"])
    random.setstate((3, tuple(state["python"]), state["python_gauss"]))
    np.random.set_state(("MT19937", state["numpy"].numpy().astype(np.uint32), state["numpy_pos"], 0, 0.0))
    for k, g in generators.items():
        g.set_state(state[f"gen_{k}"])


@dataclass
class Progress:
    """Where a run stands after its last finished epoch: what the state keeps beside the weights,
    the optimizer, the schedule, the early-stopping counter and the random generators."""
    history: list[dict] = field(default_factory=list)   # one row per epoch (pipeline/live.py logs it)
    kept: dict | None = None                            # the kept checkpoint's history row
    kept_state: dict | None = None                      # its weights, on the CPU
    epoch_times: list[float] = field(default_factory=list)
    stopped: bool = False                               # early stopping has ended the run
    elapsed: float = 0.0                                # seconds trained before this process


def restore(path: Path, key: str, parts: dict, generators: dict[str, torch.Generator]) -> Progress:
    """Load `parts` (name -> anything with load_state_dict) and the generators from this run's
    saved state, and return its progress; a fresh Progress where there is none to resume from."""
    state = load(path, key)
    if state is None:
        return Progress()
    for name, part in parts.items():
        part.load_state_dict(state[name])
    set_rng_states(state["rng"], generators)
    return Progress(**{f.name: state[f.name] for f in fields(Progress)})


def snapshot(path: Path, key: str, parts: dict, generators: dict[str, torch.Generator], progress: Progress) -> None:
    """Save the whole state after an epoch (atomically; kept if the stage is stopped)."""
    save(path, key, {**{name: part.state_dict() for name, part in parts.items()}, "rng": rng_states(generators),
                     **{f.name: getattr(progress, f.name) for f in fields(Progress)}})


def torch_save(obj, path: Path) -> None:
    """torch.save through memory, then one write: a full disk is then the OSError (ENOSPC) that
    stage.cli reports in one line, not the "unexpected pos" RuntimeError of torch's zip writer."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    path.write_bytes(buffer.getbuffer())


def save(path: Path, key: str, state: dict) -> None:
    with atomic_path(path, keep_if_stopped=True) as tmp:
        torch_save({"key": key, **state}, tmp)


def load(path: Path, key: str) -> dict | None:
    """The saved state if it belongs to this very run; None (with a log line) otherwise."""
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001  a state cut short or from another torch: start afresh
        log.warning("ignoring %s: unreadable (%s); training from the start", path, e)
        return None
    if state.get("key") != key:
        log.warning("ignoring %s: it was saved with another config, data or code version; "
                    "training from the start", path)
        return None
    return state


def remove(path: Path) -> None:
    path.unlink(missing_ok=True)
