# The few commands people type. `make demo` and `make test` are the two set-up commands:
# each creates the environment from uv.lock first (installing uv with pip if missing).
SHELL := /bin/bash
UV := $(shell command -v uv 2>/dev/null || echo "python3 -m uv")
export DBT_SEND_ANONYMOUS_USAGE_STATS := false
export GX_ANALYTICS_ENABLED := false

.PHONY: env demo test up bench lint clean

.venv/.synced: pyproject.toml uv.lock
	@command -v uv >/dev/null 2>&1 || python3 -m uv --version >/dev/null 2>&1 || python3 -m pip install --quiet uv
	$(UV) sync --frozen --no-build --group dev --python 3.11
	@touch $@

env: .venv/.synced

demo: .venv/.synced ## run the whole pipeline on the bundled sample market
	.venv/bin/trading demo

test: .venv/.synced ## run the whole test suite
	.venv/bin/pytest

up: .venv/.synced ## dagster dev (UI on 127.0.0.1:3000, daemon) on the same TRADING_HOME
	scripts/up.sh

bench: .venv/.synced
	.venv/bin/python bench/ingest.py

lint: .venv/.synced
	.venv/bin/ruff check trading_pipeline trading_api tests bench

clean:
	rm -rf .trading
