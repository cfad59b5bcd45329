// txanomaly console: keyboard shortcuts for decisions and the model page's live charts.
// Plain JavaScript, no library, nothing fetched from elsewhere.
"use strict";
(function () {
  // f / n / e press the decision buttons (not while typing a note).
  document.addEventListener("keydown", function (ev) {
    var t = ev.target;
    if (ev.ctrlKey || ev.metaKey || ev.altKey) return;
    if (t && (t.tagName === "TEXTAREA" || t.tagName === "INPUT" || t.tagName === "SELECT")) return;
    var b = document.querySelector("button[data-key='" + ev.key + "']");
    if (b) { ev.preventDefault(); b.click(); }
  });

  var live = document.getElementById("live");
  if (!live) return;
  function fmt(k, v) {
    if (v === null || v === undefined) return "–";
    if (k === "flagRate") return (100 * v).toFixed(2) + " %";
    return v >= 100 ? v.toFixed(0) : v.toFixed(2);
  }
  function spark(svg, values) {
    var w = svg.clientWidth || 120, h = 34, pts = [];
    var vs = values.filter(function (v) { return v !== null; });
    var max = Math.max.apply(null, vs.concat([1e-9]));
    values.forEach(function (v, i) {
      if (v === null) return;
      var x = values.length > 1 ? (i * (w - 2)) / (values.length - 1) + 1 : w / 2;
      pts.push(x.toFixed(1) + "," + (h - 2 - (v / max) * (h - 6)).toFixed(1));
    });
    svg.setAttribute("viewBox", "0 0 " + w + " " + h);
    svg.innerHTML = pts.length ? "<polyline fill='none' stroke='#d62728' stroke-width='1.5' points='" +
      pts.join(" ") + "'/>" : "";
  }
  function refresh() {
    fetch(live.dataset.src, {credentials: "same-origin"}).then(function (r) {
      return r.ok ? r.json() : null;
    }).then(function (data) {
      if (!data) return;
      var pts = data.points, last = pts.length ? pts[pts.length - 1] : {};
      ["rps", "flagRate", "p95Ms"].forEach(function (k) {
        live.querySelector("[data-k='" + k + "']").textContent = fmt(k, last[k]);
        spark(live.querySelector("[data-s='" + k + "']"), pts.map(function (p) { return p[k]; }));
      });
      var tot = data.totals;
      live.querySelector("[data-k='totals']").textContent =
        tot.requests.toLocaleString() + " req, " + tot.stored.toLocaleString() + " stored, " +
        tot.flagged.toLocaleString() + " flagged" +
        (data.worker ? " (worker " + data.worker + ")" : "");
    }).catch(function () {});
  }
  refresh();
  setInterval(refresh, 5000);
})();
