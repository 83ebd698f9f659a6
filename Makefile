# Two commands for a newcomer: `make demo` (the main job) and `make test` (the test suite).
# Both create the virtualenv in .venv and install the pinned dependencies first (cached after that).

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: install demo default-model relation-model test test-fast lint services bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $@

# The first `make demo` also derives the default model (`xmr model derive --if-missing`: the
# relation phase from the shipped model, about 16 minutes on 2 cores, once; README, Two commands);
# `make demo DERIVE=0` skips that and searches with the shipped model.
DERIVE ?= 1
demo: install
ifeq ($(DERIVE),1)
	$(BIN)/xmr model derive --if-missing
endif
	$(BIN)/xmr demo

# The reranker that beats its bi-encoder (README, Benchmark: the relation phase), derived from the
# shipped model by `xmr model derive` (search_backend/training/derive.py holds the recipe):
# `make default-model` trains it on one thread (about 30 minutes, once: its two relation heads one
# after the other) and installs it as $XMR_HOME/models/default, which the demo, `--model default`,
# the workers and the service then use (`make demo` derives it the same way on every core, the two
# heads side by side);
# `make relation-model` trains the same phases into RELATION_DIR only. XMR_THREADS=1 on a float32-only
# CPU reproduced the earlier two-phase recipe's r9 weights byte for byte.
RELATION_DIR ?= .work/relation
default-model: install
	XMR_THREADS=1 $(BIN)/xmr model derive --if-missing

relation-model: install
	XMR_THREADS=1 $(BIN)/xmr model derive --work $(RELATION_DIR) --no-install

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy search_backend

# Local Redis, PostgreSQL and OpenSearch on 127.0.0.1 and a headless Chromium for the tests (idempotent; `bash scripts/services.sh down` stops them).
# If they cannot be installed here (no root/sudo, no apt), the tests that need them are skipped
# (CI sets XMR_REQUIRE_SERVICES=1, which turns those skips into failures).
services:
	-bash scripts/services.sh up
	-bash scripts/browser.sh install
	-bash scripts/opensearch.sh start && bash scripts/opensearch.sh plugin
	-XMR_OPENSEARCH_PORT=19400 XMR_OPENSEARCH_TRANSPORT_PORT=19500 XMR_OPENSEARCH_START_TIMEOUT=300 bash scripts/opensearch.sh --nodes 2 start
	-bash scripts/tls_proxy.sh start

test: lint services
	$(BIN)/pytest -q --durations=20

test-fast: install
	$(BIN)/pytest -q -m "not slow"

bench: install
	$(BIN)/python benchmarks/paper_table.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
