"""The backtest replays stored signals through sizing, risk and the paper fill model."""

from __future__ import annotations

import re
from datetime import datetime, time
from decimal import Decimal

import polars as pl
import pytest

from tests.backtest.conftest import AAA, BBB, SESSIONS, bars_frame, build_warehouse, signal
from trading_pipeline.backtest.engine import BacktestError, reporting_progress, run_backtest
from trading_pipeline.backtest.report import render_html, write_report
from trading_pipeline.marketdata import warehouse as wh

NO_COSTS = {"slippage_bps": 0, "commission_per_share": Decimal("0.01"), "commission_min": 1}


def test_hand_checked_trade(tiny_warehouse):
    # Signal: AAA breakout_up on d2 (close 10). Equity 100,000; fixed_fraction sizing puts 10%
    # in: 10,000 / 10 = 1,000 shares (cap 25% = 2,500). Risk: notional 10,000 < 50,000 and
    # 10% of equity < 25% concentration, so approved.
    # Entry: d3 open 11 -> buy 1,000 @ 11.00, commission max(1,000 x 0.01, 1) = 10.
    # hold=2: held d3, d4; exit order at d4's close; fill at d5 open 14 -> sell @ 14.00, comm 10.
    # P&L = 1,000 x (14 - 11) - 10 - 10 = 2,980.
    # BBB breakout_down on d3: shorting is off (like the live pipeline) -> no trade.
    r = run_backtest(tiny_warehouse, strategy="breakout", hold=2, **NO_COSTS)
    assert r.trades.height == 1
    t = r.trades.row(0, named=True)
    assert (t["symbol"], t["direction"], t["signal_kind"]) == ("AAA", "long", "breakout_up")
    assert t["signal_session"] == SESSIONS[1]
    assert t["entry_session"] == SESSIONS[2] and t["entry_price"] == 11.0
    assert t["exit_session"] == SESSIONS[4] and t["exit_price"] == 14.0
    assert t["quantity"] == 1000 and t["commission"] == 20.0
    assert t["pnl"] == pytest.approx(2980.0)
    assert t["exit_reason"] == "hold" and t["sessions_held"] == 2
    # Equity at each close: d1, d2 = 100,000; d3 cash 100,000 - 11,000 - 10 = 88,990 plus
    # 1,000 x 12 = 100,990; d4 88,990 + 13,000 = 101,990; d5, d6 cash 88,990 + 14,000 - 10 = 102,980.
    assert r.equity["equity"].to_list() == pytest.approx([100_000, 100_000, 100_990, 101_990, 102_980, 102_980])
    m = r.metrics
    assert m["total_return"] == pytest.approx(0.0298)
    assert m["trades"] == 1 and m["win_rate"] == 1.0 and m["profit_factor"] is None  # no losing trade
    assert m["max_drawdown"] == 0.0
    assert m["exposure"] == pytest.approx(2 / 6)  # in the market at the d3 and d4 closes
    assert r.by_symbol.row(0, named=True)["pnl"] == pytest.approx(2980.0)


def test_slippage_uses_the_paper_broker_formula(tiny_warehouse):
    # 10 bps against us: buy 11 x 1.001 = 11.011, sell 14 x 0.999 = 13.986.
    # P&L = 1,000 x (13.986 - 11.011) - 20 = 2,955.
    r = run_backtest(tiny_warehouse, strategy="breakout", hold=2, slippage_bps=10,
                     commission_per_share=Decimal("0.01"), commission_min=1)
    t = r.trades.row(0, named=True)
    assert (t["entry_price"], t["exit_price"]) == (11.011, 13.986)
    assert t["pnl"] == pytest.approx(2955.0)


