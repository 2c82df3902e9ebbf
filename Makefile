# stormwatch: `make demo` runs the pipeline on the embedded stack; `make test` passes the tests.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test lint bench bench-quality bench-detectors clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/stormwatch up --demo --duration $${DURATION:-180}

test: $(STAMP)
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/pip-audit --skip-editable --progress-spinner off

bench: $(STAMP)
	$(BIN)/python -m benchmarks.run

bench-quality: $(STAMP)
	$(BIN)/python -m benchmarks.quality

bench-detectors: $(STAMP)
	$(BIN)/python -m benchmarks.detectors

clean:
	rm -rf .stormwatch build *.egg-info
