"""Which orders a batch of signals asks for: the one decision the live order job and the backtest share.

Given the signals of one session, the account's positions, the symbols that already have a
working order, last closes, equity and the sizing and decision rules, :func:`decide` returns one
:class:`Intent` (an order to send) or :class:`Skip` (why not) per signal. It does no I/O and no
risk check: the live path (:func:`trading_pipeline.trading.execution.execute_signals`) sends each
intent through the risk engine, the ops store and the broker; the backtest
(:mod:`trading_pipeline.backtest.engine`) through the same risk engine and the paper fill model.
So a backtest makes the orders the sensor would make (tests/trading/test_decisions.py runs the
same signals through both).

The rules (:class:`DecisionRules`, from ``TRADING_ALLOW_SHORT``, ``TRADING_ON_REPEAT_SIGNAL``,
``TRADING_ON_OPPOSITE_SIGNAL``; docs/decisions.md #13):

* one working order per symbol: a signal for a symbol with an order still working is skipped;
* a **repeated same-side signal** while holding that way: ``skip`` (default, one position per
  symbol) or ``add`` (pyramid: a new entry sized like a first one);
* an **opposite signal** while holding: ``exit`` (default: close the position), ``reverse``
  (close it and open the other way in one order; a long reverses into a short only with
  shorting on) or ``ignore``;
* a sell signal with nothing to close opens a short only with ``allow_short``;
* signals with no side (a neutral pattern), no last close, or a size that rounds to 0 are
  skipped with the reason.

Exits (``stop_loss_atr`` and ``take_profit_atr``, set together; ``TRADING_STOP_LOSS_ATR`` /
``TRADING_TAKE_PROFIT_ATR``): an **entry** (an order opening a position from flat) carries a
bracket priced from the signal's ATR (``atr_14``) at the signal bar around the reference price,
the symbol's last close in ``prices`` when deciding (the signal bar's close, the price the live
path's risk and bracket checks use for a market entry): a buy's stop-loss is
``close - stop_loss_atr x ATR`` and its take-profit ``close + take_profit_atr x ATR``; a sell
mirrors them. Prices are rounded to the tick (0.01, 0.0001 below $1) away from the close, so the
stop stays below and the take-profit above it. An entry whose signal has no usable ATR (NULL,
not finite, <= 0) or whose stop would be <= 0 goes without a bracket and ``Intent.note`` says
why. Adds, exits and reversals carry none (a reversal's order also closes the old position; a
bracket would be sized wrong). While a bracket's exits work, the symbol has working orders, so
later signals for it are skipped (``working_order``): the bracket manages the position.

Signals are taken in (ts, symbol, kind) order, and each intent marks its symbol as working,
so two signals for one symbol in one batch make one order.

Staleness (``max_age``, ``TRADING_SIGNAL_MAX_AGE``; the live path only): a signal whose ``age``
(bars of its own timeframe after its bar, up to the run's newest bar) is above ``max_age`` missed
its run and is skipped (rule ``stale``) before anything else is decided. A signal with no age (a
backtest's, a hand-made frame's) is never stale.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from trading_pipeline.trading.model import Side, to_decimal
from trading_pipeline.trading.sizing import Sizing

ZERO = Decimal(0)
_LONG = {"long", "up", "buy", "bull", "bullish", "1", "+1"}
_SHORT = {"short", "down", "sell", "bear", "bearish", "-1"}


class RepeatSignal(StrEnum):
    SKIP = "skip"  # one position per symbol
    ADD = "add"  # pyramid


class OppositeSignal(StrEnum):
    EXIT = "exit"
    REVERSE = "reverse"
    IGNORE = "ignore"


class DecisionRules(BaseModel):
    """What a signal does to an existing position (see the module docstring)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    allow_short: bool = False
    on_repeat: RepeatSignal = RepeatSignal.SKIP
    on_opposite: OppositeSignal = OppositeSignal.EXIT
    # an entry's bracket, in ATRs of the signal bar from its close (None: no bracket)
    stop_loss_atr: Decimal | None = Field(default=None, gt=0, allow_inf_nan=False)
    take_profit_atr: Decimal | None = Field(default=None, gt=0, allow_inf_nan=False)

    @model_validator(mode="after")
    def _exits_together(self) -> DecisionRules:
        if (self.stop_loss_atr is None) != (self.take_profit_atr is None):
            raise ValueError("stop_loss_atr and take_profit_atr are set together: a bracket is a "
                             "take-profit and a stop-loss")
        return self

    @property
    def brackets(self) -> bool:
        """Whether entries carry a stop-loss and a take-profit."""
        return self.stop_loss_atr is not None

    @classmethod
    def from_settings(cls, settings: Any) -> DecisionRules:
        return cls(allow_short=settings.allow_short, on_repeat=settings.on_repeat_signal,
                   on_opposite=settings.on_opposite_signal,
                   stop_loss_atr=getattr(settings, "stop_loss_atr", None),
                   take_profit_atr=getattr(settings, "take_profit_atr", None))


