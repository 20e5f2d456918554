// signalbox dashboard: live updates from /ui/live (Server-Sent Events named after what
// changed in the gateway's read model). Elements with an id and data-live="runs" refetch
// themselves (from data-src, else this page's URL); pages with data-live-reload="<kind>" reload. Bursts are coalesced.
// Each message carries how many changes of its kind the read model has applied; the page
// was rendered at the counts in <body data-live-seen>, and the greeting of each connection
// (the first and every reconnection) carries the counts at that moment: a kind that moved
// while no connection listened is refetched, since no message told of it.
(function () {
  "use strict";
  var dot = null;
  var pending = {};
  var seen = {};

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
    try { seen = JSON.parse(document.body.getAttribute("data-live-seen") || "{}"); } catch (e) { seen = {}; }
    var source = new EventSource("/ui/live");
    source.addEventListener("hello", function (e) {
      var now = {};
      try { now = JSON.parse(e.data); } catch (err) { now = {}; }
      Object.keys(now).forEach(function (kind) {
        if (seen[kind] !== now[kind]) schedule(kind);
        seen[kind] = now[kind];
      });
      dot.classList.add("on");
    });
    ["runs", "events", "handlers"].forEach(function (kind) {
      source.addEventListener(kind, function (e) { seen[kind] = Number(e.data); schedule(kind); });
    });
    source.onerror = function () { dot.classList.remove("on"); };  // EventSource reconnects by itself
  }

  document.addEventListener("DOMContentLoaded", connect);
})();
