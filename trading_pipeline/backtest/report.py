"""A backtest as one self-contained HTML file: inline SVG charts, inline CSS, no scripts.

Nothing is fetched (no CDN, fonts or images), so the file opens offline and can be mailed
or attached to a ticket as is.
"""

from __future__ import annotations

from html import escape
from pathlib import Path
from typing import Any

import polars as pl

from trading_pipeline.backtest.model import BacktestResult

MAX_TRADE_ROWS = 500
CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#1f2933;background:#fff}
h1{font-size:22px;margin:0 0 4px} h2{font-size:16px;margin:24px 0 8px} .sub{color:#616e7c;font-size:13px}
table{border-collapse:collapse;font-size:12px} th,td{padding:4px 8px;border-bottom:1px solid #e4e7eb;text-align:right}
th{background:#f5f7fa;position:sticky;top:0} td.l,th.l{text-align:left}
.pos{color:#0b7a3e} .neg{color:#c62828} .grid{display:flex;gap:32px;flex-wrap:wrap}
.metrics td:first-child{text-align:left;color:#52606d} svg{background:#fbfcfd;border:1px solid #e4e7eb}
"""
METRIC_LABELS = [
    ("total_return", "Total return", "pct"), ("annual_return", "Annual return", "pct"),
    ("volatility", "Volatility (ann.)", "pct"), ("sharpe", "Sharpe", "num"), ("sortino", "Sortino", "num"),
    ("max_drawdown", "Max drawdown", "pct"), ("trades", "Closed trades", "int"), ("open_trades", "Open at end", "int"),
    ("win_rate", "Win rate", "pct"), ("profit_factor", "Profit factor", "num"), ("net_pnl", "Net P&L", "money"),
    ("commission", "Commission", "money"), ("exposure", "Time in market", "pct"),
    ("avg_gross_exposure_pct", "Avg gross exposure % of equity", "num"), ("final_equity", "Final equity", "money"),
    ("sessions", "Sessions", "int"), ("rejected_orders", "Orders rejected by risk", "int"),
    ("unfilled_orders", "Orders unfilled at end", "int"),
]


def _fmt(value: Any, kind: str) -> str:
    if value is None:
        return "n/a"
    if kind == "pct":
        return f"{value * 100:,.2f}%"
    if kind == "int":
        return f"{int(value):,}"
    if kind == "money":
        return f"{value:,.2f}"
    return f"{value:,.3f}"


def _polyline(xs: list[float], ys: list[float], x0: float, y0: float, w: float, h: float,
              lo: float, hi: float) -> str:
    n = len(ys)
    span = (hi - lo) or 1.0
    pts = []
    for i, y in enumerate(ys):
        px = x0 + (w * i / (n - 1) if n > 1 else w / 2)
        py = y0 + h - (y - lo) / span * h
        pts.append(f"{px:.1f},{py:.1f}")
    return " ".join(pts)


def equity_svg(equity: pl.DataFrame, width: int = 900) -> str:
    """Equity curve above, drawdown below, as one inline SVG."""
    if equity.is_empty():
        return "<p class='sub'>No sessions in range.</p>"
    eq = equity["equity"].to_list()
    dd = [x * 100 for x in equity["drawdown"].to_list()]
    dates = equity["session_date"].to_list()
    left, top, w, h1, h2, gap = 70, 10, width - 90, 220, 110, 30
    lo, hi = min(eq), max(eq)
    dlo = min(min(dd), -0.01)
    # inline SVG in HTML needs no xmlns (and so no http reference at all)
    parts = [f"<svg width='{width}' height='{top + h1 + gap + h2 + 30}' role='img' aria-label='equity and drawdown'>"]
    for frac in (0, 0.5, 1):
        y = top + h1 - frac * h1
        val = lo + frac * (hi - lo)
        parts.append(f"<line x1='{left}' x2='{left + w}' y1='{y:.1f}' y2='{y:.1f}' stroke='#e4e7eb'/>"
                     f"<text x='{left - 6}' y='{y + 4:.1f}' font-size='11' text-anchor='end' fill='#52606d'>{val:,.0f}</text>")
    parts.append(f"<polyline fill='none' stroke='#2563eb' stroke-width='1.5' points='{_polyline([], eq, left, top, w, h1, lo, hi)}'/>")
    y0 = top + h1 + gap
    zero = _polyline([], [0.0], left, y0, w, h2, dlo, 0.0).split(",")[1]
    area = _polyline([], dd, left, y0, w, h2, dlo, 0.0)
    parts.append(f"<polygon fill='#fecaca' stroke='#c62828' stroke-width='1' points='{left},{zero} {area} {left + w},{zero}'/>")
    parts.append(f"<text x='{left - 6}' y='{y0 + 4}' font-size='11' text-anchor='end' fill='#52606d'>0%</text>"
                 f"<text x='{left - 6}' y='{y0 + h2}' font-size='11' text-anchor='end' fill='#52606d'>{dlo:.1f}%</text>")
    parts.append(f"<text x='{left}' y='{y0 + h2 + 20}' font-size='11' fill='#52606d'>{dates[0]}</text>"
                 f"<text x='{left + w}' y='{y0 + h2 + 20}' font-size='11' text-anchor='end' fill='#52606d'>{dates[-1]}</text>"
                 f"<text x='{left + 4}' y='{top + 12}' font-size='11' fill='#2563eb'>equity</text>"
                 f"<text x='{left + 4}' y='{y0 + 12}' font-size='11' fill='#c62828'>drawdown</text>")
    parts.append("</svg>")
    return "".join(parts)


def _table(df: pl.DataFrame, max_rows: int | None = None) -> str:
    if df.is_empty():
        return "<p class='sub'>No trades.</p>"
    shown = df.head(max_rows) if max_rows else df
    head = "".join(f"<th class='{'' if df[c].dtype.is_numeric() else 'l'}'>{escape(c)}</th>" for c in df.columns)
    rows = []
    for row in shown.iter_rows(named=True):
        cells = []
        for c, v in row.items():
            if isinstance(v, float):
                cls = " class='pos'" if c == "pnl" and v > 0 else " class='neg'" if c == "pnl" and v < 0 else ""
                cells.append(f"<td{cls}>{v:,.4f}".rstrip("0").rstrip(".") + "</td>")
            elif isinstance(v, int) and not isinstance(v, bool):
                cells.append(f"<td>{v:,}</td>")
            else:
                cells.append(f"<td class='l'>{'' if v is None else escape(str(v))}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    more = f"<p class='sub'>{max_rows} of {df.height} rows shown.</p>" if max_rows and df.height > max_rows else ""
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>{more}"


def render_html(result: BacktestResult, title: str | None = None) -> str:
    cfg = result.config
    m = result.metrics
    title = title or f"Backtest: {cfg.strategy}"
    metrics_rows = "".join(f"<tr><td>{escape(label)}</td><td>{_fmt(m.get(key), kind)}</td></tr>"
                           for key, label, kind in METRIC_LABELS if key in m)
    params = (f"strategy {escape(cfg.strategy)} · {escape(str(m.get('start')))} to {escape(str(m.get('end')))} · "
              f"hold {cfg.hold} · cash {cfg.initial_cash:,} · slippage {cfg.slippage_bps} bps · "
              f"commission {cfg.commission_per_share}/share (min {cfg.commission_min}) · sizing {cfg.sizing.method} · "
              f"shorts {'on' if cfg.allow_short else 'off'} · run {escape(result.run_id)}")
    trades = result.trades.drop("entry_ts", "exit_ts", strict=False)
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>{escape(title)}</title><style>{CSS}</style></head><body>"
        f"<h1>{escape(title)}</h1><div class='sub'>{params}</div>"
        "<p class='sub'>Signals replayed from marts.signals; orders sized and risk-checked like live orders, "
        "filled at the next session's open with the paper broker's slippage and commission.</p>"
        f"<h2>Equity and drawdown</h2>{equity_svg(result.equity)}"
        f"<div class='grid'><div><h2>Metrics</h2><table class='metrics'>{metrics_rows}</table></div>"
        f"<div><h2>By symbol</h2>{_table(result.by_symbol, 100)}</div></div>"
        f"<h2>Trades</h2>{_table(trades, MAX_TRADE_ROWS)}"
        "</body></html>\n"
    )


def write_report(result: BacktestResult, path: Path | str, title: str | None = None) -> Path:
    """Write the report atomically (a temp file renamed into place); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(render_html(result, title), encoding="utf-8")
    tmp.replace(path)
    return path
