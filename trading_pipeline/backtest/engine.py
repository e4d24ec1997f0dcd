"""Backtests that replay the signals the scans produced, through the live order rules.

(Past 500 lines on purpose: loading and the session-by-session replay read top to bottom
in one place; the config, the metrics and the report are their own modules.)

Nothing here computes a signal (docs/decisions.md #3): the signals come from
``marts.signals``, exactly as the live scan wrote them. A simulated clock steps session by
session over ``raw.bars_daily``:

1. at each session's OPEN, orders working since the previous close fill at that bar's open,
   with the paper broker's own fill formula (slippage and commission, from
   :class:`~trading_pipeline.trading.brokers.paper.PaperBroker`, imported, not copied);
2. at its CLOSE, positions are marked to the close (the equity curve), positions held for
   ``hold`` sessions get an exit order, and that session's signals become orders through
   the same :class:`~trading_pipeline.trading.sizing.Sizing` and
   :class:`~trading_pipeline.trading.risk.RiskEngine` the live order job uses.

So an order from a signal on bar t fills at bar t+1's open, never on the signal's bar
(#5), and every order passes the risk rules (#8). Which orders a session's signals make is
decided by :func:`trading_pipeline.trading.decisions.decide`, the function the live order job
calls (#13), with the config's ``rules``; the one backtest-only rule is the ``hold`` exit.

Bracket exits (``rules.stop_loss_atr`` / ``take_profit_atr``; the prices come from ``decide``):
after an entry fills, its stop-loss and take-profit work from the next bar with the paper
broker's rule functions (:func:`bracket_exit`), in the bar, after the open's fills: the first to
fill closes the trade (``exit_reason`` ``stop_loss`` / ``take_profit``), a bar that reaches both
is the stop-loss's, a gap past the stop fills at the open. While they work the symbol counts as
having a working order (as live, where the exits are open orders), so signals for it are
skipped; a ``hold`` exit still closes a trade neither exit has.

This is the fast path: instead of a PaperBroker + OpsStore round trip per order (SQLite
writes, far too slow for 500 symbols x 10 years), the book is an in-memory
:class:`~trading_pipeline.trading.positions.Portfolio`, and the risk engine runs without a store,
so the one rule that needs the store (the kill switch) does not apply; every other rule
gets a :class:`~trading_pipeline.trading.risk.RiskContext` built from the simulated book, with the
same definitions as the live one: today's P&L is equity at this close minus equity at the
previous session's close, and buying power is reserved by the orders still waiting to fill
(their opening quantity x last close + the fill model's commission).
Results are deterministic: no clock, no randomness, everything sorted.

Corporate actions (``raw.corporate_actions`` for the traded symbols): bars are raw, so at the
start of an ex-date's session, before its open, a held position is split (quantity x ratio,
average and entry price / ratio: the trade's value and P&L carry through), as are a working
order's quantity and a bracket's prices; a dividend pays the position held when its ex-date
opens (a long is credited, a short pays), into cash on the pay date (the ex-date when unknown;
not within the backtest: not paid) and into the trade's P&L at the ex-date. The arithmetic is
:mod:`trading_pipeline.trading.corporate_actions`'s, the paper broker's. A delisting closes a
held position at the symbol's last close before its ex-date (``exit_reason`` ``delisted``) and
cancels its working order; the symbol has no signals from then on (dbt stops scanning it), so a
backtest trades each day's universe as it was, delisted symbols included until they left.
Symbol changes are not replayed (a renamed symbol's bars are another symbol's).
"""

from __future__ import annotations

import bisect
import functools
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from trading_pipeline.backtest.metrics import breakdown, compute_metrics
from trading_pipeline.backtest.model import (
    ACCOUNT,
    EQUITY_SCHEMA,
    ORDER_SCHEMA,
    REJECTION_SCHEMA,
    STRATEGY_KINDS,
    TRADE_SCHEMA,
    BacktestConfig,
    BacktestError,
    BacktestResult,
    ProgressCallback,
    config_from_dict,
    make_config,
)
from trading_pipeline.marketdata import warehouse as wh
from trading_pipeline.trading.brokers.paper import PaperBroker, limit_fill, slipped, stop_trigger
from trading_pipeline.trading.corporate_actions import (
    Action,
    dividend_cash,
    read_actions,
    split_position,
    split_price,
)
from trading_pipeline.trading.decisions import Intent, Signal, decide
from trading_pipeline.trading.model import OrderRequest, OrderType, Side, TimeInForce, to_decimal
from trading_pipeline.trading.positions import Portfolio
from trading_pipeline.trading.risk import RiskContext, RiskEngine, opening_quantity

