"""Signals → risk → broker → ops store, driven by a sensor on new signals.

The ``ops/orders`` asset is where orders happen: it first applies the corporate actions due by
the session to every paper account (trading_pipeline/trading/corporate_actions.py: a split's
position and working orders are on post-split terms before they meet the ex-date's bars; a
dividend is credited on its pay date; once each), then pulls fills for working orders
(the paper broker fills them against bars that arrived since), then turns the latest
session's tradeable signals into orders (sized, risk-checked, submitted once each by
deterministic client order id), marks every account's equity at the session's close (the
start-of-day equity of the next session's daily loss limit), and mirrors the ops store into
the warehouse's ``ops`` schema for ad-hoc SQL. A check reconciles the broker's book with the
store.

Intraday (``timeframe`` = a bar size such as ``1m``): the run trades the signals of the scans
that say ``trade: true`` in rules.yaml (intraday scans do not by default), from the session of
the newest stored bar of that size, at or before that bar (never a signal from a later bar); the
paper broker fills them on the symbol's next bar of that size. Every order records the bar size
of its signal (``orders.timeframe``, ops store revision 0011), and a run advances only the working
orders of its own bar size: a ``5m`` run the ``5m`` orders against 5m bars, never a ``1m`` one
of the same scan; a daily run the ``1d`` orders against daily bars (so a daily order never fills
at a minute bar of the session its signal closed), plus manual orders (``timeframe`` NULL,
strategy ``manual``: the paper broker fills those on daily bars, as ``trading order sync`` does;
no scan run places, replaces or cancels them). A scan order stored before 0011 from an intraday
bar has no timeframe: no run advances it (cancel or sync it by hand). The sensor launches one
daily run per new signals materialization, as before, plus one run per bar size that has
signals of a traded intraday scan in its newest session.

Staleness: each signal's age is counted in bars of its own timeframe after its bar, up to the
run's newest bar of that size in the run's session (so a replay of an old session measures
against that session, not the wall clock). A signal with no order yet older than
TRADING_SIGNAL_MAX_AGE bars is not placed; the run's metadata counts (``skipped_stale``) and
lists (``stale_signals``) them. A daily run selects its own session's signals only.
"""

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal

import dagster as dg
import polars as pl

from trading_pipeline import logs
from trading_pipeline.defs.resources import WAREHOUSE_WRITERS, WarehouseResource
from trading_pipeline.defs.run_logs import run_logging, with_run_logging
from trading_pipeline.marketdata import warehouse as wh
from trading_pipeline.settings import Settings, get_settings

POOL = WAREHOUSE_WRITERS
ORDERS = dg.AssetKey(["ops", "orders"])
SIGNALS = dg.AssetKey(["marts", "signals"])
TRADEABLE = ["breakout_up", "breakout_down", "crp_long", "crp_short", "expr_long", "expr_short"]


class TradeConfig(dg.Config):
    """Which signals become orders. Empty fields use TRADING_* settings and the latest session.

    ``timeframe``: ``1d`` (the daily scans) or an intraday bar size (``1m``..``1h``: the
    intraday scans with ``trade: true``, at the newest stored bar of that size)."""

    account: str = ""
    session: str = ""
    kinds: list[str] = TRADEABLE
    timeframe: str = "1d"


@dataclass(frozen=True)
class TradedScans:
    """Which scans' signals a run trades, from rules.yaml's ``trade`` settings (scans/rules.py)."""

    intraday: frozenset[str]  # every intraday scan
    traded_intraday: frozenset[str]  # intraday scans with trade: true
    not_traded: frozenset[str]  # scans with trade: false (daily ones; intraday ones by default)

    @classmethod
    def from_settings(cls, settings: Settings) -> "TradedScans":
        from trading_pipeline.scans.rules import load_rules

        scans = load_rules(settings.rules_file).enabled_scans
        return cls(frozenset(s.name for s in scans if s.timeframe == "intraday"),
                   frozenset(s.name for s in scans if s.timeframe == "intraday" and s.trades),
                   frozenset(s.name for s in scans if not s.trades))


