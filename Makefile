# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.cxrlens-installed
DEMO := out/demo
PYTEST_ARGS ?=

.PHONY: install demo test lint format bench clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/cxrlens data summary --data @sample
	$(BIN)/cxrlens data split --data @sample --folds 3 --seed 0 --out $(DEMO)/splits.csv \
		--external-fraction 0.2 --external-out $(DEMO)/external
	$(BIN)/cxrlens cv --config configs/demo.yaml --run $(DEMO)/run --splits $(DEMO)/splits.csv --cache $(DEMO)/cache
	$(BIN)/cxrlens evaluate --run $(DEMO)/run
	$(BIN)/cxrlens evaluate-external --run $(DEMO)/run --data $(DEMO)/external --name sample-holdout
	$(BIN)/cxrlens audit --run $(DEMO)/run
	$(BIN)/cxrlens explain --run $(DEMO)/run
	$(BIN)/cxrlens evaluate-explanations --run $(DEMO)/run --steps 10 --sanity-images 1 --stability-images 1
	$(BIN)/cxrlens nap --run $(DEMO)/run --model resnet18
	$(BIN)/cxrlens report --run $(DEMO)/run

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python benchmarks/suite.py --out docs/benchmarks.md

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf out .pytest_cache .ruff_cache
