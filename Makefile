# Two commands on a fresh machine:
#   make demo   sets up .venv, builds the CMUdict data set, trains g2p_small (about
#               10 minutes on 2 CPU cores), evaluates on 12,000 held-out words.
#   make test   runs the test suite (sets up .venv with the test tools first).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
RUN_DIR ?= runs/g2p_small
DEMO_MINUTES ?= 9

.PHONY: setup setup-dev demo test clean

$(BIN)/s2s: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.txt
	$(BIN)/pip install --quiet --no-deps -e .
	touch $(BIN)/s2s

$(VENV)/.dev: $(BIN)/s2s requirements-dev.txt
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $(VENV)/.dev

setup: $(BIN)/s2s

setup-dev: $(VENV)/.dev

demo: setup
	$(BIN)/s2s train --config g2p_small --run-dir $(RUN_DIR) --max-minutes $(DEMO_MINUTES) --verbose 2
	$(BIN)/s2s evaluate $(RUN_DIR) --split test --beam 5 --batch-size 256 --samples 8

test: setup-dev
	$(BIN)/python -m pytest -q tests

clean:
	rm -rf $(VENV) runs
