"""Faults, as a user meets them: a killed training resumes bit for bit, divergence and running out
of memory are one line with nothing written, signals end workers and temporaries, 16-bit images
keep their picture, and every CLI error is one line."""
from __future__ import annotations

import errno
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import ROOT, files_in, processes_of, run, tool_env, training_defaults
from cpu_reference import digits_prepared
from pipeline import engine, resume
from pipeline.config import TrainConfig

DEFAULTS = training_defaults()
OUTPUTS = {"model": "model.pt", "live": "live", "metrics": "train.json", "run": "run.json", "layers": "layers.csv"}


def full_digits(out: Path) -> Path:
    """All 1,797 digits (1,437 train / 180 val / 180 test), for training runs long enough to kill."""
    return digits_prepared(out, (1437, 180, 180))


def config(**overrides) -> dict:
    return {**DEFAULTS, "name": "t", "dataset": "digits", "device": "cpu", "batch_size": 32, "threads": 1,
            "model": {"name": "lenet", "channels": [8], "fc": [32]}, **overrides}


def train_cmd(cfg_path: Path, prepared: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "pipeline.train", "--config", str(cfg_path), "--prepared", str(prepared),
            "--stats", str(prepared / "stats.json"), *[a for opt, f in OUTPUTS.items() for a in (f"--{opt}", str(out / f))],
            "--log", str(out / "train.log")]


def outside_the_checkout() -> dict:
    """The environment of a stage run from another folder: a train or evaluate stage that fails
    renders the report there (its failure report), never over the checkout's own results/."""
    return {**tool_env(), "PYTHONPATH": str(ROOT)}


