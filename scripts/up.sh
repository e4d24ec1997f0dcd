#!/usr/bin/env bash
# Start `dagster dev` (webserver on 127.0.0.1:3000 + daemon running schedules and sensors)
# on the same TRADING_HOME as the CLI. dagster dev started in the background inherits
# ignored SIGINT/SIGTERM from some shells and then never stops, so we exec it through
# Python with both signals reset to their defaults.
set -euo pipefail
cd "$(dirname "$0")/.."
export TRADING_HOME="$(.venv/bin/python -c 'from trading_pipeline.settings import get_settings; print(get_settings().home)')"
export DAGSTER_HOME="$(.venv/bin/python -c 'from trading_pipeline.settings import get_settings; from trading_pipeline.runs import prepare_dagster_home; print(prepare_dagster_home(get_settings()))')"
export DBT_SEND_ANONYMOUS_USAGE_STATS=false GX_ANALYTICS_ENABLED=false
HOST="${DAGSTER_HOST:-127.0.0.1}" PORT="${DAGSTER_PORT:-3000}"
API_HOST="${TRADING_API_HOST:-127.0.0.1}" API_PORT="${TRADING_API_PORT:-8000}"
echo "TRADING_HOME=$TRADING_HOME  Dagster UI: http://$HOST:$PORT  API: http://$API_HOST:$API_PORT/docs"
echo "create an API key with: .venv/bin/trading api-key create me"
# the API reads only the serving snapshot, so it runs beside Dagster without lock conflicts
.venv/bin/trading api --host "$API_HOST" --port "$API_PORT" &
API_PID=$!
trap 'kill $API_PID 2>/dev/null || true' EXIT
# Run from DAGSTER_HOME: Dagster warns about the repo's dagster.yaml template in the current
# folder otherwise. `dagster dev` says it is superseded by `dg dev` (the dagster-dg-cli
# package, not a dependency here); it is the supported command of Dagster 1.13 and does the
# same, so that notice is filtered out rather than shown on every start.
ROOT="$PWD"
cd "$DAGSTER_HOME"
export PYTHONWARNINGS="ignore:Function \`dev_command\` is superseded"
"$ROOT/.venv/bin/python" -c '
import os, signal, sys
signal.signal(signal.SIGINT, signal.SIG_DFL)
signal.signal(signal.SIGTERM, signal.SIG_DFL)
os.execv(sys.argv[1], sys.argv[1:])
' "$ROOT/.venv/bin/dagster" dev -w "$ROOT/workspace.yaml" -h "$HOST" -p "$PORT"
