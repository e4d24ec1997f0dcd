// The 401 page: a tab that already holds a key (sessionStorage) reloads "/" with it;
// a key that was just refused is forgotten so the page cannot loop.
(function () {
  "use strict";
  var params = new URLSearchParams(window.location.search);
  var stored = null;
  try { stored = window.sessionStorage.getItem("trading.apiKey"); } catch (e) { stored = null; }
  if (params.has("api_key")) {
    try { window.sessionStorage.removeItem("trading.apiKey"); } catch (e) { /* storage disabled */ }
    window.history.replaceState(null, "", window.location.pathname);
    return;
  }
  if (stored) {
    window.location.replace("/?api_key=" + encodeURIComponent(stored));
  }
})();