def _traded_scans(context, settings: Settings, intraday: bool) -> TradedScans:
    """rules.yaml's trade settings. A rules file that does not load stops an intraday run
    (nothing traded); a daily run warns and goes on as before the setting existed (every
    scan's signals; fills still pulled), so a typo never holds back the book."""
    from trading_pipeline.scans.rules import RulesError

    try:
        return TradedScans.from_settings(settings)
    except RulesError as exc:
        if intraday:
            raise dg.Failure(description=f"ops/orders: cannot tell which intraday scans trade: {exc}. Fix the "
                             "rules file (TRADING_RULES_FILE) and re-run; nothing was traded.") from None
        context.log.warning(f"rules file not loaded, trading every daily scan's signals: {exc}")
        return TradedScans(frozenset(), frozenset(), frozenset())


def _check_timeframe(timeframe: str) -> None:
    from trading_pipeline.marketdata.bars import INTRADAY_TIMEFRAMES

    if timeframe != "1d" and timeframe not in INTRADAY_TIMEFRAMES:
        raise dg.Failure(description=f"ops/orders: unknown timeframe {timeframe!r}; use 1d (the daily scans) or an "
                         f"intraday bar size ({', '.join(INTRADAY_TIMEFRAMES)}) for the intraday scans with "
                         "`trade: true` in rules.yaml. Nothing was traded.")


@dataclass
class Book:
    store: object
    broker: object
    account: str
    market_time: datetime | None


def _market_time(con, timeframe: str) -> datetime | None:
    """The newest bar's time: the clock the paper broker and the risk engine use.

    Orders placed 'now' act no earlier than the next bar (point in time), in live trading
    and in the historical sample alike.
    """
    table = wh.bars_table(timeframe)
    row = wh.fetch_one(con, f"SELECT max(ts) FROM {table} WHERE timeframe = ?", [timeframe])
    return row[0] if row else None


def _newest_session(con, timeframe: str, market_time: datetime | None) -> str | None:
    """The session of the newest bar (for intraday bars not always its UTC date: FX, Asia)."""
    if market_time is None:
        return None
    row = wh.fetch_one(con, f"SELECT max(session_date) FROM {wh.bars_table(timeframe)} WHERE timeframe = ? AND ts = ?",
                       [timeframe, market_time])
    return (row[0] if row and row[0] else market_time.date()).isoformat()


def open_book(settings: Settings, account: str, market_time: datetime | None, store=None, feed=None) -> Book:
    """``account``'s broker at ``market_time``; a paper account fills against ``feed``
    (default: the warehouse's daily bars)."""
    from trading_pipeline.trading.services import accounts_of, make_broker
    from trading_pipeline.trading.store import OpsStore

    store = store if store is not None else OpsStore.from_settings(settings)
    # the paper broker acts at the session's market time: orders placed now fill on the next bar
    paper = accounts_of(settings).get(account).broker == "paper"
    clock = (lambda: market_time) if market_time is not None and paper else None
    return Book(store, make_broker(settings, store, account, feed=feed, clock=clock), account, market_time)


def _accounts(settings: Settings, only: str = "") -> list:
    """The accounts an order run trades in: ``only``, or every account (the accounts file's, or
    the one implicit TRADING_ACCOUNT)."""
    from trading_pipeline.trading.services import accounts_of

    accts = accounts_of(settings)
    return [accts.get(only)] if only else [accts.get(n) for n in accts.names()]


