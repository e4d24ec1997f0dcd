"""The one signal -> order decision (trading/decisions.py), and the proof that the live order
path and the backtest share it: the same signals over the same bars make the same orders."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from decimal import Decimal

import numpy as np
import polars as pl
import pytest

from trading_pipeline.backtest import engine
from trading_pipeline.backtest.engine import run_backtest
from trading_pipeline.marketdata import warehouse as wh
from trading_pipeline.trading import decisions, execution
from trading_pipeline.trading.brokers.paper import PaperBroker, PolarsBarFeed
from trading_pipeline.trading.decisions import (
    DecisionRules,
    Intent,
    OppositeSignal,
    RepeatSignal,
    Signal,
    Skip,
    decide,
)
from trading_pipeline.trading.execution import execute_signals, sync_open_orders
from trading_pipeline.trading.model import Side
from trading_pipeline.trading.risk import RiskEngine, RiskLimits
from trading_pipeline.trading.sizing import Sizing
from trading_pipeline.trading.store import OpsStore

D = Decimal
T = datetime(2024, 3, 4)
SIZING = Sizing(fraction=D("0.1"))


def sig(symbol: str = "AAA", direction: str = "long", kind: str = "breakout_up", ts: datetime = T) -> Signal:
    return Signal(symbol, ts, kind, direction)


def one(signal: Signal, held: str = "0", rules: DecisionRules = DecisionRules(), price: str | None = "100",
        working: tuple[str, ...] = ()):
    [d] = decide([signal], positions={signal.symbol: D(held)}, working=working,
                 prices={} if price is None else {signal.symbol: D(price)}, equity=D(100_000), sizing=SIZING, rules=rules)
    return d


def test_the_live_path_and_the_backtest_import_the_same_decision() -> None:
    assert execution.decide is decisions.decide is engine.decide


def test_entries_and_the_default_rules() -> None:
    d = one(sig())
    assert isinstance(d, Intent) and (d.side, d.quantity, d.purpose, d.closing) == (Side.BUY, D(100), "entry", 0)
    assert one(sig(direction="short")).rule == "no_short"
    short = one(sig(direction="short"), rules=DecisionRules(allow_short=True))
    assert (short.side, short.quantity, short.purpose) == (Side.SELL, D(100), "entry")
    assert one(sig(direction="sideways")).rule == "no_side"
    assert one(sig(), price=None).rule == "no_price"
    assert one(sig(), price="2000000").rule == "zero_size"
    assert one(sig(), working=("AAA",)).rule == "working_order"


def test_a_repeated_signal_skips_by_default_and_pyramids_when_asked() -> None:
    assert one(sig(), held="50").rule == "repeat"
    add = one(sig(), held="50", rules=DecisionRules(on_repeat=RepeatSignal.ADD))
    assert (add.side, add.quantity, add.purpose, add.closing) == (Side.BUY, D(100), "add", 0)
    assert one(sig(direction="short"), held="-50", rules=DecisionRules(allow_short=True)).rule == "repeat"


def test_an_opposite_signal_exits_reverses_or_is_ignored() -> None:
    exit_ = one(sig(direction="short"), held="50")
    assert (exit_.side, exit_.quantity, exit_.purpose, exit_.closing) == (Side.SELL, D(50), "exit", D(50))
    cover = one(sig(), held="-30")
    assert (cover.side, cover.quantity, cover.purpose) == (Side.BUY, D(30), "exit")
    rev = one(sig(direction="short"), held="50", rules=DecisionRules(on_opposite=OppositeSignal.REVERSE, allow_short=True))
    assert (rev.side, rev.quantity, rev.purpose, rev.closing) == (Side.SELL, D(150), "reverse", D(50))
    # a long cannot reverse into a short with shorting off: it only exits
    no_short = one(sig(direction="short"), held="50", rules=DecisionRules(on_opposite=OppositeSignal.REVERSE))
    assert (no_short.quantity, no_short.purpose) == (D(50), "exit")
    assert one(sig(direction="short"), held="50", rules=DecisionRules(on_opposite=OppositeSignal.IGNORE)).rule == "opposite_ignored"


def test_one_order_per_symbol_per_batch_in_signal_order() -> None:
    later = sig(kind="crp_long", ts=T + timedelta(hours=1))
    out = decide([later, sig(direction="short", kind="breakout_down"), sig("BBB")], positions={}, working=(),
                 prices={"AAA": D(100), "BBB": D(50)}, equity=D(100_000), sizing=SIZING, rules=DecisionRules())
    assert [(d.symbol, d.signal.kind, type(d).__name__) for d in out] == [
        ("AAA", "breakout_down", "Skip"), ("BBB", "breakout_up", "Intent"), ("AAA", "crp_long", "Intent"),
    ]
    assert isinstance(out[0], Skip) and out[0].rule == "no_short"


# ---------------------------------------------------------------- live == backtest

N_SESSIONS = 40
SYMBOLS = ["AAA", "BBB", "CCC", "DDD"]
COSTS = {"slippage_bps": D(5), "commission_per_share": D("0.01"), "commission_min": D(1)}
WIDE = RiskLimits(max_order_notional=D(10**7), max_order_quantity=D(10**7), max_position_quantity=D(10**7),
                  max_symbol_exposure=D(10**7), max_total_exposure=D(10**7), max_concentration_pct=D(100))


def _market(seed: int) -> tuple[list[date], pl.DataFrame, pl.DataFrame]:
    """Random-walk daily bars and random breakout signals (repeats, opposites and two signals
    for one symbol on one session included), reproducible from ``seed``."""
    rng = np.random.default_rng(seed)
    sessions = [d.date() for d in pl.date_range(date(2024, 1, 2), date(2024, 3, 29), "1d", eager=True).cast(pl.Datetime)
                if d.weekday() < 5][:N_SESSIONS]
    bars, signals = [], []
    for sym in SYMBOLS:
        close = 50.0 + 50 * rng.random()
        for d in sessions:
            open_ = round(close * (1 + rng.normal(0, 0.01)), 2)
            close = round(open_ * (1 + rng.normal(0, 0.02)), 2)
            ts = datetime.combine(d, time())
            bars.append({"symbol": sym, "timeframe": "1d", "ts": ts, "session_date": d, "open": open_,
                         "high": max(open_, close) + 0.5, "low": min(open_, close) - 0.5, "close": close, "volume": 1e6})
            draw = rng.random()
            kinds = [("breakout_up", "long")] if draw < 0.2 else [("breakout_down", "short")] if draw < 0.35 else []
            if draw > 0.97:
                kinds = [("breakout_up", "long"), ("breakout_down", "short")]
            for kind, direction in kinds:
                signals.append({"symbol": sym, "timeframe": "1d", "ts": ts, "session_date": d, "kind": kind,
                                "direction": direction, "score": 1.0, "reason": "test", "scan": "breakout_daily"})
    bars_df = pl.DataFrame(bars)
    sig_df = pl.DataFrame(signals).with_columns(pl.lit(None, pl.Float64).alias("atr_14"))
    return sessions, bars_df, sig_df


def _backtest_orders(tmp_path, bars: pl.DataFrame, signals: pl.DataFrame, rules: DecisionRules) -> tuple[list, list]:
    """(orders sent, orders the risk checks denied), each as (session, symbol, side, quantity)."""
    path = tmp_path / "wh.duckdb"
    with wh.writer(path) as con:
        wh.upsert_bars(con, "raw.bars_daily", bars, source="t")
        con.register("_sig", signals.drop("atr_14"))
        con.execute("CREATE OR REPLACE TABLE marts.signals AS SELECT * FROM _sig")
    r = run_backtest(path, strategy="breakout", hold=0, rules=rules, sizing=SIZING, limits=WIDE, **COSTS)
    def rows(frame: pl.DataFrame) -> list[tuple]:
        return sorted((x["session_date"], x["symbol"], x["side"], D(repr(x["quantity"]))) for x in frame.iter_rows(named=True))

    return rows(r.orders), rows(r.rejections)


def _live_orders(tmp_path, sessions: list[date], bars: pl.DataFrame, signals: pl.DataFrame, rules: DecisionRules) -> tuple[list, list]:
    """The order job's steps, session by session, as defs/orders.py runs them after each scan:
    fill working orders against the new bar, sync, then turn the session's signals into orders."""
    store = OpsStore(f"sqlite:///{tmp_path / 'ops.sqlite'}")
    feed = PolarsBarFeed()
    now = [datetime.combine(sessions[0], time(23))]
    broker = PaperBroker(store, feed, account="live", starting_cash=D(100_000), clock=lambda: now[0], **COSTS)
    risk = RiskEngine(WIDE, store)
    for d in sessions:
        feed.append(bars.filter(pl.col("session_date") == d).drop("session_date"))
        now[0] = datetime.combine(d, time(23))
        broker.process_bars()
        sync_open_orders(store, broker, "live")
        todays = signals.filter(pl.col("session_date") == d)
        closes = {r["symbol"]: D(repr(r["close"])) for r in bars.filter(pl.col("session_date") == d).iter_rows(named=True)}
        if todays.height:
            execute_signals(todays, account="live", strategy="breakout_daily", broker=broker, store=store,
                            risk_engine=risk, sizing=SIZING, prices=closes, rules=rules, now=now[0])
    orders = store.list_orders(account="live")
    store.close()
    assert {o.status.value for o in orders} <= {"accepted", "filled", "denied"}

    def rows(denied: bool) -> list[tuple]:
        return sorted((o.signal_ts.date(), o.symbol, o.side.value, o.quantity) for o in orders
                      if (o.status.value == "denied") == denied)

    return rows(False), rows(True)


