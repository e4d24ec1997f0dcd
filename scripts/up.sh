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
DAGSTER_PID=""
trap 'kill $API_PID 2>/dev/null || true; [ -z "$DAGSTER_PID" ] || kill -INT "$DAGSTER_PID" 2>/dev/null || true' EXIT
# Run from DAGSTER_HOME: Dagster warns about the repo's dagster.yaml template in the current
# folder otherwise. `dagster dev` says it is superseded by `dg dev` (the dagster-dg-cli
# package, not a dependency here); it is the supported command of Dagster 1.13 and does the
# same, so that notice is filtered out rather than shown on every start.
ROOT="$PWD"
cd "$DAGSTER_HOME"
export PYTHONWARNINGS="ignore:Function \`dev_command\` is superseded"
# Ctrl-C in a terminal signals the whole foreground process group. dagster dev's own children
# (code server, the run workers it launches) then died mid-launch and the daemon printed a
# DagsterLaunchFailedError traceback. So dagster dev runs in a session of its own and only
# this script forwards the stop to it: dagster dev then stops the webserver and the daemon
# through their shutdown pipes before the code server, and a run being launched completes.
"$ROOT/.venv/bin/python" -c '
import os, signal, sys
signal.signal(signal.SIGINT, signal.SIG_DFL)
signal.signal(signal.SIGTERM, signal.SIG_DFL)
os.setsid()
os.execv(sys.argv[1], sys.argv[1:])
' "$ROOT/.venv/bin/dagster" dev -w "$ROOT/workspace.yaml" -h "$HOST" -p "$PORT" &
DAGSTER_PID=$!
STOPPING=""
stop() {
  if [ -z "$STOPPING" ]; then
    STOPPING=1
    echo "stopping (Ctrl-C again to kill at once)..."
    kill -INT "$DAGSTER_PID" 2>/dev/null || true
  else
    kill -KILL -- "-$DAGSTER_PID" 2>/dev/null || true
  fi
}
trap stop INT TERM
# `wait` returns early when a trapped signal arrives: wait again until dagster dev has exited
RC=0
while kill -0 "$DAGSTER_PID" 2>/dev/null; do
  RC=0
  wait "$DAGSTER_PID" || RC=$?
done
# The webserver and the daemon are down now (no run is being launched); the code server
# dagster dev started, and any run it is still executing, are left in the session: stop
# them too (they would otherwise run on until their heartbeat times out).
kill -TERM -- "-$DAGSTER_PID" 2>/dev/null || true
for _ in $(seq 50); do
  kill -0 -- "-$DAGSTER_PID" 2>/dev/null || break
  sleep 0.2
done
kill -KILL -- "-$DAGSTER_PID" 2>/dev/null || true
# a stop asked for with Ctrl-C/TERM is a clean exit
if [ -n "$STOPPING" ]; then exit 0; fi
exit "$RC"
