"""Portfolio risk (trading/portfolio_risk.py): VaR/ES by hand and against numpy, the N-day rule,
beta against np.cov, missing sessions, stress windows with own vs benchmark returns, hypothetical
shocks and bad scenario files."""

from __future__ import annotations

import math
from datetime import date, timedelta

import numpy as np
import polars as pl
import pytest

from trading_pipeline.trading.portfolio_risk import (
    Book,
    HistoricalWindow,
    InsufficientHistory,
    RiskConfig,
    ScenarioFileError,
    Shock,
    assess,
    beta,
    choose_benchmark,
    combined,
    load_scenarios,
    report,
    var_es,
)


def business_days(start: date, end: date) -> list[date]:
    out, d = [], start
    while d <= end:
        if d.weekday() < 5:
            out.append(d)
        d += timedelta(days=1)
    return out


def frame(symbol: str, dates: list[date], closes: list[float]) -> pl.DataFrame:
    return pl.DataFrame({"symbol": [symbol] * len(dates), "session_date": dates, "close": closes},
                        schema={"symbol": pl.String, "session_date": pl.Date, "close": pl.Float64})


def path_from(returns: list[float], start: float = 100.0) -> list[float]:
    closes = [start]
    for r in returns:
        closes.append(closes[-1] * (1 + r))
    return closes


NO_STRESS = RiskConfig(window=40, horizon=1, historical=())


def test_var_es_by_hand() -> None:
    # 40 days: the two worst are -10 and -8; 95%: k = ceil(40 x 0.05) = 2, 99%: k = ceil(0.4) = 1
    pnl = [-10.0, -8.0, -6.0] + [float(x) for x in range(1, 38)]
    assert var_es(pnl, 0.95) == (8.0, 9.0)
    assert var_es(pnl, 0.99) == (10.0, 10.0)
    # 250 days: k95 = 13 (12.5 rounded up), k99 = 3
    big = np.arange(-250.0, 0.0) + 1  # -249 .. 0
    assert var_es(big, 0.95) == (237.0, -np.mean(np.arange(-249.0, -236.0)))
    assert var_es(big, 0.99) == (247.0, 248.0)


def test_assess_matches_the_hand_computed_position() -> None:
    rets = [-0.10, -0.08, -0.06] + [0.01] * 37
    closes = path_from(rets)
    dates = business_days(date(2024, 1, 1), date(2024, 3, 1))[: len(closes)]
    out = assess({"AAA": 10}, frame("AAA", dates, closes), cash=1000, config=NO_STRESS)
    value = 10 * closes[-1]
    assert out["sessions"] == 40 and out["as_of"] == dates[-1]
    assert out["var_95"] == pytest.approx(value * 0.08) and out["es_95"] == pytest.approx(value * 0.09)
    assert out["var_99"] == pytest.approx(value * 0.10) and out["es_99"] == pytest.approx(value * 0.10)
    assert out["positions"][0]["var_95"] == pytest.approx(out["var_95"])
    assert out["exposure"] == {"long": pytest.approx(value), "short": 0, "gross": pytest.approx(value),
                               "net": pytest.approx(value),
                               "by_symbol": [{"symbol": "AAA", "market_value": pytest.approx(value),
                                             "weight": pytest.approx(value / (1000 + value))}]}
    assert out["equity"] == pytest.approx(1000 + value)


def test_var_es_against_numpy_on_random_returns_and_the_total_is_not_a_sum() -> None:
    rng = np.random.default_rng(7)
    n = 250
    dates = business_days(date(2023, 1, 2), date(2024, 6, 30))[: n + 1]
    ra, rb = rng.normal(0, 0.02, n), rng.normal(0, 0.015, n)
    ca, cb = path_from(list(ra)), path_from(list(rb), 50.0)
    closes = pl.concat([frame("AAA", dates, ca), frame("BBB", dates, cb)])
    out = assess({"AAA": 100, "BBB": -300}, closes, config=RiskConfig(window=n, horizon=1, historical=()))
    pnl = 100 * ca[-1] * ra + (-300) * cb[-1] * rb
    for level, tag in ((0.95, "95"), (0.99, "99")):
        q = np.quantile(pnl, 1 - level, method="inverted_cdf")
        assert out[f"var_{tag}"] == pytest.approx(-q)
        assert out[f"es_{tag}"] == pytest.approx(-pnl[pnl <= q].mean())
        assert out[f"es_{tag}"] >= out[f"var_{tag}"]
    position_sum = sum(p["var_95"] for p in out["positions"])
    assert out["var_95"] < position_sum  # diversified: two independent positions
    ex = out["exposure"]
    assert ex["long"] == pytest.approx(100 * ca[-1]) and ex["short"] == pytest.approx(300 * cb[-1])
    assert ex["gross"] == pytest.approx(ex["long"] + ex["short"]) and ex["net"] == pytest.approx(ex["long"] - ex["short"])