ZERO = Decimal(0)


# ---------------------------------------------------------------------------- loading

def _tables(con: Any) -> set[str]:
    rows = con.sql("SELECT table_schema || '.' || table_name FROM information_schema.tables").fetchall()
    return {r[0] for r in rows}


def _rule_scan_names(rules_file: Path | str | None) -> list[str]:
    if rules_file is None:
        return []
    try:
        from trading_pipeline.scans.rules import load_rules

        return [s.name for s in load_rules(rules_file).scans]
    except Exception:  # noqa: BLE001 - a broken rules file must not hide the warehouse's scans
        return []


def valid_strategies(con: Any, rules_file: Path | str | None = None) -> list[str]:
    """``breakout``, ``crp``, and every scan name in ``rules_file`` or in marts.signals."""
    names = set(_rule_scan_names(rules_file))
    if "marts.signals" in _tables(con):
        names |= {r[0] for r in con.sql("SELECT DISTINCT scan FROM marts.signals WHERE scan IS NOT NULL").fetchall()}
    return list(STRATEGY_KINDS) + sorted(names - set(STRATEGY_KINDS))


def _range_sql(cfg: BacktestConfig, alias: str = "") -> tuple[str, list[Any]]:
    p = f"{alias}." if alias else ""
    sql, params = "", []
    if cfg.symbols:
        sql += f" AND {p}symbol IN (SELECT unnest(?::VARCHAR[]))"
        params.append(list(cfg.symbols))
    if cfg.start:
        sql += f" AND {p}session_date >= ?::DATE"
        params.append(cfg.start)
    if cfg.end:
        sql += f" AND {p}session_date <= ?::DATE"
        params.append(cfg.end)
    return sql, params


def load_signals(con: Any, cfg: BacktestConfig) -> pl.DataFrame:
    tables = _tables(con)
    if "marts.signals" not in tables:
        raise BacktestError("the warehouse has no marts.signals table; run `trading scan` (or `trading demo`) first")
    if cfg.strategy in STRATEGY_KINDS:
        where, params = "s.kind IN (SELECT unnest(?::VARCHAR[]))", [list(STRATEGY_KINDS[cfg.strategy])]
    else:
        valid = valid_strategies(con)
        if cfg.strategy not in valid:
            raise BacktestError(f"unknown strategy {cfg.strategy!r}; valid strategies: {', '.join(valid)}")
        where, params = "s.scan = ?", [cfg.strategy]
    rng, rparams = _range_sql(cfg, "s")
    has_ind = "marts.indicators_daily" in tables
    # indicators are on adjusted prices (split-adjusted by default), fills on raw bars: the ATR
    # goes back to the raw basis of its bar (x raw close / adjusted close), so a bracket priced
    # before a later split is in the prices it will meet
    ind_columns = {r[0] for r in con.sql(
        "SELECT column_name FROM information_schema.columns "
        "WHERE table_schema = 'marts' AND table_name = 'indicators_daily'").fetchall()} if has_ind else set()
    rebase = {"close", "ts"} <= ind_columns  # the dbt marts have both; a hand-built table may not
    atr = ("i.atr_14 * coalesce(r.close / nullif(i.close, 0), 1.0)" if rebase else "i.atr_14") if has_ind \
        else "NULL::DOUBLE"
    join = ("LEFT JOIN marts.indicators_daily i ON i.symbol = s.symbol AND i.session_date = s.session_date"
            + (" LEFT JOIN raw.bars_daily r ON r.symbol = s.symbol AND r.ts = i.ts" if rebase else "")) if has_ind else ""
    return wh.fetch_frame(
        con,
        f"""SELECT s.symbol, s.ts, s.session_date, s.kind, s.direction, s.score, {atr} AS atr_14
            FROM marts.signals s {join}
            WHERE s.timeframe = '1d' AND {where} {rng}
            QUALIFY row_number() OVER (PARTITION BY s.symbol, s.ts, s.kind ORDER BY s.scan) = 1
            ORDER BY s.session_date, s.ts, s.symbol, s.kind""",
        params + rparams,
    )


