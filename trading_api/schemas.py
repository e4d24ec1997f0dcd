"""Response and request models: every route declares one, so /docs shows real shapes.

Timestamps are naive UTC (the warehouse's convention): ``UtcDateTime`` declares them as
what is sent (an ISO 8601 string, normally without offset), not as RFC 3339 ``date-time``,
which requires one. Money and quantities from the ops store are decimals, serialised as
strings so no digit is lost.

Error bodies are ``{"detail": ..., "request_id": ...}``; ``AUTH_RESPONSES`` are the errors
every keyed route can answer, declared once per router.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    WithJsonSchema,
    field_validator,
)

UtcDateTime = Annotated[
    datetime,
    WithJsonSchema(
        {
            "type": "string",
            "pattern": r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?(Z|[+-]\d{2}:\d{2})?$",
            "description": "ISO 8601 timestamp in UTC; naive (no offset) by convention.",
            "examples": ["2024-02-10T14:30:00"],
        }
    ),
]


class ErrorDetail(BaseModel):
    detail: Any = Field(description="What went wrong; a string or a structured object.")
    request_id: str | None = None


class FieldError(BaseModel):
    type: str
    loc: list[str | int] = Field(description="Where: location (query, path, header, body), then the field.")
    msg: str


AUTH_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorDetail, "description": "Missing, invalid or revoked API key (`WWW-Authenticate: Bearer`)."},
    503: {
        "model": ErrorDetail,
        "description": "The ops store (API keys, orders) or the serving snapshot is unavailable; retry after `Retry-After` seconds.",
    },
}


# ---- health -------------------------------------------------------------------------------
class SnapshotStatus(BaseModel):
    ok: bool
    reason: str | None = None
    sequence: int | None = None
    published_at: UtcDateTime | None = None
    age_seconds: float | None = None
    feed_head_seq: int | None = None
    tables: list[str] = Field(default_factory=list)


class OpsStoreStatus(BaseModel):
    ok: bool
    reason: str | None = None
    schema_version: int | None = None


class Health(BaseModel):
    status: Literal["ok", "degraded"]
    snapshot: SnapshotStatus
    ops_store: OpsStoreStatus
    websocket_clients: int = 0


# ---- market data ------------------------------------------------------------------------
class Bar(BaseModel):
    symbol: str
    timeframe: str
    ts: UtcDateTime
    session_date: date | None = None
    open: float | None = None
    high: float | None = None
    low: float | None = None
    close: float | None = None
    volume: float | None = None
    indicators: dict[str, float | bool | int | str | None] = Field(
        default_factory=dict, description="sma_20, ema_12, rsi_14, macd, bb_*, atr_14, ... (null in the warm-up)."
    )


class MarketData(BaseModel):
    symbol: str
    timeframe: str
    source: str = Field(description="Snapshot table the bars came from.")
    adjustment: str | None = Field(default=None, description="Price basis of the bars: split, total_return, "
                                   "or none (raw bars, ?prices=raw); null when no bar was returned.")
    count: int
    bars: list[Bar]


class Series(BaseModel):
    symbol: str
    timeframe: str
    bars: int
    first_ts: UtcDateTime | None = None
    last_ts: UtcDateTime | None = None


class SeriesList(BaseModel):
    count: int
    items: list[Series] = Field(description="Every symbol and timeframe GET /market-data/{symbol} has bars for.")


# ---- signals, scans, alerts ---------------------------------------------------------------
class Signal(BaseModel):
    model_config = ConfigDict(extra="allow")

    scan: str | None = None
    symbol: str
    timeframe: str | None = None
    ts: UtcDateTime | None = None
    session_date: date | None = None
    kind: str
    direction: str | None = None
    score: float | None = None
    reason: str | None = None


class SignalPage(BaseModel):
    total: int
    limit: int
    offset: int
    items: list[Signal]


class Alert(BaseModel):
    model_config = ConfigDict(extra="allow")

    alert_id: str | None = None
    scan: str | None = None
    symbol: str
    timeframe: str | None = None
    ts: UtcDateTime | None = None
    session_date: date | None = None
    kind: str | None = None
    direction: str | None = None
    score: float | None = None
    reason: str | None = None
    title: str | None = None


class AlertPage(BaseModel):
    total: int
    limit: int
    offset: int
    items: list[Alert]


class ScanResult(BaseModel):
    model_config = ConfigDict(extra="allow")

    id: str = Field(description="scan:timeframe:session_date; use with GET /scans/{id}.")
    scan: str
    timeframe: str
    session_date: date
    n_signals: int | None = None
    n_long: int | None = None
    n_short: int | None = None
    symbols: list[str] = Field(default_factory=list)
    top_symbol: str | None = None
    top_score: float | None = None

    @field_validator("symbols", mode="before")
    @classmethod
    def _split(cls, v: Any) -> Any:
        """Each symbol once, in rank order: a snapshot published before the mart named each
        symbol once holds one entry per signal (an intraday scan: one per bar)."""
        if v is None:
            return []
        names = [s for s in v.split(",") if s] if isinstance(v, str) else v
        return list(dict.fromkeys(names)) if isinstance(names, list) else names


class ScanPage(BaseModel):
    total: int
    limit: int
    offset: int
    items: list[ScanResult]


class ScanDetail(BaseModel):
    result: ScanResult
    signals: list[Signal]


# ---- orders, positions, portfolio ---------------------------------------------------------
class Order(BaseModel):
    client_order_id: str
    created_at: UtcDateTime
    updated_at: UtcDateTime | None = None
    account: str
    strategy: str
    symbol: str
    side: str
    order_type: str
    quantity: Decimal
    limit_price: Decimal | None = None
    time_in_force: str
    status: str
    filled_quantity: Decimal
    avg_fill_price: Decimal | None = None
    broker: str | None = None
    broker_order_id: str | None = None
    signal_ts: UtcDateTime | None = None
    reason: str | None = None
    cancel_requested: bool = False
    stop_price: Decimal | None = None
    trail_percent: Decimal | None = None
    trail_amount: Decimal | None = None
    parent_client_order_id: str | None = Field(default=None, description="A bracket exit: the entry it closes.")
    oco_group: str | None = Field(default=None, description="A bracket's exits: filling one cancels the others.")
    timeframe: str | None = Field(default=None, description="The bar size of the signal a scan order came from "
                                  "(1d, 1m..1h); null for a manual order.")
    children: list[str] = Field(default_factory=list, description="A bracket entry: its exits' client order ids.")


def order_model(o: Any, children: list[str] | None = None) -> Order:
    """The API's view of a domain order (``trading_pipeline.trading.orders.Order``)."""
    return Order(**o.record(), children=children or [])


