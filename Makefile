# imagegate — the two commands a newcomer needs: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
UV_VERSION := 0.13.8
STAMP := $(VENV)/.installed

.PHONY: install run test test-unit lock clean

# Create .venv and install exactly what requirements.lock pins (hash-checked), then the project.
# The dependencies' bytecode is compiled once here: where PYTHONDONTWRITEBYTECODE is set, every
# `imagegate` process would otherwise compile SQLAlchemy, FastAPI and Celery from source as it
# starts (some two seconds each).
$(STAMP): requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet "uv==$(UV_VERSION)"
	$(BIN)/uv pip install --quiet --python $(BIN)/python --require-hashes --compile-bytecode -r requirements.lock
	$(BIN)/uv pip install --quiet --python $(BIN)/python --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

# Start the gateway in embedded mode (SQLite, in-process worker) on port 2407 with the demo
# model, creating a first API key on the first run.
run: $(STAMP)
	$(BIN)/imagegate serve --first-key

# Unit tests, lint, architecture contract, then the integration tests against real PostgreSQL,
# Redis, Celery workers and uvicorn (they fail, not skip, when IMAGEGATE_REQUIRE_SERVICES=1).
test: $(STAMP)
	$(BIN)/ruff check core api worker imagegate migrations tests bench
	$(BIN)/lint-imports
	$(BIN)/mypy
	$(BIN)/pytest -q

test-unit: $(STAMP)
	$(BIN)/pytest -q -m "not integration"

# Re-resolve the lock after editing pyproject.toml dependencies.
lock: $(STAMP)
	$(BIN)/uv pip compile pyproject.toml --extra dev --generate-hashes --python-version 3.11 \
		-o requirements.lock --quiet

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache

# Benchmarks (bench/README.md): imagegate against direct calls to a fake upstream, both modes;
# needs PostgreSQL and Redis on 127.0.0.1 for distributed mode. BENCH_ARGS=--quick for a smoke run.
.PHONY: bench bench-peer
bench: $(STAMP)
	$(BIN)/python -m bench.run --mode both --wait-quiet 120 $(BENCH_ARGS)

# The same scenarios against LiteLLM's proxy (one worker, no database) in the same run, for the
# ratio. LiteLLM lives in a venv of its own, from bench/peer-requirements.txt (pinned with hashes;
# re-pin: uv pip compile bench/peer-requirements.in --generate-hashes --python-version 3.11
# -o bench/peer-requirements.txt); it is not an imagegate dependency and not part of `make test`.
PEER_VENV := .bench-peer-venv
PEER_STAMP := $(PEER_VENV)/.installed
$(PEER_STAMP): bench/peer-requirements.txt $(STAMP)
	test -x $(PEER_VENV)/bin/python || $(PYTHON) -m venv $(PEER_VENV)
	$(BIN)/uv pip install --quiet --python $(PEER_VENV)/bin/python --require-hashes -r bench/peer-requirements.txt
	touch $(PEER_STAMP)

bench-peer: $(STAMP) $(PEER_STAMP)
	$(BIN)/python -m bench.run --mode both --peer $(PEER_VENV)/bin/litellm --wait-quiet 120 $(BENCH_ARGS)
