# The few commands people type. `make demo` and `make test` are the two set-up commands:
# each creates the environment from uv.lock first (installing uv with pip if missing).
SHELL := /bin/bash
UV := $(shell command -v uv 2>/dev/null || echo "python3 -m uv")
export DBT_SEND_ANONYMOUS_USAGE_STATS := false
export GX_ANALYTICS_ENABLED := false

.PHONY: env browser postgres demo test up bench lint clean

# --compile-bytecode: every process imports Dagster, dbt and great-expectations; without
# .pyc files (PYTHONDONTWRITEBYTECODE=1, read-only trees) each one compiles them from source
# again, ~7 s per `trading` command on this 2-core machine. Our own packages too (a stale
# .pyc is ignored: Python checks the source's mtime).
.venv/.synced: pyproject.toml uv.lock
	@command -v uv >/dev/null 2>&1 || python3 -m uv --version >/dev/null 2>&1 || python3 -m pip install --quiet uv
	$(UV) sync --frozen --no-build --group dev --extra postgres --python 3.11 --compile-bytecode
	.venv/bin/python -m compileall -q -j 0 trading_pipeline trading_api >/dev/null
	@touch $@

env: .venv/.synced

# Debian's chromium for the dashboard's real-browser tests (Playwright drives it; no
# browser download). Installed with apt-get when missing and we are root.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq chromium >/dev/null; \
	  else echo "the dashboard tests need Debian's chromium: sudo apt-get install -y chromium"; exit 1; fi; }

# Debian's PostgreSQL server binaries for the Postgres tests (ops store, Dagster storage):
# the tests start their own throwaway cluster on 127.0.0.1 (tests/pg.py), never the system
# service. Installed with apt-get when missing and we are root.
postgres:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql-15 >/dev/null; \
	  else echo "the Postgres tests need Debian's PostgreSQL server: sudo apt-get install -y postgresql-15"; exit 1; fi; }

demo: .venv/.synced ## run the whole pipeline on the bundled sample market
	.venv/bin/trading demo

test: .venv/.synced browser postgres ## run the whole test suite
	.venv/bin/pytest

up: .venv/.synced ## dagster dev (UI on 127.0.0.1:3000, daemon) on the same TRADING_HOME
	scripts/up.sh

bench: .venv/.synced
	.venv/bin/python bench/ingest.py

lint: .venv/.synced
	.venv/bin/ruff check trading_pipeline trading_api tests bench

clean:
	rm -rf .trading