class OrderList(BaseModel):
    count: int
    items: list[Order]


# Pydantic declares a Decimal input as "a number or any string"; say which strings.
OrderDecimal = Annotated[
    Decimal,
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "number", "exclusiveMinimum": 0, "maximum": 1e12},
                {"type": "string", "pattern": r"^\d{1,13}(\.\d{1,8})?$"},
            ],
            "description": "Greater than 0, at most 1e12, at most 8 decimal places; as a string, every digit is kept.",
        }
    ),
]
_SYMBOL = r"^[A-Za-z0-9][A-Za-z0-9._\-/=^]{0,31}$"
_ACCOUNT = r"^[A-Za-z0-9][A-Za-z0-9._\-]{0,63}$"


class _FiniteTerms(BaseModel):
    """An order's numbers must be finite (NaN and infinity pass Decimal parsing): the one check
    for a new order, a modify and a bracket's exits."""

    @field_validator(
        "quantity", "limit_price", "stop_price", "trail_percent", "trail_amount",
        "take_profit_price", "stop_loss_price", check_fields=False,
    )
    @classmethod
    def _finite(cls, v: Decimal | None) -> Decimal | None:
        if v is not None and not v.is_finite():
            raise ValueError("must be a finite number")
        return v


class Bracket(_FiniteTerms):
    """Exits for a market or limit entry: a take-profit limit and a stop-loss stop on the other
    side, sized as the entry, one-cancels-other, working once the entry has filled. A buy's
    take-profit is above the entry's limit (a market entry: the last close) and its stop-loss
    below; a sell's the other way round."""

    model_config = ConfigDict(extra="forbid")

    take_profit_price: OrderDecimal = Field(gt=0, le=Decimal("1e12"), max_digits=24, decimal_places=8)
    stop_loss_price: OrderDecimal = Field(gt=0, le=Decimal("1e12"), max_digits=24, decimal_places=8)