def _signals(con, config: TradeConfig, session: str | None, traded: TradedScans | None = None,
             until: datetime | None = None) -> pl.DataFrame:
    """The session's tradeable signals: daily, every scan but those with ``trade: false``;
    intraday, the scans with ``trade: true`` only, none from a bar after ``until`` (the newest
    bar: point in time). ``age_bars``: how many bars of the run's size the session has after the
    signal's bar, up to ``until`` (the staleness cut-off's measure; 0 at the newest bar)."""
    kinds = ", ".join(f"'{k}'" for k in config.kinds)
    tables = {r[0] for r in con.sql(
        "SELECT table_schema || '.' || table_name FROM information_schema.tables").fetchall()}
    intraday = config.timeframe != "1d"
    if "marts.signals" not in tables or session is None or (intraday and (traded is None or not traded.traded_intraday)):
        return pl.DataFrame()
    ind = "marts.indicators_intraday" if intraday else "marts.indicators_daily"
    atr = "i.atr_14" if ind in tables else "NULL::DOUBLE"
    join = (f"LEFT JOIN {ind} i ON i.symbol = s.symbol AND i.ts = s.ts"
            + (" AND i.timeframe = s.timeframe" if intraday else "")) if ind in tables else ""
    bars = wh.bars_table(config.timeframe)
    clock = f"SELECT DISTINCT ts FROM {bars} WHERE timeframe = ? AND session_date = ?::DATE"
    params: list = [config.timeframe, session]
    if until is not None:
        clock += " AND ts <= ?"
        params.append(until)
    where = ""
    params += [config.timeframe, session]
    if intraday:
        where += " AND s.scan IN (SELECT unnest(?::VARCHAR[]))"
        params.append(sorted(traded.traded_intraday))
    elif traded is not None and traded.not_traded:
        where += " AND s.scan NOT IN (SELECT unnest(?::VARCHAR[]))"
        params.append(sorted(traded.not_traded))
    if until is not None:
        where += " AND s.ts <= ?"
        params.append(until)
    return wh.fetch_frame(
        con,
        f"""WITH clock AS ({clock})
            SELECT s.*, {atr} AS atr_14, (SELECT count(*) FROM clock c WHERE c.ts > s.ts) AS age_bars
            FROM marts.signals s {join}
            WHERE s.timeframe = ? AND s.session_date = ?::DATE AND s.kind IN ({kinds}){where}
            ORDER BY s.ts, s.symbol, s.kind""",
        params,
    )


def _prices(path: str, session: str | None, timeframe: str = "1d") -> dict[str, Decimal]:
    """Every symbol's last daily close as of ``session``, from the warehouse the signals came
    from; an intraday run's symbols with bars of its size in the session at their last such close."""
    from trading_pipeline.trading.brokers.paper import DuckDBBarFeed

    if session is None:
        return {}
    prices = DuckDBBarFeed(path).last_closes(as_of=session)
    if timeframe != "1d":
        prices.update(DuckDBBarFeed(path, timeframe).last_closes(as_of=session))
    return prices


def _mirror(con, store) -> dict[str, int]:
    """Copy the ops store's tables into the warehouse ``ops`` schema (replaced each run)."""
    counts = {}
    for table in store.MIRRORED_TABLES:
        rows = store.rows(table)
        df = pl.DataFrame(rows, infer_schema_length=None) if rows else None
        if df is None:
            continue
        df = df.with_columns([pl.col(c).cast(pl.Float64) for c, t in df.schema.items() if t == pl.Object or t == pl.Decimal])
        con.register("_mirror", df)
        con.execute(f"CREATE OR REPLACE TABLE ops.{table} AS SELECT * FROM _mirror")
        con.unregister("_mirror")
        counts[table] = df.height
    return counts


def _apply_corporate_actions(context, store, accounts: list, actions: list, session: str | None) -> list:
    """Due corporate actions on the paper accounts, before any broker fills or trades this run;
    live accounts are left to their broker (it adjusts them itself). Returns what was applied now."""
    from trading_pipeline.trading.corporate_actions import apply_actions, paper_and_live

    paper, _live = paper_and_live(accounts)
    if session is None or not actions or not paper:
        return []
    applied = [r for r in apply_actions(store, actions, date.fromisoformat(session), paper) if r.status == "applied"]
    for r in applied:
        if r.kind == "delisting" and r.quantity_after != 0:
            context.log.warning(f"account {r.account}: {r.note}")
    return applied


def _mark_close(store, prices: dict[str, Decimal], now: datetime) -> None:
    """Each account's equity at this session's close, in the ops store: tomorrow's daily loss
    limit measures from it (trading_pipeline/trading/risk.py)."""
    for account in store.list_accounts():
        pf = store.portfolio(account)
        store.record_equity_mark(account, now.date(), pf.equity(prices), pf.unrealized_pnl(prices), now)


