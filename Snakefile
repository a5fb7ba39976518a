# Snakemake workflow: the stages of pipeline/stages.py, the same commands and paths as dvc.yaml.
#   snakemake --cores 4 --resources gpu=1        (profiles/default sets these as defaults)
import importlib
import sys
from pathlib import Path
from snakemake.utils import validate
from pipeline import params as P, stages as S
from pipeline.configure import changes, check_local_sources, configure
from pipeline.lock import hold_workspace

# params.yaml is read here and by the configure stage, not through `configfile:`: the stages must
# see exactly what DVC sees, so `--config` overrides are not a second way in.
CONFIGS, SOURCES = Path("results/configs"), Path("data/sources")
try:   # one line naming a bad key or a missing source, before any job
    PARAMS = P.load("params.yaml")
    check_local_sources(PARAMS)
except (P.ParamsError, S.PipelineError) as e:
    sys.exit(f"error: {e}")
validate(PARAMS, P.SCHEMA_PATH)
# Snakemake's view of params.yaml: one small JSON per job, rewritten only when its content changes.
# A job reruns when such an input is newer than its outputs, whoever built them (DVC included);
# params triggers would need Snakemake's own records, which outputs built by DVC lack.
# Written only while this process holds the workspace (the lock below, from now until it exits):
# another run's jobs read these files, so a dry run or a refused run during it must not touch them.
# (A job's own snakemake, e.g. under SLURM, finds them written by the main process.)
if workflow.is_main_process:
    try:
        hold_workspace()
    except S.PipelineError as busy:
        write, remove = changes(PARAMS, CONFIGS, SOURCES)
        stale = [str(path) for path in [*write, *remove]]
        if stale:
            sys.exit(f"error: {busy}; params.yaml changes {len(stale)} file(s) of {CONFIGS} ({stale[0]}, ...) "
                     f"that its jobs read: they are left as they are until then")
    else:
        configure(PARAMS, CONFIGS, SOURCES)
SMK = S.Snakemake(PARAMS)
SHELL = {stage.name: SMK.shell(stage) for stage in S.STAGES}

wildcard_constraints:
    ds="[a-z][a-z0-9_]*",
    exp="[a-z][a-z0-9_]*",

# DVC and Snakemake must never write the same outputs at once: a run holds DVC's own repository
# lock (taken above where it was free; a run parsed while it was held stops here).
onstart:
    hold_workspace()

# A failed job (e.g. a diverged experiment under `snakemake -k`): a report of everything that
# finished, the failure shown with its one line, dated 1970 so that the next run rebuilds it.
onerror:
    importlib.import_module("pipeline.report").render_despite_failure()

# Every output of every job, not the report alone: Snakemake would otherwise leave a deleted
# output missing while the report is newer than what is left ("missing / no update").
rule all:
    input: [path for stage in S.STAGES if stage.name != "configure" for path in SMK.all_outputs(stage.name)]

# One rule per stage of pipeline/stages.py but configure (done above): inputs (with the code the
# stage imports), outputs, log and command all come from there. The conda env holds the pins of
# envs/requirements.txt (`--sdm conda` to use it).

rule download:
    input: **SMK.inputs("download")
    output: **SMK.outputs("download")
    log: S.BY_NAME["download"].log
    conda: "envs/pipeline.yaml"
    shell: SHELL["download"]

rule prepare:
    input: **SMK.inputs("prepare")
    output: **SMK.outputs("prepare")
    log: S.BY_NAME["prepare"].log
    conda: "envs/pipeline.yaml"
    shell: SHELL["prepare"]

rule stats:
    input: **SMK.inputs("stats")
    output: **SMK.outputs("stats")
    log: S.BY_NAME["stats"].log
    conda: "envs/pipeline.yaml"
    shell: SHELL["stats"]

rule train:
    input: **SMK.inputs("train")
    output: **SMK.outputs("train")
    log: S.BY_NAME["train"].log
    threads: SMK.threads
    resources: gpu=SMK.devices    # `devices: N` trains on N GPUs (DDP), so takes N
    conda: "envs/pipeline.yaml"
    shell: SHELL["train"]

rule evaluate:
    input: **SMK.inputs("evaluate")
    output: **SMK.outputs("evaluate")
    log: S.BY_NAME["evaluate"].log
    threads: SMK.threads
    resources: gpu=1
    conda: "envs/pipeline.yaml"
    shell: SHELL["evaluate"]

rule report:
    input: **SMK.inputs("report")
    output: **SMK.outputs("report")
    log: S.BY_NAME["report"].log
    conda: "envs/pipeline.yaml"
    shell: SHELL["report"]