class OrderCreate(_FiniteTerms):
    """A manual order. It goes through the same risk engine and ops store as signal orders."""

    model_config = ConfigDict(extra="forbid")

    symbol: str = Field(pattern=_SYMBOL, examples=["GOOG"])
    side: Literal["buy", "sell"]
    quantity: OrderDecimal = Field(gt=0, le=Decimal("1e12"), max_digits=24, decimal_places=8, examples=["10"])
    order_type: Literal["market", "limit", "stop", "stop_limit", "trailing_stop"] = Field(
        default="market",
        description="stop: stop_price; stop_limit: stop_price and limit_price; trailing_stop: "
        "trail_percent or trail_amount (not both). A buy stop must be above the last price, a sell stop below.",
    )
    limit_price: OrderDecimal | None = Field(default=None, gt=0, le=Decimal("1e12"), max_digits=24, decimal_places=8)
    stop_price: OrderDecimal | None = Field(default=None, gt=0, le=Decimal("1e12"), max_digits=24, decimal_places=8)
    trail_percent: OrderDecimal | None = Field(default=None, gt=0, lt=100, max_digits=24, decimal_places=8)
    trail_amount: OrderDecimal | None = Field(default=None, gt=0, le=Decimal("1e12"), max_digits=24, decimal_places=8)
    time_in_force: Literal["day", "gtc", "ioc", "opg"] = Field(
        default="day", description="ioc and opg (fill at the session open only) are for market and limit orders."
    )
    account: str = Field(default="paper", pattern=_ACCOUNT)
    bracket: Bracket | None = Field(default=None, description="Take-profit and stop-loss exits (a bracket).")


class OrderModify(_FiniteTerms):
    """New terms for a working order; a field left out keeps its value. At least one field."""

    model_config = ConfigDict(extra="forbid")

    quantity: OrderDecimal | None = Field(
        default=None, gt=0, le=Decimal("1e12"), max_digits=24, decimal_places=8,
        description="The new total quantity; must exceed the part already filled.",
    )
    limit_price: OrderDecimal | None = Field(default=None, gt=0, le=Decimal("1e12"), max_digits=24, decimal_places=8)
    stop_price: OrderDecimal | None = Field(default=None, gt=0, le=Decimal("1e12"), max_digits=24, decimal_places=8)
    trail_percent: OrderDecimal | None = Field(
        default=None, gt=0, lt=100, max_digits=24, decimal_places=8,
        description="A trailing stop's new trail (replaces a trail_amount); not with trail_amount.",
    )
    trail_amount: OrderDecimal | None = Field(
        default=None, gt=0, le=Decimal("1e12"), max_digits=24, decimal_places=8,
        description="A trailing stop's new trail (replaces a trail_percent); not with trail_percent.",
    )


class OrderResult(BaseModel):
    action: str = Field(description="submitted | resumed | skipped | denied (pre-trade risk) | rejected (broker) | error")
    reason: str
    idempotent_replay: bool = False
    order: Order | None
    children: list[Order] = Field(default_factory=list, description="A bracket's exits: take-profit, then stop-loss.")


class RiskRejection(BaseModel):
    rule: str
    reason: str
    client_order_id: str


class RiskRejectionResponse(BaseModel):
    detail: RiskRejection
    request_id: str | None = None


class OrderRejectedResponse(BaseModel):
    """422 from ``POST /orders``: refused by a risk rule or the broker (an object with the
    rule and reason), or a malformed request (the list of field errors)."""

    detail: RiskRejection | list[FieldError]
    request_id: str | None = None


def _quantized(places: int) -> Any:
    """Serialise a Decimal rounded to ``places`` (money to the cent, prices to 1/10,000,
    percentages to 1/100): the values are computed from float bars, and 27 digits of
    784.4329999999993 say nothing a trader can use. Stored values are not changed."""
    step = Decimal(1).scaleb(-places)

    def ser(value: Decimal) -> Decimal:
        return value.quantize(step, rounding=ROUND_HALF_EVEN)

    return PlainSerializer(ser, return_type=Decimal, when_used="json")


Money = Annotated[Decimal, _quantized(2)]
Price = Annotated[Decimal, _quantized(4)]
Percent = Annotated[Decimal, _quantized(2)]


