"""Risk monitoring: warnings before a limit is hit, and alerts when one is.

Pre-trade risk (``risk.py``) refuses orders; this module only watches and tells. For one
account, :func:`evaluate` compares the account's state with its limits and returns alerts:

- ``limit_usage:<limit>`` for the account-level limits of ``risk.yaml`` (gross exposure vs
  ``max_total_exposure``, the largest symbol's exposure vs ``max_symbol_exposure``, the largest
  position vs ``max_position_quantity``, the largest symbol's share of equity vs
  ``max_concentration_pct``, gross exposure / equity vs ``max_leverage``, working orders vs
  ``max_open_orders``) and ``daily_loss`` (today's loss vs ``daily_loss_limit``, today's P&L as
  risk.py defines it): level ``breach`` when the value REACHES the limit (the point where
  risk.py starts refusing orders that add to risk; always on), ``warning`` when it reaches
  ``warn_at_pct`` percent of the limit (off without ``warn_at_pct``). Per-order limits (order
  size, notional, orders per minute, price collar) describe one order, not the account: not
  monitored.
- ``drawdown``: equity below its peak by ``drawdown_warn_pct`` percent or more; the peak is the
  highest of the account's closing equity marks (``equity_marks``) and the equity now.
- ``var``: the 1-day 95% historical VaR (``portfolio_risk.assess`` over ``TRADING_RISK_WINDOW``
  daily returns) above ``var_budget``. Needs daily closes; without enough history it is skipped (logged).

``drawdown`` and ``var`` are warnings (their thresholds are not limits). :func:`monitor_accounts`
runs this for every account after the order job marks the session's close and records each
alert once per account, kind, level and session (``OpsStore.record_risk_alert``); it never
raises. The stored alerts are pushed on the WebSocket ``alerts`` channel, listed by
``GET /risk/alerts`` and ``trading status``, and posted to the webhook
(``defs/alerts_webhook.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trading_pipeline import logs
from trading_pipeline.trading.risk import RiskContext, RiskLimits

if TYPE_CHECKING:
    from trading_pipeline.trading.store import OpsStore, RiskAlert

log = logs.get_logger(__name__)
ZERO = Decimal(0)
HUNDRED = Decimal(100)
PLACES = Decimal("0.0001")
WARNING, BREACH = "warning", "breach"


@dataclass(frozen=True)
class AccountState:
    """What the monitor measures of one account (booked positions; working orders only count as
    ``open_orders``)."""

    account: str
    equity: Decimal
    positions: Mapping[str, Decimal] = field(default_factory=dict)  # symbol -> signed quantity
    exposures: Mapping[str, Decimal] = field(default_factory=dict)  # symbol -> |quantity| x last close
    daily_pnl: Decimal = ZERO
    open_orders: int = 0
    peak_equity: Decimal | None = None  # highest closing equity mark, or the equity now if higher
    var_95: Decimal | None = None  # 1-day 95% historical VaR; None: not computed

    @property
    def gross_exposure(self) -> Decimal:
        return sum(self.exposures.values(), ZERO)


@dataclass(frozen=True)
class Alert:
    account: str
    kind: str
    level: str
    value: Decimal
    limit: Decimal
    message: str


def _fmt(x: Decimal) -> str:
    return f"{x:,.2f}"


def _q(x: Decimal) -> Decimal:
    return x.quantize(PLACES)


def evaluate(limits: RiskLimits, state: AccountState) -> list[Alert]:
    """The alerts ``state`` raises under ``limits`` (see the module docstring). Pure."""
    a = state.account
    # (kind, value, limit, what the value is, unit; "#": a count): every account-level limit
    measures: list[tuple[str, Decimal, Decimal, str, str]] = []
    gross = state.gross_exposure
    measures.append(("limit_usage:max_total_exposure", gross, limits.max_total_exposure, "gross exposure", ""))
    if state.exposures:
        sym = max(state.exposures, key=lambda s: (state.exposures[s], s))
        measures.append(("limit_usage:max_symbol_exposure", state.exposures[sym], limits.max_symbol_exposure,
                         f"{sym} exposure", ""))
        if state.equity > 0:
            measures.append(("limit_usage:max_concentration_pct", state.exposures[sym] / state.equity * HUNDRED,
                             limits.max_concentration_pct, f"{sym} ({_fmt(state.exposures[sym])} of equity {_fmt(state.equity)})", "%"))
    if state.positions:
        sym = max(state.positions, key=lambda s: (abs(state.positions[s]), s))
        measures.append(("limit_usage:max_position_quantity", abs(state.positions[sym]),
                         limits.max_position_quantity, f"{sym} position", " shares"))
    if state.equity > 0:
        measures.append(("limit_usage:max_leverage", gross / state.equity, limits.max_leverage,
                         f"leverage (gross exposure {_fmt(gross)} / equity {_fmt(state.equity)})", "x"))
    measures.append(("limit_usage:max_open_orders", Decimal(state.open_orders), Decimal(limits.max_open_orders),
                     "working orders", "#"))
    if state.daily_pnl < 0:
        measures.append(("daily_loss", -state.daily_pnl, limits.daily_loss_limit, "today's loss", ""))

    out: list[Alert] = []
    warn = limits.warn_at_pct
    for kind, value, limit, what, unit in measures:
        name = kind.split(":", 1)[-1] if kind.startswith("limit_usage:") else "daily_loss_limit"
        if unit in (" shares", "#"):  # counts: as they are
            shown, lim = f"{value}{unit.strip('#')}", f"{limit}{unit.strip('#')}"
        else:
            shown, lim = f"{value:,.2f}{unit}", f"{limit:,.2f}{unit}"
        pct = value / limit * HUNDRED
        if value >= limit:
            out.append(Alert(a, kind, BREACH, _q(value), limit,
                             f"{a}: {what} {shown} reaches {name} {lim} ({pct:.1f}%): "
                             + ("new orders are refused" if name == "max_open_orders" else "orders that add to risk are refused")))
        elif warn is not None and pct >= warn:
            out.append(Alert(a, kind, WARNING, _q(value), limit,
                             f"{a}: {what} {shown} is {pct:.1f}% of {name} {lim} (warning at {warn}%)"))
    dd_warn = limits.drawdown_warn_pct
    peak = state.peak_equity
    if dd_warn is not None and peak is not None and peak > 0 and state.equity < peak:
        dd = (peak - state.equity) / peak * HUNDRED
        if dd >= dd_warn:
            out.append(Alert(a, "drawdown", WARNING, _q(dd), dd_warn,
                             f"{a}: equity {_fmt(state.equity)} is {dd:.2f}% below its peak {_fmt(peak)} "
                             f"(warning at {dd_warn}%)"))
    budget = limits.var_budget
    if budget is not None and state.var_95 is not None and state.var_95 > budget:
        out.append(Alert(a, "var", WARNING, _q(state.var_95), budget,
                         f"{a}: 1-day 95% VaR {_fmt(state.var_95)} is above the budget {_fmt(budget)}"))
    return out


# ---- the account's state from the ops store --------------------------------------------------

ClosesLoader = Callable[[Sequence[str]], Any]  # symbols -> daily closes (portfolio_risk.load_closes' frame)


def account_state(
    store: OpsStore, account: str, prices: Mapping[str, Decimal], now: datetime, *,
    closes: ClosesLoader | None = None, want_var: bool = False, window: int | None = None,
) -> AccountState:
    """The account as the monitor sees it at ``now`` (a read: no equity mark is recorded). The
    VaR is computed only with ``want_var`` and ``closes``; a failure leaves it None (logged)."""
    ctx = RiskContext.from_store(store, account, prices, now, record_mark=False)
    pf = store.portfolio(account)
    held = {p.symbol: p.quantity for p in pf.open_positions()}
    exposures = {p.symbol: abs(p.quantity) * prices.get(p.symbol, p.avg_price) for p in pf.open_positions()}
    peak = store.equity_peak(account, now.date())
    peak = ctx.equity if peak is None else max(peak, ctx.equity)
    var_95 = None
    if want_var and closes is not None and held:
        try:
            from trading_pipeline.trading.portfolio_risk import DEFAULT_WINDOW, RiskConfig, assess

            config = RiskConfig(window=window or DEFAULT_WINDOW, historical=())  # VaR only: no stress windows
            report = assess({s: float(q) for s, q in held.items()}, closes(sorted(held)), cash=float(pf.cash), config=config)
            var_95 = Decimal(str(round(report["var_95"], 2)))
        except Exception as exc:  # too little history, no bars: the other checks still run
            log.warning("risk_monitor_var_skipped", account=account, error=exc)
    return AccountState(
        account=account, equity=ctx.equity, positions=held, exposures=exposures, daily_pnl=ctx.daily_pnl,
        open_orders=ctx.open_orders, peak_equity=peak, var_95=var_95,
    )


def account_limits(settings: Any, account: str, base: RiskLimits | None = None) -> RiskLimits:
    """risk.yaml's limits with the account's overrides (risk.yaml's own for an account the accounts
    file does not name)."""
    from trading_pipeline.trading.accounts import UnknownAccount
    from trading_pipeline.trading.services import accounts_of

    base = base or RiskLimits.from_yaml(settings.risk_file)
    try:
        return accounts_of(settings).get(account).limits(base)
    except UnknownAccount:
        return base


def current_alerts(
    settings: Any, store: OpsStore, account: str, prices: Mapping[str, Decimal], now: datetime, *,
    closes: ClosesLoader | None = None, base: RiskLimits | None = None,
) -> list[Alert]:
    """The alerts ``account`` raises now (nothing recorded)."""
    limits = account_limits(settings, account, base)
    state = account_state(store, account, prices, now, closes=closes, want_var=limits.var_budget is not None,
                          window=getattr(settings, "risk_window", None))
    return evaluate(limits, state)


def record(store: OpsStore, alerts: Sequence[Alert], session_date: date, now: datetime) -> list[RiskAlert]:
    """Store ``alerts`` (each once per account, kind, level and session); the new ones."""
    new = []
    for al in alerts:
        stored = store.record_risk_alert(account=al.account, kind=al.kind, level=al.level, message=al.message,
                                         session_date=session_date, value=al.value, limit_value=al.limit, ts=now)
        if stored is not None:
            new.append(stored)
            log.warning("risk_alert", account=al.account, kind=al.kind, level=al.level, message=al.message)
    return new


def monitor_accounts(
    settings: Any, store: OpsStore, prices: Mapping[str, Decimal], now: datetime, *,
    closes: ClosesLoader | None = None,
) -> list[RiskAlert]:
    """Evaluate every account in the ops store at ``now`` and record its alerts for session
    ``now.date()``; the new ones. Never raises: monitoring must not fail the run that calls it
    (an account that cannot be evaluated is logged and skipped)."""
    new: list[RiskAlert] = []
    try:
        base = RiskLimits.from_yaml(settings.risk_file)
        accounts = store.list_accounts()
    except Exception as exc:
        log.error("risk_monitor_failed", error=exc)
        return new
    for account in accounts:
        try:
            alerts = current_alerts(settings, store, account, prices, now, closes=closes, base=base)
            new += record(store, alerts, now.date(), now)
        except Exception as exc:
            log.error("risk_monitor_account_failed", account=account, error=exc)
    return new


def warehouse_closes(path: Path | str, as_of: date | str | None = None) -> ClosesLoader:
    """A loader of daily closes from the warehouse at ``path`` (read-only, opened per call)."""

    def load(symbols: Sequence[str]) -> Any:
        from trading_pipeline.marketdata import warehouse as wh
        from trading_pipeline.trading.portfolio_risk import load_closes

        con = wh.connect(path, read_only=True)
        try:
            return load_closes(con, symbols, as_of)
        finally:
            con.close()

    return load