def start_training(cfg: dict, prepared: Path, out: Path) -> subprocess.Popen:
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(cfg))
    return subprocess.Popen(train_cmd(out / "config.json", prepared, out), cwd=out, env=outside_the_checkout(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_log(path: Path, text: str, process: subprocess.Popen, limit_s: float = 120) -> None:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline and process.poll() is None:
        if path.exists() and text in path.read_text():
            return
        time.sleep(0.02)
    raise AssertionError(f"{text!r} never logged in {path} (process ended: {process.poll()})")


def outputs(out: Path) -> dict:
    state = torch.load(out / "model.pt", weights_only=True)
    run_record = json.loads((out / "run.json").read_text())
    return {"live": files_in(out / "live"), "layers": (out / "layers.csv").read_text(),
            "metrics": {k: v for k, v in json.loads((out / "train.json").read_text()).items() if k != "train_time_s"},
            "run": {k: v for k, v in run_record.items() if k != "epoch_times_s"},
            "weights": {k: v.numpy().tobytes() for k, v in state["state_dict"].items()}, "epoch": state["epoch"]}


RESUMABLE = config(epochs=4, model={"name": "resnet", "stem": 8, "channels": [8, 16], "blocks": [1, 1],
                                   "strides": [1, 2]}, input_size=32, augment=[{"name": "crop", "padding": 2}],
                   scheduler={"name": "cosine", "warmup_epochs": 1}, early_stopping=0)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> tuple[Path, dict]:
    """The prepared data and the outputs of a run nobody interrupted."""
    tmp = tmp_path_factory.mktemp("resume")
    prepared = full_digits(tmp / "prepared")
    p = start_training(RESUMABLE, prepared, tmp / "whole")
    assert p.wait(timeout=600) == 0, p.stderr.read()
    return prepared, outputs(tmp / "whole")


@pytest.mark.xdist_group("resume")   # one uninterrupted run for both
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["kill-9", "sigterm"])
def test_a_killed_training_resumes_and_ends_bit_identical(tmp_path, uninterrupted, sig):
    prepared, whole = uninterrupted
    killed = tmp_path / "killed"
    p = start_training(RESUMABLE, prepared, killed)
    wait_for_log(killed / "train.log", "epoch 2/4", p)
    p.send_signal(sig)
    p.wait(timeout=60)
    assert p.returncode != 0
    # nothing under a final name, but the epoch log (live/): written as training goes, for `dvc exp
    # show` to follow, a kill -9 leaves the epochs it finished there (the rerun writes it afresh)
    left = [f for f in OUTPUTS.values() if (killed / f).exists()]
    assert left == (["live"] if sig == signal.SIGKILL else [])
    assert resume.state_path(killed / "model.pt").exists()
    p = start_training(RESUMABLE, prepared, killed)                           # the rerun, by the stage CLI
    assert p.wait(timeout=600) == 0, p.stderr.read()
    log = (killed / "train.log").read_text()
    assert "resuming t after epoch" in log and "epoch 1/4" not in log
    assert outputs(killed) == whole
    assert not resume.state_path(killed / "model.pt").exists()              # removed on success


def test_a_state_from_another_config_is_ignored(tmp_path):
    prepared = digits_prepared(tmp_path / "prepared")
    out = tmp_path / "out"
    out.mkdir()
    state = resume.state_path(out / "model.pt")
    resume.save(state, "a key of another run", {"history": [{"epoch": 1}]})
    p = start_training(config(epochs=2), prepared, out)
    assert p.wait(timeout=300) == 0, p.stderr.read()
    log = (out / "train.log").read_text()
    assert "ignoring" in log and "another config, data or code version" in log and "epoch 1/2" in log


def test_further_runs_are_never_made_from_other_data_than_run_0s(tmp_path):
    """run.json records the digest of the data run 0 was trained on (its stats and every prepared
    file); the replicate stage's dependency on it is its dependency on the data (DVC's template
    cannot name the data set). Data changed since: one line, nothing trained or written."""
    from pipeline import replicate
    prepared = digits_prepared(tmp_path / "prepared")
    p = start_training(config(epochs=1), prepared, tmp_path / "run0")
    assert p.wait(timeout=300) == 0, p.stderr.read()
    first = json.loads((tmp_path / "run0/run.json").read_text())
    stats = json.loads((prepared / "stats.json").read_text())
    assert first["data_sha256"] == resume.data_digest(stats, prepared)
    labels = np.load(prepared / "test_labels.npy")
    np.save(prepared / "test_labels.npy", labels[::-1].copy())      # the test split's labels, reordered
    assert resume.data_digest(stats, prepared) != first["data_sha256"]
    run1 = TrainConfig.from_dict({**config(epochs=1), "seed": 1, "replicate": 1}, "run 1")
    out = tmp_path / "replicates"
    with pytest.raises(engine.PipelineError) as e:
        replicate.replicate([run1], first, prepared, prepared / "stats.json", out, tmp_path)
    assert str(e.value) == (f"t: its own run (run.json) was not trained on the data in {prepared} and "
                            f"{prepared / 'stats.json'} as they are now; run its train job first (snakemake or "
                            f"dvc repro do), then this one")
    assert not out.exists() and not (tmp_path / ".replicates.runs").exists()


@pytest.mark.parametrize("lr, loss", [(1e30, "nan"), (1e6, None)])
def test_divergence_is_one_line_and_writes_nothing(tmp_path, lr, loss):
    prepared = digits_prepared(tmp_path / "prepared")
    p = start_training(config(lr=lr, epochs=3), prepared, tmp_path / "out")
    _, err = p.communicate(timeout=300)
    assert p.returncode == 1
    line = err.strip().splitlines()[-1]
    assert line.startswith("error: experiment t diverged in epoch 1, step ")
    # an lr far above any recipe's gets a usual value as the suggestion, not a tenth of itself
    assert f"(lr {lr:g}): nothing written; lower lr (e.g. lr: 0.1) or clip gradients" in line
    if loss:
        assert f"loss {loss}" in line
    assert not [f for f in OUTPUTS.values() if (tmp_path / "out" / f).exists()]


def test_divergence_spread_over_epochs_is_caught(tmp_path):
    """One batch per epoch: each epoch's first step is its only one, so a limit taken from it
    would rise with the loss (0.7, then ~1e11, written as a result). The run's limit holds."""
    prepared = digits_prepared(tmp_path / "prepared")
    p = start_training(config(lr=1e6, epochs=4, batch_size=4096), prepared, tmp_path / "out")
    _, err = p.communicate(timeout=300)
    assert p.returncode == 1
    line = err.strip().splitlines()[-1]
    assert line.startswith("error: experiment t diverged in epoch 2, step 1: loss "), line
    assert float(line.split("loss ")[1].split()[0]) > engine.EXPLODED
    assert not [f for f in OUTPUTS.values() if (tmp_path / "out" / f).exists()]


def test_grad_clip_keeps_a_too_high_lr_finite(tmp_path):
    prepared = digits_prepared(tmp_path / "prepared")
    out = tmp_path / "out"
    p = start_training(config(lr=5.0, epochs=2, optimizer="sgd", momentum=0.0, grad_clip=0.01), prepared, out)
    assert p.wait(timeout=300) == 0, p.stderr.read()
    assert np.isfinite(json.loads((out / "train.json").read_text())["val_acc"])


@pytest.mark.parametrize("device", ["cuda", "cuda:1"])
def test_cuda_asked_for_where_no_gpu_is_visible_is_one_line(tmp_path, device):
    """`device: cuda` on a machine without a GPU (CUDA_VISIBLE_DEVICES="" hides any there is):
    the train stage says so in one line, with what runs here, and writes nothing."""
    prepared = digits_prepared(tmp_path / "prepared")
    out = tmp_path / "out"
    out.mkdir()
    (out / "config.json").write_text(json.dumps(config(device=device, epochs=1)))
    p = subprocess.run(train_cmd(out / "config.json", prepared, out), cwd=tmp_path, capture_output=True, text=True,
                       env={**outside_the_checkout(), "CUDA_VISIBLE_DEVICES": ""})
    assert p.returncode == 1 and "Traceback" not in p.stderr, p.stderr[-2000:]
    assert re.fullmatch(rf"error: device: {device}: no CUDA GPU is visible to this process \(torch .*\); "
                        r"set device: auto \(a GPU where there is one, else the CPU\) or device: cpu to run here",
                        p.stderr.strip().splitlines()[-1]), p.stderr
    assert sorted(f.name for f in out.iterdir()) == ["config.json", "train.log"]   # the log says it too


def test_running_out_of_gpu_memory_is_one_line(tmp_path, monkeypatch):
    prepared = digits_prepared(tmp_path / "prepared")

    def oom(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    monkeypatch.setattr(engine, "run_epoch", oom)
    with pytest.raises(engine.PipelineError, match=r"experiment t: cpu ran out of memory at batch_size 32 .*"
                                                    r"nothing written; try batch_size: 16"):
        engine.fit(TrainConfig.from_dict(config(epochs=1)), prepared, {"mean": [0.3], "std": [0.35]}, engine.TrainOutputs.in_folder(tmp_path))
    assert not list(tmp_path.glob("*.pt")) and not list(tmp_path.glob("*.json"))


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """600 large JPEGs in two class folders, recorded by the download stage: seconds of decoding
    for prepare's two workers."""
    import io
    from PIL import Image
    tmp = tmp_path_factory.mktemp("photos")
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (512, 512, 3), dtype=np.uint8)).save(buf, "JPEG")
    for c in ("a", "b"):
        (tmp / "photos" / c).mkdir(parents=True)
        for i in range(300):
            (tmp / "photos" / c / f"{i}.jpg").write_bytes(buf.getvalue())
    cfg = {"source": {"kind": "folder", "path": str(tmp / "photos")}, "image_size": 32,
           "val_fraction": 0.1, "test_fraction": 0.2, "split_seed": 0}
    (tmp / "ds.json").write_text(json.dumps(cfg))
    (tmp / "source.json").write_text(json.dumps(cfg["source"]))
    run([sys.executable, "-m", "pipeline.download", "--config", str(tmp / "source.json"),
         "--source", str(tmp / "photos"), "--out", str(tmp / "raw")], cwd=ROOT)
    return tmp


