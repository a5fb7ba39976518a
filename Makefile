# The two set-up commands of the README:
#   make demo   install, then run the whole pipeline on the bundled digits data -> results/report.html
#   make test   install, then run the test suite
# While working: make check, the fast tier (every test but the end-to-end runs of the tools).
SHELL  := /bin/bash
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: install demo test check repro bench gpu-check clean
install: $(VENV)/.installed
$(VENV)/.installed: envs/requirements.txt envs/constraints.txt scripts/dvc_plots_template.py
	@echo "==> 1/4 a virtual environment in $(VENV)"
	$(PYTHON) -m venv $(VENV)
	@echo "==> 2/4 pip itself"
	$(BIN)/pip install -q --upgrade pip
	@echo "==> 3/4 the pinned packages (PyTorch with its CUDA libraries, DVC, Snakemake: ~3 min the first time)"
	$(BIN)/pip install --progress-bar on -r envs/requirements.txt -c envs/constraints.txt \
	  | grep --line-buffered -E '^(Collecting|Downloading|Installing|Successfully)' ; test $${PIPESTATUS[0]} -eq 0
	@echo "==> 4/4 the offline template of dvc plots show"
	$(BIN)/python scripts/dvc_plots_template.py .dvc/plots-offline.html   # offline `dvc plots show`
	touch $@

demo: install          ## Snakemake, with profiles/default (every core, gpu=1)
	snakemake

repro: install         ## the same pipeline with DVC
	dvc repro

test: install          ## the whole suite; the 15 slowest tests listed at the end (where CI's time goes)
	$(BIN)/python -m pytest --durations=15

check: install         ## the fast tier, to run while working: no test that runs a whole pipeline
	$(BIN)/python -m pytest -m "not integration"

bench: install         ## wall times of the demo and of no-op reruns with each tool
	$(BIN)/python scripts/bench_pipeline.py

gpu-check: install     ## on a CUDA machine: benchmark, seed 002 on CIFAR-10, smoke run, determinism -> benchmarks/
	$(BIN)/python scripts/gpu_check.py --out benchmarks

# Not the venv, nor data/downloads/ (archives you placed there), nor data/sources/ (configure's links,
# committed with the study).
clean:                 ## what .gitignore calls generated in data/, results/, logs/, and Snakemake's records
# (dvc.lock stays: DVC's record, which you commit; `dvc checkout` brings its outputs back, and then
# `dvc status` and `snakemake -n` both have nothing to do)
	git clean -fdqX -e '!data/downloads' data results logs .snakemake
