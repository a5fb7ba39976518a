# The two set-up commands of the README:
#   make demo   install, then run the whole pipeline on the bundled digits data -> results/report.html
#   make test   install, then run the test suite
# While working: make check, the fast tier (every test but the end-to-end runs of the tools).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: install demo test check repro bench gpu-check clean
install: $(VENV)/.installed
$(VENV)/.installed: envs/requirements.txt envs/constraints.txt scripts/dvc_plots_template.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r envs/requirements.txt -c envs/constraints.txt
	$(BIN)/python scripts/dvc_plots_template.py .dvc/plots-offline.html   # offline `dvc plots show`
	touch $@

demo: install          ## Snakemake, with profiles/default (4 cores, gpu=1)
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

# Not the venv, nor data/downloads/ (archives you placed there); configure's links in data/sources
# go, never what they point to.
clean:                 ## what .gitignore calls generated in data/, results/, logs/; both tools' records
	git clean -fdqX -e '!data/downloads' data results logs .snakemake
	rm -f dvc.lock
