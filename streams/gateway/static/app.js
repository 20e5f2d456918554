// signalbox dashboard: live updates from /ui/live (Server-Sent Events named after what
// changed in the gateway's read model). Elements with an id and data-live="runs" refetch
// themselves (from data-src, else this page's URL); pages with data-live-reload="<kind>" reload. Bursts are coalesced.
(function () {
  "use strict";
  var dot = null;
  var pending = {};

  function refresh(kind) {
    document.querySelectorAll('[data-live~="' + kind + '"][id]').forEach(function (el) {
      var before = {};
      el.querySelectorAll("tr[data-run]").forEach(function (tr) { before[tr.getAttribute("data-run")] = true; });
      var src = el.getAttribute("data-src") || window.location.href;
      htmx.ajax("GET", src, { target: el, swap: "outerHTML", select: "#" + el.id }).then(function () {
        var now = document.getElementById(el.id);
        if (!now) return;
        now.querySelectorAll("tr[data-run]").forEach(function (tr) {
          if (!before[tr.getAttribute("data-run")]) tr.classList.add("fresh");
        });
      });
    });
    if (document.querySelector('[data-live-reload="' + kind + '"]') && !document.querySelector("form :focus")) {
      window.location.reload();
    }
  }

  function schedule(kind) {
    if (pending[kind]) return;
    pending[kind] = setTimeout(function () { pending[kind] = null; refresh(kind); }, 250);
  }

  function connect() {
    dot = document.getElementById("live-dot");
    if (!window.EventSource || !dot) return;
    var source = new EventSource("/ui/live");
    source.addEventListener("hello", function () { dot.classList.add("on"); });
    ["runs", "events", "handlers"].forEach(function (kind) {
      source.addEventListener(kind, function () { schedule(kind); });
    });
    source.onerror = function () { dot.classList.remove("on"); };  // EventSource reconnects by itself
  }

  document.addEventListener("DOMContentLoaded", connect);
})();
