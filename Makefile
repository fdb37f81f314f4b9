# dreamgen's set-up and the commands in the README. Each target installs what it needs first.
# The venv lives outside the clone, keyed by a hash of pyproject.toml, so CI and every clone reuse it.
PYTHON ?= python3.11
VENV_ROOT ?= $(HOME)/.cache/dreamgen/venvs
VENV ?= $(VENV_ROOT)/$(shell sha256sum pyproject.toml | cut -c1-16)
BIN := $(VENV)/bin
EXPERIMENT ?= demo
RUN_DIR ?= runs/$(EXPERIMENT)
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING := false

.PHONY: install demo smoke test test-slow lint clean-venvs

$(BIN)/uv:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip uv

# Installs into the venv every time (a no-op when nothing changed; re-points the editable install).
install: $(BIN)/uv
	$(BIN)/uv pip install --quiet --python $(BIN)/python -e '.[dev]'

demo: install  ## the main job on the embedded default (local, sqlite MLflow, Meta-World on CPU); EXPERIMENT=demo-goal: known-cost planner dreams
	$(BIN)/dreamgen pipeline experiment=$(EXPERIMENT) run_dir=$(RUN_DIR)

smoke: install  ## the same path, tiny
	$(BIN)/dreamgen pipeline experiment=smoke run_dir=runs/smoke

test: install  ## the default test run (unit + integration, no slow learning tests)
	$(BIN)/python -m pytest -m "not slow" --file-order=random $(PYTEST_ARGS)

test-slow: install  ## long learning tests
	$(BIN)/python -m pytest -m slow $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check dreamgen policies generation jobs tests benchmarks
	$(BIN)/mypy dreamgen policies generation

clean-venvs:  ## remove every venv but the current one
	find $(VENV_ROOT) -mindepth 1 -maxdepth 1 -type d ! -path '$(VENV)' -exec rm -rf {} +
