# The two commands of the README. Each makes its own virtualenv on a fresh machine.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test lint proto check serve bench fuzz chromium

$(BIN)/tongban: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev,fast]'
	touch $(BIN)/tongban

demo: $(BIN)/tongban
	$(BIN)/tongban demo

serve: $(BIN)/tongban
	$(BIN)/tongban serve --config partners.toml

test: $(BIN)/tongban lint chromium
	$(BIN)/pytest

# tests/test_sessions_browser.py drives Debian's Chromium through Playwright. Nothing to do
# where one is installed; otherwise try apt (as root), and never fail: without Chromium
# that test is skipped and says why.
chromium:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 \
	  || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 \
	       && apt-get update -qq >/dev/null 2>&1 \
	       && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null 2>&1; } \
	  || echo "chromium is not installed: tests/test_sessions_browser.py will be skipped"

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
