// RansomEye dashboard: polls the core service's /health endpoint.
// Plain script, no dependencies; DOM updates use textContent only.
"use strict";

(function () {
  var POLL_MS = 15000;
  var TIMEOUT_MS = 5000;

  function byId(id) {
    return document.getElementById(id);
  }

  function setBadge(state, text) {
    var badge = byId("status-badge");
    badge.className = "badge badge-" + state;
    badge.textContent = text;
  }

  function showError(message) {
    var el = byId("error");
    if (message) {
      el.textContent = message;
      el.hidden = false;
    } else {
      el.textContent = "";
      el.hidden = true;
    }
  }

  function render(health) {
    var ok = health && health.status === "ok";
    setBadge(ok ? "ok" : "down", ok ? "healthy" : "unhealthy");
    byId("service").textContent = String(health.service || "unknown");
    byId("version").textContent = String(health.version || "unknown");
    showError(ok ? "" : "Unexpected status: " + String(health.status));
  }

  function fail(message) {
    setBadge("down", "unreachable");
    showError(message);
  }

  function check() {
    var controller = typeof AbortController === "function" ? new AbortController() : null;
    var timer = controller ? setTimeout(function () { controller.abort(); }, TIMEOUT_MS) : null;
    var options = { cache: "no-store", headers: { Accept: "application/json" } };
    if (controller) {
      options.signal = controller.signal;
    }
    fetch("/health", options)
      .then(function (response) {
        if (!response.ok) {
          throw new Error("HTTP " + response.status);
        }
        return response.json();
      })
      .then(render)
      .catch(function (err) {
        fail("Cannot reach /health: " + (err && err.message ? err.message : String(err)));
      })
      .then(function () {
        if (timer) {
          clearTimeout(timer);
        }
        byId("checked").textContent = new Date().toLocaleString();
      });
  }

  document.addEventListener("DOMContentLoaded", function () {
    byId("refresh").addEventListener("click", check);
    check();
    setInterval(check, POLL_MS);
  });
})();