@pytest.mark.parametrize("rules", [
    DecisionRules(),
    DecisionRules(allow_short=True, on_repeat=RepeatSignal.ADD, on_opposite=OppositeSignal.REVERSE),
], ids=["default", "shorts-pyramids-reversals"])
def test_live_and_backtest_make_the_same_orders(tmp_path, rules: DecisionRules) -> None:
    sessions, bars, signals = _market(seed=7)
    live_sent, live_denied = _live_orders(tmp_path, sessions, bars, signals, rules)
    bt_sent, bt_denied = _backtest_orders(tmp_path, bars, signals, rules)
    assert len(live_sent) >= 10  # a real sample: entries and exits (and adds and reversals in the second case)
    assert {side for _, _, side, _ in live_sent} == {"buy", "sell"}
    assert live_sent == bt_sent
    assert live_denied == bt_denied  # pyramiding runs into buying power: denied alike on both paths


# ---------------------------------------------------------------- brackets: live == backtest

BRACKETS = DecisionRules(stop_loss_atr=D("1.5"), take_profit_atr=D("2"))


def _with_atr(signals: pl.DataFrame, seed: int) -> pl.DataFrame:
    """An ATR per signal (some NULL: those entries go without a bracket)."""
    rng = np.random.default_rng(seed)
    atr = [None if x < 0.2 else round(0.5 + 1.5 * x, 4) for x in rng.random(signals.height)]
    return signals.with_columns(pl.Series("atr_14", atr, pl.Float64))