def load_sessions(con: Any, cfg: BacktestConfig) -> list[date]:
    rng, params = _range_sql(cfg)
    rows = con.sql(
        f"SELECT DISTINCT session_date FROM raw.bars_daily WHERE timeframe = '1d' {rng} ORDER BY 1", params=params
    ).fetchall()
    return [r[0] for r in rows]


def load_bars(con: Any, cfg: BacktestConfig, symbols: Sequence[str]) -> pl.DataFrame:
    if not symbols:
        return pl.DataFrame()
    rng, params = _range_sql(cfg)
    return wh.fetch_frame(
        con,
        f"""SELECT symbol, session_date, ts, open, high, low, close FROM raw.bars_daily
            WHERE timeframe = '1d' AND symbol IN (SELECT unnest(?::VARCHAR[])) {rng}
            ORDER BY symbol, ts""",
        [list(symbols), *params],
    )


# ---------------------------------------------------------------------------- the replay

def _fill_model(cfg: BacktestConfig) -> PaperBroker:
    """The paper broker's slippage and commission rules without its store (no book needed)."""
    broker = PaperBroker.__new__(PaperBroker)
    broker.slippage_bps = Decimal(cfg.slippage_bps)
    broker.commission_per_share = Decimal(cfg.commission_per_share)
    broker.commission_min = Decimal(cfg.commission_min)
    return broker


@dataclass
class _Order:
    symbol: str
    side: Side
    quantity: Decimal
    purpose: str  # entry | add | exit | reverse (trading/decisions.py)
    reason: str
    signal_session: date
    signal_kind: str | None = None
    closing: Decimal = ZERO  # the part of quantity that closes the open trade
    stop_loss: Decimal | None = None  # an entry's bracket (decide() prices it from the signal's ATR)
    take_profit: Decimal | None = None
    note: str = ""  # why an entry has no bracket when the rules ask for one


@dataclass
class _Close:
    """The simulated book at one session's close, when orders are decided."""

    index: int
    session: date
    equity: Decimal
    prices: dict[str, Decimal]
    daily_pnl: Decimal  # equity now - equity at the previous session's close
    day_start_equity: Decimal
    gross_exposure: Decimal
    now: datetime
    committed: Decimal = ZERO  # buying power reserved by orders waiting to fill
    orders_sent: int = 0


@dataclass
class _Book:
    portfolio: Portfolio
    risk: RiskEngine
    pending: dict[str, _Order]
    rejections: list[dict[str, Any]]
    price: Callable[[int, str], Decimal | None]
    commission: Callable[[Decimal], Decimal]
    sent: list[dict[str, Any]] = field(default_factory=list)

    def reserved(self, order: _Order, index: int) -> Decimal:
        """Buying power a working order holds (as RiskContext.from_store counts it live)."""
        signed = order.quantity if order.side == Side.BUY else -order.quantity
        opening = opening_quantity(self.portfolio.quantity(order.symbol), signed)
        if opening <= 0:
            return ZERO
        px = self.price(index, order.symbol)
        assert px is not None  # an order is only made for a symbol with a close
        return opening * px + self.commission(order.quantity)