def signal_side(direction: object) -> Side:
    """Map a signal's direction (long/short, up/down, buy/sell, +1/-1) to an order side."""
    if isinstance(direction, int | float) and not isinstance(direction, bool):
        if direction == 0:
            raise ValueError("signal direction 0 has no side")
        return Side.BUY if direction > 0 else Side.SELL
    text = str(direction).strip().lower()
    if text in _LONG:
        return Side.BUY
    if text in _SHORT:
        return Side.SELL
    raise ValueError(f"unknown signal direction {direction!r}; expected long/short, up/down or +1/-1")


@dataclass(frozen=True)
class Signal:
    symbol: str
    ts: datetime
    kind: str
    direction: Any
    atr: Decimal | None = None
    timeframe: str | None = None  # the bar size (1d, 1m..1h): the order records it
    age: int | None = None  # bars of its timeframe after its bar at the run's newest bar (0: the newest)

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Signal:
        """A ``marts.signals`` row (an ``atr_14`` or ``atr`` column feeds ATR sizing and bracket exits;
        an ``age_bars`` column, the order job's, the staleness cut-off)."""
        atr = row.get("atr_14", row.get("atr"))
        age = row.get("age_bars")
        return cls(row["symbol"], row["ts"], row["kind"], row["direction"], None if atr is None else to_decimal(atr),
                   row.get("timeframe"), None if age is None else int(age))


@dataclass(frozen=True)
class Intent:
    """An order a signal asks for. ``closing`` is the part of ``quantity`` that closes the
    current position (all of an exit, the first part of a reversal, none of an entry or add)."""

    signal: Signal
    side: Side
    quantity: Decimal
    purpose: str  # entry | add | exit | reverse
    closing: Decimal = ZERO
    stop_loss: Decimal | None = None  # the bracket's exits (an entry, with the rules' ATR exits)
    take_profit: Decimal | None = None
    note: str = ""  # why an entry has no bracket when the rules ask for one

    @property
    def symbol(self) -> str:
        return self.signal.symbol


@dataclass(frozen=True)
class Skip:
    """A signal that makes no order, and why. ``rule`` names the reason for machines."""

    signal: Signal
    rule: str  # stale | no_side | working_order | repeat | opposite_ignored | no_short | no_price | sizing | zero_size
    reason: str
    side: Side | None = None

    @property
    def symbol(self) -> str:
        return self.signal.symbol


Decision = Intent | Skip


def decide(
    signals: Iterable[Signal],
    *,
    positions: Mapping[str, Decimal],
    working: Collection[str],
    prices: Mapping[str, Decimal],
    equity: Decimal,
    sizing: Sizing,
    rules: DecisionRules,
    max_age: int | None = None,
) -> list[Decision]:
    """One decision per signal, in (ts, symbol, kind) order; see the module docstring."""
    busy = set(working)
    out: list[Decision] = []
    for sig in sorted(signals, key=lambda s: (s.ts, s.symbol, s.kind)):
        if (why := stale_reason(sig, max_age)) is not None:
            out.append(Skip(sig, "stale", why))
            continue
        try:
            side = signal_side(sig.direction)
        except ValueError as exc:
            out.append(Skip(sig, "no_side", str(exc)))
            continue
        if sig.symbol in busy:
            out.append(Skip(sig, "working_order", f"an order for {sig.symbol} is still working", side))
            continue
        held = positions.get(sig.symbol, ZERO)
        decision = _decide_one(sig, side, held, prices.get(sig.symbol), equity, sizing, rules)
        if isinstance(decision, Intent):
            busy.add(sig.symbol)
        out.append(decision)
    return out


def stale_reason(sig: Signal, max_age: int | None) -> str | None:
    """Why ``sig`` is too old to trade at the run's newest bar (``max_age`` bars of its own
    timeframe), or None when it is fresh enough, has no age, or there is no cut-off."""
    if max_age is None or sig.age is None or sig.age <= max_age:
        return None
    return (f"stale: {sig.age} {sig.timeframe or ''} bars old at the run's newest bar, over the cut-off of "
            f"{max_age} (TRADING_SIGNAL_MAX_AGE); it missed its run and is not placed").replace("  ", " ")