def test_live_and_backtest_fill_the_same_brackets(tmp_path) -> None:
    """Bracketed entries (stop 1.5 ATRs, take-profit 2 ATRs from the signal's close) over random
    bars: the order job on the paper broker and the backtest send the same entries with the same
    exit prices, and the same exits fill on the same bars at the same prices."""
    sessions, bars, signals = _market(seed=11)
    signals = _with_atr(signals, seed=12)
    # live: the order job's steps session by session
    store = OpsStore(f"sqlite:///{tmp_path / 'ops.sqlite'}")
    feed = PolarsBarFeed()
    now = [datetime.combine(sessions[0], time(23))]
    broker = PaperBroker(store, feed, account="live", starting_cash=D(100_000), clock=lambda: now[0], **COSTS)
    risk = RiskEngine(WIDE, store)
    for d in sessions:
        feed.append(bars.filter(pl.col("session_date") == d).drop("session_date"))
        now[0] = datetime.combine(d, time(23))
        broker.process_bars()
        sync_open_orders(store, broker, "live")
        todays = signals.filter(pl.col("session_date") == d)
        closes = {r["symbol"]: D(repr(r["close"])) for r in bars.filter(pl.col("session_date") == d).iter_rows(named=True)}
        if todays.height:
            execute_signals(todays, account="live", strategy="breakout_daily", broker=broker, store=store,
                            risk_engine=risk, sizing=SIZING, prices=closes, rules=BRACKETS, now=now[0])
    orders = store.list_orders(account="live")
    store.close()
    entries = {o.client_order_id: o for o in orders if o.parent_client_order_id is None and o.status.value != "denied"}
    exits = [o for o in orders if o.parent_client_order_id is not None]
    by_id = {o.client_order_id: o for o in orders}
    live_sent = sorted(
        (o.signal_ts.date(), o.symbol, o.side.value, o.quantity,
         by_id.get(f"{c}-sl").stop_price if f"{c}-sl" in by_id else None,
         by_id.get(f"{c}-tp").limit_price if f"{c}-tp" in by_id else None)
        for c, o in entries.items())
    live_exits = sorted((o.symbol, "stop_loss" if o.order_type.value == "stop" else "take_profit", o.avg_fill_price)
                        for o in exits if o.status.value == "filled")
    # the backtest on the same bars and signals (ATR from marts.indicators_daily)
    path = tmp_path / "wh.duckdb"
    ind = signals.select("symbol", "timeframe", "ts", "session_date", "atr_14")
    with wh.writer(path) as con:
        wh.upsert_bars(con, "raw.bars_daily", bars, source="t")
        con.register("_sig", signals.drop("atr_14"))
        con.execute("CREATE OR REPLACE TABLE marts.signals AS SELECT * FROM _sig")
        con.register("_ind", ind)
        con.execute("CREATE OR REPLACE TABLE marts.indicators_daily AS SELECT * FROM _ind")
    r = run_backtest(path, strategy="breakout", hold=0, rules=BRACKETS, sizing=SIZING, limits=WIDE, **COSTS)

    def dec(x: float | None) -> Decimal | None:
        return None if x is None else D(repr(x))

    bt_sent = sorted((x["session_date"], x["symbol"], x["side"], dec(x["quantity"]), dec(x["stop_loss_price"]),
                      dec(x["take_profit_price"])) for x in r.orders.iter_rows(named=True))
    bt_exits = sorted((x["symbol"], x["exit_reason"], dec(x["exit_price"])) for x in r.trades.iter_rows(named=True)
                      if x["exit_reason"] in ("stop_loss", "take_profit"))
    assert len(live_exits) >= 4 and {e[1] for e in live_exits} == {"stop_loss", "take_profit"}  # a real sample
    assert any(s[4] is None for s in live_sent if s[2] == "buy")  # and entries without ATR went plain
    assert live_sent == bt_sent
    assert live_exits == bt_exits


