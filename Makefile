# Every target installs what it needs first (idempotent): a fresh clone needs only
# Python 3.11+, PostgreSQL and Redis (or initdb/redis-server on PATH for `make run`).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=
# `make test` runs the tests in this many processes (pytest-xdist; 0: in pytest's own). Each
# test has its own database, Redis prefix, ports and private instances, and the suite mostly
# waits on servers: two workers on 2 cores take about 60% of the serial time.
TEST_WORKERS ?= 2
XDIST = $(if $(filter-out 0,$(TEST_WORKERS)),-n $(TEST_WORKERS) --dist worksteal)
BENCH_ARGS ?=
# e.g. `make run RUN_ARGS=--prometheus`
RUN_ARGS ?=

.PHONY: install proto proto-check migrate run run-cluster test test-unit test-integration test-e2e test-faults test-cluster test-on-cluster lint format \
        seed verify status rebuild-projections rebuild-products rebuild-customers rebuild-orders rebuild-analytics \
        bench bench-data clean demo docs

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	$(BIN)/python -m common.protogen --check
	touch $@

# The docs site (MkDocs, docs/) on http://127.0.0.1:8000, rebuilt on every change.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs serve

# The README's story against the system `make run` started (every call printed).
demo: $(STAMP)
	$(BIN)/cqrs demo

proto: $(STAMP)
	$(BIN)/python -m common.protogen
	$(BIN)/python -m common.apidoc

proto-check: $(STAMP)
	$(BIN)/python -m common.protogen --check

migrate: $(STAMP)
	$(BIN)/cqrs migrate

# A system for this machine (`cqrs up --local`): local webhook receivers allowed, and the
# events relayed to a NATS on 127.0.0.1:4222 when one answers, so `make demo` runs it all.
run: $(STAMP)
	$(BIN)/cqrs up --local $(RUN_ARGS)

# The scale-out topology on this machine (Redis Cluster, PostgreSQL primary + replica).
run-cluster: $(STAMP)
	$(BIN)/cqrs up --cluster $(RUN_ARGS)

# Debian's prometheus (promtool + a real Prometheus for the observability e2e test); tests
# skip with a clear reason where it cannot be installed.
PROMETHEUS_INSTALL = command -v prometheus >/dev/null || (command -v apt-get >/dev/null && \
	(apt-get install -y -q prometheus >/dev/null 2>&1 || \
	(apt-get update -q >/dev/null 2>&1 && apt-get install -y -q prometheus >/dev/null 2>&1))) || \
	echo "prometheus not available: its tests are skipped"

# Debian's nats-server: the relay's tests start a private one when none answers on :4222.
NATS_INSTALL = command -v nats-server >/dev/null || test -x /usr/sbin/nats-server || \
	(command -v apt-get >/dev/null && (apt-get install -y -q nats-server >/dev/null 2>&1 || \
	(apt-get update -q >/dev/null 2>&1 && apt-get install -y -q nats-server >/dev/null 2>&1))) || \
	echo "nats-server not available: the NATS relay's tests are skipped unless NATS answers on :4222"

# Debian's pgbouncer: the test of that deployment starts a private one (skipped without it).
PGBOUNCER_INSTALL = command -v pgbouncer >/dev/null || test -x /usr/sbin/pgbouncer || \
	(command -v apt-get >/dev/null && (apt-get install -y -q pgbouncer >/dev/null 2>&1 || \
	(apt-get update -q >/dev/null 2>&1 && apt-get install -y -q pgbouncer >/dev/null 2>&1))) || \
	echo "pgbouncer not available: its test is skipped"

test: $(STAMP)
	@$(PROMETHEUS_INSTALL)
	@$(NATS_INSTALL)
	@$(PGBOUNCER_INSTALL)
	$(BIN)/pytest $(XDIST) $(PYTEST_ARGS)
	$(BIN)/python -m tests.support.on_cluster $(ON_CLUSTER_TESTS) $(XDIST) $(PYTEST_ARGS)

# Run again with their Redis a Redis Cluster of its own (three masters): the integration
# suite, and the end-to-end tests of the projections with real processes. Left out: the
# modules that never open a Redis connection (HTTP gateway, PostgreSQL locks and write
# model, health and call-log interceptors, seeding, membership): a second pass proves
# nothing new for them.
ON_CLUSTER_TESTS = tests/integration tests/e2e/test_system.py tests/e2e/test_projector_lifecycle.py \
	tests/e2e/test_projector_resilience.py tests/e2e/test_projector_scale_out.py \
	tests/e2e/test_read_deadlines.py tests/e2e/test_workers.py tests/e2e/test_hostile_input.py \
	tests/e2e/test_server_lifecycle.py \
	$(foreach m,gateway gateway_bounds gateway_vetting payment_provider_http health_service \
	  rpc_metrics call_log membership seed,--ignore=tests/integration/test_$(m).py)

test-on-cluster: $(STAMP)
	@$(NATS_INSTALL)
	$(BIN)/python -m tests.support.on_cluster $(ON_CLUSTER_TESTS) $(XDIST) $(PYTEST_ARGS)

test-unit: $(STAMP)
	$(BIN)/pytest tests/unit $(PYTEST_ARGS)

test-integration: $(STAMP)
	@$(NATS_INSTALL)
	$(BIN)/pytest tests/integration $(PYTEST_ARGS)

test-e2e: $(STAMP)
	@$(PROMETHEUS_INSTALL)
	@$(NATS_INSTALL)
	@$(PGBOUNCER_INSTALL)
	$(BIN)/pytest tests/e2e $(PYTEST_ARGS)

test-faults: $(STAMP)
	$(BIN)/pytest tests/faults $(PYTEST_ARGS)

test-cluster: $(STAMP)
	$(BIN)/pytest tests/cluster $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/buf lint
	$(BIN)/buf breaking protos --against '.git#branch=main,subdir=protos'

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# Benchmarks: not part of `make test` (a smoke test is). Uses the system `make run` started,
# or starts one; h2load (Debian's nghttp2-client) drives the reads when it can be installed.
bench: $(STAMP)
	@command -v h2load >/dev/null || (command -v apt-get >/dev/null && \
		(apt-get install -y -q nghttp2-client >/dev/null 2>&1 || \
		(apt-get update -q >/dev/null 2>&1 && apt-get install -y -q nghttp2-client >/dev/null 2>&1))) || \
		echo "h2load not available: the built-in generator drives every scenario"
	$(BIN)/cqrs bench --start $(BENCH_ARGS)

bench-data: $(STAMP)
	$(BIN)/cqrs bench data

seed: $(STAMP)
	$(BIN)/cqrs seed

verify: $(STAMP)
	$(BIN)/cqrs projector verify

status: $(STAMP)
	$(BIN)/cqrs projector status

rebuild-projections: $(STAMP)
	$(BIN)/cqrs projector rebuild

rebuild-products: $(STAMP)
	$(BIN)/cqrs projector rebuild --only products

rebuild-customers: $(STAMP)
	$(BIN)/cqrs projector rebuild --only customers

rebuild-orders: $(STAMP)
	$(BIN)/cqrs projector rebuild --only orders

rebuild-analytics: $(STAMP)
	$(BIN)/cqrs projector rebuild --only analytics

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
