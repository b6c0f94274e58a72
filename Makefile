# The two commands of the README. Each makes its own virtualenv on a fresh machine.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test lint proto check serve bench fuzz

$(BIN)/tongban: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev,fast]'
	touch $(BIN)/tongban

demo: $(BIN)/tongban
	$(BIN)/tongban demo

serve: $(BIN)/tongban
	$(BIN)/tongban serve --config partners.toml

test: $(BIN)/tongban lint
	$(BIN)/pytest

# the full fuzz run (tests/test_fuzz.py); `make test` runs a short one
fuzz: $(BIN)/tongban
	TONGBAN_FUZZ_EXAMPLES=$${TONGBAN_FUZZ_EXAMPLES:-10000} $(BIN)/pytest -m fuzz --show-capture=no

lint: $(BIN)/tongban
	$(BIN)/python scripts/gen_proto.py --check
	npx --yes @bufbuild/buf@1.75.0 lint
	$(BIN)/ruff check gateway adapters tests scripts benchmarks
	$(BIN)/mypy

proto: $(BIN)/tongban
	$(BIN)/python scripts/gen_proto.py

bench: $(BIN)/tongban
	$(BIN)/python -m benchmarks.run --repeat 3 --latency --sweep 1,16,64,256
