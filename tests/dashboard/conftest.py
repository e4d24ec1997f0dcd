"""Fixtures for the dashboard: a warehouse from the bundled GOOG bars, a real server, chromium.

The warehouse holds the last 300 GOOG daily bars from ``trading_pipeline/marketdata/sample_data`` and a
short synthetic MSFT series, ``marts.indicators_daily`` computed with TA-Lib (the same
library the dbt models must match), and a few ``marts.signals`` rows. Nothing is mocked:
the server is uvicorn in a subprocess and the browser is Debian's chromium.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from pathlib import Path

import polars as pl
import pytest
import talib

from tests.api.support import MARTS_DDL, ApiEnv, Server, add_signals, daily_bars
from trading_api.keys import create_key
from trading_pipeline.marketdata.warehouse import upsert_bars, writer
from trading_pipeline.settings import PROJECT_DIR, Settings
from trading_pipeline.trading.store import OpsStore

SAMPLE = PROJECT_DIR / "trading_pipeline" / "marketdata" / "sample_data" / "GOOG_1d.parquet"
GOOG_BARS = 300
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"


def goog_bars(n: int = GOOG_BARS) -> pl.DataFrame:
    df = pl.read_parquet(SAMPLE).sort("ts").tail(n)
    return df.with_columns(pl.col("ts").dt.date().alias("session_date")).select(
        "symbol", "timeframe", "ts", "session_date", "open", "high", "low", "close", "volume"
    )


def indicators(bars: pl.DataFrame) -> pl.DataFrame:
    """The indicator columns of ``marts.indicators_daily``, by TA-Lib, NULL in the warm-up."""
    c = bars["close"].to_numpy().astype("float64")
    h = bars["high"].to_numpy().astype("float64")
    low = bars["low"].to_numpy().astype("float64")
    macd, macd_signal, macd_hist = talib.MACD(c)
    bb_upper, bb_middle, bb_lower = talib.BBANDS(c, timeperiod=20, nbdevup=2, nbdevdn=2)
    cols = {
        "sma_20": talib.SMA(c, 20),
        "sma_50": talib.SMA(c, 50),
        "sma_200": talib.SMA(c, 200),
        "ema_12": talib.EMA(c, 12),
        "ema_26": talib.EMA(c, 26),
        "rsi_14": talib.RSI(c, 14),
        "macd": macd,
        "macd_signal": macd_signal,
        "macd_hist": macd_hist,
        "bb_upper": bb_upper,
        "bb_middle": bb_middle,
        "bb_lower": bb_lower,
        "atr_14": talib.ATR(h, low, c, 14),
    }
    out = bars.select("symbol", "ts", "session_date", "open", "high", "low", "close", "volume")
    return out.with_columns(
        [pl.Series(k, v, dtype=pl.Float64).fill_nan(None) for k, v in cols.items()]
    ).with_columns(pl.lit(False).alias("cpr_narrow"))


def build_dashboard_warehouse(path: Path) -> date:
    """Bars, indicators and signals; returns GOOG's last session date."""
    goog = goog_bars()
    msft = daily_bars("MSFT", 80, start=date(2012, 10, 1), base=30.0)
    last = goog["session_date"][-1]
    with writer(path) as con:
        upsert_bars(con, "raw.bars_daily", goog, "sample")
        upsert_bars(con, "raw.bars_daily", msft, "test")
        ind = pl.concat([indicators(goog), indicators(msft)])
        con.register("ind", ind.to_arrow())
        con.execute(
            "CREATE OR REPLACE TABLE marts.indicators_daily AS SELECT *, now()::TIMESTAMP AS computed_at FROM ind"
        )
        con.unregister("ind")
        for stmt in MARTS_DDL[1:]:  # signals, scan_results, alerts as the api tests build them
            con.execute(stmt)
        sessions = goog["session_date"].to_list()
        add_signals(
            con,
            [
                ("GOOG", sessions[-60], "breakout_up", 1.4),
                ("GOOG", sessions[-25], "crp_long", 82.0),
                ("GOOG", sessions[-8], "crp_short", 64.0),
                ("MSFT", msft["session_date"][-1], "crp_long", 71.0),
            ],
        )
    return last


def make_env(tmp_path: Path, with_snapshot: bool = True) -> ApiEnv:
    from trading_pipeline.serving.publish import publish_snapshot

    home = tmp_path / "home"
    home.mkdir()
    settings = Settings(home=home, risk_file=PROJECT_DIR / "risk.yaml", broker="paper")
    build_dashboard_warehouse(settings.warehouse_path)
    if with_snapshot:
        publish_snapshot(settings.warehouse_path, settings.serving_dir)
    store = OpsStore(settings.ops_store_url)
    _record, key = create_key(store, "dashboard-tests")
    store.close()
    return ApiEnv(
        home, settings, settings.warehouse_path, settings.serving_dir, key, settings.ops_store_url
    )


@pytest.fixture
def dash_env(tmp_path: Path) -> ApiEnv:
    return make_env(tmp_path)


@pytest.fixture
def empty_env(tmp_path: Path) -> ApiEnv:
    """Warehouse built, nothing published yet: every snapshot read is a 503."""
    return make_env(tmp_path, with_snapshot=False)


# The app as uvicorn serves it, plus the dashboard router until main.py includes it.
# `trading api` (trading_api.main includes the dashboard router): the same real server the
# API tests start.
DashboardServer = Server


@pytest.fixture
def dash_server(dash_env: ApiEnv) -> Iterator[DashboardServer]:
    s = DashboardServer(dash_env)
    yield s
    s.stop()


@pytest.fixture
def empty_server(empty_env: ApiEnv) -> Iterator[DashboardServer]:
    s = DashboardServer(empty_env)
    yield s
    s.stop()


class BrowserPage:
    """A chromium page that records console errors and uncaught exceptions."""

    def __init__(self, page) -> None:
        self.page = page
        self.errors: list[str] = []
        page.on(
            "console",
            lambda m: (
                self.errors.append(f"console.{m.type}: {m.text} @ {m.location}")
                if m.type == "error"
                else None
            ),
        )
        page.on("pageerror", lambda e: self.errors.append(f"pageerror: {e}"))
        page.on(
            "requestfailed", lambda r: self.errors.append(f"requestfailed: {r.url} {r.failure}")
        )


@pytest.fixture
def browser_page() -> Iterator[BrowserPage]:
    """Debian's chromium through Playwright; a missing browser FAILS (CI must install it)."""
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} is missing: run `apt-get install -y chromium` (the dashboard tests need a real browser)"
        )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True, timeout=30_000
        )
        try:
            context = browser.new_context(viewport={"width": 1600, "height": 1300})
            page = context.new_page()
            page.set_default_timeout(15_000)
            page.set_default_navigation_timeout(20_000)
            yield BrowserPage(page)
            context.close()
        finally:
            browser.close()


def artifacts_dir() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


def new_signal(env: ApiEnv, symbol: str, day: date, kind: str, score: float) -> None:
    with writer(env.warehouse) as con:
        add_signals(con, [(symbol, day, kind, score)])