def start_prepare(photos: Path, out: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "pipeline.prepare", "--config", str(photos / "ds.json"),
                             "--raw", str(photos / "raw"), "--out", str(out), "--workers", "2"],
                            cwd=ROOT, env=tool_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def assert_gone(pids: list[int], within_s: float = 30) -> None:   # a bound for a hang, not a speed
    deadline = time.monotonic() + within_s
    while any(Path(f"/proc/{w}").exists() for w in pids) and time.monotonic() < deadline:
        time.sleep(0.02)
    alive = [w for w in pids if Path(f"/proc/{w}").exists() and "Z" not in Path(f"/proc/{w}/stat").read_text().split()[2]]
    assert not alive, f"processes {alive} outlived their stage by {within_s} s"


def _in_progress(out: Path, pid: int) -> Path:
    return out / f".prepared.tmp-{pid}"     # stage.atomic_path's folder while prepare works


# SIGTERM's moments, each a point the stage shows it has reached (a file it wrote, a line it logged,
# its workers), never a time: a faster or a busier machine meets the same moments. Each leaves the
# stage work to do, so the signal always comes mid-way.
PREPARE_MOMENTS = {   # (process, its output folder) -> reached?
    "at once (before Python has started)": None,
    "its workers are up": lambda p, out: len(processes_of(p.pid)) >= 2,
    "its output folder begun": lambda p, out: _in_progress(out, p.pid).is_dir(),
    "decoding the train split": lambda p, out: (_in_progress(out, p.pid) / "train_images.npy").exists(),
    "train split written": lambda p, out: (_in_progress(out, p.pid) / "train_labels.npy").exists(),
    "val split written (test split decoding)": lambda p, out: (_in_progress(out, p.pid) / "val_labels.npy").exists(),
}
TRAIN_EPOCHS = 6
TRAIN_MOMENTS = {
    "at once (before Python has started)": None,
    "its log begun": lambda p, out: (out / "train.log").exists(),
    **{f"epoch {e} done": (lambda e: lambda p, out: f"epoch {e}/{TRAIN_EPOCHS} " in _text(out / "train.log"))(e)
       for e in (1, 3, TRAIN_EPOCHS - 1)},
}