def _portfolio_daily(con, store, session: str, prices: dict[str, Decimal]) -> int:
    """One row per account and session: cash, market value, equity, P&L (replaced on re-run)."""
    con.execute("""CREATE TABLE IF NOT EXISTS ops.portfolio_daily (
        session_date DATE, account VARCHAR, cash DOUBLE, market_value DOUBLE, equity DOUBLE,
        realized_pnl DOUBLE, unrealized_pnl DOUBLE, gross_exposure DOUBLE, positions INTEGER,
        as_of TIMESTAMP)""")
    n = 0
    for account in store.list_accounts():
        pf = store.portfolio(account)
        con.execute("DELETE FROM ops.portfolio_daily WHERE session_date = ?::DATE AND account = ?", [session, account])
        con.execute(
            "INSERT INTO ops.portfolio_daily VALUES (?::DATE, ?, ?, ?, ?, ?, ?, ?, ?, now()::TIMESTAMP)",
            [session, account, float(pf.cash), float(pf.market_value(prices)), float(pf.equity(prices)),
             float(pf.realized_pnl()), float(pf.unrealized_pnl(prices)), float(pf.gross_exposure(prices)),
             len(pf.open_positions())],
        )
        n += 1
    return n


@dg.asset(
    key=ORDERS,
    deps=[SIGNALS],
    pool=POOL,
    group_name="trading",
    kinds={"python", "sqlite"},
    description="Orders from the latest session's signals (once each), fills pulled from the "
    "broker, and the ops store mirrored into warehouse tables ops.orders/fills/positions/..., "
    "plus ops.portfolio_daily (cash, equity, P&L per account and session).",
)
def orders(context: dg.AssetExecutionContext, config: TradeConfig, warehouse: WarehouseResource):
    from trading_pipeline.trading.brokers.base import BrokerError
    from trading_pipeline.trading.brokers.paper import DuckDBBarFeed
    from trading_pipeline.trading.corporate_actions import read_actions
    from trading_pipeline.trading.decisions import DecisionRules
    from trading_pipeline.trading.execution import execute_signals, sync_open_orders
    from trading_pipeline.trading.services import risk_engine, scoped_paper_broker
    from trading_pipeline.trading.sizing import Sizing

    _check_timeframe(config.timeframe)
    intraday = config.timeframe != "1d"
    settings = get_settings()
    traded = _traded_scans(context, settings, intraday)
    accounts = _accounts(settings, config.account)
    con = wh.connect(warehouse.resolved_path(), read_only=True)
    try:
        market_time = _market_time(con, config.timeframe)
        if intraday:  # the newest bar's session, its signals up to that bar
            session = config.session or _newest_session(con, config.timeframe, market_time)
            signals = _signals(con, config, session, traded, until=market_time)
        else:
            session = config.session or (market_time.date().isoformat() if market_time else None)
            signals = _signals(con, config, session, traded)
        corporate = read_actions(con)
    finally:
        con.close()
    prices = _prices(warehouse.resolved_path(), session, config.timeframe)
    from trading_pipeline.trading.store import OpsStore

    store = OpsStore.from_settings(settings)
    adjusted = _apply_corporate_actions(context, store, accounts, corporate, session)
    results, filled, per_account = [], [], {}
    # risk's clock: a daily run acts at the session's end, an intraday one at its newest bar
    now = market_time if intraday else (market_time + timedelta(hours=23)) if market_time else None
    feed = DuckDBBarFeed(warehouse.resolved_path(), config.timeframe) if intraday else None
    by_scan = signals.partition_by("scan", as_dict=True) if signals.height else {}
    rules = DecisionRules.from_settings(settings) if by_scan else None
    failed: dict[str, str] = {}
    stale: list[dict[str, str]] = []  # signals too old to place (TRADING_SIGNAL_MAX_AGE), per account
    for acct in accounts:  # each account: its broker, its risk limits, the scans it takes
        scans = [(str(scan), group) for (scan,), group in by_scan.items() if acct.takes(str(scan))]
        try:
            book = open_book(settings, acct.name, market_time, store, feed=feed)
            store = book.store
            broker = scoped_paper_broker(book.broker, store, config.timeframe)
            if hasattr(broker, "process_bars"):
                broker.process_bars()
            filled += sync_open_orders(book.store, broker, acct.name)
            mine = []
            if scans:
                risk = risk_engine(settings, book.store, acct.name)
                for scan, group in scans:
                    mine += execute_signals(
                        group, account=acct.name, strategy=scan, broker=broker, store=book.store,
                        risk_engine=risk, sizing=Sizing(), prices=prices, rules=rules, now=now,
                        max_age=settings.signal_max_age,
                    )
        except BrokerError as exc:  # one account's broker down: the others still trade; the run fails after
            failed[acct.name] = str(exc)
            per_account[acct.name] = {"scans": [s for s, _ in scans], "error": str(exc)}
            context.log.error(f"account {acct.name}: broker error, no orders this run: {exc}")
            continue
        per_account[acct.name] = {"scans": [s for s, _ in scans], "orders": len(mine)}
        results += mine
        stale += [{"account": acct.name, "symbol": r.symbol, "signal_ts": str(r.signal_ts), "reason": r.reason}
                  for r in mine if r.action == "skipped_stale"]
    if now is not None and not intraday:  # end-of-session marks: the daily run's
        _mark_close(store, prices, now)
        from trading_pipeline.trading.risk_monitor import monitor_accounts, warehouse_closes

        # risk warnings (risk.yaml's thresholds), once per session; never fails the run
        monitor_accounts(settings, store, prices, now, closes=warehouse_closes(warehouse.resolved_path(), session))
    actions: dict[str, int] = {}
    for r in results:
        actions[r.action] = actions.get(r.action, 0) + 1
    for st in stale:
        logs.run_event(context.log, "signal_stale", timeframe=config.timeframe, **st)
    with wh.writer(warehouse.resolved_path()) as con:
        mirrored = _mirror(con, store)
        if session is not None and not intraday:
            mirrored["portfolio_daily"] = _portfolio_daily(con, store, session, prices)
    logs.run_event(context.log, "orders", session=session, timeframe=config.timeframe, market_time=str(market_time),
                   signals=signals.height, actions=actions, synced=len(filled), corporate_actions=len(adjusted),
                   skipped_stale=len(stale), signal_max_age=settings.signal_max_age)
    if failed:
        raise dg.Failure(
            description=f"broker error in account(s) {', '.join(sorted(failed))} "
            f"({'; '.join(f'{a}: {e}' for a, e in sorted(failed.items()))}); the other accounts traded and the "
            "ops store was mirrored; a re-run resumes (orders are idempotent by id)",
            metadata={"errors": dg.MetadataValue.json(failed), "accounts": dg.MetadataValue.json(per_account)},
        )
    return dg.MaterializeResult(metadata={
        "session": dg.MetadataValue.text(str(session)),
        "timeframe": dg.MetadataValue.text(config.timeframe),
        "market_time": dg.MetadataValue.text(str(market_time)),
        "signals": dg.MetadataValue.int(signals.height),
        "actions": dg.MetadataValue.json(actions),
        "skipped_stale": dg.MetadataValue.int(len(stale)),
        "stale_signals": dg.MetadataValue.json(stale[:50]),
        "signal_max_age": dg.MetadataValue.int(settings.signal_max_age),
        "orders_updated_from_broker": dg.MetadataValue.int(len(filled)),
        "corporate_actions_applied": dg.MetadataValue.json([
            {"account": r.account, "action": r.key, "quantity_after": str(r.quantity_after),
             "cash_delta": str(r.cash_delta), "orders_adjusted": r.orders_adjusted} for r in adjusted][:50]),
        "accounts": dg.MetadataValue.json(per_account),
        "rejections": dg.MetadataValue.json([
            {"symbol": r.symbol, "reason": r.reason} for r in results if r.action in ("denied", "rejected")][:20]),
        "mirrored_rows": dg.MetadataValue.json(mirrored),
    })


