# The few commands people type. `make demo` and `make test` are the two set-up commands:
# each creates the environment from uv.lock first (installing uv with pip if missing).
SHELL := /bin/bash
UV := $(shell command -v uv 2>/dev/null || echo "python3 -m uv")
export DBT_SEND_ANONYMOUS_USAGE_STATS := false
export GX_ANALYTICS_ENABLED := false

.PHONY: env browser postgres proxy kustomize demo test up bench lint clean

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

# Debian's nginx for the TLS proxy test (tests/ops/test_proxy.py runs deploy/proxy/nginx.conf
# in front of three local API processes; compose uses the official nginx image instead).
# Installed with apt-get when missing and we are root.
proxy:
	@command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light >/dev/null; \
	  else echo "the proxy tests need Debian's nginx: sudo apt-get install -y nginx-light"; exit 1; fi; }

# kustomize v5 for the Kubernetes manifest tests (tests/deploy renders deploy/k8s/overlays/*
# with it). Checked, not installed: no package registry we use has v5 (Debian's kubectl 1.20
# carries kustomize v2, too old for `patches` and `replacements`); kubectl >= 1.27 has it built in.
kustomize:
	@{ command -v kustomize >/dev/null 2>&1 && kustomize version 2>/dev/null | grep -q 'v5\.'; } || \
	 { command -v kubectl >/dev/null 2>&1 && kubectl version --client 2>/dev/null | grep -q 'Kustomize Version: v5\.'; } || \
	 { echo "the Kubernetes manifest tests need kustomize v5: kubectl >= 1.27 (kubectl kustomize) or a kustomize v5 binary on PATH"; exit 1; }

demo: .venv/.synced ## run the whole pipeline on the bundled sample market
	.venv/bin/trading demo

test: .venv/.synced browser postgres proxy kustomize ## run the whole test suite
	.venv/bin/pytest

up: .venv/.synced ## dagster dev (UI on 127.0.0.1:3000, daemon) on the same TRADING_HOME
	scripts/up.sh

bench: .venv/.synced
	.venv/bin/python bench/ingest.py

lint: .venv/.synced
	.venv/bin/ruff check trading_pipeline trading_api tests bench

clean:
	rm -rf .trading