def _decide_one(sig: Signal, side: Side, held: Decimal, price: Decimal | None, equity: Decimal,
                sizing: Sizing, rules: DecisionRules) -> Decision:
    long_signal = side == Side.BUY
    if held != 0 and (held > 0) == long_signal:
        if rules.on_repeat == RepeatSignal.SKIP:
            return Skip(sig, "repeat", f"already {'long' if held > 0 else 'short'} {abs(held)} {sig.symbol}: "
                        "one position per symbol (TRADING_ON_REPEAT_SIGNAL=add pyramids)", side)
        return _entry(sig, side, price, equity, sizing, purpose="add")
    if held != 0:  # the signal is against the position
        if rules.on_opposite == OppositeSignal.IGNORE:
            return Skip(sig, "opposite_ignored", f"holding {held} {sig.symbol}; opposite signals are ignored "
                        "(TRADING_ON_OPPOSITE_SIGNAL=ignore)", side)
        closing = abs(held)
        if rules.on_opposite == OppositeSignal.REVERSE and (long_signal or rules.allow_short):
            opening = _entry(sig, side, price, equity, sizing, purpose="reverse")
            if isinstance(opening, Intent):
                return Intent(sig, side, closing + opening.quantity, "reverse", closing)
        return Intent(sig, side, closing, "exit", closing)
    if not long_signal and not rules.allow_short:
        return Skip(sig, "no_short", "sell signal with no long position to close (shorting is off)", side)
    entry = _entry(sig, side, price, equity, sizing, purpose="entry")
    if isinstance(entry, Intent) and rules.brackets:
        assert price is not None
        exits = bracket_prices(side, price, sig.atr, rules)
        if isinstance(exits, str):
            return replace(entry, note=exits)
        return replace(entry, take_profit=exits[0], stop_loss=exits[1])
    return entry


def _tick(reference: Decimal) -> Decimal:
    return Decimal("0.01") if reference >= 1 else Decimal("0.0001")


def bracket_prices(side: Side, reference: Decimal, atr: Decimal | None,
                   rules: DecisionRules) -> tuple[Decimal, Decimal] | str:
    """(take-profit, stop-loss) of an entry on ``side`` from ``reference`` (the signal bar's
    close) and the signal bar's ``atr``: buy ``reference + take_profit_atr x atr`` and
    ``reference - stop_loss_atr x atr``, sell mirrored, each rounded to the tick away from the
    reference; or why there is none (a sentence)."""
    assert rules.stop_loss_atr is not None and rules.take_profit_atr is not None
    if atr is None or not atr.is_finite() or atr <= 0:
        return (f"no bracket: no usable ATR at the signal bar ({'NULL' if atr is None else atr}); "
                "the entry goes without a stop-loss and take-profit")
    tick = _tick(reference)
    sign = 1 if side == Side.BUY else -1
    tp_raw = reference + sign * rules.take_profit_atr * atr
    sl_raw = reference - sign * rules.stop_loss_atr * atr
    up, down = (ROUND_CEILING, ROUND_FLOOR) if side == Side.BUY else (ROUND_FLOOR, ROUND_CEILING)
    take_profit = (tp_raw / tick).to_integral_value(rounding=up) * tick
    stop_loss = (sl_raw / tick).to_integral_value(rounding=down) * tick
    for name, value in (("stop-loss", stop_loss), ("take-profit", take_profit)):
        if value <= 0:
            return (f"no bracket: the {name} {value} (close {reference}, ATR {atr}) is not above 0; "
                    "the entry goes without a stop-loss and take-profit")
    return take_profit, stop_loss


def _entry(sig: Signal, side: Side, price: Decimal | None, equity: Decimal, sizing: Sizing, *, purpose: str) -> Decision:
    if price is None or price <= 0:
        return Skip(sig, "no_price", f"no last close for {sig.symbol}: cannot size or price-check the order", side)
    try:
        qty = sizing.quantity(equity=equity, price=price, atr=sig.atr)
    except ValueError as exc:
        return Skip(sig, "sizing", str(exc), side)
    if qty <= 0:
        return Skip(sig, "zero_size", "size rounds to 0 shares", side)
    return Intent(sig, side, qty, purpose)