def _submit(order: _Order, *, close: _Close, book: _Book) -> bool:
    """Risk-check one order at the close (as the live order job does); queue it if approved."""
    ctx_prices = dict(close.prices)
    last = book.price(close.index, order.symbol)
    if last is not None:
        ctx_prices[order.symbol] = last
    request = OrderRequest(
        f"{ACCOUNT}-{order.symbol}-{close.session.isoformat()}-{order.side.value}", ACCOUNT, order.symbol,
        order.side, order.quantity, OrderType.MARKET, None, TimeInForce.DAY,
    )
    ctx = RiskContext(
        account=ACCOUNT, equity=close.equity,
        positions={p.symbol: p.quantity for p in book.portfolio.open_positions()},
        last_prices=ctx_prices, open_orders=len(book.pending), orders_last_minute=close.orders_sent,
        daily_pnl=close.daily_pnl, day_start_equity=close.day_start_equity, now=close.now,
        gross_exposure=close.gross_exposure, committed=close.committed, commission=book.commission,
    )
    decision = book.risk.check(request, ctx)
    if not decision.approved:
        book.rejections.append({
            "session_date": close.session, "symbol": order.symbol, "side": order.side.value,
            "quantity": float(order.quantity), "purpose": order.purpose,
            "rule": decision.rule, "reason": decision.reason,
        })
        return False
    book.pending[order.symbol] = order
    book.sent.append({"session_date": close.session, "symbol": order.symbol, "side": order.side.value,
                      "quantity": float(order.quantity), "purpose": order.purpose, "reason": order.reason,
                      "signal_kind": order.signal_kind,
                      "stop_loss_price": None if order.stop_loss is None else float(order.stop_loss),
                      "take_profit_price": None if order.take_profit is None else float(order.take_profit),
                      "note": order.note or None})
    close.committed += book.reserved(order, close.index)
    close.orders_sent += 1
    return True


@dataclass
class _OpenTrade:
    trade_id: int
    symbol: str
    direction: str
    signal_kind: str | None
    signal_session: date
    entry_index: int
    entry_ts: datetime
    entry_price: Decimal
    quantity: Decimal
    realized: Decimal  # so far: minus the entry commission
    commission: Decimal
    stop_loss: Decimal | None = None  # the bracket's exits, working from the bar after the entry's
    take_profit: Decimal | None = None


def bracket_exit(side: Side, stop_loss: Decimal, take_profit: Decimal, o: Decimal, lo: Decimal, hi: Decimal,
                 slippage_bps: Decimal) -> tuple[str, Decimal] | None:
    """Which of a bracket's exits (on ``side``, the side that closes the trade) one bar fills, and at
    what price, by the paper broker's rules (its functions, imported): the stop-loss triggers when
    the bar trades through it or opens past it (then at the open) and fills there, slipped; the
    take-profit is a limit (the better of the open and the limit, never past it). A bar that
    could fill both is the stop-loss's, as in ``PaperBroker._process_exit``. None: neither."""
    trigger = stop_trigger(side, stop_loss, o, lo, hi)
    if trigger is not None:
        return "stop_loss", slipped(trigger, side, slippage_bps)
    price = limit_fill(side, take_profit, o, lo, hi, slippage_bps)
    return None if price is None else ("take_profit", price)


@dataclass
class _Actions:
    """The corporate actions by the session index they act at (module docstring)."""

    splits: dict[int, list[Action]] = field(default_factory=dict)  # at the ex-date's open
    dividends: dict[int, list[tuple[Action, int | None]]] = field(default_factory=dict)  # ex index -> (action, pay index)
    paying: dict[int, Decimal] = field(default_factory=dict)  # pay index -> cash owed then
    delistings: dict[int, list[Action]] = field(default_factory=dict)  # at the delisting ex-date's open

    @classmethod
    def index(cls, actions: Sequence[Action], sessions: list[date], symbols: set[str]) -> _Actions:
        out = cls()
        for a in actions:
            i = bisect.bisect_left(sessions, a.ex_date)  # the first session on or after the ex-date
            if a.symbol not in symbols or i >= len(sessions):
                continue
            if a.kind == "split":
                out.splits.setdefault(i, []).append(a)
            elif a.kind == "dividend":
                pay = bisect.bisect_left(sessions, a.effective_date)
                out.dividends.setdefault(i, []).append((a, pay if pay < len(sessions) else None))
            elif a.kind == "delisting":
                out.delistings.setdefault(i, []).append(a)
        return out


def _split_book(a: Action, pf: Portfolio, open_trades: dict[str, _OpenTrade], pending: dict[str, _Order]) -> None:
    """A split at the ex-date's open: the position, its trade and a working order's terms."""
    r = a.ratio
    assert r is not None
    if a.symbol in pf.positions:
        split_position(pf.positions[a.symbol], r)
    if (t := open_trades.get(a.symbol)) is not None:
        t.quantity, t.entry_price = t.quantity * r, t.entry_price / r
        t.stop_loss, t.take_profit = split_price(t.stop_loss, r), split_price(t.take_profit, r)
    if (o := pending.get(a.symbol)) is not None:
        o.quantity, o.closing = o.quantity * r, o.closing * r
        o.stop_loss, o.take_profit = split_price(o.stop_loss, r), split_price(o.take_profit, r)