def _text(path: Path) -> str:
    return path.read_text() if path.exists() else ""


def wait_until(reached, p: subprocess.Popen, out: Path, limit_s: float = 300) -> None:
    deadline = time.monotonic() + limit_s
    while not reached(p, out):
        assert p.poll() is None, f"the stage ended (exit {p.returncode}) before the moment: {p.stderr.read()[-2000:]}"
        assert time.monotonic() < deadline, f"the moment never came in {limit_s} s"
        time.sleep(0.01)


@pytest.mark.parametrize("stage_name, moment", [("prepare", m) for m in PREPARE_MOMENTS] +
                         [("train", m) for m in TRAIN_MOMENTS])
def test_sigterm_at_any_moment_ends_a_stage_at_once_with_nothing_written(photos, digits_1437, tmp_path,
                                                                        stage_name, moment):
    """SIGTERM is what SLURM sends at a time limit: at any moment of prepare (its first instant
    included) or train, the stage ends, exit 143 (or killed by SIGTERM outright when it comes
    before Python has started the stage), no worker left, nothing written but one line."""
    out = tmp_path / "run"
    if stage_name == "prepare":
        p, reached = start_prepare(photos, out / "prepared"), PREPARE_MOMENTS[moment]
    else:
        cfg = config(epochs=TRAIN_EPOCHS, model={"name": "resnet", "stem": 8, "channels": [8, 16], "blocks": [1, 1],
                                      "strides": [1, 2]}, input_size=32)
        p, reached = start_training(cfg, digits_1437, out), TRAIN_MOMENTS[moment]
    if reached:
        wait_until(reached, p, out)
    family = processes_of(p.pid)
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=60)     # a hang, not a slow machine: a stopped stage takes about a second
    assert p.returncode in (128 + signal.SIGTERM, -signal.SIGTERM), (p.returncode, err[-2000:])
    if p.returncode > 0:
        assert err.strip().splitlines()[-1] == "error: stopped by SIGTERM: nothing written", err[-2000:]
    assert_gone(family)
    written = [f for f in out.rglob("*") if f.is_file() and f.name not in ("config.json", "train.log")
               and not f.name.endswith(".resume")]
    assert not written, (p.returncode, err[-600:], written)   # a resumable state may stay, no output


