// Draws the dashboard's charts with uPlot. A chart is an element
// <div class="chart" data-chart='{"buckets":[RFC 3339...],"series":[{"label":..,"points":[..]}]}'>
// rendered by the server (no inline script: the CSP allows only files from
// this origin). Charts are drawn on load and after every htmx swap (the
// overview's live refresh replaces them).
(function () {
  "use strict";
  var palette = ["#2563eb", "#dc2626", "#16a34a", "#d97706", "#7c3aed", "#0891b2", "#db2777", "#4b5563"];

  function draw(el) {
    if (el.dataset.drawn === "1" || typeof uPlot === "undefined") return;
    var spec;
    try { spec = JSON.parse(el.dataset.chart); } catch (e) { return; }
    var xs = spec.buckets.map(function (b) { return Date.parse(b) / 1000; });
    var data = [xs];
    var series = [{}];
    spec.series.forEach(function (s, i) {
      data.push(s.points);
      series.push({ label: s.label, stroke: palette[i % palette.length], width: 2, points: { show: xs.length < 60 } });
    });
    el.dataset.drawn = "1";
    el.textContent = "";
    var width = Math.max(320, el.clientWidth || 640);
    new uPlot({ width: width, height: 240, series: series, axes: [{}, { size: 60 }], legend: { live: false } }, data, el);
  }

  function drawAll(root) {
    (root || document).querySelectorAll(".chart[data-chart]").forEach(draw);
  }

  document.addEventListener("DOMContentLoaded", function () { drawAll(document); });
  document.addEventListener("htmx:afterSettle", function (e) { drawAll(e.target); });
})();
