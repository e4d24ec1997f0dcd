#!/bin/sh
# Container entrypoint for every service: make TRADING_HOME and DAGSTER_HOME exist on the
# shared volume and put the Dagster instance config there (what `trading` and `make up` do
# through trading_pipeline.runs.prepare_dagster_home), then run the service's command.
#
# TRADING_DAGSTER_YAML picks the instance config: /app/dagster.yaml (embedded SQLite, the
# default) or e.g. /app/deploy/dagster-postgres.yaml (docker compose --profile postgres).
set -eu
: "${TRADING_HOME:=/data}"
: "${DAGSTER_HOME:=$TRADING_HOME/dagster}"
: "${TRADING_DAGSTER_YAML:=/app/dagster.yaml}"
export TRADING_HOME DAGSTER_HOME

if [ ! -f "$TRADING_DAGSTER_YAML" ]; then
  echo "event=entrypoint_error reason=\"no Dagster instance config at $TRADING_DAGSTER_YAML\"" >&2
  exit 2
fi
mkdir -p "$TRADING_HOME/serving" "$DAGSTER_HOME"
# write to a temp file and rename: services start together and must never read half a file
tmp="$DAGSTER_HOME/.dagster.yaml.$$"
cp "$TRADING_DAGSTER_YAML" "$tmp"
mv -f "$tmp" "$DAGSTER_HOME/dagster.yaml"
echo "event=entrypoint trading_home=$TRADING_HOME dagster_home=$DAGSTER_HOME instance_config=$TRADING_DAGSTER_YAML command=\"$*\""
exec "$@"
