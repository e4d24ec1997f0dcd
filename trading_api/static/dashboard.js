// Trading dashboard: plain JS, no build step. Reads the REST API with the key in X-API-Key,
// listens on /ws for signals, alerts and order events, and draws the chart with Plotly.
// Order entry (the ticket, Modify and Cancel, the orders table) is dashboard-orders.js.
// Every value from the server is written with textContent (never innerHTML).
(function () {
  "use strict";

  var KEY_STORAGE = "trading.apiKey";
  var FEED_MAX = 200;
  var CHART_BARS = 500;
  var STATUS_EVERY_MS = 5000;
  var OPS_EVERY_MS = 15000;
  var COLORS = {
    up: "#26a69a", down: "#ef5350", text: "#d7dde5", muted: "#8593a3", grid: "#263040",
    sma_20: "#f0b429", sma_50: "#c58af9", ema_12: "#4aa3ff", ema_26: "#ff8a65", bb: "#7f8fa6",
  };

  // ---- API key: from ?api_key= once, then sessionStorage (this tab only) ----------------
  function storage(fn) {
    try { return fn(window.sessionStorage); } catch (e) { return null; }
  }
  var params = new URLSearchParams(window.location.search);
  var apiKey = params.get("api_key") || storage(function (s) { return s.getItem(KEY_STORAGE); }) || "";
  if (params.has("api_key")) {
    storage(function (s) { s.setItem(KEY_STORAGE, apiKey); });
    params.delete("api_key");
    var rest = params.toString();
    window.history.replaceState(null, "", window.location.pathname + (rest ? "?" + rest : "") + window.location.hash);
  }

  var state = {
    symbol: (params.get("symbol") || "").toUpperCase(),
    timeframe: params.get("timeframe") || "1d",
    timeframeChosen: params.has("timeframe"), // else follow the selected signal's timeframe
    markers: "top", // signal markers on the chart: top (strongest MARKERS_TOP), all, none
    rawPrices: false, // chart the bars as loaded (GET /market-data/{symbol}?prices=raw) instead of adjusted
    series: null, // symbol -> timeframes with bars (GET /market-data), null until known
    snapshotOk: null,
    sequence: null,
    headSeq: 0,
    lastSeq: 0, // newest feed seq shown; a reconnect resumes after it (no gaps, no repeats)
    lastOrderId: null, // newest order event id shown (or the head we went live from): the same for orders
    latest: new Map(), // symbol -> newest signal
    seen: new Set(), // feed keys already shown
    ws: null,
    wsRetry: 0,
    chartTimer: null,
    opsTimer: null,
    chartRendered: 0,
  };
  var orders = null; // dashboard-orders.js, set up once the key is known

  // ---- small DOM helpers ------------------------------------------------------------------
  function $(id) { return document.getElementById(id); }
  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }
  function td(text, cls) { return el("td", cls, text === null || text === undefined ? "" : text); }
  function num(v, digits) {
    if (v === null || v === undefined || v === "") return "";
    var n = Number(v);
    if (!isFinite(n)) return String(v);
    var d = digits === undefined ? 2 : digits;
    return n.toLocaleString("en-US", { minimumFractionDigits: d, maximumFractionDigits: d });
  }
  function pnlCell(v) {
    var c = td(num(v), "num");
    var n = Number(v);
    if (v !== null && v !== undefined && isFinite(n) && n !== 0) c.classList.add(n > 0 ? "pos" : "neg");
    return c;
  }
  function when(ts) {
    if (!ts) return "";
    var s = String(ts).replace("T", " ");
    return s.endsWith(" 00:00:00") ? s.slice(0, 10) : s.slice(0, 16);
  }
  function direction(sig) {
    if (sig.direction) return sig.direction;
    return /(down|short)$/.test(sig.kind || "") ? "short" : "long";
  }
  function fillBody(table, rows, emptyId) {
    var body = $(table).querySelector("tbody");
    body.replaceChildren.apply(body, rows);
    if (emptyId) $(emptyId).hidden = rows.length > 0;
  }

  // ---- banner: one line per active problem ------------------------------------------------
  var problems = new Map();
  function setProblem(key, text, isError) {
    if (text) problems.set(key, { text: text, error: !!isError });
    else problems.delete(key);
    var b = $("banner");
    var items = Array.from(problems.values());
    b.hidden = items.length === 0;
    b.classList.toggle("error", items.some(function (p) { return p.error; }));
    b.replaceChildren.apply(b, items.map(function (p) { return el("div", null, p.text); }));
  }

  // ---- REST ---------------------------------------------------------------------------------
  // Resolves to the JSON body, or null after putting the reason in the banner.
  // `key` names the banner line (default: the label), so a later success clears it.
  function api(path, label, key, opts) {
    key = key || label;
    opts = opts || {};
    return fetch(path, { headers: { "X-API-Key": apiKey, Accept: "application/json" }, cache: "no-store" })
      .then(function (r) {
        return r.json().catch(function () { return {}; }).then(function (body) {
          var detail = body && body.detail !== undefined ? body.detail : r.statusText;
          if (typeof detail !== "string") detail = JSON.stringify(detail);
          if (r.ok) {
            setProblem("api:" + key, null);
            return body;
          }
          if (r.status === 404 && opts.notFound) { // an answer, not a fault: the caller says it
            setProblem("api:" + key, null);
            opts.notFound(detail);
            return null;
          }
          if (r.status === 401) {
            setProblem("auth", "The API key was refused (" + detail + "). Create one with `trading api-key create NAME` and open /?api_key=…", true);
          } else if (r.status === 503) {
            setProblem("api:" + key, label + ": not available yet (" + detail + "); retrying.");
          } else {
            setProblem("api:" + key, label + ": " + r.status + " " + detail, true);
          }
          return null;
        });
      })
      .catch(function (err) {
        setProblem("api:" + key, label + ": cannot reach the API (" + err.message + ")", true);
        return null;
      });
  }

  // ---- snapshot status ------------------------------------------------------------------------
  function loadStatus() {
    return api("/dashboard/status", "status").then(function (body) {
      if (!body) return;
      var snap = body.snapshot;
      var pill = $("snapshot-status");
      if (!snap.ok) {
        state.snapshotOk = false;
        pill.textContent = "snapshot: none";
        pill.className = "pill warn";
        showChartMessage("Waiting for a snapshot…");
        setProblem("snapshot", "No serving snapshot has been published yet (" + (snap.reason || "unknown reason") +
          "). Run the pipeline (`trading demo`, or materialize the serving asset in Dagster); this page updates by itself.");
        return;
      }
      setProblem("snapshot", null);
      var first = state.snapshotOk !== true;
      var changed = state.sequence !== snap.sequence;
      state.snapshotOk = true;
      state.sequence = snap.sequence;
      state.headSeq = snap.feed_head_seq || 0;
      var age = snap.age_seconds === null || snap.age_seconds === undefined ? "" : " · " + ageText(snap.age_seconds);
      pill.textContent = "snapshot #" + snap.sequence + age;
      pill.className = "pill ok";
      pill.title = "Published " + when(snap.published_at) + " UTC";
      if (first || changed) {
        loadSnapshotData();
        loadOps();
      }
      if (first && !state.ws) connect();
    });
  }
  var statusTimer = null;
  function scheduleStatus() { // a pushed item means a new snapshot: refresh the header soon
    clearTimeout(statusTimer);
    statusTimer = setTimeout(loadStatus, 400);
  }
  function ageText(s) {
    if (s < 90) return Math.round(s) + "s old";
    if (s < 5400) return Math.round(s / 60) + "m old";
    if (s < 172800) return Math.round(s / 3600) + "h old";
    return Math.round(s / 86400) + "d old";
  }

  // ---- watchlist (latest signal per symbol) -------------------------------------------------
  function loadSnapshotData() {
    Promise.all([api("/signals?limit=500", "signals"), api("/market-data", "series")]).then(function (res) {
      var page = res[0];
      var list = res[1];
      if (list) {
        state.series = new Map();
        list.items.forEach(function (x) {
          if (!state.series.has(x.symbol)) state.series.set(x.symbol, []);
          state.series.get(x.symbol).push(x.timeframe); // daily first, then the longest bars
        });
      }
      if (page) {
        state.latest = new Map();
        page.items.forEach(function (s) { noteSignal(s, false); });
        renderWatchlist();
      }
      if (!state.symbol) {
        // The newest signal whose series has bars; with no such signal, the first series listed.
        var pick = null;
        state.latest.forEach(function (s) { if (!pick && hasBars(s.symbol, s.timeframe)) pick = s; });
        if (!pick && list && list.items.length) pick = list.items[0];
        if (pick) {
          state.symbol = pick.symbol;
          if (!state.timeframeChosen) setTimeframe(pick.timeframe);
          $("symbol-input").value = pick.symbol;
          renderWatchlist();
        }
      } else if (!state.timeframeChosen) {
        fitTimeframe(state.symbol, state.timeframe);
      }
      scheduleChart(0);
    });
  }
  function timeframesOf(symbol) { return state.series ? state.series.get(symbol) || [] : null; }
  function hasBars(symbol, tf) {
    var tfs = timeframesOf(symbol);
    return tfs === null ? !!tf : tfs.indexOf(tf) >= 0; // unknown listing: trust the signal
  }
  // Chart `symbol` at `want` if it has bars there, else at the first timeframe it has.
  function fitTimeframe(symbol, want) {
    var tfs = timeframesOf(symbol);
    setTimeframe(tfs && tfs.length && tfs.indexOf(want) < 0 ? tfs[0] : want);
  }
  function noteSignal(sig, render) {
    var cur = state.latest.get(sig.symbol);
    if (!cur || String(sig.ts) > String(cur.ts) || (String(sig.ts) === String(cur.ts) && (sig.score || 0) > (cur.score || 0))) {
      state.latest.set(sig.symbol, sig);
    }
    if (render) renderWatchlist();
  }
  function renderWatchlist() {
    var sigs = Array.from(state.latest.values()).sort(function (a, b) {
      return String(b.ts).localeCompare(String(a.ts)) || a.symbol.localeCompare(b.symbol);
    });
    var rows = [];
    sigs.forEach(function (s) {
      var tr = el("tr", "main-row");
      tr.dataset.symbol = s.symbol;
      tr.dataset.timeframe = s.timeframe || "";
      if (s.symbol === state.symbol) tr.classList.add("selected");
      tr.appendChild(td(s.symbol));
      var k = td("");
      k.appendChild(el("span", "kind " + direction(s), s.kind));
      tr.appendChild(k);
      tr.appendChild(td(num(s.score), "num"));
      tr.appendChild(td(when(s.session_date || s.ts)));
      var tr2 = el("tr", "reason-row");
      tr2.dataset.symbol = s.symbol;
      tr2.dataset.timeframe = s.timeframe || "";
      if (s.symbol === state.symbol) tr2.classList.add("selected");
      var r = td(s.reason || "", "reason");
      r.colSpan = 4;
      tr2.appendChild(r);
      rows.push(tr, tr2);
    });
    fillBody("watchlist", rows, "watchlist-empty");
  }
  function setTimeframe(tf) {
    if (!tf || !$("timeframe").querySelector('option[value="' + tf + '"]')) return;
    state.timeframe = tf;
    $("timeframe").value = tf;
  }
  // A watchlist row brings its signal's timeframe (until a timeframe is picked by hand), typing
  // keeps the one shown; either way, if the symbol has no bars there (GET /market-data), the
  // chart moves to a timeframe it has.
  function select(symbol, timeframe) {
    symbol = (symbol || "").trim().toUpperCase();
    if (!symbol) return;
    state.symbol = symbol;
    fitTimeframe(symbol, timeframe && !state.timeframeChosen ? timeframe : state.timeframe);
    $("symbol-input").value = symbol;
    renderWatchlist();
    scheduleChart(0);
  }

  // ---- chart ----------------------------------------------------------------------------------
  function scheduleChart(delay) {
    clearTimeout(state.chartTimer);
    state.chartTimer = setTimeout(loadChart, delay);
  }
  function loadChart() {
    var symbol = state.symbol;
    var tf = state.timeframe;
    if (symbol && orders) orders.useSymbol(symbol); // the order ticket follows the chart
    if (!symbol || state.snapshotOk !== true) {
      showChartMessage(state.snapshotOk ? "No symbol selected: pick one from the watchlist or type it above." : "Waiting for a snapshot…");
      return;
    }
    var tfs = timeframesOf(symbol);
    if (tfs && tfs.indexOf(tf) < 0) { // known not to exist: say so, without asking for a 404
      setProblem("api:chart", null);
      setProblem("api:chart-signals", null);
      $("chart-title").textContent = symbol + " · " + tf;
      $("chart-sub").textContent = "";
      showChartMessage(tfs.length ? "No " + tf + " bars for " + symbol + "; it has " + tfs.join(", ") + " bars."
                                  : "No bars for " + symbol + " in the snapshot.");
      return;
    }
    var raw = state.rawPrices;
    var q = "/market-data/" + encodeURIComponent(symbol) + "?timeframe=" + tf + "&limit=" + CHART_BARS +
      (raw ? "&prices=raw" : "");
    var sq = "/signals?symbol=" + encodeURIComponent(symbol) + "&timeframe=" + tf + "&limit=500";
    var missing = null;
    var notFound = function (detail) { missing = detail; };
    Promise.all([
      api(q, "market data " + symbol, "chart", { notFound: notFound }),
      api(sq, "signals " + symbol, "chart-signals"),
    ]).then(function (res) {
      if (symbol !== state.symbol || tf !== state.timeframe || raw !== state.rawPrices) return; // a newer selection won
      var md = res[0];
      if (!md) {
        showChartMessage(missing ? "No " + tf + " bars for " + symbol + ": pick another timeframe or symbol."
                                 : "No chart for " + symbol + " " + tf + " (see above).");
        return;
      }
      state.chartData = [md, res[1] ? res[1].items : []];
      renderChart(md, state.chartData[1]);
    });
  }
  function showChartMessage(text) {
    $("chart-empty").textContent = text;
    $("chart-empty").hidden = false;
    $("chart").hidden = true;
  }
  function series(bars, key) {
    var any = false;
    var ys = bars.map(function (b) {
      var v = b.indicators ? b.indicators[key] : undefined;
      if (v === null || v === undefined || v === "" || !isFinite(Number(v))) return null;
      any = true;
      return Number(v);
    });
    return any ? ys : null;
  }
  function missingDays(xs) {
    // Days without a bar (weekends, holidays) as rangebreaks, so daily candles sit side by side.
    var out = [];
    for (var i = 1; i < xs.length; i++) {
      var a = Date.parse(xs[i - 1].slice(0, 10) + "T00:00:00Z");
      var b = Date.parse(xs[i].slice(0, 10) + "T00:00:00Z");
      for (var t = a + 86400000; t < b && out.length < 20000; t += 86400000) out.push(new Date(t).toISOString().slice(0, 10));
    }
    return out;
  }
  // Closed hours of an intraday series (nights, weekends, holidays): every gap between two
  // bars longer than 1.5 bars becomes a rangebreak, so sessions sit side by side.
  function utcMs(ts) { return Date.parse(/(Z|[+-]\d\d:\d\d)$/.test(ts) ? ts : ts + "Z"); } // naive = UTC
  var TF_MS = { "1m": 60000, "5m": 300000, "15m": 900000, "30m": 1800000, "1h": 3600000 };
  function closedHours(xs, tf) {
    var step = TF_MS[tf];
    if (!step) return [];
    var out = [];
    for (var i = 1; i < xs.length && out.length < 5000; i++) {
      var a = utcMs(xs[i - 1]), b = utcMs(xs[i]);
      if (b - a > 1.5 * step) {
        out.push({ bounds: [new Date(a + step).toISOString().slice(0, 19), new Date(b).toISOString().slice(0, 19)] });
      }
    }
    return out;
  }
  // Which signals get a marker: the strongest MARKERS_TOP on the bars shown (default), all, or none.
  // Scores are on each scan's own scale (a breakout's ~1-3, CRP's 0-100), so "strongest" ranks a
  // signal within its scan: the best of every scan, then the second best of every scan, and so on
  // (newer first among equals).
  var MARKERS_TOP = 25;
  function shownSignals(signals, byTs) {
    if (state.markers === "none") return [];
    var onChart = signals.filter(function (s) { return byTs.has(String(s.ts)); });
    if (state.markers === "all" || onChart.length <= MARKERS_TOP) return onChart;
    var byScan = new Map();
    onChart.forEach(function (s) {
      var k = s.scan || s.kind;
      if (!byScan.has(k)) byScan.set(k, []);
      byScan.get(k).push(s);
    });
    var rank = new Map(); // signal -> its place in its scan (0 = the scan's best)
    byScan.forEach(function (list) {
      list.sort(function (a, b) { return (Number(b.score) || 0) - (Number(a.score) || 0); });
      list.forEach(function (s, i) { rank.set(s, i); });
    });
    return onChart.slice().sort(function (a, b) {
      return rank.get(a) - rank.get(b) || String(b.ts).localeCompare(String(a.ts));
    }).slice(0, MARKERS_TOP);
  }
  function side(s) { var d = direction(s); return d === "long" || d === "short" ? d : "neutral"; }
  function renderChart(md, signals) {
    var bars = md.bars;
    var x = bars.map(function (b) { return String(b.ts); });
    var traces = [];
    var line = function (key, name, color, extra) {
      var ys = series(bars, key);
      if (!ys) return;
      var t = { type: "scatter", mode: "lines", name: name, x: x, y: ys, line: { color: color, width: 1.2 }, xaxis: "x", yaxis: "y", hoverinfo: "skip" };
      Object.keys(extra || {}).forEach(function (k) { t[k] = extra[k]; });
      traces.push(t);
    };
    line("bb_upper", "BB upper", COLORS.bb, { line: { color: COLORS.bb, width: 0.8, dash: "dot" }, legendgroup: "bb", showlegend: false });
    line("bb_lower", "Bollinger 20, 2σ", COLORS.bb, { line: { color: COLORS.bb, width: 0.8, dash: "dot" }, legendgroup: "bb", fill: "tonexty", fillcolor: "rgba(127,143,166,0.08)" });
    line("bb_middle", "BB mid", COLORS.bb, { line: { color: COLORS.bb, width: 0.8 }, legendgroup: "bb", showlegend: false });
    traces.push({
      type: "candlestick", name: md.symbol, x: x, xaxis: "x", yaxis: "y",
      open: bars.map(function (b) { return b.open; }), high: bars.map(function (b) { return b.high; }),
      low: bars.map(function (b) { return b.low; }), close: bars.map(function (b) { return b.close; }),
      increasing: { line: { color: COLORS.up } }, decreasing: { line: { color: COLORS.down } },
    });
    line("sma_20", "SMA 20", COLORS.sma_20);
    line("sma_50", "SMA 50", COLORS.sma_50);
    line("ema_12", "EMA 12", COLORS.ema_12, { line: { color: COLORS.ema_12, width: 1, dash: "dash" } });
    line("ema_26", "EMA 26", COLORS.ema_26, { line: { color: COLORS.ema_26, width: 1, dash: "dash" } });

    // Signal markers at the bar they fired on: below the low for long, above the high for short,
    // at the close for the others (a narrow CPR says no direction).
    var byTs = new Map(bars.map(function (b) { return [String(b.ts), b]; }));
    var shown = shownSignals(signals, byTs);
    [["long", "triangle-up", COLORS.up], ["short", "triangle-down", COLORS.down], ["neutral", "diamond", COLORS.sma_20]].forEach(function (d) {
      var pts = shown.filter(function (s) { return side(s) === d[0]; });
      if (!pts.length) return;
      traces.push({
        type: "scatter", mode: "markers", name: "signals " + d[0], xaxis: "x", yaxis: "y",
        x: pts.map(function (s) { return String(s.ts); }),
        y: pts.map(function (s) {
          var b = byTs.get(String(s.ts));
          return d[0] === "long" ? b.low * 0.985 : d[0] === "short" ? b.high * 1.015 : b.close;
        }),
        text: pts.map(function (s) { return s.kind + " (" + num(s.score) + "): " + (s.reason || ""); }),
        hoverinfo: "text+x",
        marker: { symbol: d[1], size: d[0] === "neutral" ? 8 : 11, color: d[2], line: { color: "#0f1419", width: 1 } },
      });
    });

    traces.push({
      type: "bar", name: "Volume", x: x, y: bars.map(function (b) { return b.volume; }), xaxis: "x", yaxis: "y2", showlegend: false,
      marker: { color: bars.map(function (b) { return b.close >= b.open ? "rgba(38,166,154,0.5)" : "rgba(239,83,80,0.5)"; }) },
    });
    var rsi = series(bars, "rsi_14");
    if (rsi) traces.push({ type: "scatter", mode: "lines", name: "RSI 14", x: x, y: rsi, xaxis: "x", yaxis: "y3", line: { color: "#4aa3ff", width: 1.2 }, showlegend: false });
    var hist = series(bars, "macd_hist");
    if (hist) traces.push({ type: "bar", name: "MACD hist", x: x, y: hist, xaxis: "x", yaxis: "y4", showlegend: false,
      marker: { color: hist.map(function (v) { return v !== null && v < 0 ? "rgba(239,83,80,0.6)" : "rgba(38,166,154,0.6)"; }) } });
    var macd = series(bars, "macd");
    if (macd) traces.push({ type: "scatter", mode: "lines", name: "MACD", x: x, y: macd, xaxis: "x", yaxis: "y4", line: { color: "#4aa3ff", width: 1.2 }, showlegend: false });
    var sig = series(bars, "macd_signal");
    if (sig) traces.push({ type: "scatter", mode: "lines", name: "MACD signal", x: x, y: sig, xaxis: "x", yaxis: "y4", line: { color: "#ff8a65", width: 1.2 }, showlegend: false });

    var axis = function (domain, title, extra) {
      var a = { domain: domain, gridcolor: COLORS.grid, zerolinecolor: COLORS.grid, title: { text: title, font: { size: 10 } }, fixedrange: false, side: "right" };
      Object.keys(extra || {}).forEach(function (k) { a[k] = extra[k]; });
      return a;
    };
    var layout = {
      paper_bgcolor: "#161c24", plot_bgcolor: "#161c24", font: { color: COLORS.text, size: 11 },
      margin: { l: 10, r: 56, t: 8, b: 28 }, hovermode: "x unified", dragmode: "pan",
      legend: { orientation: "h", x: 0, y: 1.0, yanchor: "bottom", bgcolor: "rgba(0,0,0,0)", font: { size: 10 } },
      xaxis: { anchor: "y4", rangeslider: { visible: false }, gridcolor: COLORS.grid, type: "date" },
      yaxis: axis([0.44, 1], "Price"),
      yaxis2: axis([0.32, 0.42], "Vol", { showgrid: false }),
      yaxis3: axis([0.17, 0.30], "RSI", { range: [0, 100], tickvals: [30, 50, 70] }),
      yaxis4: axis([0, 0.15], "MACD"),
      shapes: [30, 70].map(function (v) {
        return { type: "line", xref: "paper", x0: 0, x1: 1, yref: "y3", y0: v, y1: v, line: { color: COLORS.muted, width: 1, dash: "dot" } };
      }),
      showlegend: true,
      uirevision: md.symbol + "|" + md.timeframe, // keep zoom across live refreshes of the same chart
    };
    layout.xaxis.rangebreaks = md.timeframe === "1d" ? [{ values: missingDays(x) }] : closedHours(x, md.timeframe);
    $("chart-empty").hidden = true;
    $("chart").hidden = false;
    $("chart-title").textContent = md.symbol + " · " + md.timeframe;
    var marked = shown.length;
    var basis = md.adjustment === "none" ? "raw prices" : md.adjustment ? md.adjustment + "-adjusted" : "";
    $("chart-sub").textContent = bars.length + " bars to " + when(x[x.length - 1]) + (basis ? " · " + basis : "") +
      (signals.length ? " · " + signals.length + " signals" + (marked < signals.length ? ", " + marked + " marked" : "") : "");
    window.Plotly.react("chart", traces, layout, {
      responsive: true, displaylogo: false, scrollZoom: true,
      modeBarButtonsToRemove: ["select2d", "lasso2d", "autoScale2d", "toImage"],
    }).then(function () { state.chartRendered += 1; });
  }

  // ---- portfolio, positions, orders, risk ------------------------------------------------------
  function scheduleOps(delay) {
    clearTimeout(state.opsTimer);
    state.opsTimer = setTimeout(loadOps, delay);
  }
  function loadOps() {
    clearTimeout(state.opsTimer);
    state.opsTimer = setTimeout(loadOps, OPS_EVERY_MS);
    api("/orders?limit=50", "orders").then(function (body) { if (body && orders) orders.render(body.items); });
    // The kill switch matters most when things are wrong: always ask (a 503 is shown).
    api("/risk?events=10", "risk").then(function (body) { if (body) renderRisk(body); });
    if (state.snapshotOk !== true) return; // valuing positions needs the snapshot's closes
    api("/portfolio", "portfolio").then(function (body) { if (body) renderPortfolio(body.accounts, body.total); });
    api("/positions", "positions").then(function (body) { if (body) renderPositions(body.items); });
    api("/risk/assessment", "risk-assessment").then(function (body) { if (body) renderAssessment(body); });
  }
  function renderPortfolio(accounts, total) {
    var rows = accounts.map(function (a) {
      var tr = el("tr");
      [td(a.account), td(num(a.equity), "num"), td(num(a.cash), "num"), pnlCell(a.realized_pnl), pnlCell(a.unrealized_pnl), td(num(a.gross_exposure), "num")]
        .forEach(function (c) { tr.appendChild(c); });
      return tr;
    });
    if (total && accounts.length > 1) { // several accounts: their sum as the last row
      var tr = el("tr", "total");
      [td("Total (" + total.accounts + ")"), td(num(total.equity), "num"), td(num(total.cash), "num"), pnlCell(total.realized_pnl),
        pnlCell(total.unrealized_pnl), td(num(total.gross_exposure), "num")].forEach(function (c) { tr.appendChild(c); });
      rows.push(tr);
    }
    fillBody("portfolio", rows);
  }
  // The ticket's account field suggests the accounts GET /accounts lists (the accounts file's,
  // or the one default account) and starts on the default one until the user types another.
  function loadAccounts() {
    api("/accounts", "accounts").then(function (body) {
      if (!body) return;
      var list = $("order-accounts");
      if (list) {
        list.replaceChildren.apply(list, body.accounts.filter(function (a) { return a.broker; }).map(function (a) {
          var o = el("option");
          o.value = a.name;
          o.label = a.name + " · " + a.broker + (a.description ? " · " + a.description : "");
          return o;
        }));
      }
      var input = $("order-account");
      if (input && !input.dataset.typed) input.value = body["default"];
    });
  }
  // VaR / ES (1-day and N-day) and the stress scenarios of the total portfolio; an account
  // without enough history says why instead of showing numbers.
  function renderAssessment(body) {
    var t = body.total;
    var summary = $("pr-summary");
    if (t.error) {
      summary.textContent = t.error;
      fillBody("pr-var", []);
      fillBody("pr-scenarios", []);
      return;
    }
    summary.textContent = "as of " + t.as_of + " · " + t.sessions + " daily returns · benchmark " + (t.benchmark || "none") +
      (t.beta === null || t.beta === undefined ? "" : " · beta " + Number(t.beta).toFixed(2));
    var rows = [["1 day", t], [t.horizon_days + " days (×√" + t.horizon_days + ")", t.horizon || {}]].map(function (r) {
      var tr = el("tr");
      tr.appendChild(td(r[0]));
      ["var_95", "es_95", "var_99", "es_99"].forEach(function (k) { tr.appendChild(td(num(r[1][k]), "num")); });
      return tr;
    });
    fillBody("pr-var", rows);
    fillBody("pr-scenarios", (t.scenarios || []).map(function (s) {
      var tr = el("tr");
      tr.dataset.scenario = s.name;
      [td(s.name), s.pnl === null ? td("no data", "num") : pnlCell(s.pnl),
        td(s.pnl_pct === null ? "" : Number(s.pnl_pct).toFixed(2) + "%", "num"), td(s.worst_symbol || "")]
        .forEach(function (c) { tr.appendChild(c); });
      return tr;
    }));
  }
  function renderPositions(items) {
    fillBody("positions", items.map(function (p) {
      var tr = el("tr");
      tr.dataset.symbol = p.symbol;
      [td(p.account), td(p.symbol), td(num(p.quantity, 0), "num"), td(num(p.avg_price), "num"), td(num(p.last_price), "num"),
        td(num(p.market_value), "num"), pnlCell(p.unrealized_pnl), pnlCell(p.realized_pnl)].forEach(function (c) { tr.appendChild(c); });
      return tr;
    }), "positions-empty");
  }
  function renderRisk(r) {
    var ks = r.kill_switch || {};
    var box = $("risk-kill");
    box.className = "kill " + (ks.active ? "active" : "inactive");
    box.textContent = ks.active
      ? "Kill switch ON" + (ks.reason ? ": " + ks.reason : "") + (ks.updated_by ? " (by " + ks.updated_by + ")" : "") + ": no new orders"
      : "Kill switch off: orders allowed (subject to the risk rules)";
    var pill = $("kill-switch");
    pill.textContent = "kill switch: " + (ks.active ? "ON" : "off");
    pill.className = "pill " + (ks.active ? "bad" : "ok");
    fillBody("risk-usage", r.usage.map(function (u) {
      var tr = el("tr");
      [td(u.account), td(num(u.equity), "num"), td(u.open_orders, "num"), td(u.orders_last_minute, "num"), pnlCell(u.daily_pnl),
        td(num(u.gross_exposure), "num"), td(num(u.max_concentration_pct, 1), "num")].forEach(function (c) { tr.appendChild(c); });
      return tr;
    }));
    fillBody("risk-limits", Object.keys(r.limits).sort().map(function (k) {
      var tr = el("tr");
      tr.appendChild(td(k));
      tr.appendChild(td(String(r.limits[k]), "num"));
      return tr;
    }));
    fillBody("risk-events", r.recent_events.map(function (e) {
      var tr = el("tr");
      [td(when(e.ts)), td(e.symbol || ""), td(e.rule), td(e.reason, "reason")].forEach(function (c) { tr.appendChild(c); });
      return tr;
    }), "risk-events-empty");
  }

  // ---- live feed over the WebSocket -------------------------------------------------------------
  function connect() {
    var proto = window.location.protocol === "https:" ? "wss://" : "ws://";
    var ws = new WebSocket(proto + window.location.host + "/ws?api_key=" + encodeURIComponent(apiKey));
    state.ws = ws;
    var pill = $("ws-status");
    ws.onopen = function () {
      state.wsRetry = 0;
      // Resume after the last item shown; on page load replay the recent window.
      var since = state.lastSeq > 0 ? state.lastSeq : Math.max(0, state.headSeq - 100);
      var sub = { action: "subscribe", channels: ["signals", "alerts", "orders"], since: since };
      // Order events: live on page load (the table comes from REST), after a drop resume after the last one.
      if (state.lastOrderId !== null) sub.orders_since = state.lastOrderId;
      ws.send(JSON.stringify(sub));
    };
    ws.onmessage = function (ev) {
      var m;
      try { m = JSON.parse(ev.data); } catch (e) { return; }
      if (m.type === "subscribed" || m.type === "heartbeat") {
        if ((m.head_seq || 0) < state.lastSeq) remember(0, true); // a different (reset) feed
        if (m.type === "subscribed" && m.orders_since !== undefined && m.orders_since !== null) state.lastOrderId = m.orders_since;
        pill.textContent = "live · seq " + (m.head_seq || 0);
        pill.className = "pill ok";
        setProblem("ws", null);
      } else if (m.type === "item") {
        onItem(m);
      } else if (m.type === "order") {
        onOrder(m);
      } else if (m.type === "gap" && m.channel === "orders") {
        // Our last order event id is not in the server's log (the ops store was reset): reload.
        state.lastOrderId = m.orders_head;
        loadOps();
      } else if (m.type === "gap") {
        // Items between our last seq and the oldest retained one are gone: reload from REST.
        loadSnapshotData();
      } else if (m.type === "error") {
        setProblem("ws", "Live feed: " + m.detail, true);
      }
    };
    ws.onclose = function (ev) {
      state.ws = null;
      pill.className = "pill bad";
      if (ev.code === 4401) {
        pill.textContent = "live: unauthorized";
        setProblem("auth", "The live feed refused the API key (" + (ev.reason || "unauthorized") + "). Open /?api_key=… with an active key.", true);
        return;
      }
      var wait = Math.min(10000, 500 * Math.pow(2, state.wsRetry++));
      pill.textContent = "live: reconnecting in " + Math.round(wait / 1000) + "s";
      setTimeout(connect, wait);
    };
  }
  function remember(seq, reset) {
    if (seq > state.lastSeq || reset) state.lastSeq = seq;
  }
  function onItem(m) {
    remember(m.seq);
    $("ws-status").textContent = "live · seq " + m.seq;
    scheduleStatus();
    var d = m.data || {};
    if (d.ts) d.ts = String(d.ts).replace(" ", "T"); // DuckDB's JSON writes a space, REST a T
    var key = m.channel + "|" + m.key;
    if (state.seen.has(key)) return;
    state.seen.add(key);
    var title = d.title || [d.symbol, d.kind, d.score !== undefined && d.score !== null ? num(d.score) : ""].join(" ").trim();
    addFeed(m.channel, m.seq, title, d.reason || "", d.ts || m.published_at, d.symbol);
    if (m.channel === "signals" && d.symbol) {
      noteSignal(d, true);
      if (d.symbol === state.symbol) scheduleChart(300);
    }
  }
  function onOrder(m) {
    if (state.lastOrderId === null || m.event_id > state.lastOrderId) state.lastOrderId = m.event_id;
    var o = (m.data && m.data.order) || {};
    var e = (m.data && m.data.event) || {};
    var title = [o.symbol, o.side, num(o.quantity, 0), "→", e.to_status || o.status].join(" ");
    addFeed("orders", "e" + m.event_id, title, e.reason || o.reason || "", e.ts, o.symbol);
    scheduleOps(300);
  }
  function addFeed(channel, seq, title, reason, ts, symbol) {
    var li = el("li", "fresh");
    li.dataset.seq = String(seq);
    li.dataset.channel = channel;
    var meta = el("div", "meta");
    meta.appendChild(el("span", "seq", "#" + seq));
    meta.appendChild(el("span", "chan " + channel, channel));
    meta.appendChild(el("span", null, when(ts)));
    li.appendChild(meta);
    var t = el("div", "title", title);
    if (symbol) t.addEventListener("click", function () { select(symbol); });
    li.appendChild(t);
    if (reason) li.appendChild(el("div", "reason", reason));
    var feed = $("feed");
    feed.insertBefore(li, feed.firstChild);
    while (feed.children.length > FEED_MAX) feed.removeChild(feed.lastChild);
    $("feed-empty").hidden = true;
  }

  // ---- wiring -----------------------------------------------------------------------------------
  $("watchlist").addEventListener("click", function (ev) {
    var tr = ev.target.closest("tr[data-symbol]");
    if (tr) select(tr.dataset.symbol, tr.dataset.timeframe);
  });
  $("positions").addEventListener("click", function (ev) {
    var tr = ev.target.closest("tr[data-symbol]");
    if (tr) select(tr.dataset.symbol);
  });
  $("symbol-form").addEventListener("submit", function (ev) {
    ev.preventDefault();
    select($("symbol-input").value);
  });
  $("timeframe").value = state.timeframe;
  $("timeframe").addEventListener("change", function () {
    state.timeframe = $("timeframe").value;
    state.timeframeChosen = true;
    scheduleChart(0);
  });
  $("raw-prices").checked = state.rawPrices;
  $("raw-prices").addEventListener("change", function () {
    state.rawPrices = $("raw-prices").checked;
    scheduleChart(0);
  });
  $("markers").value = state.markers;
  $("markers").addEventListener("change", function () {
    state.markers = $("markers").value;
    if (state.chartData) renderChart(state.chartData[0], state.chartData[1]);
  });
  if (state.symbol) $("symbol-input").value = state.symbol;

  if (!window.Plotly) {
    setProblem("plotly", "Plotly did not load (/static/plotly.min.js); charts are unavailable.", true);
  }
  if (!apiKey) {
    setProblem("auth", "No API key in this tab: open /?api_key=… (create one with `trading api-key create NAME`).", true);
    return;
  }
  if (window.tradingOrders) {
    orders = window.tradingOrders.setup({
      apiKey: apiKey, $: $, el: el, td: td, num: num, when: when, setProblem: setProblem, reload: loadOps,
    });
  } else {
    setProblem("orders-js", "The order ticket did not load (/static/dashboard-orders.js).", true);
  }
  if (window.tradingRebalance) {
    window.tradingRebalance.setup({ apiKey: apiKey, $: $, el: el, td: td, num: num });
  } else {
    setProblem("rebalance-js", "The rebalance panel did not load (/static/dashboard-rebalance.js).", true);
  }
  window.tradingDashboard = { state: state, select: select, reload: function () { loadSnapshotData(); loadOps(); } };
  var accountInput = $("order-account");
  if (accountInput) accountInput.addEventListener("input", function () { accountInput.dataset.typed = "1"; });
  loadAccounts();
  loadStatus().then(function () {
    if (state.snapshotOk !== true) loadOps(); // orders and risk need no snapshot
    if (!state.ws) connect();
  });
  setInterval(loadStatus, STATUS_EVERY_MS);
})();
