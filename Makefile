# trackpipe — `make demo` runs everything embedded; `make test` runs the suite on real servers.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)

.PHONY: help install demo test test-faults fuzz reliability test-unit test-integration services services-down services-status browser lint format clean bench-deps bench-collector

help: ## show this help
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-18s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[demo,dev]'
	touch $@

install: $(STAMP) ## create .venv and install trackpipe with the demo and dev extras

demo: $(STAMP) ## run the whole pipeline on embedded defaults (no Docker, no root, no JVM)
	$(BIN)/trackpipe demo

services: ## start Apache Kafka (KRaft) and ClickHouse natively, installing them if needed
	services/kafka.sh start
	services/clickhouse.sh start

services-down: ## stop the services started by `make services`
	services/kafka.sh stop
	services/clickhouse.sh stop

services-status: ## are the services running?
	services/kafka.sh status || true
	services/clickhouse.sh status || true

browser: ## install headless Chromium (Debian's package) for the tracker's browser test
	services/chromium.sh install

test: install services browser ## install everything, start the real servers, run the whole suite
	$(BIN)/pytest
	$(BIN)/trackpipe reliability

test-unit: install ## unit tests only (no servers)
	$(BIN)/pytest tests/unit

test-faults: install services ## only the fault tests, then regenerate docs/reliability.md
	$(BIN)/pytest -m faults
	$(BIN)/trackpipe reliability

fuzz: install ## property-based fuzzing of every collector endpoint, 20x the CI cases
	TRACKPIPE_FUZZ=long $(BIN)/pytest tests/unit/collector/test_properties.py -q

reliability: install ## regenerate docs/reliability.md from the last fault-test results
	$(BIN)/trackpipe reliability

bench-deps: ## install Debian's wrk and nginx for the benchmarks (needs root or sudo)
	command -v wrk >/dev/null && command -v nginx >/dev/null || \
	  $$( [ "$$(id -u)" = 0 ] || echo sudo ) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q wrk nginx

bench-collector: install bench-deps ## collector vs nginx empty_gif, delivered to the real Kafka
	services/kafka.sh start
	$(BIN)/python -m benchmarks.collector

lint: install ## ruff lint and format check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean: ## remove the virtualenv, demo data and service data (not the jar cache)
	rm -rf $(VENV) .demo .services