def test_exit_rules_are_validated_and_set_together() -> None:
    from pydantic import ValidationError

    for bad in ({"stop_loss_atr": 2}, {"take_profit_atr": 3}, {"stop_loss_atr": 0, "take_profit_atr": 3},
                {"stop_loss_atr": -1, "take_profit_atr": 3}, {"stop_loss_atr": "nan", "take_profit_atr": 3}):
        with pytest.raises(ValidationError):
            DecisionRules(**bad)
    assert not DecisionRules().brackets and BRACKETS.brackets
    # the backtest's stored config keeps them
    from trading_pipeline.backtest.model import config_from_dict, make_config

    cfg = make_config(strategy="breakout", rules=BRACKETS)
    assert config_from_dict(cfg.to_dict()).rules == BRACKETS
    assert make_config(strategy="breakout").run_id() != cfg.run_id()


def test_an_entry_gets_bracket_prices_from_the_signal_atr() -> None:
    atr_sig = Signal("AAA", T, "breakout_up", "long", D("1.234"))
    d = one(atr_sig, rules=BRACKETS)  # close 100: stop 100 - 1.851 -> 98.14 (down), tp 100 + 2.468 -> 102.47 (up)
    assert (d.purpose, d.stop_loss, d.take_profit, d.note) == ("entry", D("98.14"), D("102.47"), "")
    short = one(Signal("AAA", T, "breakout_down", "short", D("1.234")),
                rules=BRACKETS.model_copy(update={"allow_short": True}))
    assert (short.side, short.stop_loss, short.take_profit) == (Side.SELL, D("101.86"), D("97.53"))
    # no ATR, or a stop that would be <= 0: a plain entry that says why
    plain = one(sig(), rules=BRACKETS)
    assert isinstance(plain, Intent) and plain.stop_loss is None and "no usable ATR" in plain.note
    cheap = one(Signal("AAA", T, "breakout_up", "long", D(80)), rules=BRACKETS)
    assert cheap.stop_loss is None and "stop-loss" in cheap.note and "not above 0" in cheap.note
    # only entries from flat carry one: adds, exits and reversals do not
    add = one(atr_sig, held="50", rules=BRACKETS.model_copy(update={"on_repeat": RepeatSignal.ADD}))
    exit_ = one(Signal("AAA", T, "breakout_down", "short", D("1.234")), held="50", rules=BRACKETS)
    assert (add.purpose, add.stop_loss, exit_.purpose, exit_.stop_loss) == ("add", None, "exit", None)
    # without exit rules: nothing, and no note
    assert (one(atr_sig).stop_loss, one(atr_sig).note) == (None, "")