def replay(
    signals: pl.DataFrame,
    bars: pl.DataFrame,
    sessions: list[date],
    cfg: BacktestConfig,
    progress: ProgressCallback | None = None,
    actions: Sequence[Action] = (),
) -> BacktestResult:
    """Step the clock over ``sessions``; see the module docstring for the rules (``actions``:
    the traded symbols' corporate actions)."""
    fills = _fill_model(cfg)
    risk = RiskEngine(cfg.limits, store=None)
    pf = Portfolio(account=ACCOUNT, starting_cash=Decimal(cfg.initial_cash))
    n = len(sessions)
    sess_index = {d: i for i, d in enumerate(sessions)}
    symbols = sorted(set(bars["symbol"].to_list())) if bars.height else []
    sym_index = {s: j for j, s in enumerate(symbols)}
    opens = np.full((n, len(symbols)), np.nan)
    highs = np.full((n, len(symbols)), np.nan)
    lows = np.full((n, len(symbols)), np.nan)
    closes = np.full((n, len(symbols)), np.nan)
    bar_ts: dict[tuple[int, int], datetime] = {}
    if bars.height:
        bi = np.array([sess_index[d] for d in bars["session_date"].to_list()], dtype=np.int64)
        bj = np.array([sym_index[s] for s in bars["symbol"].to_list()], dtype=np.int64)
        opens[bi, bj] = bars["open"].to_numpy()
        highs[bi, bj] = bars["high"].to_numpy()
        lows[bi, bj] = bars["low"].to_numpy()
        closes[bi, bj] = bars["close"].to_numpy()
        bar_ts = dict(zip(zip(bi.tolist(), bj.tolist(), strict=True), bars["ts"].to_list(), strict=True))
    # last known close at each session (point in time: forward-filled, never backward)
    last_close = closes.copy()
    for i in range(1, n):
        gap = np.isnan(last_close[i])
        last_close[i, gap] = last_close[i - 1, gap]

    by_session: dict[int, list[dict[str, Any]]] = {}
    for row in signals.iter_rows(named=True):
        i = sess_index.get(row["session_date"])
        if i is not None and row["symbol"] in sym_index:
            by_session.setdefault(i, []).append(row)

    pending: dict[str, _Order] = {}
    open_trades: dict[str, _OpenTrade] = {}
    trades: list[dict[str, Any]] = []
    rejections: list[dict[str, Any]] = []
    equity_rows: list[dict[str, Any]] = []
    next_trade_id = 1
    hold = cfg.hold if cfg.hold and cfg.hold > 0 else None

    def price(i: int, sym: str) -> Decimal | None:
        x = last_close[i, sym_index[sym]]
        return None if math.isnan(x) else to_decimal(x)

    book = _Book(pf, risk, pending, rejections, price, fills.commission)
    prev_equity = pf.starting_cash
    corporate = _Actions.index(actions, sessions, set(sym_index))

    for i, session in enumerate(sessions):
        # ---- before the open: a delisting closes the position at its last close (the universe
        # as it was: the symbol trades up to its delisting and no longer), cancels its order
        for a in corporate.delistings.get(i, []):
            pending.pop(a.symbol, None)
            t = open_trades.pop(a.symbol, None)
            if t is None:
                continue
            px = (price(i - 1, a.symbol) if i > 0 else None) or t.entry_price
            side = Side.SELL if t.direction == "long" else Side.BUY
            realized = pf.apply_fill(a.symbol, side, abs(pf.quantity(a.symbol)), px, ZERO)
            trades.append(_trade_row(t, sessions, exit_index=i, exit_ts=datetime.combine(session, time(0)),
                                     exit_price=px, exit_reason="delisted", exit_signal_session=None,
                                     pnl=t.realized + realized, commission=t.commission))
        # ---- before the open: the ex-date's splits, dividends earned, dividends paid
        for a in corporate.splits.get(i, []):
            _split_book(a, pf, open_trades, pending)
        for a, pay in corporate.dividends.get(i, []):
            assert a.amount is not None
            if (held := pf.quantity(a.symbol)) != 0 and pay is not None:
                cash = dividend_cash(held, a.amount)
                corporate.paying[pay] = corporate.paying.get(pay, ZERO) + cash
                if a.symbol in open_trades:
                    open_trades[a.symbol].realized += cash
        if i in corporate.paying:
            assert pf.cash is not None
            pf.cash += corporate.paying.pop(i)

        # ---- the open: working orders fill at this bar's open (the first bar after submit)
        for sym in sorted(pending):
            j = sym_index[sym]
            o = opens[i, j]
            if math.isnan(o):
                continue  # no bar for the symbol this session: the order keeps working
            order = pending.pop(sym)
            px = fills._slipped(to_decimal(o), order.side)
            commission = fills.commission(order.quantity)
            ts = bar_ts[(i, j)]
            opening = order.quantity - order.closing
            if order.closing > 0:  # exit, or the closing part of a reversal
                share = commission * order.closing / order.quantity
                realized = pf.apply_fill(sym, order.side, order.closing, px, share)
                t = open_trades.pop(sym)
                trades.append(_trade_row(t, sessions, exit_index=i, exit_ts=ts, exit_price=px,
                                         exit_reason=order.reason, exit_signal_session=order.signal_session,
                                         pnl=t.realized + realized, commission=t.commission + share))
                commission -= share
            if opening > 0 and order.purpose == "add" and sym in open_trades:
                t = open_trades[sym]
                realized = pf.apply_fill(sym, order.side, opening, px, commission)
                t.entry_price = (t.entry_price * t.quantity + px * opening) / (t.quantity + opening)
                t.quantity += opening
                t.realized += realized
                t.commission += commission
            elif opening > 0:  # entry, or the opening part of a reversal
                realized = pf.apply_fill(sym, order.side, opening, px, commission)
                open_trades[sym] = _OpenTrade(
                    next_trade_id, sym, "long" if order.side == Side.BUY else "short", order.signal_kind,
                    order.signal_session, i, ts, px, opening, realized, commission,
                    order.stop_loss, order.take_profit,
                )
                next_trade_id += 1

        # ---- in the bar: a bracket's exits, from the bar after the entry's fill bar
        for sym in sorted(open_trades):
            t = open_trades[sym]
            j = sym_index[sym]
            if t.stop_loss is None or t.take_profit is None or t.entry_index >= i or math.isnan(opens[i, j]):
                continue
            o_f = float(opens[i, j])
            lo_f = o_f if math.isnan(lows[i, j]) else min(float(lows[i, j]), o_f)  # a bar without a range: its open
            hi_f = o_f if math.isnan(highs[i, j]) else max(float(highs[i, j]), o_f)
            sl_f, tp_f = float(t.stop_loss), float(t.take_profit)
            near = 1e-9 * max(sl_f, tp_f)  # a float pre-check only skips bars far from both exits
            if (lo_f > sl_f + near and hi_f < tp_f - near) if t.direction == "long" else \
                    (hi_f < sl_f - near and lo_f > tp_f + near):
                continue
            side = Side.SELL if t.direction == "long" else Side.BUY
            hit = bracket_exit(side, t.stop_loss, t.take_profit, to_decimal(o_f), to_decimal(lo_f), to_decimal(hi_f),
                               fills.slippage_bps)
            if hit is None:
                continue
            exit_reason, px = hit
            qty = abs(pf.quantity(sym))
            commission = fills.commission(qty)
            realized = pf.apply_fill(sym, side, qty, px, commission)
            del open_trades[sym]
            trades.append(_trade_row(t, sessions, exit_index=i, exit_ts=bar_ts[(i, j)], exit_price=px,
                                     exit_reason=exit_reason, exit_signal_session=None,
                                     pnl=t.realized + realized, commission=t.commission + commission))

        # ---- the close: mark to market
        prices = {s: p for s in open_trades if (p := price(i, s)) is not None}
        equity = pf.equity(prices)
        gross = pf.gross_exposure(prices)
        assert pf.cash is not None
        equity_rows.append({
            "session_date": session, "cash": float(pf.cash), "market_value": float(equity - pf.cash),
            "gross_exposure": float(gross), "equity": float(equity), "open_positions": len(open_trades),
        })
        close = _Close(i, session, equity, prices, equity - prev_equity, prev_equity, gross,
                       datetime.combine(session, time(23, 59)))
        close.committed = sum((book.reserved(o, i) for o in pending.values()), ZERO)
        prev_equity = equity
        submit = functools.partial(_submit, close=close, book=book)

        # ---- exits first (they free risk room), then this session's signals
        if hold is not None:
            for sym in sorted(open_trades):
                t = open_trades[sym]
                if sym not in pending and i - t.entry_index + 1 >= hold:
                    side = Side.SELL if t.direction == "long" else Side.BUY
                    qty = abs(pf.quantity(sym))
                    submit(_Order(sym, side, qty, "exit", "hold", session, closing=qty))
        todays = [Signal.from_row(row) for row in by_session.get(i, [])]
        # a symbol with a working order, or a bracket's working exits, is busy (as live)
        bracketed = {s for s, t in open_trades.items() if t.stop_loss is not None}
        decisions = decide(
            todays, positions={p.symbol: p.quantity for p in pf.open_positions()}, working=set(pending) | bracketed,
            prices={s.symbol: p for s in todays if (p := price(i, s.symbol)) is not None},
            equity=equity, sizing=cfg.sizing, rules=cfg.rules,
        )
        for d in decisions:
            sig = d.signal
            if isinstance(d, Intent):
                reason = {"exit": "opposite_signal", "reverse": "reverse"}.get(d.purpose, "signal")
                submit(_Order(sig.symbol, d.side, d.quantity, d.purpose, reason, session, sig.kind, d.closing,
                              d.stop_loss, d.take_profit, d.note))
            elif d.rule == "sizing":
                rejections.append({"session_date": session, "symbol": sig.symbol, "side": d.side.value if d.side else None,
                                   "quantity": 0.0, "purpose": "entry", "rule": "sizing", "reason": d.reason})
        if progress is not None:
            progress(i + 1, n)

    # positions still open at the end are marked to the last close (no exit commission)
    for sym in sorted(open_trades):
        t = open_trades[sym]
        last = price(n - 1, sym) or t.entry_price
        unreal = pf.positions[sym].unrealized_pnl(last)
        trades.append(_trade_row(t, sessions, exit_index=None, exit_ts=None, exit_price=last, exit_reason="open",
                                 exit_signal_session=None, pnl=t.realized + unreal, commission=t.commission))
    trades_df = pl.DataFrame(trades, schema=TRADE_SCHEMA).sort("trade_id")
    equity_df = _equity_frame(equity_rows, cfg)
    result = BacktestResult(
        config=cfg,
        trades=trades_df,
        equity=equity_df,
        by_symbol=breakdown(trades_df),
        metrics=compute_metrics(equity_df, trades_df, cfg),
        rejections=pl.DataFrame(rejections, schema=REJECTION_SCHEMA),
        bars_processed=int(bars.height),
        signals_used=int(signals.height),
        run_id=cfg.run_id(),
        orders=pl.DataFrame(book.sent, schema=ORDER_SCHEMA),
    )
    result.metrics["rejected_orders"] = result.rejections.height
    result.metrics["unfilled_orders"] = len(pending)
    return result