@dg.asset_check(asset=ORDERS, name="reconciliation", description="Broker positions and open orders equal the ops store's.")
def reconciliation(context: dg.AssetCheckExecutionContext):
    from trading_pipeline.trading.execution import reconcile

    settings = get_settings()
    con = wh.connect(settings.warehouse_path, read_only=True) if wh.exists(settings.warehouse_path) else None
    try:
        market_time = _market_time(con, "1d") if con else None
    finally:
        if con:
            con.close()
    mismatches, store = [], None
    for acct in _accounts(settings):
        book = open_book(settings, acct.name, market_time, store)
        store = book.store
        mismatches += [f"{acct.name}: {m.message}" for m in reconcile(book.store, book.broker, acct.name)]
    return dg.AssetCheckResult(
        passed=not mismatches,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={"mismatches": dg.MetadataValue.json(mismatches[:50]),
                  "count": dg.MetadataValue.int(len(mismatches))},
    )


trade_signals_job = dg.define_asset_job(
    "trade_signals", selection=dg.AssetSelection.assets(ORDERS),
    description="Pull fills, turn the latest session's signals into risk-checked orders, mirror the ops store.",
    config=run_logging(),
)


@dg.asset_sensor(asset_key=SIGNALS, job=trade_signals_job, minimum_interval_seconds=30,
                 default_status=dg.DefaultSensorStatus.RUNNING)