class Position(BaseModel):
    account: str
    symbol: str
    quantity: Decimal
    avg_price: Price
    last_price: Price | None = None
    market_value: Money | None = None
    unrealized_pnl: Money | None = None
    realized_pnl: Money


class PositionList(BaseModel):
    count: int
    items: list[Position]


class Portfolio(BaseModel):
    account: str
    starting_cash: Money | None
    cash: Money | None
    equity: Money
    realized_pnl: Money
    unrealized_pnl: Money
    gross_exposure: Money
    positions: list[Position]


class PortfolioTotal(BaseModel):
    """All the listed accounts together (in one currency)."""

    accounts: int
    cash: Money
    equity: Money
    realized_pnl: Money
    unrealized_pnl: Money
    gross_exposure: Money


class PortfolioList(BaseModel):
    accounts: list[Portfolio]
    total: PortfolioTotal


class AccountInfo(BaseModel):
    """One account: how it is set up (the accounts file) and where it stands (the ops store)."""

    name: str
    configured: bool = Field(description="Named in the accounts file (or the one implicit account without a file).")
    broker: Literal["paper", "alpaca", "ib"] | None = Field(description="None: only in the ops store, takes no new orders.")
    description: str
    scans: Literal["all"] | list[str] = Field(description="Scans whose signals become orders in this account.")
    starting_cash: Money | None = Field(description="Paper accounts: the cash the account opened with.")
    risk_overrides: dict[str, Any] = Field(description="This account's changes to risk.yaml's limits.")
    limits: dict[str, Any] | None = Field(description="The limits in force for this account (risk.yaml with the overrides).")
    cash: Money | None
    equity: Money | None = Field(description="Cash plus positions at the last closes; None before the account's first order.")
    positions: int
    open_orders: int
    alpaca: dict[str, Any] | None = Field(default=None, description="Alpaca accounts: paper flag, the key variable's name, whether it is set.")
    ib: dict[str, Any] | None = Field(default=None, description="IB accounts: the gateway session.")


class AccountList(BaseModel):
    source: str | None = Field(description="The accounts file in force; None: one implicit account (TRADING_ACCOUNT).")
    default: str = Field(description="The default account (TRADING_ACCOUNT).")
    accounts: list[AccountInfo]
    total_equity: Money = Field(description="Sum of the accounts' equity.")


# ---- risk ---------------------------------------------------------------------------------
class KillSwitch(BaseModel):
    active: bool
    reason: str | None = None
    updated_by: str | None = None
    updated_at: UtcDateTime | None = None


class RiskUsage(BaseModel):
    account: str
    equity: Money
    open_orders: int
    orders_last_minute: int
    daily_pnl: Money = Field(description="Equity now minus equity at the start of the day (a loss is negative).")
    day_start_equity: Money | None = Field(default=None, description="The start-of-day equity daily_pnl is measured from.")
    gross_exposure: Money
    max_concentration_pct: Percent | None = None
    buying_power: Money | None = Field(
        default=None,
        description="Buying power left for new orders: max_leverage x equity - gross exposure - what working "
        "orders reserve (null when a working order cannot be valued).",
    )
    limits: dict[str, Any] | None = Field(
        default=None, description="This account's limits when the accounts file overrides risk.yaml's (else null: `limits`).")


class RiskEvent(BaseModel):
    id: int
    ts: UtcDateTime
    client_order_id: str | None = None
    account: str | None = None
    symbol: str | None = None
    side: str | None = None
    quantity: Decimal | None = None
    rule: str
    reason: str
    value: Decimal | None = None
    limit_value: Decimal | None = None


class RiskStatus(BaseModel):
    limits: dict[str, Decimal | int]
    kill_switch: KillSwitch
    usage: list[RiskUsage]
    recent_events: list[RiskEvent]


# ---- rebalancing (POST /rebalance/preview) -------------------------------------------------------


class RebalanceTarget(BaseModel):
    model_config = ConfigDict(extra="forbid")

    symbol: str = Field(pattern=_SYMBOL, examples=["GOOG"])
    weight: Decimal = Field(ge=0, le=1, allow_inf_nan=False, max_digits=12, decimal_places=8,
                            description="Fraction of equity (0..1, long only).", examples=["0.5"])