def _trade_row(t: _OpenTrade, sessions: list[date], *, exit_index: int | None, exit_ts: datetime | None,
               exit_price: Decimal, exit_reason: str, exit_signal_session: date | None, pnl: Decimal,
               commission: Decimal) -> dict[str, Any]:
    cost = t.entry_price * t.quantity
    last_index = exit_index if exit_index is not None else len(sessions) - 1
    return {
        "trade_id": t.trade_id, "symbol": t.symbol, "direction": t.direction, "signal_kind": t.signal_kind,
        "signal_session": t.signal_session, "entry_session": sessions[t.entry_index], "entry_ts": t.entry_ts,
        "entry_price": float(t.entry_price), "exit_signal_session": exit_signal_session,
        "exit_session": sessions[exit_index] if exit_index is not None else None, "exit_ts": exit_ts,
        "exit_price": float(exit_price), "exit_reason": exit_reason, "quantity": float(t.quantity),
        "commission": float(commission), "pnl": float(pnl),
        "return_pct": float(pnl / cost * 100) if cost else 0.0,
        "sessions_held": last_index - t.entry_index + (0 if exit_index is not None else 1),
        "is_open": exit_index is None,
    }


def _equity_frame(rows: list[dict[str, Any]], cfg: BacktestConfig) -> pl.DataFrame:
    base = pl.DataFrame(rows, schema={k: v for k, v in EQUITY_SCHEMA.items() if k not in ("daily_return", "drawdown")})
    init = float(cfg.initial_cash)
    return base.with_columns(
        (pl.col("equity") / pl.col("equity").shift(1).fill_null(init) - 1).alias("daily_return"),
        (pl.col("equity") / pl.max_horizontal(pl.col("equity").cum_max(), pl.lit(init)) - 1).alias("drawdown"),
    ).select(list(EQUITY_SCHEMA))


