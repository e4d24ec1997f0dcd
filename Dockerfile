# One image for every service of docker-compose.yml (Dagster webserver, Dagster daemon, API).
# The environment comes from uv.lock exactly as `make demo` builds it (`uv sync --frozen
# --no-build`: wheels only, fail fast on anything that would need a source build).
FROM python:3.11-slim

ARG UV_VERSION=""
# Extra `uv sync` arguments, e.g. --build-arg UV_SYNC_ARGS="--extra postgres" once the
# lock file has the optional Postgres packages (dagster-postgres, psycopg).
ARG UV_SYNC_ARGS=""

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    UV_PROJECT_ENVIRONMENT=/opt/venv \
    UV_LINK_MODE=copy \
    UV_COMPILE_BYTECODE=1 \
    UV_PYTHON_DOWNLOADS=never \
    PATH=/opt/venv/bin:$PATH \
    DBT_SEND_ANONYMOUS_USAGE_STATS=false \
    GX_ANALYTICS_ENABLED=false \
    TRADING_HOME=/data \
    DAGSTER_HOME=/data/dagster

RUN pip install --no-cache-dir "uv${UV_VERSION:+==$UV_VERSION}"

WORKDIR /app

# Dependencies first (cached while only the code changes), then the project itself,
# installed editable so PROJECT_DIR is /app (dbt_project/, rules.yaml, dagster.yaml).
COPY pyproject.toml uv.lock README.md ./
RUN uv sync --frozen --no-build --no-dev --no-install-project ${UV_SYNC_ARGS}

# Only what runs: the repo's .venv/.trading (host state) never enter the image.
COPY trading_pipeline ./trading_pipeline
COPY trading_api ./trading_api
COPY dbt_project ./dbt_project
COPY deploy ./deploy
COPY scripts ./scripts
COPY dagster.yaml workspace.yaml rules.yaml risk.yaml ./
RUN uv sync --frozen --no-build --no-dev ${UV_SYNC_ARGS} \
    && rm -rf dbt_project/target dbt_project/logs

# Non-root. dbt writes target/ and logs/ inside the project; everything else goes to /data,
# created here so a new named volume inherits the owner.
RUN useradd --create-home --uid 10001 --user-group trading \
    && mkdir -p /data/dagster /data/serving dbt_project/target dbt_project/logs \
    && chown -R trading:trading /data dbt_project \
    && chmod +x scripts/docker-entrypoint.sh
USER trading

# Parse the dbt project at build time so the code location loads without a parse step.
RUN dbt parse --project-dir dbt_project --profiles-dir dbt_project --quiet

VOLUME ["/data"]
EXPOSE 3000 8000
ENTRYPOINT ["/app/scripts/docker-entrypoint.sh"]
CMD ["trading", "api", "--host", "0.0.0.0", "--port", "8000"]
