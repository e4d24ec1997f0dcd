"""`trading orders`, `portfolio`, `order submit|modify|cancel|sync` and `kill-switch`.

Manual orders take the same road as signal orders (risk engine, ops store, then broker), so
nothing typed at a terminal skips a limit. The broker is the one chosen by TRADING_BROKER
(paper by default, filling against the warehouse's bars).
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from enum import StrEnum
from typing import Annotated, Any

import typer
from rich.table import Table

from trading_pipeline.cli.output import console, fail, print_json
from trading_pipeline.settings import Settings, get_settings

JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]
AccountOpt = Annotated[str | None, typer.Option("--account", "-a", help="Trading account (default: TRADING_ACCOUNT).")]
DEFAULT_ACCOUNT = None


class KillSwitchAction(StrEnum):
    on = "on"
    off = "off"
    status = "status"


def _store(settings: Settings) -> Any:
    from trading_pipeline.trading.store import (
        OpsStore,  # imported here: keeps `trading --help` fast
    )

    return OpsStore.from_settings(settings)


def _broker(settings: Settings, store: Any, account: str) -> Any:
    """The account's broker; an account the accounts file does not name exits 2."""
    from trading_pipeline.trading.accounts import AccountsError, UnknownAccount
    from trading_pipeline.trading.services import make_broker

    try:
        return make_broker(settings, store, account)
    except (UnknownAccount, AccountsError) as exc:
        fail(str(exc.args[0] if exc.args else exc), "list them with `trading accounts`", code=2)


def _risk(settings: Settings, store: Any, account: str) -> Any:
    """risk.yaml's limits with the account's overrides (the accounts file)."""
    from trading_pipeline.trading.accounts import AccountsError, UnknownAccount
    from trading_pipeline.trading.services import risk_engine

    try:
        return risk_engine(settings, store, account)
    except (UnknownAccount, AccountsError) as exc:
        fail(str(exc.args[0] if exc.args else exc), "list them with `trading accounts`", code=2)
    except (OSError, ValueError) as exc:
        fail(f"risk limits unavailable ({settings.risk_file}): {exc}", code=2)


def _price_feed(settings: Settings) -> Any:
    """Last closes from the warehouse; a feed with no bars (so no closes) before there is one."""
    from trading_pipeline.marketdata import warehouse
    from trading_pipeline.trading.brokers.paper import PolarsBarFeed
    from trading_pipeline.trading.services import warehouse_feed

    return warehouse_feed(settings) if warehouse.exists(settings.warehouse_path) else PolarsBarFeed()


def last_prices(settings: Settings, symbols: list[str]) -> dict[str, Decimal]:
    """Last daily closes from the warehouse; empty when there is no warehouse yet."""
    return _price_feed(settings).last_closes(symbols)


def _d(x: Decimal | None, places: int = 2) -> str:
    return "" if x is None else f"{x:,.{places}f}"


def _order_dict(o: Any) -> dict[str, Any]:
    """The order as --json shows it: its record without the store's bookkeeping fields."""
    return {k: v for k, v in o.record().items() if k not in ("cancel_requested", "updated_at")}


def _parse_decimal(text: str, what: str) -> Decimal:
    try:
        value = Decimal(text)
    except InvalidOperation:
        fail(f"{what} must be a number, got {text!r}", code=2)
    if not value.is_finite() or value <= 0:
        fail(f"{what} must be > 0, got {text}", code=2)
    return value


def _cli_words(problem: str) -> str:
    """An order problem in the options' words (stop_price -> --stop-price, ...)."""
    for field, option in (("limit_price", "--limit"), ("stop_price", "--stop-price"), ("trail_percent", "--trail-percent"),
                          ("trail_amount", "--trail-amount"), ("stop_limit", "stop-limit"), ("trailing_stop", "trailing-stop"),
                          ("take_profit_price", "--take-profit"), ("stop_loss_price", "--stop-loss")):
        problem = problem.replace(field, option)
    return problem