def test_fill_matches_a_real_paper_broker(tiny_warehouse, tmp_path):
    """Same order, real PaperBroker + OpsStore: the same fill price and commission."""
    from trading_pipeline.trading.brokers.paper import PaperBroker, PolarsBarFeed
    from trading_pipeline.trading.model import OrderRequest, OrderType, Side, TimeInForce
    from trading_pipeline.trading.store import OpsStore

    r = run_backtest(tiny_warehouse, strategy="breakout", hold=2, slippage_bps=10,
                     commission_per_share=Decimal("0.01"), commission_min=1)
    con = wh.connect(tiny_warehouse, read_only=True)
    bars = wh.fetch_frame(con, "SELECT * FROM raw.bars_daily WHERE symbol = 'AAA' ORDER BY ts")
    con.close()
    store = OpsStore(f"sqlite:///{tmp_path / 'ops.sqlite'}")
    try:
        signal_close = datetime.combine(SESSIONS[1], time(21, 0))
        broker = PaperBroker(store, PolarsBarFeed(bars), account="paper", slippage_bps=Decimal(10),
                             commission_per_share=Decimal("0.01"), commission_min=Decimal(1),
                             clock=lambda: signal_close)
        broker.submit(OrderRequest("c1", "paper", "AAA", Side.BUY, Decimal(1000), OrderType.MARKET, None, TimeInForce.DAY))
        broker.process_bars()
        fill = broker.order_status("c1").fills[0]
    finally:
        store.close()
    t = r.trades.row(0, named=True)
    assert float(fill.price) == t["entry_price"]
    assert fill.ts.date() == t["entry_session"]
    assert float(fill.commission) == 10.0


def test_no_look_ahead(tmp_path):
    sigs = [signal("AAA", SESSIONS[1], "breakout_up", "long")]
    base = run_backtest(build_warehouse(tmp_path / "a.duckdb", signals=sigs), strategy="breakout", hold=2, **NO_COSTS)
    # the fill is on the bar after the signal, at its open, never on the signal's bar
    assert base.trades["entry_session"][0] == SESSIONS[2]
    # moving the signal bar's open and every price after the exit changes nothing before it
    moved = list(AAA)
    moved[1] = (99.0, 99.0, 9.0, 10.0)
    moved[5] = (500.0, 900.0, 1.0, 2.0)
    other = run_backtest(build_warehouse(tmp_path / "b.duckdb", prices={"AAA": moved, "BBB": BBB}, signals=sigs),
                         strategy="breakout", hold=2, **NO_COSTS)
    assert other.trades.equals(base.trades)
    assert other.equity.head(5).equals(base.equity.head(5))
    assert other.equity["equity"][5] == base.equity["equity"][5]  # flat by then: nothing held


def test_rerun_is_identical(tiny_warehouse):
    a = run_backtest(tiny_warehouse, strategy="breakout", hold=2)
    b = run_backtest(tiny_warehouse, strategy="breakout", hold=2)
    assert a.trades.equals(b.trades) and a.equity.equals(b.equity) and a.by_symbol.equals(b.by_symbol)
    assert a.metrics == b.metrics and a.run_id == b.run_id


def test_opposite_signal_exits_and_short_when_allowed(tmp_path):
    sigs = [signal("AAA", SESSIONS[1], "breakout_up", "long"), signal("AAA", SESSIONS[3], "breakout_down", "short"),
            signal("BBB", SESSIONS[2], "breakout_down", "short")]
    path = build_warehouse(tmp_path / "w.duckdb", signals=sigs)
    r = run_backtest(path, strategy="breakout", hold=0, **NO_COSTS)
    t = r.trades.row(0, named=True)
    # exit order at d4's close (the opposite signal), filled at d5's open: same 2,980 as above
    assert (t["exit_reason"], t["exit_session"], t["pnl"]) == ("opposite_signal", SESSIONS[4], pytest.approx(2980.0))
    assert r.trades.height == 1  # BBB's short: not opened, shorting is off
    shorted = run_backtest(path, strategy="breakout", hold=2, allow_short=True, **NO_COSTS)
    bbb = shorted.trades.filter(pl.col("symbol") == "BBB").row(0, named=True)
    # sized at d3's close on equity 100,990 (AAA held): 10,099 / 50 = 201 shares. Sell 201 @ 50
    # at d4's open, buy back @ 50 at d6's open (hold 2): P&L = -2 x 2.01 commission = -4.02.
    assert (bbb["direction"], bbb["quantity"], bbb["pnl"]) == ("short", 201, pytest.approx(-4.02))


