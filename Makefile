# FreeSeg — every target creates the virtual environment (.venv) on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
WORLD ?= data/world
RUNS ?= runs/demo
REFINE_STEPS ?= 400
# stages run at once by make demo / make ablation (empty: two on 2 cores or more; 1: in order)
JOBS ?=
JOBS_ARG := $(if $(JOBS),--jobs $(JOBS))

.PHONY: install test test-all lint format demo ablation encoder clean-demo help reproduce-voc reproduce-coco

help:
	@echo "make demo      generate the world and run the pipeline on CPU"
	@echo "make test      the default test suite (offline, a few minutes)"
	@echo "make test-all  also the slow tests"
	@echo "make ablation  Tables 2 and 4 on the generated world (poolings; partial pixel)"
	@echo "make encoder   retrain the shipped stand-in for DINO (weights/freeseg_synth_vit.pth)"
	@echo "make install   create .venv from pyproject.toml"
	@echo "make lint      ruff + mypy on src/"

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -U pip
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider

test-all: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider -m "not gpu"

lint: $(STAMP)
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff check --fix src tests
	$(BIN)/ruff format src tests

demo: $(STAMP)
	$(BIN)/python -m freeseg.demo --generate --world $(WORLD) --runs $(RUNS) --refine_steps $(REFINE_STEPS) $(JOBS_ARG)

encoder: $(STAMP)
	$(BIN)/python -m freeseg.demo --world $(WORLD) --runs runs/encoder --make_encoder weights/freeseg_synth_vit.pth

ablation: $(STAMP)
	$(BIN)/python -m freeseg.demo --ablation --world $(WORLD) --runs $(RUNS) --refine_steps $(REFINE_STEPS) $(JOBS_ARG)

clean-demo:
	rm -rf $(WORLD) $(RUNS) results/demo

# The paper's chain on real data (GPUs): GCC3M=... DINO=... VOC=... (or COCO=...).
reproduce-voc: $(STAMP)
	$(BIN)/python -m freeseg.reproduce voc

reproduce-coco: $(STAMP)
	$(BIN)/python -m freeseg.reproduce coco