def test_n_day_figures_are_the_one_day_times_root_n() -> None:
    rng = np.random.default_rng(1)
    dates = business_days(date(2024, 1, 1), date(2024, 12, 31))[:61]
    closes = frame("AAA", dates, path_from(list(rng.normal(0, 0.01, 60))))
    out = assess({"AAA": 5}, closes, config=RiskConfig(window=60, horizon=10, historical=()))
    assert out["horizon"]["days"] == 10
    for key in ("var_95", "es_95", "var_99", "es_99"):
        assert out["horizon"][key] == pytest.approx(out[key] * math.sqrt(10))
    one = assess({"AAA": 5}, closes, config=RiskConfig(window=60, horizon=1, historical=()))
    assert one["horizon"]["var_99"] == pytest.approx(one["var_99"])


def test_beta_against_np_cov_and_the_portfolio_beta() -> None:
    rng = np.random.default_rng(3)
    n = 120
    dates = business_days(date(2024, 1, 1), date(2024, 12, 31))[: n + 1]
    rm = rng.normal(0, 0.01, n)
    ra = 1.5 * rm + rng.normal(0, 0.005, n)
    closes = pl.concat([frame("SPY", dates, path_from(list(rm))), frame("AAA", dates, path_from(list(ra), 20.0))])
    out = assess({"AAA": 50}, closes, cash=10_000,
                 config=RiskConfig(window=n, horizon=1, benchmark="SPY", historical=()))
    expected = np.cov(ra, rm)[0, 1] / np.var(rm, ddof=1)
    assert out["positions"][0]["beta"] == pytest.approx(expected)
    mv = out["positions"][0]["market_value"]
    assert out["beta_dollars"] == pytest.approx(mv * expected)
    assert out["beta"] == pytest.approx(mv * expected / out["equity"])
    assert beta(np.array([0.01, 0.02]), np.array([0.0, 0.0])) is None  # flat benchmark: no beta


def test_missing_sessions_are_dropped_for_all_not_forward_filled() -> None:
    dates = business_days(date(2024, 1, 1), date(2024, 2, 1))[:11]
    a = [100, 101, 102, 103, 104, 110, 111, 112, 113, 114, 115]
    b = [50.0 + i for i in range(11)]
    closes = pl.concat([frame("AAA", dates, a), frame("BBB", dates[:5] + dates[6:], b[:5] + b[6:])])
    out = assess({"AAA": 1, "BBB": 1}, closes, config=RiskConfig(window=9, horizon=1, historical=()))
    assert out["sessions"] == 9  # 10 common sessions
    with pytest.raises(InsufficientHistory) as exc:
        assess({"AAA": 1, "BBB": 1}, closes, config=RiskConfig(window=10, horizon=1, historical=()))
    assert "AAA 11" in str(exc.value) and "BBB 10" in str(exc.value) and "there are 10" in str(exc.value)
    assert exc.value.sessions == {"AAA": 11, "BBB": 10}
    # the return across the gap: AAA 110/104 - 1 and BBB 56/54 - 1, on dates[6]
    worst_total = min(115 * (a[i] / a[i - 1] - 1) + 60 * (b[i] / b[i - 1] - 1) for i in range(1, 11) if i not in (5, 6))
    gap_total = 115 * (110 / 104 - 1) + 60 * (56 / 54 - 1)
    assert -out["var_99"] == pytest.approx(min(worst_total, gap_total))
    with pytest.raises(InsufficientHistory, match="no daily bars for ZZZ"):
        assess({"AAA": 1, "ZZZ": 1}, closes, config=RiskConfig(window=5, horizon=1, historical=()))