def signals_to_orders(context: dg.SensorEvaluationContext, asset_event):
    """Each new materialization of marts/signals launches one daily order run (keyed by its
    run), and one run per intraday bar size with signals of a ``trade: true`` intraday scan in
    that size's newest session (keyed by the run and the size): a run trades one bar size, as
    the paper broker fills against one bar feed and each size has its own newest bar (the
    market time orders are placed at)."""
    yield dg.RunRequest(run_key=f"signals-{asset_event.run_id}", run_config=with_run_logging())
    for timeframe in intraday_timeframes_to_trade(context.log):
        yield dg.RunRequest(run_key=f"signals-{asset_event.run_id}-{timeframe}", tags={"trading/timeframe": timeframe},
                            run_config=with_run_logging({"ops": {"ops__orders": {"config": {"timeframe": timeframe}}}}))


def intraday_timeframes_to_trade(log=None) -> list[str]:
    """The bar sizes whose newest session has signals of an intraday scan with ``trade: true``
    (none without such a scan: the warehouse is not even opened). A rules file that does not
    load is logged and trades no intraday signals; the daily run still goes (and says why)."""
    from trading_pipeline.scans.rules import RulesError

    settings = get_settings()
    try:
        traded = TradedScans.from_settings(settings).traded_intraday
    except (RulesError, OSError) as exc:
        if log is not None:
            log.warning(f"no intraday order runs: {exc}")
        return []
    if not traded or not wh.exists(settings.warehouse_path):
        return []
    try:
        con = wh.connect(settings.warehouse_path, read_only=True)
    except Exception as exc:  # a plain DuckDB file a writer holds: the next materialization retries
        if log is not None:
            log.warning(f"no intraday order runs this time: the warehouse could not be read ({exc})")
        return []
    try:
        tables = {r[0] for r in con.sql(
            "SELECT table_schema || '.' || table_name FROM information_schema.tables").fetchall()}
        if not {"marts.signals", "raw.bars_intraday"} <= tables:
            return []
        rows = con.sql(
            """SELECT DISTINCT s.timeframe FROM marts.signals s
               JOIN (SELECT timeframe, max(session_date) AS session FROM raw.bars_intraday GROUP BY timeframe) b
                 ON b.timeframe = s.timeframe AND s.session_date = b.session
               WHERE s.scan IN (SELECT unnest(?::VARCHAR[])) ORDER BY 1""",
            params=[sorted(traded)]).fetchall()
    finally:
        con.close()
    return [r[0] for r in rows]
