"""Rebalancing: the orders that move an account's positions to target weights of its equity.

Targets are ``symbol -> weight`` (a fraction of equity; cash is the rest): from a CSV file
(``symbol,weight``, see targets.example.csv), from a request body, or from a scan (equal weight
over the top N long signals of the scan's latest session). Long only: weights are in [0, 1]
and sum to at most 1; a short held today is covered toward its target like any position.

:func:`plan` is pure (positions, cash and last closes in, orders out); the rules, in order:

1. equity = cash + sum(position x last close); the target value of a symbol = weight x
   equity; symbols held but not in the targets have target 0.
2. drift band: a symbol whose |current weight - target weight| is below ``drift_band``
   percentage points of equity is not traded.
3. whole shares, never past the target: a buy is ``floor(target/price - held)``, a sell
   ``floor(held - target/price)`` (rounded toward zero, so a buy never ends above its target
   nor a sell below it). A target of 0 (or a symbol not in the targets) closes the whole
   position, fractional shares included, whatever the drift band and minimum trade say.
4. minimum trade: an order worth less than ``min_trade`` (quantity x last close) is dropped.
5. sells are listed and sent first, then buys (a cover of a short is a buy). Cash for the
   buys = cash + proceeds of the sells at the last close - the broker's estimated commission
   on the sells (when it states one). The buys must cost (commission included) strictly less
   than that, as the risk engine's buying power is a strict ceiling. When they would not,
   each buy is scaled by the same factor (cash for the buys / their cost) and floored to whole
   shares, taken in symbol order, each cut further (a share at a time) while the total so far
   would reach the cash; a buy that falls to 0, or under the minimum trade, is dropped.

Every order of a rebalance has a deterministic client order id (``rb-`` + 20 base32
characters of sha256(account, targets digest, session, symbol, side)): a retried run places
nothing twice. Working orders of an earlier rebalance (ids ``rb-``) count as filled at the
last close, so a re-run while they work plans nothing more for them. An order the store has
ended without a fill (denied by a risk rule, rejected, cancelled, expired) is retried by a
re-run under ``<id>-2``, ``-3``... (e.g. a buy denied for buying power until the sells filled).

:func:`plan_for_account` reads the ops store and the feed; :func:`execute` sends a plan's
orders through :func:`~trading_pipeline.trading.services.place_order` (risk engine, ops store,
broker), sells first.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from decimal import ROUND_DOWN, Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from trading_pipeline.trading.model import Side

ZERO = Decimal(0)
ONE = Decimal(1)
HUNDRED = Decimal(100)
ID_PREFIX = "rb-"
DEFAULT_MIN_TRADE = Decimal("100")
DEFAULT_DRIFT_BAND = Decimal("0.5")


class RebalanceError(ValueError):
    """Targets or a book nothing can be computed from (the message names the file and line)."""


@dataclass(frozen=True)
class Targets:
    """Target weights by symbol (upper case), in the order given; ``source`` names where from."""

    weights: dict[str, Decimal]
    source: str = "<targets>"

    @property
    def total(self) -> Decimal:
        return sum(self.weights.values(), ZERO)

    def digest(self) -> str:
        """A hash of the targets themselves (not their file): part of every order id."""
        text = ";".join(f"{s}={w.normalize()}" for s, w in sorted(self.weights.items()))
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def _weight(raw: Any, where: str) -> Decimal:
    try:
        w = raw if isinstance(raw, Decimal) else Decimal(str(raw).strip())
    except (InvalidOperation, ValueError):
        raise RebalanceError(f"{where}: weight must be a number, got {raw!r}") from None
    if not w.is_finite():
        raise RebalanceError(f"{where}: weight must be a finite number, got {raw!r}")
    if w < 0 or w > 1:
        raise RebalanceError(f"{where}: weight must be between 0 and 1 (a fraction of equity; long only), got {w}")
    return w


def targets_from_rows(rows: Iterable[tuple[int | None, Any, Any]], source: str = "<targets>", item: str = "line") -> Targets:
    """Targets from ``(line, symbol, weight)`` rows; every problem names ``source`` and the line
    (``item``: what a row is called, e.g. "line" in a file, "item" in a request body)."""
    weights: dict[str, Decimal] = {}
    first: dict[str, str] = {}
    for line, sym, raw in rows:
        where = f"{source} {item} {line}" if line is not None else f"{source}"
        symbol = str(sym or "").strip().upper()
        if not symbol:
            raise RebalanceError(f"{where}: empty symbol")
        where = f"{where} ({symbol})"
        if symbol in weights:
            raise RebalanceError(f"{where}: duplicate symbol, first given at {first[symbol]}")
        weights[symbol] = _weight(raw, where)
        first[symbol] = f"{item} {line}" if line is not None else "an earlier entry"
    t = Targets(weights, source)
    if t.total > 1:
        raise RebalanceError(f"{source}: weights sum to {t.total}, above 1 (weights are fractions of equity; "
                             "cash is 1 - their sum)")
    return t


def parse_targets(text: str, source: str = "<targets>") -> Targets:
    """A ``symbol,weight`` CSV: an optional header line ``symbol,weight``, ``#`` comments and
    blank lines allowed, nothing else."""
    rows = []
    for lineno, cells in enumerate(csv.reader(io.StringIO(text)), start=1):
        cells = [c.strip() for c in cells]
        if not cells or not any(cells) or cells[0].startswith("#"):
            continue
        if [c.lower() for c in cells] == ["symbol", "weight"]:
            continue
        if len(cells) != 2:
            raise RebalanceError(f"{source} line {lineno}: expected 'symbol,weight', got {','.join(cells)!r}")
        rows.append((lineno, cells[0], cells[1]))
    if not rows:
        raise RebalanceError(f"{source}: no targets (expected lines of 'symbol,weight')")
    return targets_from_rows(rows, source)


def read_targets(path: Path | str) -> Targets:
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise RebalanceError(f"{p}: cannot read the targets file ({exc.strerror or exc})") from None
    return parse_targets(text, str(p))


def equal_weights(symbols: list[str], source: str) -> Targets:
    """Equal weight over ``symbols``: 1/N each, rounded down to 6 decimals (so the sum is <= 1)."""
    if not symbols:
        raise RebalanceError(f"{source}: no symbols to weight")
    w = (ONE / len(symbols)).quantize(Decimal("0.000001"), rounding=ROUND_DOWN).normalize()
    return targets_from_rows([(None, s, w) for s in symbols], source)


def targets_from_scan(con: Any, scan: str, top: int) -> Targets:
    """Equal weight over the ``top`` highest-scoring long signals of ``scan``'s latest session
    in ``marts.signals`` (one per symbol: its best score; ties by symbol)."""
    from trading_pipeline.marketdata.warehouse import fetch_frame

    source = f"scan {scan!r}"
    if top < 1:
        raise RebalanceError(f"{source}: --top must be >= 1, got {top}")
    frame = fetch_frame(con, """
        SELECT symbol, max(score) AS score FROM marts.signals
        WHERE scan = ? AND direction = 'long'
          AND session_date = (SELECT max(session_date) FROM marts.signals WHERE scan = ?)
        GROUP BY symbol ORDER BY score DESC NULLS LAST, symbol LIMIT ?""", [scan, scan, top])
    if frame.is_empty():
        raise RebalanceError(f"{source}: no long signals in its latest session (is the scan's name right? "
                             "see rules.yaml's scans)")
    return equal_weights(frame["symbol"].to_list(), source)


def rebalance_order_id(account: str, digest: str, session: str, symbol: str, side: str) -> str:
    key = "|".join(("rebalance", account, digest, session, symbol.upper(), side))
    return ID_PREFIX + base64.b32encode(hashlib.sha256(key.encode()).digest()).decode().lower()[:20]


@dataclass(frozen=True)
class PlannedOrder:
    symbol: str
    side: str  # buy | sell
    quantity: Decimal
    price: Decimal  # the last close it was planned at
    value: Decimal  # quantity x price
    current_quantity: Decimal
    target_quantity: Decimal  # after this order
    current_weight: Decimal  # of equity, as fractions
    target_weight: Decimal
    client_order_id: str
    note: str = ""


@dataclass(frozen=True)
class Skipped:
    symbol: str
    reason: str


@dataclass(frozen=True)
class Plan:
    account: str
    session: str
    targets_digest: str
    equity: Decimal
    cash: Decimal
    cash_after: Decimal  # cash once every planned order fills at its price (commission included)
    min_trade: Decimal
    drift_band: Decimal
    orders: list[PlannedOrder]
    skipped: list[Skipped] = field(default_factory=list)
    buy_scale: Decimal | None = None  # set when the buys were scaled down to the cash
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _floor(x: Decimal) -> Decimal:
    return x.to_integral_value(rounding=ROUND_DOWN)


def plan(
    *,
    account: str,
    targets: Targets,
    positions: Mapping[str, Decimal],
    cash: Decimal,
    prices: Mapping[str, Decimal],
    session: str,
    min_trade: Decimal = DEFAULT_MIN_TRADE,
    drift_band: Decimal = DEFAULT_DRIFT_BAND,
    commission: Callable[[Decimal], Decimal] | None = None,
) -> Plan:
    """The orders that move ``positions`` (symbol -> signed quantity) and ``cash`` to
    ``targets`` at ``prices`` (last closes), by the rules in the module docstring."""
    if min_trade < 0 or not min_trade.is_finite():
        raise RebalanceError(f"minimum trade must be >= 0, got {min_trade}")
    if drift_band < 0 or drift_band >= 100 or not drift_band.is_finite():
        raise RebalanceError(f"drift band must be in [0, 100) percentage points, got {drift_band}")
    held = {s.upper(): q for s, q in positions.items() if q != 0}
    symbols = list(targets.weights) + sorted(s for s in held if s not in targets.weights)
    missing_t = [s for s in targets.weights if not prices.get(s)]
    if missing_t:
        raise RebalanceError(f"{targets.source}: no last close for {', '.join(missing_t)} (unknown symbol, or no "
                             "bars in the warehouse): nothing to price the target at")
    missing_h = [s for s in held if not prices.get(s)]
    if missing_h:
        raise RebalanceError(f"account {account!r} holds {', '.join(sorted(missing_h))} with no last close: "
                             "equity and the orders cannot be computed")
    equity = cash + sum((q * prices[s] for s, q in held.items()), ZERO)
    if equity <= 0:
        raise RebalanceError(f"account {account!r} has no equity to rebalance (cash {cash}, equity {equity})")
    fee = commission or (lambda _q: ZERO)
    digest = targets.digest()
    sells: list[PlannedOrder] = []
    buys: list[PlannedOrder] = []
    skipped: list[Skipped] = []
    band = drift_band / HUNDRED
    for s in symbols:
        price, cur = prices[s], held.get(s, ZERO)
        tw = targets.weights.get(s, ZERO)
        cw = cur * price / equity
        if tw == 0:
            if cur == 0:
                continue
            qty, side = abs(cur), ("sell" if cur > 0 else "buy")
            note = "close (not in the targets)" if s not in targets.weights else "close (target 0)"
        else:
            if abs(cw - tw) < band:
                if cw != tw:
                    skipped.append(Skipped(s, f"within the drift band: {cw * 100:.2f}% vs target {tw * 100:.2f}% "
                                              f"(band {drift_band} pp)"))
                continue
            exact = tw * equity / price
            diff = exact - cur
            if diff == 0:
                continue
            qty, side, note = _floor(abs(diff)), ("buy" if diff > 0 else "sell"), ""
            if qty == 0:
                skipped.append(Skipped(s, f"less than one share from the target ({diff:+.4f} shares)"))
                continue
            if qty * price < min_trade:
                skipped.append(Skipped(s, f"{side} {qty} worth {qty * price:.2f}, under the minimum trade {min_trade}"))
                continue
        signed = qty if side == "buy" else -qty
        o = PlannedOrder(s, side, qty, price, qty * price, cur, cur + signed, cw, tw,
                         rebalance_order_id(account, digest, session, s, side), note)
        (buys if side == "buy" else sells).append(o)
    available = cash + sum((o.value - fee(o.quantity) for o in sells), ZERO)
    cost = sum((o.value + fee(o.quantity) for o in buys), ZERO)
    scale: Decimal | None = None
    notes: list[str] = []
    if buys and cost >= available:
        scale = max(available, ZERO) / cost
        notes.append(f"buys cost {cost:.2f} but cash after sells is {available:.2f}: every buy scaled by "
                     f"{scale:.6f}, floored to whole shares and kept below the cash")
        scaled = []
        for o in sorted(buys, key=lambda o: o.symbol):
            q = _floor(o.quantity * scale)
            # the scaled set must fit: commission is not linear, so take shares off until it does
            while q > 0 and sum((x.value + fee(x.quantity) for x in scaled), ZERO) + q * o.price + fee(q) >= available:
                q -= 1
            if q <= 0 or (q * o.price < min_trade and o.target_weight != 0):
                skipped.append(Skipped(o.symbol, f"buy dropped: scaled to {q} shares for lack of cash"
                                                 + (f" (under the minimum trade {min_trade})" if q > 0 else "")))
                continue
            scaled.append(PlannedOrder(o.symbol, o.side, q, o.price, q * o.price, o.current_quantity,
                                       o.current_quantity + q, o.current_weight, o.target_weight,
                                       o.client_order_id, (o.note + "; " if o.note else "") + "scaled to the cash"))
        buys = scaled
    orders = sorted(sells, key=lambda o: o.symbol) + sorted(buys, key=lambda o: o.symbol)
    cash_after = cash + sum(((o.value if o.side == "sell" else -o.value) - fee(o.quantity) for o in orders), ZERO)
    return Plan(account, session, digest, equity, cash, cash_after, min_trade, drift_band, orders, skipped, scale, notes)


# ---- the impure part: the store, the feed, the broker -------------------------------------------

def book(store: Any, account: str) -> tuple[dict[str, Decimal], Decimal, list[Any], list[str]]:
    """The account as the ops store books it: (positions, cash, working rebalance orders (ids
    ``rb-``), the ids of its other working orders)."""
    from trading_pipeline.trading.orders import OPEN_STATUSES

    pf = store.portfolio(account)
    positions = {p.symbol: p.quantity for p in pf.open_positions()}
    working = store.list_orders(account=account, status=[s.value for s in OPEN_STATUSES], limit=100_000)
    ours = [o for o in working if o.client_order_id.startswith(ID_PREFIX)]
    others = [o.client_order_id for o in working if not o.client_order_id.startswith(ID_PREFIX)]
    return positions, pf.cash if pf.cash is not None else ZERO, ours, others


def plan_for_account(
    *,
    store: Any,
    feed: Any,
    account: str,
    targets: Targets,
    starting_cash: Decimal = ZERO,
    min_trade: Decimal = DEFAULT_MIN_TRADE,
    drift_band: Decimal = DEFAULT_DRIFT_BAND,
    commission: Callable[[Decimal], Decimal] | None = None,
) -> Plan:
    """:func:`plan` for ``account`` as the ops store has it, at the feed's last closes. An
    account not yet in the store starts from ``starting_cash`` (its broker's cash)."""
    positions, cash, working, others = book(store, account)
    if not store.has_account(account):
        cash = starting_cash
    symbols = sorted(set(targets.weights) | set(positions) | {o.symbol for o in working})
    prices = feed.last_closes(symbols)
    for o in working:  # an earlier rebalance's orders still working: as if filled at the last close
        rest = o.quantity - o.filled_quantity
        price = prices.get(o.symbol)
        if rest <= 0 or price is None:
            continue
        signed = rest if Side(o.side) == Side.BUY else -rest
        positions[o.symbol] = positions.get(o.symbol, ZERO) + signed
        cash -= signed * price
    newest = feed.newest_ts()
    session = newest.date().isoformat() if newest is not None else "no-bars"
    p = plan(account=account, targets=targets, positions=positions, cash=cash, prices=prices, session=session,
             min_trade=min_trade, drift_band=drift_band, commission=commission)
    if working:
        p.notes.append(f"{len(working)} working rebalance order(s) counted as filled at the last close")
    if others:
        p.notes.append(f"{len(others)} other working order(s) not counted: {', '.join(others[:5])}"
                       + (" ..." if len(others) > 5 else ""))
    return p


@dataclass(frozen=True)
class Sent:
    order: PlannedOrder
    client_order_id: str  # the planned id, or its retry (``-2``, ``-3``...): see :func:`execute`
    action: str  # submitted | resumed | skipped | denied | rejected | error
    status: str | None
    reason: str


RETRYABLE = ("denied", "rejected", "cancelled", "expired")


def attempt_id(store: Any, planned: str) -> str:
    """The id to send a planned order under: the planned id, unless the store has it ended
    without a fill (denied, rejected, cancelled, expired: a re-run retries it), then the
    first ``planned-N`` (N = 2, 3, ...) the store does not have as such."""
    coid, n = planned, 1
    while (o := store.get_order(coid)) is not None and o.status.value in RETRYABLE and o.filled_quantity == 0:
        n += 1
        coid = f"{planned}-{n}"
    return coid


def execute(plan_: Plan, *, store: Any, broker: Any, feed: Any, risk_engine: Any) -> list[Sent]:
    """Send the plan's orders (sells first, as listed) through ``place_order`` as market day
    orders; one result per order, in order. An order already in the store under its id is not
    sent again (``skipped``, or ``resumed`` when it was recorded but not sent); one that ended
    without a fill is retried under its next attempt id (:func:`attempt_id`)."""
    from trading_pipeline.trading.model import InvalidOrder
    from trading_pipeline.trading.services import place_order

    out = []
    for o in plan_.orders:
        coid = attempt_id(store, o.client_order_id)
        try:
            placed = place_order(store=store, broker=broker, feed=feed, risk_engine=risk_engine, account=plan_.account,
                                 symbol=o.symbol, side=o.side, quantity=o.quantity, order_id=coid)
        except InvalidOrder as exc:
            out.append(Sent(o, coid, "error", None, str(exc)))
            continue
        r = placed.result
        out.append(Sent(o, coid, r.action, r.status.value if r.status is not None else None, r.reason))
    return out


def sent_dict(s: Sent) -> dict[str, Any]:
    return {**asdict(s.order), "client_order_id": s.client_order_id, "planned_id": s.order.client_order_id,
            "action": s.action, "status": s.status, "reason": s.reason}