# ---------------------------------------------------------------------------- entry point

def run_backtest(
    warehouse_path: Path | str,
    config: BacktestConfig | None = None,
    *,
    progress: ProgressCallback | None = None,
    **params: Any,
) -> BacktestResult:
    """Replay a strategy's signals from the warehouse (opened read-only).

    Give a :class:`BacktestConfig`, or its fields as keyword arguments (validated by
    :func:`make_config`: ``strategy="breakout", hold=2, rules=DecisionRules(...)``)."""
    cfg = config if config is not None else make_config(**params)
    progress = progress or _progress_hook
    con = wh.connect(warehouse_path, read_only=True)
    try:
        signals = load_signals(con, cfg)
        sessions = load_sessions(con, cfg)
        traded = sorted(set(signals["symbol"].to_list())) if signals.height else []
        bars = load_bars(con, cfg, traded)
        try:
            actions = read_actions(con, traded)
        except ValueError as exc:  # a stored action the replay cannot use: say which
            raise BacktestError(f"corporate actions: {exc}") from exc
    finally:
        con.close()
    return replay(signals, bars, sessions, cfg, progress, actions)


# A process-wide progress hook: the CLI runs the backtest inside an in-process Dagster run,
# where it cannot pass a callback through run config.
_progress_hook: ProgressCallback | None = None


