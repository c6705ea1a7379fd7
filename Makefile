# The two commands of README, and what they are made of.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# import-linter in an environment of its own: the worker and the tests then run
# without what it brings (rich), as the worker runs from the image.
LINT_VENV  := $(VENV)/lint
LINT_STAMP := $(LINT_VENV)/.installed
PIP    := $(BIN)/pip --quiet --disable-pip-version-check
COMPILE = $(BIN)/pip-compile --quiet --strip-extras --generate-hashes --allow-unsafe \
          --no-emit-index-url --no-emit-find-links

.PHONY: setup services demo test lint typecheck unit cluster scale-out tenants bench lock clean

# Every dependency at the version and hash of the lock; then the project itself.
$(STAMP): pyproject.toml requirements/dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --require-hashes -r requirements/dev.txt
	$(PIP) install --no-deps -e .
	touch $(STAMP)

$(LINT_STAMP): requirements/lint.txt | $(STAMP)
	$(PYTHON) -m venv $(LINT_VENV)
	$(LINT_VENV)/bin/pip --quiet --disable-pip-version-check install --require-hashes -r requirements/lint.txt
	touch $(LINT_STAMP)

setup: $(STAMP) $(LINT_STAMP)

# The local RabbitMQ (with the consistent-hash exchange) and Redis, started when they
# do not answer; a broker elsewhere (AMQP_URL) is only checked. Chromium for the
# /status page's browser test, installed from Debian's packages where apt can run.
services:
	bash scripts/ensure_broker.sh
	bash scripts/ensure_redis.sh
	bash scripts/ensure_chromium.sh

demo: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" bash scripts/demo.sh

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(LINT_VENV)/bin/lint-imports

typecheck: setup
	$(BIN)/mypy

unit: setup services
	$(BIN)/pytest

test: lint typecheck unit

# The worker on a 3-node RabbitMQ cluster the tests start on this machine, losing a
# node mid-run (part of `unit` too; this runs them alone).
cluster: setup services
	$(BIN)/pytest -m cluster

# Three workers sharing the limiter in Redis against sandbox portals: prints its
# figures, writes bench/results/scale_out-*.txt, fails when a target is missed.
scale-out: setup
	$(BIN)/python bench/scale_out.py all

# Ten portals through one worker, one of them blocked for its first 25 s: prints each
# portal's share, fails when a portal holds another back or anything is lost.
tenants: setup
	$(BIN)/python bench/tenants.py blocked --gate isolation

bench: setup
	$(BIN)/python bench/validation_throughput.py

# After changing a dependency in pyproject.toml: the locks again, at the newest
# versions the declared ranges allow.
lock: setup
	$(PIP) install pip-tools
	$(COMPILE) -o requirements/worker.txt pyproject.toml
	$(COMPILE) --extra sandbox --extra otel -o requirements/image.txt pyproject.toml
	$(COMPILE) --extra sandbox --extra otel --extra test -o requirements/dev.txt pyproject.toml
	$(COMPILE) -o requirements/lint.txt requirements/lint.in

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache .hypothesis .import_linter_cache
