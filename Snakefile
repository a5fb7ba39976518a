# Snakemake workflow: the stages of pipeline/wiring.py, the same commands and paths as dvc.yaml.
#   snakemake --cores all --resources gpu=1      (profiles/default sets these as defaults)
import sys
from pathlib import Path
from snakemake.utils import validate
from pipeline import params, wiring
from pipeline.configure import changes, check_local_sources, configure
from pipeline.lock import code_mtimes, edited_during_run, hand_over_to_dvc, hold_workspace
from pipeline.plan import take_over_from_dvc
from pipeline.report import render_despite_failure
from pipeline.stage import PipelineError

# params.yaml is read here and by the configure stage, not through `configfile:`: the stages must
# see exactly what DVC sees, so `--config` overrides are not a second way in.
CONFIGS, SOURCES = Path("results/configs"), Path("data/sources")
try:   # one line naming a bad key or a missing source, before any job
    PARAMS = params.load("params.yaml")
    check_local_sources(PARAMS)
except (params.ParamsError, PipelineError) as e:
    sys.exit(f"error: {e}")
validate(PARAMS, params.SCHEMA_PATH)
# Snakemake's view of params.yaml: one small JSON per job, rewritten only when its content changes.
# A job reruns when such an input is newer than its outputs, whoever built them (DVC included),
# unless dvc.lock records it as current (the take-over below); params triggers would need
# Snakemake's own records, which outputs built by DVC lack.
# Written only while this process holds the workspace (the lock below, from now until it exits):
# another run's jobs read these files, so a dry run or a refused run during it must not touch them.
# (A job's own snakemake, e.g. under SLURM, finds them written by the main process.)
if workflow.is_main_process:
    CODE_AT_START = code_mtimes()   # for the hand-over: code edited during the run is not handed over
    try:
        hold_workspace()
    except PipelineError as busy:
        write, remove = changes(PARAMS, CONFIGS, SOURCES)
        stale = [str(path) for path in [*write, *remove]]
        if stale:
            sys.exit(f"error: {busy}; params.yaml changes {len(stale)} file(s) of {CONFIGS} ({stale[0]}, ...) "
                     f"that its jobs read: they are left as they are until then")
    else:
        configure(PARAMS, CONFIGS, SOURCES)
        # Outputs DVC restored (checkout, pull, exp apply) are dated as copied: those dvc.lock
        # records as current are dated after their inputs, so that only the rest reruns.
        if taken := take_over_from_dvc(wiring.jobs(PARAMS)):
            print(f"{len(taken)} job(s) whose outputs dvc.lock records as current ({taken[0]}, ...) dated "
                  f"after their inputs", file=sys.stderr)
STUDY = wiring.Snakemake(PARAMS)
SHELL = {stage.name: STUDY.shell(stage) for stage in wiring.RULES}

wildcard_constraints:
    ds="[a-z][a-z0-9_]*",
    exp="[a-z][a-z0-9_]*",

# DVC and Snakemake must never write the same outputs at once: a run holds DVC's own repository
# lock (taken above where it was free; a run parsed while it was held stops here).
onstart:
    hold_workspace()

# Succeeded: DVC records the outputs (`dvc repro` then runs nothing), if params.yaml still resolves
# to the configs the run used and no code changed under it.
onsuccess:
    run = workflow.dag_settings
    hand_over_to_dvc(whole_workflow=not (run.targets or run.until or run.omit_from),
                     edited=edited_during_run(CODE_AT_START, CONFIGS, SOURCES))

# A failed job (e.g. a diverged experiment under `snakemake -k`): a report of everything that
# finished, the failure shown with its one line, dated 1970 so that the next run rebuilds it.
onerror:
    render_despite_failure()

# Every output of every job, not the report alone: Snakemake would otherwise leave a deleted
# output missing while the report is newer than what is left ("missing / no update").
rule all:
    input: [path for stage in wiring.RULES for path in STUDY.all_outputs(stage.name)]

# One rule per stage of pipeline/wiring.py but configure (done above): inputs (with the code the
# stage imports), outputs, log, GPU resource and command all come from its row. The conda env
# holds the pins of envs/requirements.txt (`--sdm conda` to use it).
for stage in wiring.RULES:
    rule:
        name: stage.name
        input: **STUDY.inputs(stage.name)
        output: **STUDY.outputs(stage.name)
        log: stage.log
        threads: STUDY.threads if stage.gpus else 1
        resources: **STUDY.resources(stage)
        conda: "envs/pipeline.yaml"
        # Snakemake evaluates this once here and again when the job runs, where `stage` is the
        # loop's last: there the job's own rule name (an argument named `rule`) picks the command.
        shell: SHELL[locals().get("rule", stage.name)]