def _stress_closes() -> tuple[pl.DataFrame, dict[str, float]]:
    """SPY and AAA from 2019 (they cover the 2020 window); BBB only from April 2020, with
    returns exactly 2x SPY's (beta 2)."""
    days = business_days(date(2019, 1, 2), date(2020, 6, 30))
    spy, aaa = [], []
    for d in days:
        spy.append(100.0 if d < date(2020, 2, 20) else 70.0)
        aaa.append(50.0 if d < date(2020, 2, 20) else 40.0)
    recent = [d for d in days if d >= date(2020, 4, 1)]
    k = days.index(recent[0])
    s = [0.01 * ((t % 5) - 2) for t in range(len(recent))]
    for t, d in enumerate(recent):
        i = days.index(d)
        spy[i] = spy[i - 1] * (1 + s[t]) if t else 70.0
        aaa[i] = aaa[i - 1] * (1 + 0.005 * ((t % 3) - 1)) if t else 40.0
    bbb = path_from([2 * x for x in s[1:]], 30.0)
    closes = pl.concat([frame("SPY", days, spy), frame("AAA", days, aaa), frame("BBB", recent, bbb)])
    assert k > 0
    return closes, {"SPY": spy[-1], "AAA": aaa[-1], "BBB": bbb[-1]}


COVID = HistoricalWindow("2020", date(2020, 2, 20), date(2020, 3, 23))
GFC = HistoricalWindow("2008", date(2008, 9, 15), date(2008, 10, 10))


def test_stress_window_uses_own_returns_else_benchmark_times_beta() -> None:
    closes, last = _stress_closes()
    cfg = RiskConfig(window=40, horizon=1, benchmark="SPY", historical=(COVID, GFC))
    out = assess({"AAA": 10, "BBB": -5}, closes, config=cfg)
    beta_b = {p["symbol"]: p["beta"] for p in out["positions"]}["BBB"]
    assert beta_b == pytest.approx(2.0)
    covid, gfc = out["scenarios"]
    assert covid["benchmark_return"] == pytest.approx(-0.30)
    assert covid["sources"] == {"own": ["AAA"], "benchmark_beta": ["BBB"]}
    pa, pb = 10 * last["AAA"] * -0.2, -5 * last["BBB"] * (2 * -0.30)
    assert covid["pnl"] == pytest.approx(pa + pb) and covid["status"] == "ok"
    assert covid["worst_symbol"] == "AAA" and covid["worst_pnl"] == pytest.approx(pa)  # the short gains
    assert gfc["status"] == "no data" and gfc["pnl"] is None and gfc["no_data"] == ["AAA", "BBB"]
    assert gfc["sources"] == {"none": ["AAA", "BBB"]}
    # without a benchmark: BBB has no source, AAA still its own
    out = assess({"AAA": 10, "BBB": -5}, closes, config=RiskConfig(window=40, horizon=1, historical=(COVID,)))
    (covid,) = out["scenarios"]
    assert covid["sources"] == {"own": ["AAA"], "none": ["BBB"]} and covid["pnl"] is None
    assert covid["worst_symbol"] == "AAA"


def test_hypothetical_shocks() -> None:
    closes, last = _stress_closes()
    shocks = (Shock("all -10%", {"all": -0.10}), Shock("BBB -30%, rest -10%", {"all": -0.10, "BBB": -0.30}),
              Shock("market -20%", {"benchmark": -0.20}))
    out = assess({"AAA": 10, "BBB": 5}, closes,
                 config=RiskConfig(window=40, horizon=1, benchmark="SPY", historical=(), hypothetical=shocks))
    va, vb = 10 * last["AAA"], 5 * last["BBB"]
    s1, s2, s3 = out["scenarios"]
    assert s1["pnl"] == pytest.approx(-0.1 * (va + vb)) and s1["worst_symbol"] == ("AAA" if va > vb else "BBB")
    assert s2["pnl"] == pytest.approx(-0.1 * va - 0.3 * vb) and s2["sources"] == {"all": ["AAA"], "symbol": ["BBB"]}
    betas = {p["symbol"]: p["beta"] for p in out["positions"]}
    assert s3["pnl"] == pytest.approx(-0.2 * (va * betas["AAA"] + vb * betas["BBB"]))
    assert s1["pnl_pct"] == pytest.approx(s1["pnl"] / out["equity"] * 100)


