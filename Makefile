# The project's commands. Each creates the environment it needs on first use.
PYTHON ?= python3
VENV ?= .venv
LEGACY_VENV ?= .venv-legacy
HOST ?= 127.0.0.1
PORT ?= 8080
DATABASE ?= sqlite:///importapi-data
PYTEST_ARGS ?=

BIN := $(VENV)/bin

.PHONY: serve test check bench bench-stack clean soak

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $@

# The legacy Python client, exactly as its users installed it, in an environment of its own.
$(LEGACY_VENV)/bin/.installed:
	$(PYTHON) -m venv $(LEGACY_VENV)
	$(LEGACY_VENV)/bin/pip install -q 'setuptools<58' wheel
	$(LEGACY_VENV)/bin/pip install -q --no-build-isolation rjmetrics==0.1.0
	touch $@

serve: $(BIN)/.installed
	$(BIN)/importapi serve --host $(HOST) --port $(PORT) --database $(DATABASE)

test: $(BIN)/.installed $(LEGACY_VENV)/bin/.installed
	bash scripts/ensure-chromium.sh
	IMPORTAPI_LEGACY_PYTHON=$(LEGACY_VENV)/bin/python $(BIN)/python -m pytest $(PYTEST_ARGS)

check: $(BIN)/.installed
	$(BIN)/ruff check importapi tests bench
	$(BIN)/ruff format --check importapi tests bench
	$(BIN)/mypy

# Durability under SIGKILL, the long form: >= 10 minutes, >= 20 kills, then a calm stretch
# that shows whether memory stops growing. Prints lost/half-applied/5xx counts and RSS.
SOAK_ARGS ?= --minutes 12 --calm-minutes 4
soak: $(BIN)/.installed
	$(BIN)/python -m bench.soak $(SOAK_ARGS)

# The benchmark: importapi against Datasette and the in-process SQLite limit (bench/RESULTS.md).
bench: $(BIN)/.installed
	@command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk)
	$(BIN)/python -m bench.run $(BENCH_ARGS)

# Which HTTP server and JSON library carry the hot path best.
bench-stack: $(BIN)/.installed
	@command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk)
	$(BIN)/python -m bench.stack

clean:
	rm -rf $(VENV) $(LEGACY_VENV) .pytest_cache .hypothesis
