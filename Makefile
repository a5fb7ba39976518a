# The two set-up commands of the README:
#   make demo   install, then run the whole pipeline on the bundled digits data -> results/report.html
#   make test   install, then run the test suite
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: install demo test repro bench clean
install: $(VENV)/.installed
$(VENV)/.installed: envs/requirements.txt envs/constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r envs/requirements.txt -c envs/constraints.txt
	touch $@

demo: install          ## Snakemake, with profiles/default (4 cores, gpu=1)
	snakemake

repro: install         ## the same pipeline with DVC
	dvc repro

test: install
	$(BIN)/python -m pytest

bench: install         ## wall times of the demo and of no-op reruns with each tool
	$(BIN)/python scripts/bench_pipeline.py

clean:                 ## generated data, results, logs and both tools' records (not the venv)
	rm -rf data/raw data/prepared data/stats data/downloads results/configs results/experiments results/report.html logs .snakemake dvc.lock
	find data/sources -mindepth 1 ! -name README.md -exec rm -f {} +   # configure's links (never what they point to)
