"""The training engine's speed features, on the CPU: fp32 CPU numbers unchanged bit for bit,
no host sync inside the step loop, precision resolved per device, torch.compile wired in."""
from __future__ import annotations

import contextlib
import json
import warnings
from pathlib import Path

import pytest
import torch

from cpu_reference import REFERENCE, digits_prepared, histories
from conftest import training_defaults
from pipeline import data, engine, inference, recipes
from pipeline.config import TrainConfig

ROOT = Path(__file__).resolve().parents[1]
DEFAULTS = training_defaults()


# Bit-identity is a property of one machine and library build: oneDNN and ATen pick other kernels
# on other CPUs (AVX2, AVX-512, AMX), and the last bits of a sum follow. Measured between two kinds
# (AVX-512 here, ATEN_CPU_CAPABILITY=avx2, and the machine that wrote the reference): every
# experiment within 0.2% of its losses but digits_cifarnet (2 epochs on 200 images, near chance:
# 1.6% and 0.05 of val accuracy). So runs are compared bit for bit within one environment, and
# with the stored reference only to these tolerances.
LOSS_RTOL, ACC_ATOL = 0.025, 0.06


def test_fp32_cpu_histories_repeat_bit_for_bit_and_match_the_reference_to_a_tolerance(tmp_path):
    """Every demo experiment, 2 epochs on the CPU: twice here with the same exact numbers, and
    close to the numbers of tests/data (written by the engine before the speed work; see
    tests/cpu_reference.py) on whatever CPU runs the tests."""
    first, again = histories(tmp_path / "a"), histories(tmp_path / "b")
    assert first == again
    reference = json.loads(REFERENCE.read_text())
    assert first.keys() == reference.keys()
    for name, rows in reference.items():
        assert [r["epoch"] for r in first[name]] == [r["epoch"] for r in rows], name
        for ours, ref in zip(first[name], rows):
            assert ours["lr"] == ref["lr"], name
            for key in ("train_loss", "val_loss"):
                assert float(ours[key]) == pytest.approx(float(ref[key]), rel=LOSS_RTOL), (name, key)
            for key in ("train_acc", "val_acc"):
                assert float(ours[key]) == pytest.approx(float(ref[key]), abs=ACC_ATOL), (name, key)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    return digits_prepared(tmp_path_factory.mktemp("prepared"))


def config(**overrides) -> TrainConfig:
    return TrainConfig.from_dict({
        **DEFAULTS, "name": "t", "dataset": "digits", "device": "cpu", "epochs": 1, "batch_size": 16,
        "model": {"name": "lenet", "channels": [8], "fc": [32]},
        "augment": [{"name": "crop", "padding": 1}, {"name": "hflip"}, {"name": "color_jitter", "brightness": 0.2}],
        **overrides})


def generators() -> dict[str, torch.Generator]:
    return {"shuffle": torch.Generator().manual_seed(0), "augment": torch.Generator().manual_seed(1)}


class HostReads:
    """Counts the Tensor methods that copy a value to the host (and so wait for the device)."""
    METHODS = ("item", "cpu", "tolist", "numpy", "__float__", "__int__", "__bool__")

    def __init__(self, monkeypatch):
        self.calls: list[str] = []
        for name in self.METHODS:
            original = getattr(torch.Tensor, name)
            monkeypatch.setattr(torch.Tensor, name, self._counting(name, original))

    def _counting(self, name, original):
        def method(t, *args, **kwargs):
            self.calls.append(name)
            return original(t, *args, **kwargs)
        return method