@pytest.fixture(scope="module")
def digits_1437(tmp_path_factory) -> Path:
    return full_digits(tmp_path_factory.mktemp("digits"))


def test_kill_9_of_prepare_leaves_no_worker_behind(photos, tmp_path):
    p = start_prepare(photos, tmp_path / "prepared")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(processes_of(p.pid)) < 2:
        time.sleep(0.02)
    workers = processes_of(p.pid)
    assert len(workers) == 2 and p.poll() is None, "prepare finished or never started its workers"
    p.kill()
    p.wait()
    assert_gone(workers)


def test_a_16_bit_png_keeps_its_picture(tmp_path):
    from PIL import Image
    from pipeline.sources.base import to_square_array
    pixels = np.array([[0, 257 * 100, 65535], [257, 32768, 257 * 200]], dtype=np.uint16)
    Image.fromarray(pixels).save(tmp_path / "deep.png")         # Pillow stores it as I;16
    with Image.open(tmp_path / "deep.png") as img:
        assert img.mode.startswith("I")
        assert to_square_array(img, None, 1)[..., 0].tolist() == [[0, 100, 255], [1, 128, 200]]


def test_cli_errors_are_one_line(tmp_path):
    missing = tmp_path / "nowhere"
    for cmd in (["pipeline.stats", "--prepared", str(missing), "--out", str(tmp_path / "s.json")],
                ["pipeline.evaluate", "--model", str(missing / "model.pt"), "--prepared", str(missing),
                 *[a for o in ("metrics", "per_class", "predictions", "confusion") for a in (f"--{o}", str(tmp_path / o))]],
                ["pipeline.prepare", "--config", str(missing / "c.json"), "--raw", str(missing), "--out", str(tmp_path / "p")]):
        r = subprocess.run([sys.executable, "-m", *cmd], cwd=tmp_path, env=outside_the_checkout(),
                           capture_output=True, text=True)
        assert r.returncode == 1, r.stderr
        lines = r.stderr.strip().splitlines()
        assert lines[-1].startswith("error: ") and str(missing) in lines[-1] and "Traceback" not in r.stderr, r.stderr


def test_a_read_only_output_folder_is_one_line():
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:   # not under pytest's own 0700 folder
        tmp_path = Path(tmp)
        tmp_path.chmod(0o755)                          # readable by the unprivileged user below
        prepared = digits_prepared(tmp_path / "prepared")
        for f in [prepared, *prepared.iterdir()]:
            f.chmod(0o755)
        locked = tmp_path / "results"
        locked.mkdir(mode=0o555)
        # root writes anywhere: run the stage as nobody where the tests run as root (CI)
        as_user = ["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups"] if os.geteuid() == 0 else []
        r = run([*as_user, sys.executable, "-m", "pipeline.stats", "--prepared", str(prepared), "--out",
                 str(locked / "stats.json")], cwd=ROOT, check=False)
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: {locked}") and "permission denied" in last, r.stderr


@pytest.fixture
def stage_cli(monkeypatch):
    """pipeline.stage.cli in this process, its signal handlers and record of outputs put back after."""
    import signal
    from pipeline import stage
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    monkeypatch.setattr(stage, "_MOVED", [])
    yield stage
    for s, handler in saved.items():
        signal.signal(s, handler)