class reporting_progress:  # noqa: N801 - used as a context manager
    """``with reporting_progress(cb):`` every backtest in this process reports to ``cb``."""

    def __init__(self, callback: ProgressCallback) -> None:
        self.callback = callback

    def __enter__(self) -> None:
        global _progress_hook
        self._previous, _progress_hook = _progress_hook, self.callback

    def __exit__(self, *exc: object) -> None:
        global _progress_hook
        _progress_hook = self._previous


# ---------------------------------------------------------------------------- stored runs

def load_stored(con: Any, run_id: str) -> BacktestResult:
    """A backtest the ``backtest`` job stored in marts.backtest_* (read-only is enough)."""
    if "marts.backtest_runs" not in _tables(con):
        raise BacktestError("no stored backtests: the warehouse has no marts.backtest_runs table")
    row = wh.fetch_one(
        con, "SELECT config_json, metrics_json, bars_processed, signals_used FROM marts.backtest_runs WHERE run_id = ?",
        [run_id],
    )
    if row is None:
        raise BacktestError(f"no stored backtest with run id {run_id!r}")
    trades = wh.fetch_frame(con, "SELECT * EXCLUDE (run_id) FROM marts.backtest_trades WHERE run_id = ? ORDER BY trade_id", [run_id])
    equity = wh.fetch_frame(con, "SELECT * EXCLUDE (run_id) FROM marts.backtest_equity WHERE run_id = ? ORDER BY session_date", [run_id])
    trades = pl.DataFrame(schema=TRADE_SCHEMA) if trades.is_empty() else trades.select(list(TRADE_SCHEMA)).cast(TRADE_SCHEMA)
    equity = pl.DataFrame(schema=EQUITY_SCHEMA) if equity.is_empty() else equity.select(list(EQUITY_SCHEMA)).cast(EQUITY_SCHEMA)
    return BacktestResult(
        config=config_from_dict(json.loads(row[0])), trades=trades, equity=equity, by_symbol=breakdown(trades),
        metrics=json.loads(row[1]), rejections=pl.DataFrame(schema=REJECTION_SCHEMA),
        bars_processed=int(row[2] or 0), signals_used=int(row[3] or 0), run_id=run_id,
    )
