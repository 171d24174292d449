# Everyday commands. `make run` and `make test` work on a fresh machine with nothing else typed.
VENV ?= .venv
BIN := $(VENV)/bin
# Every setting (WEB_WORKERS, WORKER_THREADS, ...) has its default in orders_api/settings/ and its
# row in docs/configuration.md; set them here or in the environment.
PORT ?= 8000
PYTEST_ARGS ?=
export PORT

.PHONY: help install browser services settings-check settings-table migrate run test test-unit test-integration test-e2e test-deploy test-faults test-faults-long bench lint format lock clean

help: ## List the targets and what each does (the default target)
	@awk -F ':.*## ' '/^[a-z][a-z0-9-]*:.*## / { printf "  %-18s %s\n", $$1, $$2 }' $(firstword $(MAKEFILE_LIST))

install: $(VENV)/.installed ## Create the virtualenv and install the service with its dev tools and git hook

# The pre-commit hook runs `make lint`'s checks and the unit tests on each commit. Only in a git
# checkout of this folder (not an unpacked archive, nor a repository around it), not in CI (which
# commits nothing); a hook it cannot install (say, core.hooksPath is set) is reported, not fatal.
$(VENV)/.installed: setup.cfg pyproject.toml
	python3 -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	if [ -e .git ] && [ -z "$${CI:-}" ]; then \
	  $(BIN)/pre-commit install || echo "make install: pre-commit's git hook not installed; commits run no checks" >&2; \
	fi
	touch $@

browser: ## Debian's Chromium, for the test that renders /docs (tests/e2e/test_docs_page_in_a_browser.py)
	command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium)

services: ## Start PostgreSQL and RabbitMQ if they are down; enable RabbitMQ's management console
	scripts/ensure-services.sh

migrate: install services ## Create the database if missing and migrate it; set up the queues and their policies
	$(BIN)/orders-db-upgrade
	$(BIN)/orders-broker-setup

settings-check: install ## Validate every role's settings in this environment: one line per bad variable
	$(BIN)/python -m orders_api.settings.check

settings-table: install ## Regenerate the table of every variable in docs/configuration.md
	$(BIN)/python -m orders_api.settings.table --write docs/configuration.md

run: settings-check migrate ## Serve the API on http://127.0.0.1:$(PORT) and run the workers, in the foreground
	VENV=$(VENV) scripts/run.sh

test: install browser services ## The whole suite: unit, integration and end-to-end
	$(BIN)/pytest $(PYTEST_ARGS)

test-unit: install ## Fast tests with fakes; no services needed
	$(BIN)/pytest tests/unit $(PYTEST_ARGS)

test-integration: install services ## The service layer and adapters against real PostgreSQL and RabbitMQ
	$(BIN)/pytest tests/integration $(PYTEST_ARGS)

test-e2e: install browser services ## Real gunicorn and dramatiq processes over HTTP
	$(BIN)/pytest tests/e2e $(PYTEST_ARGS)

test-deploy: install services ## Offline checks of the Dockerfile, the Compose file and k8s/ (schemas, lint, cross-references)
	$(BIN)/pytest tests/deploy $(PYTEST_ARGS)

test-faults: install ## Fault injection (~30 min, as root): restarts private PostgreSQL/RabbitMQ servers of its own
	$(BIN)/pytest tests/faults -m faults $(PYTEST_ARGS)

test-faults-long: install ## The fault scenarios too long for CI (a 10-minute PostgreSQL outage, ~14 min, as root)
	$(BIN)/pytest tests/faults -m faults_long $(PYTEST_ARGS)

bench: install services ## Benchmark the service against this machine's limits (a few minutes); see docs/benchmarks.md
	$(BIN)/pip install --quiet -e '.[dev,bench]'
	command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk)
	$(BIN)/python -m bench

lint: install ## ruff (lint and format check), mypy, yamllint (k8s/), hadolint (Dockerfile) and the Compose spec
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/yamllint --strict -c .yamllint.yaml k8s/ .yamllint.yaml
	$(BIN)/hadolint Dockerfile
	$(BIN)/check-jsonschema --builtin-schema vendor.compose-spec docker-compose.yml

lock: install ## Pin the image's dependencies, with hashes, in requirements/image.txt (LOCK_ARGS=--upgrade to move them on)
	CUSTOM_COMPILE_COMMAND="make lock" $(BIN)/pip-compile --quiet --generate-hashes --strip-extras --no-emit-index-url --no-emit-find-links \
	  --no-emit-trusted-host $(LOCK_ARGS) --output-file requirements/image.txt setup.cfg

format: install ## Apply ruff's fixes and formatting
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean: ## Remove the virtualenv and caches
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
