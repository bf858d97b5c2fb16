# The two commands a newcomer needs: `make demo` and `make test`.
# Both create .venv and install the project (torch pinned, in the same pip command) when missing.
PY ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

# checkov (the policy scan of tests/test_manifests.py) in its own venv: it pins packages the
# project's venv needs newer
POLICY := .venv-policy
POLICY_STAMP := $(POLICY)/.installed

.PHONY: install policy-venv demo test lint format bench-quality clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

$(POLICY_STAMP):
	test -x $(POLICY)/bin/python || $(PY) -m venv $(POLICY)
	$(POLICY)/bin/python -m pip install --quiet "checkov==3.3.30"
	touch $(POLICY_STAMP)

policy-venv: $(POLICY_STAMP)

## make demo [DATA=../shared/data/mpd-dev] [DEMO_ARGS=--quick]: synthetic (or your) MPD -> the
## local training pipeline (kfp.local): ingest -> split -> features -> train -> evaluate -> gate ->
## export -> register (MLflow, runs/demo/mlflow.db) -> deploy (runs/serving/current.json) -> summary
demo: $(STAMP)
	$(BIN)/llarapp demo $(if $(DATA),--data $(DATA)) $(DEMO_ARGS)

## make test [TEST_WORKERS=2]: format check, lint, architecture rules (import contracts), then
## every test, whole files spread over TEST_WORKERS processes of one thread each
TEST_WORKERS ?= 2
test: $(STAMP) $(POLICY_STAMP) lint
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile --durations=15

lint: $(STAMP)
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/lint-imports

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

## the issue's quality benchmark on the real dev playlists
bench-quality: $(STAMP)
	$(BIN)/llarapp benchmark quality --mpd ../shared/data/mpd-dev --out runs/quality.json

clean:
	rm -rf runs .pytest_cache .ruff_cache
