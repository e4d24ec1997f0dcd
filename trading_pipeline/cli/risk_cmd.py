"""`trading risk`: historical VaR/ES, exposure, beta and stress scenarios per account and in total.

Positions from the ops store, daily closes from the warehouse (read-only); the definitions are in
trading_pipeline/trading/portfolio_risk.py and README "Portfolio risk".
"""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from trading_pipeline.cli.output import console, fail, print_json
from trading_pipeline.settings import Settings, get_settings


def _accounts(settings: Settings, store: Any, only: str | None) -> list[str]:
    """The accounts to assess: ``only`` (exit 2 unless the accounts file or the ops store knows
    it, or it is TRADING_ACCOUNT), or every account of the file and the store."""
    from trading_pipeline.trading.accounts import AccountsError
    from trading_pipeline.trading.services import accounts_of

    try:
        accts = accounts_of(settings)
    except AccountsError as exc:
        fail(str(exc), "see accounts.example.yaml for the file's format", code=2)
    known = sorted(set(accts.names()) | set(store.list_accounts()))
    if only is None:
        return known
    if only not in known:
        fail(f"no account {only!r}; known: {', '.join(known) or 'none'}", "list them with `trading accounts`", code=2)
    return [only]


def compute(settings: Settings, account: str | None, window: int, horizon: int) -> dict[str, Any]:
    """The report ``trading risk --json`` prints (exits 2 on a bad scenarios file or no warehouse)."""
    from trading_pipeline.cli.orders_cmds import _store
    from trading_pipeline.marketdata import warehouse as wh
    from trading_pipeline.trading import portfolio_risk as pr

    store = _store(settings)
    try:
        books = [pr.book_of(store.portfolio(a)) for a in _accounts(settings, store, account)]
    finally:
        store.close()
    if not wh.exists(settings.warehouse_path):
        if pr.symbols_needed(books):
            fail(f"no warehouse at {settings.warehouse_path}: no closes to measure the positions with",
                 "run `trading demo` or `trading ingest PATH` first", code=2)
        import duckdb

        con = duckdb.connect()  # nothing held: an empty bar table gives the zero report
        con.execute("CREATE SCHEMA raw; CREATE TABLE raw.bars_daily (symbol VARCHAR, timeframe VARCHAR, "
                    "session_date DATE, close DOUBLE)")
    else:
        con = wh.connect(settings.warehouse_path, read_only=True)
    try:
        return pr.assess_books(con, books, window=window, horizon=horizon, benchmark=settings.risk_benchmark or None,
                               scenarios_file=settings.scenarios_file)
    except pr.ScenarioFileError as exc:
        fail(str(exc), "see scenarios.example.yaml for the file's format", code=2)
        raise  # unreachable: fail exits
    finally:
        con.close()


def _m(x: float | None) -> str:
    return "-" if x is None else f"{x:,.2f}"


def _print(view: dict[str, Any]) -> None:
    rows = [*view["accounts"], *([view["total"]] if len(view["accounts"]) != 1 else [])]
    table = Table(title=f"portfolio risk: 1-day and {view['horizon_days']}-day (x sqrt N) historical VaR/ES over "
                  f"{view['window']} daily returns; benchmark {view['benchmark'] or 'none'}",
                  header_style="bold cyan")
    for col in ("account", "as of", "equity", "gross", "net", "VaR 95", "ES 95", "VaR 99", "ES 99",
                f"VaR 99 {view['horizon_days']}d", "beta"):
        table.add_column(col, justify="left" if col in ("account", "as of") else "right")
    for r in rows:
        if "error" in r:
            table.add_row(r["account"], "[red]error[/]", *[""] * 9)
            continue
        ex = r["exposure"]
        table.add_row(r["account"], str(r["as_of"] or "-"), _m(r["equity"]), _m(ex["gross"]), _m(ex["net"]),
                      _m(r["var_95"]), _m(r["es_95"]), _m(r["var_99"]), _m(r["es_99"]), _m(r["horizon"]["var_99"]),
                      "-" if r["beta"] is None else f"{r['beta']:.2f}")
    console.print(table)
    total = view["total"]
    if "error" not in total and total["scenarios"]:
        st = Table(title="stress scenarios on today's positions (all accounts)" if len(view["accounts"]) != 1
                   else f"stress scenarios on today's positions ({total['account']})", header_style="bold cyan")
        for col in ("scenario", "kind", "P&L", "% equity", "worst position", "its P&L", "sources"):
            st.add_column(col, justify="right" if col in ("P&L", "% equity", "its P&L") else "left")
        for s in total["scenarios"]:
            sources = "; ".join(f"{k}: {', '.join(v)}" for k, v in s["sources"].items())
            st.add_row(s["name"], s["kind"], _m(s["pnl"]) if s["status"] == "ok" else "[yellow]no data[/]",
                       "-" if s["pnl_pct"] is None else f"{s['pnl_pct']:.1f}%", s["worst_symbol"] or "-",
                       _m(s["worst_pnl"]), sources)
        console.print(st)
    for note in total.get("notes", []):
        console.print(f"[yellow]note:[/] {note}", soft_wrap=True)


def register(app: typer.Typer) -> None:
    @app.command("risk")
    def risk_cmd(
        account: Annotated[str | None, typer.Option("--account", "-a", help="Only this account (default: all).")] = None,
        window: Annotated[int | None, typer.Option(min=2, max=10_000, help="Daily returns in the VaR/ES window (default TRADING_RISK_WINDOW).")] = None,
        horizon: Annotated[int | None, typer.Option(min=1, max=250, help="N-day horizon, scaled by sqrt(N) (default TRADING_RISK_HORIZON).")] = None,
        json_out: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")] = False,
    ) -> None:
        """Portfolio risk: historical VaR and ES (95%, 99%; 1-day and N-day), exposure, beta to the
        benchmark, and stress scenarios (2008, 2020, 2022 replayed; shocks from TRADING_SCENARIOS_FILE).
        Exit 2 when an account cannot be assessed (not enough history: the symbols and their sessions)."""
        settings = get_settings()
        view = compute(settings, account, window or settings.risk_window, horizon or settings.risk_horizon)
        if json_out:
            print_json(view)
        else:
            _print(view)
        errors = [r for r in view["accounts"] if "error" in r]
        if errors:
            fail("; ".join(f"{r['account']}: {r['error']}" for r in errors),
                 "load more history, or use a shorter --window", code=2)