def test_signal_on_last_session_stays_unfilled(tmp_path):
    path = build_warehouse(tmp_path / "w.duckdb", signals=[signal("AAA", SESSIONS[5], "breakout_up", "long")])
    r = run_backtest(path, strategy="breakout")
    assert r.trades.height == 0 and r.metrics["unfilled_orders"] == 1


def test_open_position_marked_at_end(tiny_warehouse):
    # hold 10 > data: bought 1,000 @ 11 at d3, still held; marked at d6's close 15: 4,000 - 10.
    r = run_backtest(tiny_warehouse, strategy="breakout", hold=10, **NO_COSTS)
    t = r.trades.row(0, named=True)
    assert t["is_open"] and t["exit_reason"] == "open" and t["pnl"] == pytest.approx(3990.0)
    assert r.metrics["trades"] == 0 and r.metrics["open_trades"] == 1


def test_risk_rejection_is_recorded(tiny_warehouse):
    from trading_pipeline.trading.risk import RiskLimits

    r = run_backtest(tiny_warehouse, strategy="breakout", limits=RiskLimits(max_order_notional=Decimal(5000)))
    assert r.trades.height == 0
    assert r.rejections["rule"].to_list() == ["max_order_notional"]


def test_scan_name_strategy_and_symbol_filter(tiny_warehouse):
    assert run_backtest(tiny_warehouse, strategy="breakout_daily", hold=2).trades.height == 1
    assert run_backtest(tiny_warehouse, strategy="breakout", symbols=["bbb"], hold=2).trades.height == 0


def test_unknown_strategy_lists_valid_ones(tiny_warehouse):
    with pytest.raises(BacktestError) as err:
        run_backtest(tiny_warehouse, strategy="moonshot")
    msg = str(err.value)
    assert "moonshot" in msg and "breakout" in msg and "crp" in msg and "breakout_daily" in msg


def test_empty_signal_set_gives_zero_trades(tmp_path):
    r = run_backtest(build_warehouse(tmp_path / "w.duckdb", signals=[]), strategy="crp")
    assert r.trades.height == 0 and r.metrics["trades"] == 0
    assert r.equity.height == len(SESSIONS) and r.metrics["total_return"] == 0.0
    html = render_html(r)
    assert "No trades" in html


def test_progress_callback(tiny_warehouse):
    seen = []
    run_backtest(tiny_warehouse, strategy="breakout", progress=lambda done, total: seen.append((done, total)))
    assert seen[-1] == (6, 6) and len(seen) == 6
    hooked = []
    with reporting_progress(lambda d, t: hooked.append(d)):
        run_backtest(tiny_warehouse, strategy="breakout")
    assert hooked == [1, 2, 3, 4, 5, 6]


def test_html_report_is_self_contained(tiny_warehouse, tmp_path):
    r = run_backtest(tiny_warehouse, strategy="breakout", hold=2)
    out = write_report(r, tmp_path / "report" / "bt.html")
    html = out.read_text()
    assert html.startswith("<!DOCTYPE html>") and "<svg" in html and "AAA" in html
    assert "http://" not in html and "https://" not in html and "src=" not in html
    assert "<link" not in html


def test_dagster_job_writes_tables_without_duplicates(trading_home):
    from trading_pipeline import runs
    from trading_pipeline.settings import get_settings

    settings = get_settings()
    build_warehouse(settings.warehouse_path, signals=[signal("AAA", SESSIONS[1], "breakout_up", "long")])
    cfg = {"ops": {"run_backtest": {"config": {"strategy": "breakout", "hold": 2}}}}
    first = runs.run_job("backtest", settings, run_config=cfg)
    assert first.success, runs.failure_message(first)
    second = runs.run_job("backtest", settings, run_config=cfg)
    assert second.success, runs.failure_message(second)
    run_id = second.output_for_node("run_backtest")["run_id"]
    assert run_id == first.output_for_node("run_backtest")["run_id"]
    con = wh.connect(settings.warehouse_path, read_only=True)
    try:
        counts = {t: wh.fetch_one(con, f"SELECT count(*) FROM marts.{t} WHERE run_id = ?", [run_id])[0]
                  for t in ("backtest_runs", "backtest_trades", "backtest_equity")}
        pnl = wh.fetch_one(con, "SELECT pnl FROM marts.backtest_trades WHERE run_id = ?", [run_id])[0]
    finally:
        con.close()
    assert counts == {"backtest_runs": 1, "backtest_trades": 1, "backtest_equity": len(SESSIONS)}
    assert pnl > 0


