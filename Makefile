# The course's two commands:  make lab   (set up, then open the course)
#                             make test  (set up, then run every test)
# Both create the environment on first use and are fast afterwards.

PYTHON  ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
# torch: 2.13.0 is the CPU build tested here; an existing torch in the venv is kept.
TORCH_SPEC ?= torch==2.13.0
STAMP   := $(VENV)/.alignlab-installed
PORT    ?= 8888
PYTEST_ARGS ?=
LAB_ARGS ?=
GRADE_ARGS ?=
REPORT_ARGS ?=
# Jupyter refuses to run as root without --allow-root (containers, CI).
ROOT_ARGS := $(if $(filter 0,$(shell id -u)),--allow-root)
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: lab test setup release references grade report benchmarks data clean-runtime help

help:
	@echo "make lab        set up (first time) and open the course in JupyterLab"
	@echo "make test       set up (first time) and run the whole test suite"
	@echo "make release    regenerate notebooks/ from solutions/ with nbgrader"
	@echo "make references regenerate the checks' reference outputs (float64)"
	@echo "make grade      autograde every submission in autograder/runtime/submitted"
	@echo "make report     the class report (autograder/runtime/reports/*.html) and the grade CSVs"
	@echo "make benchmarks measure notebook run times, grading times, teaching figures"
	@echo "make data       rebuild the embedded world under data/ (about 40 min on 2 busy cores)"

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "alignlab needs Python 3.11 or newer for its Jupyter and grading tools; run: make PYTHON=python3.11 ...")'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -c 'import torch' 2>/dev/null || $(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -e ".[grading,dev]"
	@touch $(STAMP)

setup: $(STAMP)

lab: setup
	$(BIN)/python -m ipykernel install --user --name alignlab --display-name "Python (alignlab)" >/dev/null
	$(BIN)/jupyter lab --notebook-dir=notebooks --port=$(PORT) $(ROOT_ARGS) $(LAB_ARGS)

test: setup
	@bash scripts/system_packages.sh
	$(BIN)/python -m pytest $(PYTEST_ARGS)

release: setup
	$(BIN)/python -m alignlab.grading release

references: setup
	$(BIN)/python scripts/make_references.py

grade: setup
	$(BIN)/python -m alignlab.grading grade $(GRADE_ARGS)

report: setup
	$(BIN)/python -m alignlab.grading report $(REPORT_ARGS)

benchmarks: setup
	$(BIN)/python benchmarks/run_all.py

data: setup
	$(BIN)/python scripts/build_world.py

clean-runtime:
	rm -rf autograder/runtime