@pytest.mark.parametrize("fault, words", [
    (errno.ENOSPC, "no space left on its file system (ENOSPC): nothing written; free space there"),
    (errno.EDQUOT, "disk quota exceeded (EDQUOT): nothing written;"),
    (errno.EROFS, "the file system is read-only (EROFS): nothing written; remount it read-write"),
    (errno.EFBIG, "(EFBIG: ulimit -f, or the file system's largest file): nothing written; raise the limit"),
])
def test_a_full_or_read_only_disk_is_one_line_and_leaves_no_output(stage_cli, tmp_path, capsys, fault, words):
    """The second of two outputs fails to write (a test double of the write: the first is already in
    place): one line naming that output and the fix, exit 1, and neither output left behind."""
    first, second = tmp_path / "out" / "a.json", tmp_path / "out" / "b.npy"

    def main():
        with stage_cli.atomic_path(first) as tmp:
            tmp.write_text("{}")
        with stage_cli.atomic_path(second) as tmp:
            tmp.write_bytes(b"half")
            raise OSError(fault, os.strerror(fault))        # as a write() reports it: no file named
    with pytest.raises(SystemExit) as e:
        stage_cli.cli(main)
    assert e.value.code == 1
    assert capsys.readouterr().err.strip().splitlines()[-1] == f"error: {second}: {stage_cli.MACHINE_FAULTS[fault]}"
    assert words in stage_cli.MACHINE_FAULTS[fault]
    assert files_in(tmp_path / "out") == {}                                # nothing half-written, nothing kept


def test_a_full_disk_under_a_real_stage(stage_cli, tmp_path, capsys, monkeypatch):
    """The stats stage writing its JSON onto a full disk (Path.write_text's ENOSPC, as the kernel
    gives it): the same one line, no stats file."""
    from pipeline import stats
    prepared = digits_prepared(tmp_path / "prepared")
    real = Path.write_text

    def full(self, *args, **kwargs):
        if self.name.startswith(".s.json.tmp-"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, *args, **kwargs)
    monkeypatch.setattr(Path, "write_text", full)
    with pytest.raises(SystemExit):
        stage_cli.cli(lambda: stats.main(["--prepared", str(prepared), "--out", str(tmp_path / "s.json")]))
    assert capsys.readouterr().err.strip().splitlines()[-1] == \
        f"error: {tmp_path / 's.json'}: {stage_cli.MACHINE_FAULTS[errno.ENOSPC]}"
    assert not list(tmp_path.glob("*s.json*"))


def test_a_file_size_limit_is_one_line_under_a_real_process(tmp_path):
    """`ulimit -f` (RLIMIT_FSIZE): the kernel refuses the write past it with EFBIG (Python ignores
    the SIGXFSZ that comes with it), as a full disk refuses with ENOSPC: the same kind of line."""
    import resource
    from pipeline import stage
    prepared = digits_prepared(tmp_path / "prepared")
    out = tmp_path / "s.json"
    p = subprocess.run([sys.executable, "-m", "pipeline.stats", "--prepared", str(prepared), "--out", str(out)],
                       cwd=ROOT, env=tool_env(), capture_output=True, text=True,
                       preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (16, 16)))
    assert p.returncode == 1, p.stderr
    assert p.stderr.strip().splitlines()[-1] == f"error: {out}: {stage.MACHINE_FAULTS[errno.EFBIG]}", p.stderr
    assert not list(tmp_path.glob("*s.json*"))


def test_a_checkpoint_onto_a_full_disk_is_an_oserror_the_stage_reports():
    """torch.save alone reports a full disk as a RuntimeError of its zip writer ("unexpected pos");
    the checkpoint and the resume state go through resume.torch_save, whose ENOSPC stage.cli
    turns into its one line (above). /dev/full is a disk that is always full."""
    with pytest.raises(OSError) as e:
        resume.torch_save({"w": torch.zeros(10_000)}, Path("/dev/full"))
    assert e.value.errno == errno.ENOSPC
