"""One experiment's resolved training config as a typed, frozen value.

`params.experiment_config` resolves it, the top-level defaults merged with the experiment's own
keys, to a plain dict: what configure writes, what a checkpoint and run.json hold, what
`params.config_hash` digests. A stage reads that dict once, into a TrainConfig checked against the
schema, and the code below it reads `config.lr`: never a `.get()` with a default of its own, for every
default lives in params.yaml and nowhere else. tests/test_config.py holds the fields to the
schema's $defs/training, key for key and type for type.
"""
from __future__ import annotations

import dataclasses
import functools

from pipeline import params as params_mod


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    # what is trained (the experiment's own keys)
    name: str
    dataset: str
    model: dict                     # {"name": <registered model>, its own keys}
    # how: the schema's $defs/training, whose comments say what each key does
    seed: int
    lr: float
    epochs: int
    batch_size: int
    eval_batch_size: int
    sync_batchnorm: bool
    optimizer: str
    momentum: float
    weight_decay: float
    device: str
    nesterov: bool
    scheduler: dict                 # {"name": ..., its own keys}
    loss: str
    label_smoothing: float
    augment: list                   # [{"name": ..., its own keys}, ...], applied in order
    early_stopping: int             # epochs without a better val accuracy; 0: never stop early
    input_size: int | None
    resize_before_crop: int | None
    normalize: str | dict
    pretrained: str | None
    init: str
    finetune: str
    frozen_body: str
    grad_clip: float | None
    precision: str
    compile: bool | str
    deterministic: bool
    checkpoint: str
    resume_every_s: float
    test_mode: str
    devices: int
    threads: int | str
    # what params resolves, never the user
    parent: dict | None = None      # `pretrained: <experiment>`: its resolved config and data set entry
    replicate: int | None = None    # run i >= 1 of the replicate stage; None: the experiment's own run

    @classmethod
    def from_dict(cls, config: dict, source: str = "config") -> TrainConfig:
        """The config a dict holds, checked whole; else one ParamsError naming `source` and the key."""
        if not isinstance(config, dict):
            raise params_mod.ParamsError(f"{source}: not a config (a JSON object of training keys); "
                                         f"rerun the configure stage that writes it")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(config) - names)
        missing = [f.name for f in dataclasses.fields(cls)
                   if f.name not in config and f.default is dataclasses.MISSING]
        if unknown or missing:
            what = f"unknown key {unknown[0]!r}" if unknown else f"{missing[0]!r} is missing"
            raise params_mod.ParamsError(f"{source}: {what}: it was written by another version of the "
                                         f"pipeline; rerun the configure stage that writes it")
        params_mod.check_schema(config, _schema(), source)
        return cls(**config)

    def to_dict(self) -> dict:
        """The dict it was read from, key for key (sorted, as params.experiment_config writes it)."""
        out = dataclasses.asdict(self)
        for key in ("parent", "replicate"):
            if out[key] is None:
                del out[key]
        return dict(sorted(out.items()))

    @property
    def sha256(self) -> str:
        return params_mod.config_hash(self.to_dict())


@functools.cache
def _schema() -> dict:
    """The schema of a resolved config: $defs/training, and the keys it adds."""
    defs = params_mod.load_schema()["$defs"]
    training = defs["training"]["properties"]
    return {"$defs": defs, "type": "object", "additionalProperties": False,
            "properties": {**training, "name": {"type": "string"}, "dataset": {"type": "string"},
                           "model": {"$ref": "#/$defs/model"}, "parent": {"type": "object"},
                           "replicate": {"type": "integer", "minimum": 1}}}
