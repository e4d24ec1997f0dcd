// Order entry for the dashboard: the order ticket, the confirmation dialog, and Modify/Cancel
// on working orders in the orders table. It writes through the same API and key as the page
// reads: POST /orders, PATCH and DELETE /orders/{client_order_id}, with X-API-Key. Nothing is
// sent before the confirmation dialog's "Send"; a refusal is shown with its HTTP status, and a
// risk denial with the rule that denied it. Prices and quantities are sent as the decimal
// strings typed (no float rounding). Loaded before dashboard.js, which calls setup().
// Every value from the server is written with textContent (never innerHTML).
(function () {
  "use strict";

  var WORKING = ["new", "accepted", "partially_filled"];
  var TYPE_LABEL = { market: "market", limit: "limit", stop: "stop", stop_limit: "stop limit", trailing_stop: "trailing stop" };
  var TIF_LABEL = { day: "Day", gtc: "GTC", ioc: "IOC", opg: "OPG (at the open)" };
  var ONLY_MARKET_LIMIT_TIF = ["ioc", "opg"]; // not for stop, stop limit, trailing stop
  var TERM_LABEL = {
    quantity: "Quantity", limit_price: "Limit price", stop_price: "Stop price",
    trail_percent: "Trail (%)", trail_amount: "Trail (amount)",
  };
  var COLUMNS = 11; // of the orders table

  function isWorking(o) { return WORKING.indexOf(o.status) >= 0 && !o.cancel_requested; }
  function blank(v) { return v === null || v === undefined || v === ""; }
  function cap(s) { return s ? s.charAt(0).toUpperCase() + s.slice(1) : s; }

  // An id the API accepts as Idempotency-Key: a retry of the same confirmed order finds it.
  function newIdempotencyKey() {
    var bytes = new Uint8Array(16);
    window.crypto.getRandomValues(bytes);
    return "dash-" + Array.from(bytes, function (b) { return ("0" + b.toString(16)).slice(-2); }).join("");
  }

  // "limit 790.00", "stop 750 · limit 749", "trail 2%": an order's price terms.
  function priceText(o) {
    var parts = [];
    if (!blank(o.stop_price)) parts.push("stop " + o.stop_price);
    if (!blank(o.limit_price)) parts.push("limit " + o.limit_price);
    if (!blank(o.trail_percent)) parts.push("trail " + o.trail_percent + "%");
    if (!blank(o.trail_amount)) parts.push("trail " + o.trail_amount);
    return parts.join(" · ");
  }
  function exitRole(o) {
    var id = o.client_order_id || "";
    if (/-tp$/.test(id)) return "take-profit";
    if (/-sl$/.test(id)) return "stop-loss";
    return "exit";
  }
  function describe(o) { // "Buy 2 GOOG limit 790.00"
    return [cap(o.side), o.quantity, o.symbol, TYPE_LABEL[o.order_type] || o.order_type].join(" ") +
      (priceText(o) ? " (" + priceText(o) + ")" : "");
  }

  function setup(ctx) {
    var $ = ctx.$;
    var el = ctx.el;
    var td = ctx.td;
    var num = ctx.num;
    var editing = null; // {coid, order, row, inputs}: the open inline Modify form
    var autoSymbol = ""; // the ticket's symbol as last filled from the chart (typing wins)

    // ---- write requests -----------------------------------------------------------------
    // Resolves to {ok, status, body}; a network failure is status 0 with a detail.
    function send(method, path, body, extraHeaders) {
      var headers = { "X-API-Key": ctx.apiKey, Accept: "application/json" };
      if (body !== undefined) headers["Content-Type"] = "application/json";
      Object.keys(extraHeaders || {}).forEach(function (k) { headers[k] = extraHeaders[k]; });
      return fetch(path, {
        method: method, headers: headers, cache: "no-store",
        body: body === undefined ? undefined : JSON.stringify(body),
      }).then(function (r) {
        return r.json().catch(function () { return { detail: r.statusText }; }).then(function (b) {
          if (r.status === 401) {
            ctx.setProblem("auth", "The API key was refused (" + (b && b.detail) + "). Create one with `trading api-key create NAME` and open /?api_key=…", true);
          }
          return { ok: r.ok, status: r.status, statusText: r.statusText, body: b || {} };
        });
      }).catch(function (err) {
        return { ok: false, status: 0, statusText: "", body: { detail: "cannot reach the API (" + err.message + ")" } };
      });
    }

    // ---- result / error boxes ---------------------------------------------------------------
    function show(box, kind, nodes) {
      box.className = "result " + kind;
      box.replaceChildren.apply(box, nodes);
      box.hidden = false;
    }
    // An API refusal: the HTTP status, the message, and for a risk denial the rule by name.
    function showError(box, what, res) {
      var d = res.body ? res.body.detail : undefined;
      var head = el("div", "headline");
      head.appendChild(el("strong", null, what + ": "));
      head.appendChild(el("span", "http-status", res.status ? "HTTP " + res.status + (res.statusText ? " " + res.statusText : "") : "no answer"));
      var nodes = [head];
      if (d && typeof d === "object" && !Array.isArray(d) && d.rule) {
        var line = el("div", "rule-line");
        line.appendChild(document.createTextNode(d.rule === "broker" ? "Rejected by the broker" : "Denied by risk rule "));
        if (d.rule !== "broker") {
          var rule = el("code", "rule", d.rule);
          rule.dataset.rule = d.rule;
          line.appendChild(rule);
        }
        nodes.push(line);
        nodes.push(el("div", "message", d.reason));
        if (d.client_order_id) nodes.push(el("div", "meta", "Recorded as " + d.client_order_id + " (not sent to the market)."));
        box.dataset.rule = d.rule;
      } else if (Array.isArray(d)) { // field errors: "limit_price: Input should be greater than 0"
        var ul = el("ul", "message");
        d.forEach(function (e) {
          var loc = (e.loc || []).filter(function (p) { return p !== "body"; }).join(".");
          ul.appendChild(el("li", null, (loc ? loc + ": " : "") + e.msg));
        });
        nodes.push(ul);
        delete box.dataset.rule;
      } else {
        nodes.push(el("div", "message", typeof d === "string" ? d : JSON.stringify(d)));
        delete box.dataset.rule;
      }
      box.dataset.httpStatus = String(res.status);
      show(box, "error", nodes);
    }
    function showInfo(box, text) {
      delete box.dataset.rule;
      delete box.dataset.httpStatus;
      show(box, "info", [el("div", "message", text)]);
    }
    function statusBadge(s) { return el("span", "status " + s, s); }

    // ---- the confirmation dialog (a <dialog>, not window.confirm) -------------------------
    // rows: [[label, value], ...]; resolves true only on the send button.
    function confirmAction(opts) {
      var dlg = $("confirm");
      $("confirm-title").textContent = opts.title;
      var dl = $("confirm-summary");
      dl.replaceChildren();
      opts.rows.forEach(function (r) {
        dl.appendChild(el("dt", null, r[0]));
        dl.appendChild(el("dd", null, r[1]));
      });
      $("confirm-note").textContent = opts.note || "";
      $("confirm-note").hidden = !opts.note;
      $("confirm-ok").textContent = opts.ok || "Send";
      $("confirm-back").textContent = opts.back || "Go back";
      return new Promise(function (resolve) {
        dlg.returnValue = "";
        dlg.addEventListener("close", function done() {
          dlg.removeEventListener("close", done);
          resolve(dlg.returnValue === "ok");
        });
        dlg.showModal();
        $("confirm-back").focus(); // Enter does not send by accident
      });
    }

    // ---- the order ticket ----------------------------------------------------------------------
    var form = $("order-form");
    var result = $("order-result");
    var unanswered = null; // {text, key}: the last order sent without a clear answer
    function setShown(field, shown) {
      field.hidden = !shown;
      field.querySelectorAll("input, select").forEach(function (i) { i.disabled = !shown; });
    }
    // Show the fields the chosen type needs (and only those: hidden ones are disabled, so they
    // are neither validated nor sent).
    function updateTicket() {
      var type = $("order-type").value;
      form.querySelectorAll("[data-types]").forEach(function (f) {
        setShown(f, f.dataset.types.split(" ").indexOf(type) >= 0);
      });
      var bracket = !$("order-bracket").disabled && $("order-bracket").checked;
      form.querySelectorAll("[data-bracket]").forEach(function (f) { setShown(f, bracket); });
      var tif = $("order-tif");
      var stopLike = type !== "market" && type !== "limit";
      Array.from(tif.options).forEach(function (opt) {
        opt.disabled = stopLike && ONLY_MARKET_LIMIT_TIF.indexOf(opt.value) >= 0;
      });
      if (tif.selectedOptions[0] && tif.selectedOptions[0].disabled) tif.value = "day";
    }
    function val(id) { return $(id).value.trim(); }
    function ticketOrder() {
      var type = $("order-type").value;
      var o = {
        symbol: val("order-symbol").toUpperCase(), side: $("order-side").value, quantity: val("order-quantity"),
        order_type: type, time_in_force: $("order-tif").value, account: val("order-account") || "paper",
      };
      if (type === "limit" || type === "stop_limit") o.limit_price = val("order-limit");
      if (type === "stop" || type === "stop_limit") o.stop_price = val("order-stop");
      if (type === "trailing_stop") o[$("order-trail-kind").value] = val("order-trail");
      if (!$("order-bracket").disabled && $("order-bracket").checked) {
        o.bracket = { take_profit_price: val("order-tp"), stop_loss_price: val("order-sl") };
      }
      return o;
    }
    function ticketSummary(o) {
      var rows = [
        ["Order", cap(o.side) + " " + o.quantity + " " + o.symbol],
        ["Type", cap(TYPE_LABEL[o.order_type]) + (o.order_type === "market" ? " (at the market)" : "")],
      ];
      ["stop_price", "limit_price", "trail_percent", "trail_amount"].forEach(function (k) {
        if (!blank(o[k])) rows.push([TERM_LABEL[k], o[k]]);
      });
      rows.push(["Time in force", TIF_LABEL[o.time_in_force] || o.time_in_force], ["Account", o.account]);
      if (o.bracket) {
        rows.push(["Bracket", "take-profit " + o.bracket.take_profit_price + " · stop-loss " + o.bracket.stop_loss_price]);
      }
      var px = o.limit_price;
      if (!blank(px) && isFinite(Number(px)) && isFinite(Number(o.quantity))) {
        rows.push(["Value at the limit", num(Number(px) * Number(o.quantity))]);
      }
      return rows;
    }
    function showPlaced(res) {
      var b = res.body;
      var o = b.order || {};
      delete result.dataset.rule;
      result.dataset.httpStatus = String(res.status);
      result.dataset.coid = o.client_order_id || "";
      var head = el("div", "headline");
      head.appendChild(el("strong", null, (b.idempotent_replay ? "Already placed: " : "Placed: ")));
      head.appendChild(el("code", "coid", o.client_order_id));
      head.appendChild(document.createTextNode(" "));
      head.appendChild(statusBadge(o.status));
      var nodes = [head, el("div", "message", describe(o) + (b.reason ? " · " + b.reason : ""))];
      if (b.children && b.children.length) {
        var ul = el("ul", "children");
        ul.setAttribute("aria-label", "Bracket exits");
        b.children.forEach(function (c) {
          var li = el("li");
          li.dataset.coid = c.client_order_id;
          li.appendChild(el("span", "role", exitRole(c) + ": "));
          li.appendChild(el("code", "coid", c.client_order_id));
          li.appendChild(document.createTextNode(" " + describe(c) + " "));
          li.appendChild(statusBadge(c.status));
          ul.appendChild(li);
        });
        nodes.push(ul);
      }
      show(result, "ok", nodes);
    }
    form.addEventListener("submit", function (ev) {
      ev.preventDefault();
      if (!form.reportValidity()) return;
      var order = ticketOrder();
      var review = $("order-review");
      confirmAction({
        title: "Place this order?", rows: ticketSummary(order), ok: "Send order", back: "Go back",
        note: "It goes through the pre-trade risk rules; a denial names the rule.",
      }).then(function (ok) {
        if (!ok) {
          showInfo(result, "Not sent: the order was not confirmed.");
          return null;
        }
        review.disabled = true;
        showInfo(result, "Sending…");
        var text = JSON.stringify(order);
        var key = unanswered && unanswered.text === text ? unanswered.key : newIdempotencyKey();
        return send("POST", "/orders", order, { "Idempotency-Key": key }).then(function (res) {
          review.disabled = false;
          // No clear answer (network, 5xx): sending the same order again reuses the key, so the
          // API returns the order if the first attempt did place it (never a duplicate).
          unanswered = res.status === 0 || res.status >= 500 ? { text: text, key: key } : null;
          if (res.ok) showPlaced(res);
          else showError(result, "Order not placed", res);
          ctx.reload(); // the table, and the risk panel's rejections
        });
      });
    });
    $("order-type").addEventListener("change", updateTicket);
    $("order-bracket").addEventListener("change", updateTicket);
    $("order-symbol").addEventListener("input", function () { autoSymbol = null; });
    updateTicket();

    // The chart's symbol fills the ticket until a symbol is typed there.
    function useSymbol(symbol) {
      var input = $("order-symbol");
      if (autoSymbol === null && input.value.trim()) return;
      input.value = symbol;
      autoSymbol = symbol;
    }

    // ---- the orders table, with Modify and Cancel on working orders ---------------------------
    var ordersBox = $("orders-result");
    function orderRow(o) {
      var tr = el("tr");
      tr.dataset.coid = o.client_order_id;
      tr.dataset.status = o.status;
      var type = td(TYPE_LABEL[o.order_type] || o.order_type, "type");
      if (o.parent_client_order_id) {
        tr.classList.add("exit");
        type.textContent = "↳ " + exitRole(o) + " · " + type.textContent;
        type.title = "Bracket exit of " + o.parent_client_order_id + (o.oco_group ? " (one cancels the other)" : "");
      } else if (o.children && o.children.length) {
        type.textContent += " + bracket";
      }
      var st = td("");
      st.appendChild(statusBadge(o.status));
      if (o.cancel_requested && WORKING.indexOf(o.status) >= 0) st.appendChild(el("small", "pending", " cancel pending"));
      var actions = td("", "row-actions");
      if (isWorking(o)) {
        var mod = el("button", "modify", "Modify");
        mod.type = "button";
        mod.dataset.action = "modify";
        mod.setAttribute("aria-label", "Modify order " + o.client_order_id);
        var can = el("button", "cancel", "Cancel");
        can.type = "button";
        can.dataset.action = "cancel";
        can.setAttribute("aria-label", "Cancel order " + o.client_order_id);
        actions.appendChild(mod);
        actions.appendChild(can);
      }
      [td(ctx.when(o.created_at)), td(o.symbol), td(o.side, o.side === "buy" ? "pos" : "neg"), td(num(o.quantity, 0), "num qty"),
        type, td(priceText(o), "num price"), st, td(num(o.filled_quantity, 0), "num"), td(num(o.avg_fill_price), "num"),
        td(o.reason || "", "reason"), actions].forEach(function (c) { tr.appendChild(c); });
      tr.title = o.client_order_id + " · " + o.account + " · " + o.strategy + " · " + (TIF_LABEL[o.time_in_force] || o.time_in_force);
      return tr;
    }
    var byId = new Map();
    function render(items) {
      byId = new Map(items.map(function (o) { return [o.client_order_id, o]; }));
      var keep = null;
      if (editing) {
        var cur = byId.get(editing.coid);
        if (cur && isWorking(cur)) {
          editing.order = cur;
          keep = editing.row;
        } else {
          showInfo(ordersBox, "Order " + editing.coid + " is no longer working" + (cur ? " (" + cur.status + ")" : "") + ": nothing was changed.");
          closeEditor();
        }
      }
      var rows = [];
      items.forEach(function (o) {
        rows.push(orderRow(o));
        if (keep && o.client_order_id === editing.coid) rows.push(keep);
      });
      // Swap every row but the open Modify form's, so typing there keeps its focus.
      var body = $("orders").querySelector("tbody");
      Array.from(body.children).forEach(function (c) { if (c !== keep) body.removeChild(c); });
      if (keep && keep.parentNode !== body) body.appendChild(keep);
      var after = false;
      rows.forEach(function (r) {
        if (r === keep) { after = true; return; }
        if (keep && !after) body.insertBefore(r, keep);
        else body.appendChild(r);
      });
      $("orders-empty").hidden = rows.length > 0;
    }

    // The terms a Modify form offers for an order's type (a trailing stop keeps its kind of trail).
    function modifiable(o) {
      var terms = ["quantity"];
      if (o.order_type === "stop" || o.order_type === "stop_limit") terms.push("stop_price");
      if (o.order_type === "limit" || o.order_type === "stop_limit") terms.push("limit_price");
      if (o.order_type === "trailing_stop") terms.push(blank(o.trail_amount) ? "trail_percent" : "trail_amount");
      return terms;
    }
    function closeEditor() {
      if (editing && editing.row.parentNode) editing.row.parentNode.removeChild(editing.row);
      editing = null;
    }
    function openEditor(o) {
      closeEditor();
      var tr = el("tr", "modify-row");
      tr.dataset.coid = o.client_order_id;
      var cell = el("td");
      cell.colSpan = COLUMNS;
      var f = el("form", "modify-form");
      f.noValidate = true;
      f.setAttribute("aria-label", "Modify order " + o.client_order_id);
      f.appendChild(el("span", "what", "Modify " + describe(o) + ":"));
      var inputs = {};
      modifiable(o).forEach(function (name) {
        var wrap = el("span", "field");
        var label = el("label", null, TERM_LABEL[name]);
        label.htmlFor = "modify-" + name;
        var input = el("input");
        input.id = "modify-" + name;
        input.name = name;
        input.inputMode = "decimal";
        input.required = name === "quantity";
        input.value = blank(o[name]) ? "" : String(o[name]);
        wrap.appendChild(label);
        wrap.appendChild(input);
        f.appendChild(wrap);
        inputs[name] = input;
      });
      var review = el("button", "primary", "Review change…");
      review.type = "submit";
      review.id = "modify-review";
      var close = el("button", null, "Close");
      close.type = "button";
      close.addEventListener("click", function () { closeEditor(); });
      f.appendChild(review);
      f.appendChild(close);
      f.addEventListener("submit", function (ev) {
        ev.preventDefault();
        if (!f.reportValidity()) return;
        reviewChange(review);
      });
      cell.appendChild(f);
      tr.appendChild(cell);
      editing = { coid: o.client_order_id, order: o, row: tr, inputs: inputs };
      var row = $("orders").querySelector('tbody tr[data-coid="' + CSS.escape(o.client_order_id) + '"]:not(.modify-row)');
      if (row) row.after(tr);
      inputs[modifiable(o)[1] || "quantity"].focus();
    }
    function same(a, b) {
      if (blank(a) || blank(b)) return blank(a) && blank(b);
      var x = Number(a);
      var y = Number(b);
      return isFinite(x) && isFinite(y) ? x === y : String(a) === String(b);
    }
    function reviewChange(button) {
      var o = editing.order;
      var coid = editing.coid;
      var changes = {};
      var rows = [["Order", describe(o)], ["Id", coid]];
      Object.keys(editing.inputs).forEach(function (name) {
        var v = editing.inputs[name].value.trim();
        if (v === "" || same(v, o[name])) return;
        changes[name] = v;
        rows.push([TERM_LABEL[name], (blank(o[name]) ? "—" : String(o[name])) + " → " + v]);
      });
      if (!Object.keys(changes).length) {
        showInfo(ordersBox, "Nothing to send: the terms are unchanged.");
        return;
      }
      confirmAction({
        title: "Modify this order?", rows: rows, ok: "Send change", back: "Go back",
        note: "The new terms go through the risk rules again; a refusal leaves the order as it is.",
      }).then(function (ok) {
        if (!ok) {
          showInfo(ordersBox, "Not sent: the change was not confirmed.");
          return null;
        }
        button.disabled = true;
        return send("PATCH", "/orders/" + encodeURIComponent(coid), changes).then(function (res) {
          button.disabled = false;
          if (res.ok) {
            delete ordersBox.dataset.rule;
            ordersBox.dataset.httpStatus = String(res.status);
            show(ordersBox, "ok", [el("div", "message", "Modified " + coid + ": " + describe(res.body) + " · " + res.body.status)]);
            closeEditor();
          } else {
            showError(ordersBox, "Change not made", res);
          }
          ctx.reload();
        });
      });
    }
    function cancelOrder(o, button) {
      var rows = [["Order", describe(o)], ["Id", o.client_order_id], ["Status", o.status]];
      if (o.children && o.children.length) rows.push(["Bracket", "its exits (" + o.children.join(", ") + ") are cancelled with it"]);
      confirmAction({ title: "Cancel this order?", rows: rows, ok: "Cancel order", back: "Keep order" }).then(function (ok) {
        if (!ok) {
          showInfo(ordersBox, "Not sent: " + o.client_order_id + " was kept.");
          return null;
        }
        button.disabled = true;
        return send("DELETE", "/orders/" + encodeURIComponent(o.client_order_id)).then(function (res) {
          if (res.ok) {
            delete ordersBox.dataset.rule;
            ordersBox.dataset.httpStatus = String(res.status);
            var done = res.body.status === "cancelled" ? "Cancelled " : "Cancel requested for ";
            show(ordersBox, "ok", [el("div", "message", done + o.client_order_id + " · " + res.body.status)]);
            if (editing && editing.coid === o.client_order_id) closeEditor();
          } else {
            button.disabled = false;
            showError(ordersBox, "Not cancelled", res);
          }
          ctx.reload();
        });
      });
    }
    $("orders").addEventListener("click", function (ev) {
      var b = ev.target.closest("button[data-action]");
      if (!b) return;
      var o = byId.get(b.closest("tr").dataset.coid);
      if (!o) return;
      if (b.dataset.action === "modify") openEditor(o);
      else if (b.dataset.action === "cancel") cancelOrder(o, b);
    });

    return { render: render, useSymbol: useSymbol };
  }

  window.tradingOrders = { setup: setup };
})();
