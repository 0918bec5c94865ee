# The project's commands. Each creates the environment it needs on first use.
PYTHON ?= python3
VENV ?= .venv
LEGACY_VENV ?= .venv-legacy
STITCH_VENV ?= .venv-stitch
STITCHCLIENT_VENV ?= .venv-stitchclient
TAP_VENV ?= .venv-tap-postgres
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

# The Stitch clients, exactly as users install them from PyPI, each in an environment of its own.
# target-stitch 4.0.3, the Singer target (psutil and simplejson build from source: gcc and the
# Python headers).
$(STITCH_VENV)/bin/.installed:
	$(PYTHON) -m venv $(STITCH_VENV)
	$(STITCH_VENV)/bin/pip install -q target-stitch==4.0.3
	$(STITCH_VENV)/bin/target-stitch --help >/dev/null
	touch $@

# stitchclient 1.0.1 bundles a transit-python that uses collections.Mapping, MutableMapping and
# Hashable, gone since Python 3.10; a .pth in the venv puts the three aliases back at start-up,
# so the client's own code runs unchanged.
$(STITCHCLIENT_VENV)/bin/.installed:
	$(PYTHON) -m venv $(STITCHCLIENT_VENV)
	$(STITCHCLIENT_VENV)/bin/pip install -q stitchclient==1.0.1
	echo "import collections, collections.abc; collections.Mapping = collections.abc.Mapping; collections.MutableMapping = collections.abc.MutableMapping; collections.Hashable = collections.abc.Hashable" \
	  > "$$($(STITCHCLIENT_VENV)/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/zz_collections_abc_compat.pth"
	$(STITCHCLIENT_VENV)/bin/python -c 'from stitchclient.client import Client'
	touch $@

# A real Singer tap, tap-postgres 0.2.1: its pinned psycopg2==2.7.4 does not build on Python
# 3.11, so its other pins and a binary psycopg2 first, then the tap without its dependencies.
$(TAP_VENV)/bin/.installed:
	$(PYTHON) -m venv $(TAP_VENV)
	$(TAP_VENV)/bin/pip install -q 'singer-python==5.3.1' 'strict-rfc3339==0.7' 'psycopg2-binary==2.9.10'
	$(TAP_VENV)/bin/pip install -q --no-deps tap-postgres==0.2.1
	touch $@

serve: $(BIN)/.installed
	$(BIN)/importapi serve --host $(HOST) --port $(PORT) --database $(DATABASE)

CLIENTS := $(LEGACY_VENV)/bin/.installed $(STITCH_VENV)/bin/.installed $(STITCHCLIENT_VENV)/bin/.installed \
           $(TAP_VENV)/bin/.installed

test: $(BIN)/.installed $(CLIENTS)
	bash scripts/ensure-chromium.sh
	IMPORTAPI_LEGACY_PYTHON=$(LEGACY_VENV)/bin/python \
	IMPORTAPI_TARGET_STITCH=$(STITCH_VENV)/bin/target-stitch \
	IMPORTAPI_STITCHCLIENT_PYTHON=$(STITCHCLIENT_VENV)/bin/python \
	IMPORTAPI_SINGER_TAP=$(TAP_VENV)/bin/tap-postgres \
	  $(BIN)/python -m pytest $(PYTEST_ARGS)

check: $(BIN)/.installed
	$(BIN)/ruff check importapi tests bench
	$(BIN)/ruff format --check importapi tests bench
	$(BIN)/mypy

# Durability under SIGKILL, the long form: >= 10 minutes, >= 20 kills, then a calm stretch
# that shows whether memory stops growing. Prints lost/half-applied/5xx counts and RSS.
SOAK_ARGS ?= --minutes 12 --calm-minutes 4
soak: $(BIN)/.installed
	$(BIN)/python -m bench.soak $(SOAK_ARGS)

# The benchmark: importapi's routes (RJMetrics; Stitch batches, flat and nested) against Datasette,
# the in-process SQLite limit and the engines' best cases (bench/RESULTS.md). BENCH_ARGS=--quick: a
# smoke run of a couple of minutes.
bench: $(BIN)/.installed
	@command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk)
	$(BIN)/python -m bench.run $(BENCH_ARGS)

# Which HTTP server and JSON library carry the hot path best.
bench-stack: $(BIN)/.installed
	@command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk)
	$(BIN)/python -m bench.stack

clean:
	rm -rf $(VENV) $(LEGACY_VENV) $(STITCH_VENV) $(STITCHCLIENT_VENV) $(TAP_VENV) .pytest_cache .hypothesis