def _cli():
    import typer

    from trading_pipeline.cli import backtest_cmd

    app = typer.Typer()

    @app.callback()
    def main() -> None:
        """Test app: just the backtest command."""

    backtest_cmd.register(app)
    return app


def test_cli_runs_the_job_and_prints_json(trading_home, tmp_path):
    import json

    from typer.testing import CliRunner

    from trading_pipeline.settings import get_settings

    build_warehouse(get_settings().warehouse_path, signals=[signal("AAA", SESSIONS[1], "breakout_up", "long")])
    report = tmp_path / "bt.html"
    res = CliRunner().invoke(_cli(), ["backtest", "--strategy", "breakout", "--hold", "2", "--slippage-bps", "0",
                                      "--commission", "0.01", "--json", "--report", str(report)])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout[res.stdout.index("{"):])
    assert out["metrics"]["trades"] == 1 and out["by_symbol"][0]["pnl"] == pytest.approx(2980.0)
    assert report.exists()
    table = CliRunner().invoke(_cli(), ["backtest", "--strategy", "breakout", "--no-store", "--hold", "2"])
    assert table.exit_code == 0 and "By symbol" in table.stdout and "AAA" in table.stdout
    # one format per kind of number (issue 20.7): the win rate as a percentage like the returns
    row = next(ln for ln in table.stdout.splitlines() if "AAA" in ln and "│" in ln)
    cells = [c.strip() for c in row.strip("│ ").split("│")]
    assert cells[3] == "100.0%" and cells[5].endswith("%"), cells  # win rate and average return
    assert all(re.fullmatch(r"-?[\d,]+\.\d{2}", cells[i]) for i in (4, 6, 7)), cells  # money


