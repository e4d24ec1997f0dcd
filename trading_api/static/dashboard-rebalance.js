// The rebalance preview panel: POST /rebalance/preview with the targets typed as
// "symbol,weight" lines; shows the planned orders (sells first), what was skipped and why, or the
// API's error. Nothing is sent to a broker from here: `trading rebalance` (or the `rebalance`
// job) places the orders. Loaded before dashboard.js, which calls setup().
(function () {
  "use strict";

  function parseTargets(text) {
    var targets = [], problems = [];
    text.split(/\r?\n/).forEach(function (line, i) {
      var t = line.trim();
      if (!t || t.charAt(0) === "#" || /^symbol\s*,/i.test(t)) return;
      var parts = t.split(",");
      if (parts.length !== 2 || !parts[0].trim() || !parts[1].trim()) {
        problems.push("line " + (i + 1) + ": expected symbol,weight");
        return;
      }
      targets.push({ symbol: parts[0].trim().toUpperCase(), weight: parts[1].trim() });
    });
    return { targets: targets, problems: problems };
  }

  function setup(ctx) {
    var $ = ctx.$, el = ctx.el, td = ctx.td, num = ctx.num;
    var form = $("rb-form"), box = $("rb-result"), table = $("rb-orders");
    if (!form) return null;

    function say(kind, lines) {
      box.className = "result " + kind;
      box.replaceChildren.apply(box, lines.map(function (l) { return el("div", null, l); }));
      box.hidden = false;
    }

    function render(plan) {
      var body = table.querySelector("tbody");
      body.replaceChildren.apply(body, plan.orders.map(function (o) {
        var tr = el("tr");
        tr.dataset.symbol = o.symbol;
        var side = td(o.side, o.side === "buy" ? "pos" : "neg");
        [td(o.symbol), side, td(num(o.quantity, 0), "num"), td(num(o.price), "num"), td(num(o.value), "num"),
          td((Number(o.current_weight) * 100).toFixed(2) + "%", "num"), td((Number(o.target_weight) * 100).toFixed(2) + "%", "num")]
          .forEach(function (c) { tr.appendChild(c); });
        return tr;
      }));
      table.hidden = plan.orders.length === 0;
      var lines = [plan.orders.length + " order(s) for " + plan.account + " at the " + plan.session + " closes; equity " +
        num(plan.equity) + ", cash " + num(plan.cash) + " → " + num(plan.cash_after) + ". Nothing was sent."];
      plan.skipped.forEach(function (s) { lines.push("skipped " + s.symbol + ": " + s.reason); });
      (plan.notes || []).forEach(function (n) { lines.push(n); });
      say("ok", lines);
    }

    form.addEventListener("submit", function (ev) {
      ev.preventDefault();
      var parsed = parseTargets($("rb-targets").value);
      if (parsed.problems.length || !parsed.targets.length) {
        table.hidden = true;
        say("error", parsed.problems.length ? parsed.problems : ["type at least one symbol,weight line"]);
        return;
      }
      var body = { targets: parsed.targets, min_trade: $("rb-min-trade").value.trim() || "0",
                   drift_band: $("rb-drift").value.trim() || "0" };
      var account = $("rb-account").value.trim();
      if (account) body.account = account;
      fetch("/rebalance/preview", {
        method: "POST", cache: "no-store", body: JSON.stringify(body),
        headers: { "X-API-Key": ctx.apiKey, "Content-Type": "application/json", Accept: "application/json" },
      }).then(function (r) {
        return r.json().catch(function () { return { detail: r.statusText }; }).then(function (b) {
          if (r.ok) { render(b); return; }
          table.hidden = true;
          var d = b && b.detail;
          var lines = ["Preview refused: HTTP " + r.status];
          if (Array.isArray(d)) d.forEach(function (e) { lines.push((e.loc || []).filter(function (p) { return p !== "body"; }).join(".") + ": " + e.msg); });
          else lines.push(typeof d === "string" ? d : JSON.stringify(d));
          say("error", lines);
        });
      }).catch(function (err) { table.hidden = true; say("error", ["cannot reach the API (" + err.message + ")"]); });
    });
    return { parseTargets: parseTargets };
  }

  window.tradingRebalance = { setup: setup, parseTargets: parseTargets };
})();
