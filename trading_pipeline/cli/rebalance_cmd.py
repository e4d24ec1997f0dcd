"""`trading rebalance`: the orders that move an account to target weights, previewed or sent.

Targets come from a ``symbol,weight`` CSV (``--targets``) or from a scan (``--from-scan NAME
--top N``: equal weight over the top N long signals of its latest session). The rules are in
trading_pipeline/trading/rebalance.py and the README's "Rebalancing" section. Without
``--dry-run`` the orders go through the risk engine and the broker like any order, sells first.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from trading_pipeline.cli.output import console, fail, print_json
from trading_pipeline.settings import get_settings


def _decimal(text: str, option: str) -> Decimal:
    try:
        value = Decimal(text)
    except InvalidOperation:
        fail(f"{option} must be a number, got {text!r}", code=2)
    if not value.is_finite() or value < 0:
        fail(f"{option} must be a number >= 0, got {text}", code=2)
    return value


def _pct(x: Decimal) -> str:
    return f"{x * 100:.2f}%"


def register(app: typer.Typer) -> None:
    @app.command("rebalance")
    def rebalance_cmd(
        targets: Annotated[Path | None, typer.Option("--targets", "-t", help="CSV of symbol,weight (weights of equity, 0..1, sum <= 1; cash is the rest).")] = None,
        from_scan: Annotated[str | None, typer.Option("--from-scan", help="Instead of --targets: equal weight over a scan's top long signals of its latest session (rules.yaml name).")] = None,
        top: Annotated[int, typer.Option("--top", help="With --from-scan: how many signals (highest score first).")] = 5,
        account: Annotated[str | None, typer.Option("--account", "-a", help="Trading account (default: TRADING_ACCOUNT).")] = None,
        dry_run: Annotated[bool, typer.Option("--dry-run", help="Show the orders; send nothing.")] = False,
        min_trade: Annotated[str, typer.Option("--min-trade", help="Skip orders worth less than this (quantity x last close).")] = "100",
        drift_band: Annotated[str, typer.Option("--drift-band", help="Skip symbols whose weight is within this many percentage points of the target.")] = "0.5",
        json_out: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")] = False,
    ) -> None:
        """Move an account to target weights at the last close: whole shares, sells before buys,
        buys scaled to the cash; without --dry-run, through the risk engine and the broker."""
        from trading_pipeline.cli.orders_cmds import _broker, _price_feed, _risk, _store
        from trading_pipeline.marketdata import warehouse
        from trading_pipeline.trading.brokers.base import BrokerError
        from trading_pipeline.trading.execution import commission_estimate
        from trading_pipeline.trading.rebalance import (
            RebalanceError,
            execute,
            plan_for_account,
            read_targets,
            sent_dict,
            targets_from_scan,
        )

        if targets is not None and from_scan is not None:
            fail("give --targets FILE or --from-scan NAME, not both", "see targets.example.csv", code=2)
        mt, band = _decimal(min_trade, "--min-trade"), _decimal(drift_band, "--drift-band")
        settings = get_settings()
        if targets is None and from_scan is None:  # the rules file's `rebalance:` section, if any
            from trading_pipeline.scans.rules import RulesError, load_rules

            try:
                rule = load_rules(settings.rules_file).rebalance
            except RulesError as exc:
                fail(str(exc), code=2)
            if rule is None:
                fail("give --targets FILE or --from-scan NAME, or set `rebalance: {from_scan: NAME, top: N}` in "
                     f"{settings.rules_file}", "see targets.example.csv", code=2)
            from_scan, top = rule.from_scan, rule.top
        account = account or settings.account
        try:
            if targets is not None:
                goal = read_targets(targets)
            else:
                if not warehouse.exists(settings.warehouse_path):
                    fail("no warehouse yet: no signals to take targets from", "run `trading demo` or a scan first", code=2)
                with warehouse.connect(settings.warehouse_path, read_only=True) as con:
                    goal = targets_from_scan(con, from_scan or "", top)
        except RebalanceError as exc:
            fail(str(exc), "see targets.example.csv", code=2)
        store = _store(settings)
        broker = _broker(settings, store, account)
        engine = None if dry_run else _risk(settings, store, account)
        feed = _price_feed(settings)
        try:
            start = Decimal(0) if store.has_account(account) else broker.account().cash
            plan = plan_for_account(store=store, feed=feed, account=account, targets=goal, starting_cash=start,
                                    min_trade=mt, drift_band=band, commission=commission_estimate(broker))
        except RebalanceError as exc:
            fail(str(exc), code=2)
        except BrokerError as exc:
            fail(str(exc), "is the broker reachable?")
        sent: list[Any] = []
        if not dry_run and plan.orders:
            try:
                sent = execute(plan, store=store, broker=broker, feed=feed, risk_engine=engine)
            except (BrokerError, FileNotFoundError) as exc:
                fail(str(exc), "is the warehouse built (`trading demo`) and the broker reachable?")
        failed = [s for s in sent if s.action in ("denied", "rejected", "error")]
        if json_out:
            body = plan.to_dict()
            body["source"] = goal.source
            body["dry_run"] = dry_run
            if not dry_run:
                body["results"] = [sent_dict(s) for s in sent]
            print_json(body)
        else:
            _print(plan, goal.source, sent, dry_run)
        if failed:
            raise typer.Exit(1)


def _print(plan: Any, source: str, sent: list[Any], dry_run: bool) -> None:
    results = {s.order.client_order_id: s for s in sent}
    table = Table(title=f"rebalance {plan.account} to {source} at the {plan.session} close"
                  + (" (dry run: nothing sent)" if dry_run else ""), header_style="bold cyan")
    cols = ["symbol", "side", "qty", "price", "value", "weight now", "target", "id"]
    if not dry_run:
        cols.append("result")
    for col in cols:
        table.add_column(col, justify="right" if col in ("qty", "price", "value", "weight now", "target") else "left")
    colors = {"submitted": "green", "resumed": "green", "skipped": "yellow"}
    for o in plan.orders:
        cells = [o.symbol, f"[{'red' if o.side == 'sell' else 'green'}]{o.side}[/]", str(o.quantity), f"{o.price:,.2f}",
                 f"{o.value:,.2f}", _pct(o.current_weight), _pct(o.target_weight), o.client_order_id]
        if not dry_run:
            r = results.get(o.client_order_id)
            retry = f" as {r.client_order_id}" if r is not None and r.client_order_id != o.client_order_id else ""
            cells.append("" if r is None else f"[{colors.get(r.action, 'red')}]{r.action}[/]{retry} {r.reason}")
        table.add_row(*cells)
    table.caption = (f"equity {plan.equity:,.2f}  cash {plan.cash:,.2f}  cash after {plan.cash_after:,.2f}  "
                     f"min trade {plan.min_trade}  drift band {plan.drift_band} pp")
    console.print(table)
    if not plan.orders:
        console.print("[green]nothing to trade[/]: the account is at its targets (within the drift band and minimum trade)")
    for s in plan.skipped:
        console.print(f"  not traded {s.symbol}: {s.reason}")
    for n in plan.notes:
        console.print(f"  note: {n}")
