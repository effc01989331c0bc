# The workflow suite's tasks. `make` (or `make help`) lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help
export UV_PYTHON_DOWNLOADS := never
# uv itself: installed with pip when missing (a fresh machine has only python3 and pip).
UV ?= $(shell command -v uv 2>/dev/null || echo "$(HOME)/.local/bin/uv")
PYTEST_ARGS ?=

.PHONY: help
help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-14s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: bootstrap
bootstrap: ## Install uv if missing and sync the locked environment (.venv)
	@command -v uv >/dev/null 2>&1 || test -x "$(UV)" || python3 -m pip install --quiet --user uv || python3 -m pip install --quiet uv
	@$(MAKE) --no-print-directory _sync UV="$$(command -v uv 2>/dev/null || echo $(HOME)/.local/bin/uv)"

.PHONY: _sync
_sync:
	$(UV) sync --frozen --all-packages

.PHONY: dev
dev: bootstrap ## Run the suite locally: Postgres :5433, NATS :4222, services; Ctrl-C stops everything
	$(UV) run --frozen python -m wf_stack dev

.PHONY: browser
browser: ## Install Debian's chromium for the browser tests, if missing (apt; root)
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "chromium is missing: run 'sudo apt-get install chromium' (browser tests will fail)"; fi; }

.PHONY: test
test: bootstrap browser ## Run every test against a throwaway Postgres and nats-server (what CI runs)
	$(UV) run --frozen python -m wf_stack run -- python -m pytest $(PYTEST_ARGS)

.PHONY: test-chaos
test-chaos: bootstrap ## Chaos tier: connections cut every 3 s for a minute, a soak with random faults (CHAOS_SOAK_SECONDS=600)
	WF_CHAOS=1 $(UV) run --frozen python -m wf_stack run -- python -m pytest tests/chaos -p no:cacheprovider -s $(PYTEST_ARGS)

.PHONY: bench
bench: bootstrap ## Benchmarks: the suite vs LocalEngine, litestar-workflows and the Temporal dev server (bench/README.md)
	UV=$(UV) $(UV) run --frozen --with matplotlib --with aiohttp --with py-spy python -m bench.run $(BENCH_ARGS)

.PHONY: bench-floor
bench-floor: bootstrap ## The I/O floor of a W1 instance here: the same path with no engine (bench/floor.py)
	$(UV) run --frozen python -m bench.floor --out bench/results/floor-latest.json $(FLOOR_ARGS)

.PHONY: lint
lint: bootstrap ## ruff check and format check
	$(UV) run --frozen ruff check .
	$(UV) run --frozen ruff format --check .

.PHONY: typecheck
typecheck: bootstrap ## pyright (strict) on libs and services
	$(UV) run --frozen pyright

.PHONY: format
format: bootstrap ## Format the code and apply safe lint fixes
	$(UV) run --frozen ruff format .
	$(UV) run --frozen ruff check --fix .

.PHONY: clean
clean: ## Remove the environment, caches and dev data (.venv, .dev, .tools)
	rm -rf .venv .dev .tools .pytest_cache .ruff_cache .hypothesis test-artifacts
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
