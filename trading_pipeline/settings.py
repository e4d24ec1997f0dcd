"""Settings from environment variables (prefix ``TRADING_``) and an optional ``.env`` file.

Everything the platform writes lives under ``TRADING_HOME`` (default ``./.trading``): the
DuckDB warehouse, serving snapshots, the operational store and ``DAGSTER_HOME``.
"""

from __future__ import annotations

import re
from datetime import date
from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PACKAGE_DIR = Path(__file__).resolve().parent
PROJECT_DIR = PACKAGE_DIR.parent
SAMPLE_DATA_DIR = PACKAGE_DIR / "marketdata" / "sample_data"
DBT_PROJECT_DIR = PROJECT_DIR / "dbt_project"


MEMORY = ":memory:"
# DuckDB reads "<prefix>:..." (2+ word characters; "C:" stays a Windows drive) as a location
# for the extension of that name, or its alias ("md" is MotherDuck, "s3" goes to httpfs)
LOCATION_PREFIX = re.compile(r"^(\w{2,}):")


def location(path: Path | str) -> Path | str:
    """A file location as a ``Path``; any other location (``md:``, ``ducklake:``, ``:memory:``)
    as the string given, unchanged (``Path`` would turn ``s3://b/x`` into ``s3:/b/x``)."""
    text = str(path)
    if text.startswith(MEMORY) or LOCATION_PREFIX.match(text):
        return text
    return Path(path)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="TRADING_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    home: Path = Field(default=Path(".trading"), description="Root of all state (TRADING_HOME).")
    data_source: Literal["sample", "files", "alpaca", "ib"] = "sample"
    broker: Literal["paper", "alpaca", "ib"] = "paper"
    clock: Literal["auto", "market", "wall"] = Field(
        default="auto",
        description="The paper broker's 'now': market = the newest stored bar (a replayed or sample "
        "market), wall = the system clock; auto = market for sample/file homes, wall for alpaca/ib.",
    )
    account: str = Field(
        default="paper",
        description="The default account (TRADING_ACCOUNT): where signal orders trade without an accounts file, "
        "and the CLI's --account default.")
    accounts_file: Path | None = Field(
        default=None,
        description="An accounts file (TRADING_ACCOUNTS_FILE; see accounts.example.yaml): each account's broker, "
        "paper cash, risk-limit overrides and the scans it trades. Empty: one account, TRADING_ACCOUNT at TRADING_BROKER.")
    # How signals become orders, live and in backtests (trading/decisions.py; docs/decisions.md #13)
    allow_short: bool = Field(default=False, description="A sell signal with nothing to close opens a short.")
    on_repeat_signal: Literal["skip", "add"] = Field(
        default="skip", description="A same-side signal while holding: skip (one position per symbol) or add (pyramid).")
    on_opposite_signal: Literal["exit", "reverse", "ignore"] = Field(
        default="exit", description="An opposite signal while holding: exit the position, reverse it, or ignore it.")
    stop_loss_atr: Decimal | None = Field(
        default=None, gt=0, allow_inf_nan=False,
        description="Signal entries get a bracket: a stop-loss this many ATR(14) from the signal bar's close "
        "(TRADING_STOP_LOSS_ATR; with TRADING_TAKE_PROFIT_ATR). Empty: no exits, as before.")
    take_profit_atr: Decimal | None = Field(
        default=None, gt=0, allow_inf_nan=False,
        description="The bracket's take-profit, this many ATR(14) from the signal bar's close (TRADING_TAKE_PROFIT_ATR).")
    signal_max_age: int = Field(
        default=1, ge=0, le=100_000,
        description="Staleness cut-off (TRADING_SIGNAL_MAX_AGE), in bars of the signal's own timeframe counted back "
        "from the order run's newest bar: 0 trades only the newest bar's signals, 1 (default) also the previous "
        "bar's (a 5m signal still trades on the next 5m run, not later). Older signals are skipped and counted "
        "(skipped_stale); a large number (100000) turns the cut-off off. A daily run trades its own session's "
        "signals only, so a daily signal never trades after its session's run.")
    # Portfolio risk (trading/portfolio_risk.py; README "Portfolio risk")
    risk_window: int = Field(
        default=250, ge=2, le=10_000,
        description="Portfolio VaR/ES: how many daily returns (sessions where every held symbol has a close) "
        "the historical simulation uses (TRADING_RISK_WINDOW).")
    risk_horizon: int = Field(
        default=10, ge=1, le=250,
        description="Portfolio VaR/ES: the N-day horizon reported beside the 1-day figures, as 1-day x sqrt(N) "
        "(TRADING_RISK_HORIZON).")
    risk_benchmark: str = Field(
        default="", max_length=32,
        description="Portfolio risk's benchmark symbol for betas and stress fallbacks (TRADING_RISK_BENCHMARK). "
        "Empty: SPY if it has daily bars, else GOOG, else none (no betas).")
    scenarios_file: Path | None = Field(
        default=None,
        description="Stress scenarios YAML (TRADING_SCENARIOS_FILE; see scenarios.example.yaml): historical windows "
        "and hypothetical shocks. Empty: the three built-in windows (2008, 2020, 2022), no shocks.")
    rebalance_targets: Path | None = Field(
        default=None,
        description="The targets file (symbol,weight CSV; see targets.example.csv) the `rebalance` job and its "
        "schedule use when their run config names none (TRADING_REBALANCE_TARGETS). Empty: the schedule skips.")
    ops_url: str | None = Field(
        default=None, description="SQLAlchemy URL of the ops store; default SQLite in TRADING_HOME."
    )
    dagster_yaml: Path = Field(
        default=PROJECT_DIR / "dagster.yaml",
        description="Dagster instance config put into DAGSTER_HOME (TRADING_DAGSTER_YAML), "
        "e.g. deploy/dagster-postgres.yaml for run/event storage in Postgres.",
    )
    warehouse: str = Field(
        default="",
        description="The warehouse (TRADING_WAREHOUSE). Empty: a DuckLake with its catalog at "
        "$TRADING_HOME/warehouse/catalog.sqlite and data files under $TRADING_HOME/warehouse/data/. "
        "Or ducklake:sqlite:<file> / ducklake:postgres:<libpq conninfo> (a catalog many machines "
        "share), a DuckDB file path (*.duckdb, the pre-DuckLake layout), md:<db> (MotherDuck), :memory:.",
    )
    warehouse_data_path: str = Field(
        default="",
        description="Where a new DuckLake puts its Parquet data files (TRADING_WAREHOUSE_DATA_PATH): "
        "a folder or an object-store URL (s3://bucket/prefix/). Empty: data/ beside a SQLite "
        "catalog; required for a Postgres catalog. Read when the lake is created; the catalog "
        "remembers it.",
    )
    lake_snapshot_retention_days: float = Field(
        default=7.0, ge=0,
        description="How far back the lake keeps snapshots (time travel) when it is compacted "
        "(TRADING_LAKE_SNAPSHOT_RETENTION_DAYS); the snapshots the serving layer publishes are kept "
        "whatever their age.",
    )
    lake_maintenance_cron: str = Field(
        default="30 3 * * *",
        description="When the lake_maintenance job compacts the lake (cron, New York time; "
        "TRADING_LAKE_MAINTENANCE_CRON). Read when the code location loads.",
    )
    price_adjustment: Literal["split", "total_return", "none"] = Field(
        default="split",
        description="Price basis of indicators and signals (dbt int_bars_adjusted): split-adjusted, "
        "total-return (splits and dividends) or none (raw bars). Changing it recomputes the history.",
    )
    rules_file: Path = Field(default=PROJECT_DIR / "rules.yaml")
    risk_file: Path = Field(default=PROJECT_DIR / "risk.yaml")
    sample_symbols: int = Field(default=20, ge=0, description="Synthetic symbols beside GOOG.")
    exchange: str = Field(default="XNYS", description="Default exchange calendar for new symbols.")
    history_start: date = Field(
        default=date(1950, 1, 3),
        description="The earliest date a bar may have (TRADING_HISTORY_START): the exchange calendars "
        "start there, and a load with older bars is refused before any work. Earlier dates make "
        "every process build longer calendars.",
    )
    lock_wait_seconds: float = Field(
        default=120.0, ge=0,
        description="How long a warehouse writer (bar load, dbt step, publish) waits for another "
        "process's DuckDB file lock before failing (TRADING_LOCK_WAIT_SECONDS).",
    )
    duckdb_extensions: Path | None = Field(
        default=None,
        description="A folder of DuckDB extensions you provide (TRADING_DUCKDB_EXTENSIONS), laid out "
        "as <dir>/v<duckdb version>/<platform>/<name>.duckdb_extension, used as it is: nothing is "
        "linked or downloaded into it, and an extension missing there is an error. Empty: the "
        "files of the locked duckdb-extension-* wheels (linked under the environment's prefix).",
    )

    alpaca_api_key: str | None = None
    alpaca_secret_key: str | None = None
    alpaca_paper: bool = True
    alpaca_url_override: str | None = None
    alpaca_data_url_override: str | None = None

    ib_host: str = "127.0.0.1"
    ib_port: int = 7497
    ib_client_id: int = 17

    alert_webhook_url: str | None = Field(
        default=None, pattern=r"^https?://",
        description="Where risk alerts are POSTed as JSON (TRADING_ALERT_WEBHOOK_URL; the "
        "alerts_webhook sensor, retried with backoff). Empty: no webhook.",
    )
    alert_webhook_secret: str | None = Field(
        default=None,
        description="Shared secret signing each webhook body: header X-Signature: sha256=<HMAC-SHA256 "
        "hex of the raw body> (TRADING_ALERT_WEBHOOK_SECRET). Empty: bodies are not signed.",
    )

    log_format: Literal["text", "json"] = Field(
        default="text", description="Log lines as key=value text or JSON (API and Dagster runs)."
    )

    api_host: str = "127.0.0.1"
    api_port: int = 8000
    cors_origins: list[str] = Field(default_factory=list)
    ws_poll_interval: float = Field(default=0.2, gt=0, description="Seconds between the WebSocket hub's checks for a new snapshot and new order events.")
    ws_heartbeat: float = Field(default=15.0, gt=0, description="Seconds between heartbeats to an idle WebSocket client.")
    ws_queue_size: int = Field(default=1000, gt=0, description="Undelivered messages a slow WebSocket client may hold before it is disconnected.")
    backup_dir: str = Field(
        default="",
        description="Where the backup job (schedule backup_nightly, OFF by default) writes its backups "
        "(TRADING_BACKUP_DIR). Empty: $TRADING_HOME/backups.")
    backup_keep: int = Field(
        default=7, ge=1,
        description="How many nightly backups the backup job keeps (TRADING_BACKUP_KEEP); older ones are "
        "deleted only after the new one verified.")
    # Universes (marketdata/universes.py; universes.example.yaml)
    universes_file: Path = Field(
        default=PROJECT_DIR / "universes.yaml",
        description="The universes file (TRADING_UNIVERSES_FILE; see universes.example.yaml): named symbol sets that "
        "scans (rules.yaml universe: NAME) and scheduled ingests use, resolved point in time per session.")
    universe: str = Field(
        default="",
        description="The universe scheduled ingests fetch from a source that needs explicit symbols (alpaca, ib) "
        "(TRADING_UNIVERSE, a name in TRADING_UNIVERSES_FILE). Empty: those schedules skip, saying so.")
    api_rate_limit: int = Field(
        default=600,
        ge=0,
        description="Requests per minute per API key, in each API worker (429 + Retry-After past it); 0 turns the limit off.",
    )
    # Outbound notifications (trading/notifications.py, the notifications sensor)
    notify_webhook_url: str = Field(
        default="", pattern=r"^(https?://\S+)?$",
        description="Where signals, fills, order rejections/denials (and risk alerts) are POSTed as JSON "
        "(TRADING_NOTIFY_WEBHOOK_URL). Empty: TRADING_ALERT_WEBHOOK_URL, so one receiver gets every event.")
    notify_min_score: float = Field(
        default=0.0, description="Only signals scoring this or more are notified (TRADING_NOTIFY_MIN_SCORE).")
    notify_events: str = Field(
        default="signal,fill,rejection,risk",
        pattern=r"^\s*((signal|fill|rejection|risk)\s*(,\s*(signal|fill|rejection|risk)\s*)*)?$",
        description="Which events are notified, comma-separated from signal, fill, rejection, risk "
        "(TRADING_NOTIFY_EVENTS). Empty: none.")
    smtp_host: str = Field(default="", description="SMTP server for notification email (TRADING_SMTP_HOST). Empty: no email.")
    smtp_port: int = Field(default=587, gt=0, lt=65536, description="SMTP port (TRADING_SMTP_PORT).")
    smtp_user: str = Field(default="", description="SMTP login (TRADING_SMTP_USER). Empty: no login.")
    smtp_password: str = Field(default="", description="SMTP password (TRADING_SMTP_PASSWORD).")
    smtp_from: str = Field(default="", description="From address of notification email (TRADING_SMTP_FROM).")
    smtp_starttls: bool = Field(
        default=True, description="Require STARTTLS before login and sending (TRADING_SMTP_STARTTLS).")
    notify_email_to: str = Field(
        default="", description="Comma-separated addresses notification email goes to (TRADING_NOTIFY_EMAIL_TO). "
        "Empty: no email.")

    @field_validator("home", mode="after")
    @classmethod
    def _absolute(cls, v: Path) -> Path:
        return v.expanduser().resolve()

    @field_validator("duckdb_extensions", "alert_webhook_url", "alert_webhook_secret", mode="before")
    @classmethod
    def _empty_is_none(cls, v: object) -> object:
        return None if isinstance(v, str) and not v.strip() else v

    @field_validator("duckdb_extensions", mode="after")
    @classmethod
    def _absolute_dir(cls, v: Path | None) -> Path | None:
        return v.expanduser().resolve() if v is not None else None

    @property
    def warehouse_path(self) -> Path | str:
        """A ``Path`` for a warehouse file; a ``ducklake:``/``md:``/``:memory:`` location as
        the string given (:func:`location`). The default is the DuckLake in ``home/warehouse``."""
        if not self.warehouse:
            return f"ducklake:sqlite:{self.home / 'warehouse' / 'catalog.sqlite'}"
        loc = location(self.warehouse)
        return loc.expanduser().resolve() if isinstance(loc, Path) else loc

    @property
    def serving_dir(self) -> Path:
        return self.home / "serving"

    @property
    def dagster_home(self) -> Path:
        return self.home / "dagster"

    @property
    def ops_store_url(self) -> str:
        return self.ops_url or f"sqlite:///{self.home / 'ops.sqlite'}"

    def ensure_dirs(self) -> None:
        for d in (self.home, self.serving_dir, self.dagster_home):
            d.mkdir(parents=True, exist_ok=True)


@lru_cache
def get_settings() -> Settings:
    return Settings()