class RebalancePreviewRequest(BaseModel):
    """Targets as weights of equity (cash is 1 - their sum); the orders are computed, nothing is sent."""

    model_config = ConfigDict(extra="forbid")

    account: str | None = Field(default=None, pattern=_ACCOUNT, description="Default: TRADING_ACCOUNT.")
    targets: list[RebalanceTarget] = Field(min_length=1, max_length=2000)
    min_trade: Decimal = Field(default=Decimal("100"), ge=0, le=Decimal("1e12"), allow_inf_nan=False,
                               description="Orders worth less than this (quantity x last close) are not traded.")
    drift_band: Decimal = Field(default=Decimal("0.5"), ge=0, lt=100, allow_inf_nan=False,
                                description="Symbols within this many percentage points of equity of their target are not traded.")


class RebalanceOrder(BaseModel):
    symbol: str
    side: Literal["buy", "sell"]
    quantity: Decimal
    price: Price = Field(description="The last close it is planned at.")
    value: Money
    current_quantity: Decimal
    target_quantity: Decimal = Field(description="The position once this order fills.")
    current_weight: Decimal = Field(description="Fraction of equity now.")
    target_weight: Decimal
    client_order_id: str = Field(description="Deterministic per account, targets, session, symbol and side.")
    note: str = ""


class RebalanceSkipped(BaseModel):
    symbol: str
    reason: str


class RebalancePreview(BaseModel):
    account: str
    session: str = Field(description="The newest bar's session: the last close the orders are priced at.")
    targets_digest: str
    equity: Money
    cash: Money
    cash_after: Money = Field(description="Cash once every order fills at its price (commission included).")
    min_trade: Decimal
    drift_band: Decimal
    orders: list[RebalanceOrder] = Field(description="Sells first, then buys.")
    skipped: list[RebalanceSkipped]
    buy_scale: Decimal | None = Field(default=None, description="Set when the buys were scaled down to the cash.")
    notes: list[str]


# ---- portfolio risk (GET /risk/assessment) -------------------------------------------------------
# Estimates, so floats (not decimal strings). Definitions: trading_pipeline/trading/portfolio_risk.py.


class RiskHorizon(BaseModel):
    days: int
    var_95: float
    es_95: float
    var_99: float
    es_99: float


class RiskFigures(BaseModel):
    var_95: float = Field(description="1-day historical VaR at 95%, a positive number for a loss.")
    es_95: float = Field(description="1-day expected shortfall at 95%: the mean loss of the tail days.")
    var_99: float
    es_99: float
    horizon: RiskHorizon = Field(description="The N-day figures: 1-day x sqrt(N).")


class PositionRisk(RiskFigures):
    symbol: str
    quantity: float
    price: float = Field(description="The symbol's last daily close.")
    market_value: float
    weight: float | None = Field(description="Market value / equity (None when equity <= 0).")
    beta: float | None


class SymbolExposure(BaseModel):
    symbol: str
    market_value: float
    weight: float | None


class PortfolioExposure(BaseModel):
    long: float
    short: float = Field(description="Sum of |market value| of the short positions (a positive number).")
    gross: float
    net: float
    by_symbol: list[SymbolExposure]


class ScenarioPosition(BaseModel):
    symbol: str
    source: str = Field(description="own, benchmark_beta, benchmark, none (historical); symbol, all, "
                        "benchmark_beta, benchmark, unshocked (hypothetical).")
    model_config = ConfigDict(populate_by_name=True)
    return_: float | None = Field(alias="return", serialization_alias="return")
    pnl: float | None


class RiskScenario(BaseModel):
    name: str
    kind: Literal["historical", "hypothetical"]
    status: Literal["ok", "no data"]
    pnl: float | None = Field(description="Sum of quantity x price x return; None when a position has no data.")
    pnl_pct: float | None
    worst_symbol: str | None
    worst_pnl: float | None
    no_data: list[str]
    sources: dict[str, list[str]]
    positions: list[ScenarioPosition]
    start: date | None = None
    end: date | None = None
    benchmark_return: float | None = None
    shocks: dict[str, float] | None = None


