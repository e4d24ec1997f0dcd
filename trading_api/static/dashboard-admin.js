// What this tab's API key may do (GET /me), and the kill switch toggle for admin keys.
//
// Loaded before dashboard.js, so the key is still in the address bar on the first load (or
// in sessionStorage after it). The page shows every control until /me answers; then
//  - a read-only key: <body data-scope="read"> hides the order ticket and the Modify/Cancel
//    buttons (dashboard.css), since the server would refuse them with 403 anyway;
//  - an admin key: a kill switch button in the risk panel, behind a confirmation dialog that
//    asks for a reason (PUT /kill-switch records it with the key's name).
// Hiding is a courtesy: the server checks the scope of every request.
(function () {
  "use strict";
  var KEY_STORAGE = "trading.apiKey";
  var params = new URLSearchParams(window.location.search);
  var apiKey = params.get("api_key");
  if (!apiKey) {
    try { apiKey = window.sessionStorage.getItem(KEY_STORAGE); } catch (e) { apiKey = null; }
  }
  if (!apiKey) return; // dashboard.js says how to get a key

  var RETRY_MS = 5000;
  var POLL_MS = 10000;
  var switchState = null; // the last GET/PUT /kill-switch answer

  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = text;
    return e;
  }
  function call(method, path, body) {
    var headers = { "X-API-Key": apiKey, Accept: "application/json" };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    return fetch(path, { method: method, headers: headers, cache: "no-store",
                         body: body === undefined ? undefined : JSON.stringify(body) })
      .then(function (r) {
        return r.json().catch(function () { return null; }).then(function (json) { return { status: r.status, body: json }; });
      });
  }
  function errorText(res) {
    var d = res.body && res.body.detail;
    if (d && typeof d === "object" && !Array.isArray(d) && d.message) return d.message;
    if (Array.isArray(d)) return d.map(function (e) { return (e.loc || []).slice(1).join(".") + ": " + e.msg; }).join("; ");
    if (typeof d === "string") return d;
    return "HTTP " + res.status;
  }

  // ---- who am I ---------------------------------------------------------------------------
  function loadMe() {
    call("GET", "/me").then(function (res) {
      if (res.status !== 200 || !res.body) { // 401 is dashboard.js's to explain; 503/429: ask again
        if (res.status !== 401) setTimeout(loadMe, RETRY_MS);
        return;
      }
      apply(res.body);
    }, function () { setTimeout(loadMe, RETRY_MS); });
  }
  function apply(me) {
    document.body.dataset.scope = me.scope;
    document.body.dataset.keyName = me.name;
    if (me.scopes.indexOf("admin") >= 0) setupKillSwitch();
  }

  // ---- the kill switch toggle (admin keys only) -------------------------------------------
  var button = null;
  var note = null;
  function setupKillSwitch() {
    var box = document.getElementById("risk-kill");
    if (!box || button) return;
    var wrap = el("div", "kill-admin");
    wrap.id = "kill-admin";
    button = el("button", "kill-toggle", "Kill switch…");
    button.type = "button";
    button.id = "kill-toggle";
    button.disabled = true;
    button.addEventListener("click", openDialog);
    note = el("span", "kill-note");
    note.id = "kill-note";
    note.setAttribute("role", "status");
    wrap.appendChild(button);
    wrap.appendChild(note);
    box.insertAdjacentElement("afterend", wrap);
    buildDialog();
    refresh();
    setInterval(refresh, POLL_MS);
  }
  function show(ks) {
    switchState = ks;
    button.disabled = false;
    button.dataset.engaged = ks.engaged ? "true" : "false";
    button.textContent = ks.engaged ? "Release kill switch…" : "Engage kill switch…";
    button.className = "kill-toggle " + (ks.engaged ? "release" : "engage");
  }
  function refresh() {
    call("GET", "/kill-switch").then(function (res) {
      if (res.status === 200 && res.body) show(res.body);
    }, function () { /* the next poll tries again */ });
  }

  var dlg, title, text, reason, error, ok, back;
  function buildDialog() {
    dlg = el("dialog", "confirm");
    dlg.id = "kill-confirm";
    dlg.setAttribute("aria-labelledby", "kill-confirm-title");
    var form = el("form");
    form.method = "dialog";
    form.noValidate = true;
    title = el("h2", null, "");
    title.id = "kill-confirm-title";
    text = el("p", "note", "");
    var label = el("label", null, "Reason (recorded with your key's name)");
    label.htmlFor = "kill-reason";
    reason = el("input");
    reason.id = "kill-reason";
    reason.maxLength = 500;
    reason.autocomplete = "off";
    error = el("p", "kill-error", "");
    error.id = "kill-error";
    error.hidden = true;
    var actions = el("div", "actions");
    back = el("button", null, "Go back");
    back.value = "back";
    back.type = "submit";
    ok = el("button", "primary", "");
    ok.id = "kill-confirm-ok";
    ok.value = "ok";
    ok.type = "submit";
    actions.appendChild(back);
    actions.appendChild(ok);
    [title, text, label, reason, error, actions].forEach(function (c) { form.appendChild(c); });
    dlg.appendChild(form);
    document.body.appendChild(dlg);
    reason.addEventListener("input", function () { error.hidden = true; });
    form.addEventListener("submit", function (ev) {
      if (ev.submitter !== ok) return; // Go back / Escape: close, nothing sent
      ev.preventDefault(); // stay open until the server has answered
      send();
    });
  }
  function openDialog() {
    var engage = !(switchState && switchState.engaged);
    title.textContent = engage ? "Engage the kill switch?" : "Release the kill switch?";
    text.textContent = engage
      ? "Every new order is refused, from this dashboard, the API, signal runs and the CLI, until it is released. " +
        "Working orders stay at the broker: cancel them if they must not fill."
      : "New orders are allowed again (each still goes through the risk rules).";
    ok.textContent = engage ? "Engage kill switch" : "Release kill switch";
    ok.className = engage ? "primary danger" : "primary";
    ok.disabled = false;
    reason.value = "";
    error.hidden = true;
    dlg.returnValue = "";
    dlg.showModal();
    reason.focus();
  }
  function send() {
    var why = reason.value.trim();
    if (!why) {
      error.textContent = "Give a reason: it is stored and shown in every order the switch refuses.";
      error.hidden = false;
      reason.focus();
      return;
    }
    var engage = !(switchState && switchState.engaged);
    ok.disabled = true;
    call("PUT", "/kill-switch", { engaged: engage, reason: why }).then(function (res) {
      ok.disabled = false;
      if (res.status !== 200 || !res.body) {
        error.textContent = "Not changed: " + errorText(res);
        error.hidden = false;
        return;
      }
      show(res.body);
      note.textContent = (res.body.engaged ? "Engaged" : "Released") + " by " + res.body.updated_by;
      dlg.close("ok");
      if (window.tradingDashboard) window.tradingDashboard.reload(); // the risk panel and the pill
    }, function () {
      ok.disabled = false;
      error.textContent = "Not changed: the server did not answer (check it is running, then try again).";
      error.hidden = false;
    });
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", loadMe);
  } else {
    loadMe();
  }
})();