def register(app: typer.Typer) -> None:
    """Add the order, portfolio and kill-switch commands to the `trading` app."""
    order_app = typer.Typer(help="Submit, modify, cancel or sync one order (through the risk engine).", no_args_is_help=True)
    app.add_typer(order_app, name="order")

    @app.command("orders")
    def orders_cmd(
        account: Annotated[str | None, typer.Option("--account", "-a", help="Only this account.")] = None,
        status: Annotated[list[str] | None, typer.Option("--status", "-s", help="Only these statuses (repeatable): new, accepted, partially_filled, filled, cancelled, rejected (by the broker), denied (by the risk checks), expired; 'open' for the first three.")] = None,
        symbol: Annotated[str | None, typer.Option(help="Only this symbol.")] = None,
        strategy: Annotated[str | None, typer.Option(help="Only this strategy (e.g. manual).")] = None,
        limit: Annotated[int, typer.Option(help="At most this many, newest first.")] = 50,
        json_out: JsonOpt = False,
    ) -> None:
        """Orders in the ops store, newest first, with their status and reason."""
        from trading_pipeline.trading.model import OrderStatus
        from trading_pipeline.trading.orders import OPEN_STATUSES

        statuses: list[str] | None = None
        if status:
            statuses = []
            for s in status:
                if s == "open":
                    statuses += [x.value for x in OPEN_STATUSES]
                elif s in OrderStatus._value2member_map_:
                    statuses.append(s)
                else:
                    fail(f"unknown status {s!r}", "one of: open, " + ", ".join(x.value for x in OrderStatus), code=2)
        store = _store(get_settings())
        rows = store.list_orders(account=account, status=statuses, symbol=symbol, strategy=strategy, limit=limit)
        if json_out:
            kids = store.children_of([o.client_order_id for o in rows])
            print_json([{**_order_dict(o), "children": kids.get(o.client_order_id, [])} for o in rows])
            return
        # the columns a trader scans; ids, accounts, limits and reasons are in --json / --wide
        wide = console.width >= 160
        cols = ["created", "symbol", "side", "qty", "status", "filled", "avg", "strategy"]
        if wide:
            cols += ["id", "account", "type", "limit", "parent", "reason"]
        table = Table(title=f"orders ({len(rows)})", header_style="bold cyan")
        for col in cols:
            table.add_column(col, justify="right" if col in ("qty", "limit", "filled", "avg") else "left",
                             no_wrap=col in ("created", "symbol", "status", "id"))
        colors = {"filled": "green", "rejected": "red", "denied": "red", "cancelled": "yellow", "expired": "yellow"}
        for o in rows:
            st = o.status.value
            cells = [o.created_at.strftime("%m-%d %H:%M"), o.symbol, o.side.value, str(o.quantity),
                     f"[{colors.get(st, 'cyan')}]{st}[/]", str(o.filled_quantity), _d(o.avg_fill_price, 2), o.strategy]
            if wide:
                cells += [o.client_order_id, o.account, o.order_type.value, _d(o.limit_price),
                          o.parent_client_order_id or "", o.reason or ""]
            table.add_row(*cells)
        console.print(table)
        if rows and not wide:
            console.print("ids, accounts and reasons: --json, or a terminal 160+ columns wide")
        if not rows:
            console.print("no orders yet: `trading order submit SYMBOL buy QTY` or let the signal sensor place some")

    @app.command("portfolio")
    def portfolio_cmd(
        account: Annotated[str | None, typer.Option("--account", "-a", help="Only this account (default: all).")] = None,
        json_out: JsonOpt = False,
    ) -> None:
        """Positions, cash and P&L per account, valued at the warehouse's last close."""
        settings = get_settings()
        store = _store(settings)
        accounts = [account] if account else store.list_accounts()
        out = []
        for acct in accounts:
            pf = store.portfolio(acct)
            prices = last_prices(settings, [p.symbol for p in pf.open_positions()])
            positions = []
            for p in sorted(pf.open_positions(), key=lambda p: p.symbol):
                last = prices.get(p.symbol)
                positions.append({
                    "symbol": p.symbol, "quantity": p.quantity, "avg_price": p.avg_price, "last_price": last,
                    "market_value": p.market_value(last) if last is not None else None,
                    "unrealized_pnl": p.unrealized_pnl(last) if last is not None else None,
                    "realized_pnl": p.realized_pnl,
                })
            out.append({
                "account": acct, "starting_cash": pf.starting_cash, "cash": pf.cash, "equity": pf.equity(prices),
                "realized_pnl": pf.realized_pnl(), "unrealized_pnl": pf.unrealized_pnl(prices),
                "gross_exposure": pf.gross_exposure(prices), "positions": positions,
            })
        if json_out:
            print_json(out)
            return
        if not out:
            console.print("no accounts in the ops store yet: submit an order first")
        for a in out:
            table = Table(title=f"portfolio {a['account']}", header_style="bold cyan")
            for col in ("symbol", "qty", "avg price", "last", "market value", "unrealized", "realized"):
                table.add_column(col, justify="left" if col == "symbol" else "right")
            for p in a["positions"]:
                u = p["unrealized_pnl"]
                table.add_row(
                    p["symbol"], str(p["quantity"]), _d(p["avg_price"], 4), _d(p["last_price"]), _d(p["market_value"]),
                    "" if u is None else f"[{'green' if u >= 0 else 'red'}]{_d(u)}[/]", _d(p["realized_pnl"]),
                )
            table.caption = (
                f"cash {_d(a['cash'])}  equity {_d(a['equity'])}  realized {_d(a['realized_pnl'])}  "
                f"unrealized {_d(a['unrealized_pnl'])}  exposure {_d(a['gross_exposure'])}"
            )
            console.print(table)
        if len(out) > 1:
            console.print("total of {} accounts: equity {}  cash {}  exposure {}".format(
                len(out), _d(sum(a["equity"] for a in out)), _d(sum(a["cash"] for a in out)),
                _d(sum(a["gross_exposure"] for a in out))))

    @order_app.command("submit")
    def submit_cmd(
        symbol: Annotated[str, typer.Argument(help="Symbol, e.g. GOOG.")],
        side: Annotated[str, typer.Argument(help="buy or sell.")],
        quantity: Annotated[str, typer.Argument(help="Shares/units (> 0).")],
        limit: Annotated[str | None, typer.Option("--limit", help="Limit price (limit and stop-limit orders).")] = None,
        order_type: Annotated[str | None, typer.Option(
            "--type", help="market, limit, stop, stop-limit or trailing-stop; default: limit with --limit, else market.",
        )] = None,
        stop: Annotated[str | None, typer.Option("--stop-price", help="Stop price (stop and stop-limit orders).")] = None,
        trail_percent: Annotated[str | None, typer.Option("--trail-percent", help="Trailing stop: trail by this % of the best price.")] = None,
        trail_amount: Annotated[str | None, typer.Option("--trail-amount", help="Trailing stop: trail by this amount.")] = None,
        account: AccountOpt = DEFAULT_ACCOUNT,
        tif: Annotated[str, typer.Option("--tif", help="Time in force: day, gtc, ioc or opg (at the open).")] = "day",
        client_id: Annotated[str | None, typer.Option("--id", help="Your own client order id (makes a retry safe).")] = None,
        take_profit: Annotated[str | None, typer.Option("--take-profit", help="Bracket: a take-profit limit exit at this price (with --stop-loss).")] = None,
        stop_loss: Annotated[str | None, typer.Option("--stop-loss", help="Bracket: a stop-loss stop exit at this price (with --take-profit).")] = None,
        json_out: JsonOpt = False,
    ) -> None:
        """Submit one order through the risk engine and the ops store to the broker."""
        from trading_pipeline.trading.brokers.base import BracketNotSupported, BrokerError
        from trading_pipeline.trading.execution import InvalidBracket
        from trading_pipeline.trading.model import (
            InvalidOrder,
            OrderType,
            TimeInForce,
            order_problem,
        )
        from trading_pipeline.trading.services import place_order

        if side.lower() not in ("buy", "sell"):
            fail(f"side must be buy or sell, got {side!r}", code=2)
        tifs = [t.value for t in TimeInForce]
        if tif.lower() not in tifs:
            fail(f"--tif must be {', '.join(tifs[:-1])} or {tifs[-1]}, got {tif!r}", code=2)
        types = [t.value.replace("_", "-") for t in OrderType]
        if order_type is not None and order_type.lower().replace("_", "-") not in types:
            fail(f"--type must be {', '.join(types[:-1])} or {types[-1]}, got {order_type!r}", code=2)
        qty = _parse_decimal(quantity, "quantity")
        limit_price = _parse_decimal(limit, "--limit") if limit is not None else None
        stop_price = _parse_decimal(stop, "--stop-price") if stop is not None else None
        trail_pct = _parse_decimal(trail_percent, "--trail-percent") if trail_percent is not None else None
        trail_amt = _parse_decimal(trail_amount, "--trail-amount") if trail_amount is not None else None
        otype = (
            OrderType(order_type.lower().replace("-", "_")) if order_type is not None
            else OrderType.LIMIT if limit_price is not None else OrderType.MARKET
        )
        problem = order_problem(otype, side.lower(), limit_price=limit_price, stop_price=stop_price,
                                trail_percent=trail_pct, trail_amount=trail_amt, time_in_force=tif.lower())
        if problem:
            fail(_cli_words(problem), code=2)
        if (take_profit is None) != (stop_loss is None):
            fail("a bracket needs both --take-profit and --stop-loss", code=2)
        tp_price = _parse_decimal(take_profit, "--take-profit") if take_profit is not None else None
        sl_price = _parse_decimal(stop_loss, "--stop-loss") if stop_loss is not None else None
        settings = get_settings()
        account = account or settings.account
        store = _store(settings)
        broker, engine = _broker(settings, store, account), _risk(settings, store, account)
        try:
            placed = place_order(
                store=store, broker=broker,
                # no warehouse yet: no last close, so the price checks deny with that reason
                feed=_price_feed(settings),
                risk_engine=engine, account=account, symbol=symbol,
                side=side, quantity=qty, limit_price=limit_price, time_in_force=tif, order_id=client_id,
                order_type=otype, stop_price=stop_price, trail_percent=trail_pct, trail_amount=trail_amt,
                take_profit_price=tp_price, stop_loss_price=sl_price,
            )
        except InvalidBracket as exc:  # nothing stored
            fail(_cli_words(str(exc)), code=2)
        except BracketNotSupported as exc:  # nothing stored
            fail(str(exc), code=2)
        except InvalidOrder as exc:  # against the market (a buy stop at or below the last close)
            fail(_cli_words(str(exc)), code=2)
        except (BrokerError, FileNotFoundError) as exc:
            fail(str(exc), "is the warehouse built (`trading demo`) and the broker reachable?")
        result, request, order = placed.result, placed.request, placed.order
        coid, symbol = request.client_order_id, request.symbol
        if json_out:
            print_json({"action": result.action, "reason": result.reason, "order": _order_dict(order) if order else None,
                        "children": [_order_dict(c) for c in placed.children]})
        else:
            color = {"submitted": "green", "resumed": "green", "skipped": "yellow"}.get(result.action, "red")
            console.print(f"[{color}]{result.action}[/] {coid} {request.side} {qty} {symbol}: {result.status or ''} - {result.reason}")
            for c in placed.children:
                price = c.limit_price if c.limit_price is not None else c.stop_price
                console.print(f"  exit {c.client_order_id} {c.side} {c.quantity} {c.order_type.value} @ {price}: {c.status}"
                              f" (oco {c.oco_group}; active once {coid} fills)")
        if result.action in ("denied", "rejected", "error"):
            raise typer.Exit(1)

    @order_app.command("cancel")
    def cancel_cmd(
        client_order_id: Annotated[str, typer.Argument(help="The order's client order id (see `trading orders`).")],
        json_out: JsonOpt = False,
    ) -> None:
        """Cancel a working order at the broker and record it."""
        from trading_pipeline.trading.brokers.base import BrokerError
        from trading_pipeline.trading.execution import cancel_order
        from trading_pipeline.trading.orders import IllegalTransition

        settings = get_settings()
        store = _store(settings)
        existing = store.get_order(client_order_id)
        if existing is None:
            fail(f"no order {client_order_id!r} in the ops store", "list them with `trading orders`", code=2)
        try:
            order = cancel_order(client_order_id, broker=_broker(settings, store, existing.account), store=store)
        except (BrokerError, IllegalTransition) as exc:
            fail(str(exc))
        if json_out:
            print_json(_order_dict(order))
        else:
            console.print(f"{order.client_order_id}: {order.status} - {order.reason or ''}")

    @order_app.command("modify")
    def modify_cmd(
        client_order_id: Annotated[str, typer.Argument(help="The order's client order id (see `trading orders`).")],
        quantity: Annotated[str | None, typer.Option("--quantity", help="New total quantity (above the filled part).")] = None,
        limit: Annotated[str | None, typer.Option("--limit", help="New limit price (limit and stop-limit orders).")] = None,
        stop: Annotated[str | None, typer.Option("--stop-price", help="New stop price (stop and stop-limit orders).")] = None,
        trail_percent: Annotated[str | None, typer.Option("--trail-percent", help="Trailing stop: new trail in %.")] = None,
        trail_amount: Annotated[str | None, typer.Option("--trail-amount", help="Trailing stop: new trail amount.")] = None,
        json_out: JsonOpt = False,
    ) -> None:
        """Change a working order's quantity, limit, stop or trail (through the term check and the
        risk engine); exit 1 when a risk rule denies it, 2 when it cannot be modified."""
        from trading_pipeline.trading.brokers.base import BrokerError
        from trading_pipeline.trading.execution import UnknownOrder
        from trading_pipeline.trading.model import InvalidOrder
        from trading_pipeline.trading.orders import IllegalTransition
        from trading_pipeline.trading.services import modify_working_order

        if trail_percent is not None and trail_amount is not None:
            fail("give --trail-percent or --trail-amount, not both", code=2)
        terms = {
            "quantity": _parse_decimal(quantity, "--quantity") if quantity is not None else None,
            "limit_price": _parse_decimal(limit, "--limit") if limit is not None else None,
            "stop_price": _parse_decimal(stop, "--stop-price") if stop is not None else None,
            "trail_percent": _parse_decimal(trail_percent, "--trail-percent") if trail_percent is not None else None,
            "trail_amount": _parse_decimal(trail_amount, "--trail-amount") if trail_amount is not None else None,
        }
        if all(v is None for v in terms.values()):
            fail("give at least one of --quantity, --limit, --stop-price, --trail-percent, --trail-amount", code=2)
        settings = get_settings()
        store = _store(settings)
        existing = store.get_order(client_order_id)
        if existing is None:
            fail(f"no order {client_order_id!r} in the ops store", "list them with `trading orders`", code=2)
        engine = _risk(settings, store, existing.account)
        try:
            result = modify_working_order(
                store=store, broker_for=lambda account: _broker(settings, store, account), feed=_price_feed(settings),
                risk_engine=engine, client_order_id=client_order_id, **terms,
            )
        except UnknownOrder as exc:
            fail(str(exc), "list them with `trading orders`", code=2)
        except (IllegalTransition, InvalidOrder) as exc:
            fail(_cli_words(str(exc)), code=2)
        except BrokerError as exc:
            fail(str(exc), code=1 if exc.retryable else 2)
        order = result.order
        if json_out:
            print_json({"action": result.action, "reason": result.reason, "order": _order_dict(order)})
        elif result.action == "denied":
            console.print(f"[red]denied[/] {client_order_id}: unchanged - {result.reason}")
        else:
            console.print(
                f"[green]modified[/] {client_order_id}: {order.side} {order.quantity} {order.symbol} {order.order_type}"
                + "".join(f" {k}={getattr(order, k)}" for k in ("limit_price", "stop_price", "trail_percent", "trail_amount")
                          if getattr(order, k) is not None)
            )
        if result.action == "denied":
            raise typer.Exit(1)

    @order_app.command("sync")
    def sync_cmd(
        account: Annotated[str | None, typer.Option("--account", "-a", help="Only this account (default: every account).")] = None,
        json_out: JsonOpt = False,
    ) -> None:
        """Advance the paper broker against new daily bars (daily and manual orders; intraday ones wait for
        their bar size's order run), pull fills into the store, and reconcile, per account."""
        from trading_pipeline.trading.execution import reconcile, sync_open_orders
        from trading_pipeline.trading.services import accounts_of, scoped_paper_broker

        settings = get_settings()
        store = _store(settings)
        if account:
            names = [account]
        else:
            try:
                names = accounts_of(settings).names()
            except ValueError as exc:
                fail(str(exc), code=2)
        report = []
        for name in names:
            # daily bars: the daily and manual working orders only (an intraday order waits for
            # its own bar size's order run, never a daily bar's open)
            broker = scoped_paper_broker(_broker(settings, store, name), store, "1d")
            if hasattr(broker, "process_bars"):
                broker.process_bars()
            changed = sync_open_orders(store, broker, name)
            mismatches = reconcile(store, broker, name)
            report.append((name, broker, changed, mismatches))
        if json_out:
            print_json({
                "changed": [_order_dict(o) for _, _, changed, _ in report for o in changed],
                "mismatches": [{**m.__dict__, "account": name} for name, _, _, ms in report for m in ms],
                "accounts": [{"account": name, "changed": len(changed), "mismatches": len(ms)} for name, _, changed, ms in report],
            })
            return
        for name, broker, changed, mismatches in report:
            console.print(f"[bold]{name}[/]: {len(changed)} orders changed")
            working = store.count_open_orders(name)
            newest = broker.feed.newest_ts() if hasattr(broker, "feed") else None
            if working and newest is not None:
                console.print(f"{working} working order(s) wait for a bar after {newest:%Y-%m-%d %H:%M} "
                              "(the newest stored bar): load or scan the next session, then sync again")
            for m in mismatches:
                console.print(f"[red]mismatch[/] {m.kind}: {m.detail}")
            if not mismatches:
                console.print("[green]store and broker agree[/]")

    @app.command("kill-switch")
    def kill_switch_cmd(
        action: Annotated[KillSwitchAction, typer.Argument(help="on (block all new orders), off, or status.")] = KillSwitchAction.status,
        reason: Annotated[str | None, typer.Option(help="Why (stored and shown in every rejection).")] = None,
        json_out: JsonOpt = False,
    ) -> None:
        """Block (on) or allow (off) all new orders, everywhere, at once."""
        import getpass

        store = _store(get_settings())
        if action == KillSwitchAction.status:
            ks = store.kill_switch()
        else:
            ks = store.set_kill_switch(action == KillSwitchAction.on, reason=reason, updated_by=f"cli:{getpass.getuser()}")
        if json_out:
            print_json(ks.__dict__)
            return
        state = "[bold red]ON[/] - no new orders" if ks.active else "[green]off[/] - orders allowed"
        extra = f" ({ks.reason})" if ks.reason else ""
        when = f", set {ks.updated_at:%Y-%m-%d %H:%M:%S} UTC by {ks.updated_by}" if ks.updated_at else ""
        console.print(f"kill switch {state}{extra}{when}")
