# Two commands for a newcomer: `make demo` (the main job) and `make test` (the test suite).
# Both create the virtualenv in .venv and install the pinned dependencies first (cached after that).

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: install demo relation-model test test-fast lint services bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $@

demo: install
	$(BIN)/xmr demo

# The relation phase (README, Training): the shipped model grown by a cross-attention block
# (RELATION_DIR/base), then a relation head trained alone (RELATION_DIR/model). About 14 minutes on
# one core (XMR_THREADS=1 reproduces the README's weights); reranking then beats the bi-encoder by
# ~15 R@1 on the shapes test. Copy RELATION_DIR/model to $XMR_HOME/models/default to make it the
# default (`--model default`, the demo, the service).
RELATION_DIR ?= .work/relation
relation-model: install
	$(BIN)/xmr train --setup joint --out $(RELATION_DIR)/base --seed 0 \
		--set init_from=search_backend/model/shipped --set model.cross_attention=1 \
		--set attend_weight=1.0 --set ground_weight=0.3 --set flip_negative_rate=0.5 --set steps=400
	$(BIN)/xmr train --setup ce --out $(RELATION_DIR)/model --seed 0 --set init_from=$(RELATION_DIR)/base \
		--set model.relation_head=64 --set train_only=relation. --set flip_negative_rate=1.0 \
		--set text_hard_rate=1.0 --set ce_loss=rank --set lr_new=3e-3 --set steps=400
	@echo "reranker: $(RELATION_DIR)/model (xmr eval --model $(RELATION_DIR)/model)"

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