def test_no_positions_gives_zeros() -> None:
    out = assess({}, frame("AAA", [], []), cash=500, config=RiskConfig(historical=(COVID,), hypothetical=(Shock("x", {"all": -0.1}),)))
    assert (out["var_95"], out["es_99"], out["positions"], out["equity"]) == (0.0, 0.0, [], 500)
    assert [(s["pnl"], s["worst_symbol"]) for s in out["scenarios"]] == [(0.0, None), (0.0, None)]


def test_report_total_is_the_combined_portfolio() -> None:
    closes, _last = _stress_closes()
    cfg = RiskConfig(window=40, horizon=1, benchmark="SPY", historical=())
    books = [Book("a", {"AAA": 10}, 100.0), Book("b", {"AAA": -10, "BBB": 3}, 50.0), Book("c", {"ZZZ": 1})]
    out = report(books, closes, cfg)
    assert [a["account"] for a in out["accounts"]] == ["a", "b", "c"]
    assert "no daily bars for ZZZ" in out["accounts"][2]["error"]
    assert combined(books[:2]).positions == {"BBB": 3}
    only_b = assess({"BBB": 3}, closes, cash=150, config=cfg)
    total = report(books[:2], closes, cfg)["total"]
    assert total["account"] == "total" and total["var_95"] == pytest.approx(only_b["var_95"])


def test_choose_benchmark() -> None:
    assert choose_benchmark(None, {"GOOG", "SPY"}) == ("SPY", None)
    assert choose_benchmark("", {"GOOG"}) == ("GOOG", None)
    sym, note = choose_benchmark("qqq", {"GOOG"})
    assert sym is None and "benchmark QQQ has no daily bars" in note
    assert choose_benchmark(None, set())[0] is None


def test_scenarios_file(tmp_path) -> None:
    f = tmp_path / "s.yaml"
    f.write_text("""
historical:
  - {name: covid, start: 2020-02-20, end: 2020-03-23}
hypothetical:
  - name: all down
    shocks: {all: -10%}
  - name: goog
    shocks: {goog: "-30%", all: -0.05}
""")
    hist, shocks = load_scenarios(f)
    assert hist == [COVID.__class__("covid", date(2020, 2, 20), date(2020, 3, 23))]
    assert shocks == [Shock("all down", {"all": -0.10}), Shock("goog", {"GOOG": -0.30, "all": -0.05})]
    assert load_scenarios(None) == (None, [])


@pytest.mark.parametrize(("text", "words"), [
    ("hypothetical:\n  - {name: x, shocks: {GOOG: -30 pct}}\n", ["hypothetical[0].shocks.GOOG", "-30 pct"]),
    ("hypothetical:\n  - {name: x, shocks: {all: -150%}}\n", ["hypothetical[0].shocks.all", "at least -100%"]),
    ("hypothetical:\n  - {name: x, shock: {all: -1%}}\n", ["hypothetical[0]", "name, shocks"]),
    ("historical:\n  - {name: x, start: 2020-03-01, end: 2020-02-01}\n", ["historical[0].end", "before start"]),
    ("historical:\n  - {name: x, start: March, end: 2020-02-01}\n", ["historical[0].start", "YYYY-MM-DD"]),
    ("shocks: {all: -1%}\n", ["unknown key(s) shocks"]),
    ("hypothetical: [\n", ["not valid YAML"]),
])
def test_bad_scenario_files_name_the_file_and_key(tmp_path, text, words) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text(text)
    with pytest.raises(ScenarioFileError) as exc:
        load_scenarios(f)
    assert str(f) in str(exc.value)
    for w in words:
        assert w in str(exc.value)


def test_a_missing_scenarios_file(tmp_path) -> None:
    with pytest.raises(ScenarioFileError, match="cannot read the scenarios file.*TRADING_SCENARIOS_FILE"):
        load_scenarios(tmp_path / "nope.yaml")


def test_the_shipped_example_file_loads() -> None:
    from trading_pipeline.settings import PROJECT_DIR

    hist, shocks = load_scenarios(PROJECT_DIR / "scenarios.example.yaml")
    assert hist is None or len(hist) >= 3
    assert any(s.shocks.get("all") == pytest.approx(-0.10) for s in shocks)
    assert any(s.shocks.get("GOOG") == pytest.approx(-0.30) for s in shocks)