class AccountRisk(BaseModel):
    account: str
    error: str | None = Field(default=None, description="Why this account could not be assessed (then no figures).")
    sessions_by_symbol: dict[str, int] | None = None
    as_of: date | None = None
    window: int | None = None
    sessions: int | None = None
    horizon_days: int | None = None
    cash: float | None = None
    equity: float | None = None
    benchmark: str | None = None
    var_95: float | None = None
    es_95: float | None = None
    var_99: float | None = None
    es_99: float | None = None
    horizon: RiskHorizon | None = None
    beta: float | None = None
    beta_dollars: float | None = None
    exposure: PortfolioExposure | None = None
    positions: list[PositionRisk] = []
    scenarios: list[RiskScenario] = []
    notes: list[str] = []


class RiskAssessment(BaseModel):
    window: int
    horizon_days: int
    benchmark: str | None
    scenarios_file: str | None
    accounts: list[AccountRisk]
    total: AccountRisk = Field(description="All the accounts above as one portfolio (positions netted by symbol).")


# ---- risk monitoring (GET /risk alerts, GET /risk/alerts) ----------------------------------------


class RiskAlertNow(BaseModel):
    """A warning threshold or limit the account is at now (trading_pipeline/trading/risk_monitor.py)."""

    account: str
    kind: str = Field(examples=["limit_usage:max_total_exposure", "daily_loss", "drawdown", "var"])
    level: Literal["warning", "breach"]
    value: Decimal
    limit: Decimal = Field(description="The limit (or threshold: drawdown %, VaR budget) the value is compared to.")
    message: str


class StoredRiskAlert(BaseModel):
    """A recorded risk alert: one per account, kind, level and session; ``delivered_at``,
    ``attempts`` and ``last_error`` are the webhook's delivery state."""

    id: int
    source: Literal["risk"] = "risk"
    account: str
    kind: str
    level: Literal["warning", "breach"]
    value: Decimal | None = None
    limit: Decimal | None = None
    message: str
    session_date: date
    ts: UtcDateTime
    delivered_at: UtcDateTime | None = None
    attempts: int = 0
    last_error: str | None = None


class RiskMonitorStatus(RiskStatus):
    alerts: list[RiskAlertNow] = Field(
        default=[], description="What each account listed is at now against risk.yaml's warning thresholds and "
        "limits (evaluated for this request; the recorded ones: GET /risk/alerts).")


class RiskAlertList(BaseModel):
    alerts: list[StoredRiskAlert]
    last_id: int = Field(description="The newest risk alert id in the store: pass it as since_id to get only newer ones.")


# ---- API key scopes and the kill switch from the API (issue 19) ----------------------------
RATE_LIMITED: dict[int | str, dict[str, Any]] = {
    429: {"model": ErrorDetail, "description": "This key's rate limit (TRADING_API_RATE_LIMIT requests per minute, per "
          "API worker) is spent; retry after `Retry-After` seconds."},
}
FORBIDDEN: dict[int | str, dict[str, Any]] = {
    403: {"model": ErrorDetail, "description": "The API key's scope does not allow this route: `detail.required_scope` "
          "names the scope it needs (`trading api-key create NAME --scope SCOPE`)."},
}
READ_RESPONSES: dict[int | str, dict[str, Any]] = {**AUTH_RESPONSES, **RATE_LIMITED}  # every key may read
SCOPE_RESPONSES: dict[int | str, dict[str, Any]] = {**READ_RESPONSES, **FORBIDDEN}


class Me(BaseModel):
    """The API key a request carries: what a client (the dashboard) may offer its user."""

    id: int
    name: str
    scope: Literal["read", "trade", "admin"] = Field(description="The key's scope; each implies the ones before it.")
    scopes: list[Literal["read", "trade", "admin"]] = Field(description="Every scope the key has, weakest first.")


class KillSwitchUpdate(BaseModel):
    """Engage (block every new order, everywhere) or release the kill switch, and why."""

    model_config = ConfigDict(extra="forbid")

    engaged: bool
    reason: str = Field(min_length=1, max_length=500, description="Why (stored, and shown in every order it refuses).")

    @field_validator("reason")
    @classmethod
    def _not_blank(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("give a reason (it is stored and shown in every order the switch refuses)")
        return v.strip()


class KillSwitchStatus(BaseModel):
    """The kill switch as the CLI (`trading kill-switch`) and the risk engine see it."""

    engaged: bool
    reason: str | None = None
    updated_by: str | None = Field(default=None, description="`api:<key name>` or `cli:<user>`.")
    updated_at: UtcDateTime | None = None