def test_job_and_cli_use_the_live_risk_yaml(trading_home, tmp_path, monkeypatch):
    """Backtests check orders against the same risk.yaml (TRADING_RISK_FILE) as live trading."""
    import json

    import yaml
    from typer.testing import CliRunner

    from trading_pipeline import runs
    from trading_pipeline.settings import PROJECT_DIR, get_settings

    limits = yaml.safe_load((PROJECT_DIR / "risk.yaml").read_text())
    limits["max_order_notional"] = 100  # far below one sized entry
    risk_file = tmp_path / "risk.yaml"
    risk_file.write_text(yaml.safe_dump(limits))
    monkeypatch.setenv("TRADING_RISK_FILE", str(risk_file))
    get_settings.cache_clear()
    settings = get_settings()
    build_warehouse(settings.warehouse_path, signals=[signal("AAA", SESSIONS[1], "breakout_up", "long")])
    res = runs.run_job("backtest", settings, run_config={"ops": {"run_backtest": {"config": {"strategy": "breakout", "hold": 2}}}})
    assert res.success, runs.failure_message(res)
    metrics = res.output_for_node("run_backtest")["metrics"]
    assert (metrics["trades"], metrics["rejected_orders"]) == (0, 1)
    out = CliRunner().invoke(_cli(), ["backtest", "--strategy", "breakout", "--no-store", "--hold", "2", "--json"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.stdout[out.stdout.index("{"):])["metrics"]["rejected_orders"] == 1


def test_cli_unknown_strategy(trading_home):
    from typer.testing import CliRunner

    from trading_pipeline.settings import get_settings

    build_warehouse(get_settings().warehouse_path, signals=[])
    res = CliRunner().invoke(_cli(), ["backtest", "--strategy", "nope"])
    assert res.exit_code == 2
    assert "valid strategies: breakout, crp" in res.output


def test_cli_refuses_bad_backtests_with_exit_2_and_the_reason(trading_home):
    """Without marts.signals (no scan yet) and with bad decision options: exit 2, the reason
    and what to do, on both paths (--no-store runs in the CLI; options are checked up front)."""
    from typer.testing import CliRunner

    from trading_pipeline.marketdata import warehouse as wh
    from trading_pipeline.settings import get_settings

    with wh.writer(get_settings().warehouse_path) as con:  # bars, no scan
        wh.upsert_bars(con, "raw.bars_daily", bars_frame({"AAA": AAA}), source="t")
    res = CliRunner().invoke(_cli(), ["backtest", "--strategy", "breakout", "--no-store"])
    assert res.exit_code == 2 and "no marts.signals table; run `trading scan`" in res.output, res.output
    res = CliRunner().invoke(_cli(), ["backtest", "--strategy", "breakout", "--on-repeat", "double"])
    assert res.exit_code == 2 and "rules.on_repeat" in res.output and "'skip' or 'add'" in res.output, res.output


WIDE = {"max_order_notional": Decimal(10**6), "max_order_quantity": Decimal(10**6), "max_position_quantity": Decimal(10**6),
        "max_symbol_exposure": Decimal(10**6), "max_total_exposure": Decimal(10**6), "max_concentration_pct": Decimal(100)}


def test_buying_power_keeps_a_cash_account_out_of_debt(tmp_path):
    """Two entries of 60% of equity on one session: the second would spend more than the
    cash (the first is still waiting to fill), so it is refused; with 2x leverage it fits."""
    from trading_pipeline.trading.risk import RiskLimits
    from trading_pipeline.trading.sizing import Sizing

    sigs = [signal("AAA", SESSIONS[1], "breakout_up", "long"), signal("BBB", SESSIONS[1], "breakout_up", "long")]
    path = build_warehouse(tmp_path / "w.duckdb", signals=sigs)
    sizing = Sizing(fraction=Decimal("0.6"), max_fraction=Decimal("0.6"))
    r = run_backtest(path, strategy="breakout", hold=2, sizing=sizing, limits=RiskLimits(**WIDE), **NO_COSTS)
    assert r.trades["symbol"].to_list() == ["AAA"]
    rej = r.rejections.row(0, named=True)
    # AAA: 6,000 x 10 + 60 commission waiting; BBB: 1,200 x 50 + 12 -> 120,072 reaches the cash
    assert (rej["symbol"], rej["rule"]) == ("BBB", "buying_power") and "120,072.00" in rej["reason"]
    assert r.equity["cash"].min() >= 0
    margin = run_backtest(path, strategy="breakout", hold=2, sizing=sizing,
                          limits=RiskLimits(**WIDE, max_leverage=Decimal(2)), **NO_COSTS)
    assert sorted(margin.trades["symbol"].to_list()) == ["AAA", "BBB"] and margin.equity["cash"].min() < 0


# AAA: bought 1,000 at 10 on S1's open, falls to 8 at S2's close (a 2,000 loss that day), then flat
FALLING = [(10.0, 10.5, 9.5, 10.0), (10.0, 10.5, 9.5, 10.0), (10.0, 10.5, 7.5, 8.0)] + [(8.0, 8.5, 7.5, 8.0)] * 3


@pytest.mark.parametrize(("bbb_signal", "limit", "blocked"), [
    (2, "2000", True),      # on the day of the loss: 2,000 reaches the limit
    (2, "2000.01", False),  # ... and just below it passes
    (3, "1500", False),     # the next day the old (unrealized) loss is not today's
])
def test_daily_loss_in_the_backtest_is_the_change_since_the_previous_close(tmp_path, bbb_signal, limit, blocked):
    from trading_pipeline.trading.risk import RiskLimits

    sigs = [signal("AAA", SESSIONS[0], "breakout_up", "long"), signal("BBB", SESSIONS[bbb_signal], "breakout_up", "long")]
    path = build_warehouse(tmp_path / "w.duckdb", prices={"AAA": FALLING, "BBB": BBB}, signals=sigs)
    r = run_backtest(path, strategy="breakout", hold=10, limits=RiskLimits(daily_loss_limit=Decimal(limit)), **NO_COSTS)
    assert ("BBB" not in r.trades["symbol"].to_list()) is blocked
    if blocked:
        rej = r.rejections.row(0, named=True)
        assert (rej["symbol"], rej["rule"]) == ("BBB", "daily_loss_limit")
        assert rej["reason"].startswith("today's loss is 2,000.00 (equity 97,990.00 now vs 99,990.00")
    else:
        assert r.rejections.height == 0