def test_the_step_loop_reads_nothing_back_until_the_epoch_ends(prepared, monkeypatch):
    cfg = config()
    model = inference.build_model(cfg, data.load_meta(prepared), {"mean": [0.3], "std": [0.35]})
    split = data.load_split(prepared, "train", torch.device("cpu"))
    optimizer = recipes.make_optimizer(cfg, model.parameters())
    steps = -(-len(split) // cfg.batch_size)
    reads = HostReads(monkeypatch)
    step = engine.Step(model, recipes.make_loss(cfg), optimizer)
    loss, acc = engine.run_epoch(step, split, cfg, generators())
    assert steps >= 10 and reads.calls == ["tolist"]       # loss, correct count, divergence: one read
    assert 0 < loss < 10 and 0 <= acc <= 1


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA: the CPU logic is tested above")
def test_no_synchronising_cuda_call_in_the_step_loop(prepared):
    cfg = config(device="cuda")
    device = torch.device("cuda")
    model = inference.build_model(cfg, data.load_meta(prepared), {"mean": [0.3], "std": [0.35]}).to(device)
    split = data.load_split(prepared, "train", device)
    optimizer = recipes.make_optimizer(cfg, model.parameters())
    step = engine.Step(model, recipes.make_loss(cfg), optimizer, inference.autocast(cfg, device),
                       inference.channels_last(model, device))
    run = lambda: engine.run_epoch(step, split, cfg, generators())  # noqa: E731
    run()                                             # warm-up: allocator and cuDNN set-up may sync
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            run()
    finally:
        torch.cuda.set_sync_debug_mode(0)
    syncs = [w for w in caught if "synchronizing" in str(w.message)]
    assert len(syncs) == 1, [str(w.message) for w in syncs]   # the one read after the last step


@pytest.mark.parametrize("precision, device, bf16", [
    ("auto", "cpu", False), ("fp32", "cpu", False), ("bf16", "cpu", True),
    ("auto", "cuda", True), ("fp32", "cuda", False), ("bf16", "cuda", True)])
def test_precision_per_device(precision, device, bf16):
    ctx = inference.autocast(config(precision=precision), torch.device(device))
    if bf16:
        assert isinstance(ctx, torch.autocast) and ctx.fast_dtype == torch.bfloat16
    else:
        assert isinstance(ctx, contextlib.nullcontext)


def outputs(folder: Path) -> engine.TrainOutputs:
    folder.mkdir(exist_ok=True)
    return engine.TrainOutputs.in_folder(folder, layers=False)


def test_bf16_on_the_cpu_trains_and_evaluates_in_bf16(prepared, tmp_path):
    stats = {"mean": [0.3], "std": [0.35]}
    m = engine.fit(config(precision="bf16", epochs=2), prepared, stats, outputs(tmp_path / "bf16"))
    fp32 = engine.fit(config(epochs=2), prepared, stats, outputs(tmp_path / "fp32"))
    assert m["val_acc"] > 0.2 and m["val_acc"] != fp32["val_acc"]   # really another precision


def test_compile_trains_through_the_compiled_module_and_saves_the_plain_one(prepared, tmp_path, monkeypatch):
    compiled = []

    class Compiled(torch.nn.Module):     # stands in for torch.compile's wrapper (compiling takes ~40 s here)
        def __init__(self, model):
            super().__init__()
            self._orig_mod = model

        def forward(self, x):
            compiled.append(len(x))
            return self._orig_mod(x)
    monkeypatch.setattr(torch, "compile", Compiled)
    m = engine.fit(config(compile=True, epochs=2), prepared, {"mean": [0.3], "std": [0.35]}, outputs(tmp_path))
    assert sum(compiled) == 2 * (200 + 100)          # every train and val image went through it
    state = torch.load(tmp_path / "model.pt", weights_only=True)["state_dict"]
    assert not any(k.startswith("_orig_mod") for k in state) and len(m["epoch_times_s"]) == 2


def test_reduce_overhead_trains_full_batches_and_scores_val_through_a_compile_of_its_own(prepared, tmp_path,
                                                                                        monkeypatch):
    calls = []

    class Compiled(torch.nn.Module):     # stands in for torch.compile (CUDA graphs need CUDA; compiling is slow)
        def __init__(self, model, **kwargs):
            super().__init__()
            self._orig_mod, self.kwargs, self.seen = model, kwargs, []
            calls.append(self)

        def forward(self, x):
            self.seen.append((len(x), self._orig_mod.training))
            return self._orig_mod(x)
    monkeypatch.setattr(torch, "compile", Compiled)
    m = engine.fit(config(compile="reduce-overhead", epochs=2), prepared, {"mean": [0.3], "std": [0.35]},
                   outputs(tmp_path))
    train, val = calls
    assert train.kwargs == val.kwargs == {"mode": "reduce-overhead", "dynamic": False}
    # 200 training images at batch 16: 12 full batches a epoch, the 8 left over dropped (static shapes)
    assert train.seen == [(16, True)] * 24
    assert sum(n for n, _ in val.seen) == 2 * 100 and not any(mode for _, mode in val.seen)
    assert len(m["epoch_times_s"]) == 2


def test_a_channels_last_split_gives_channels_last_batches_with_no_copy(tmp_path):
    """Where the model runs channels_last (CUDA convolutions), the split keeps the file's NHWC bytes:
    the same pixels, and a batch indexed from them needs no conversion per step."""
    import numpy as np
    prepared = tmp_path / "prepared"                  # RGB: with one channel both layouts are the same bytes
    prepared.mkdir()
    rng = np.random.default_rng(0)
    np.save(prepared / "train_images.npy", rng.integers(0, 256, (40, 8, 8, 3), dtype=np.uint8))
    np.save(prepared / "train_labels.npy", rng.integers(0, 10, 40))
    plain = data.load_split(prepared, "train", torch.device("cpu"))
    nhwc = data.load_split(prepared, "train", torch.device("cpu"), channels_last=True)
    assert plain.images.is_contiguous() and nhwc.images.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(plain.images, nhwc.images) and torch.equal(plain.labels, nhwc.labels)
    x, _ = next(data.batches(nhwc, 16, torch.Generator().manual_seed(0)))
    assert data.memory_format(x, nhwc=True) is x                 # already channels_last: no copy
    y, _ = next(data.batches(plain, 16, torch.Generator().manual_seed(0)))
    assert data.memory_format(y, nhwc=True) is not y and torch.equal(data.memory_format(y, nhwc=True), x)
