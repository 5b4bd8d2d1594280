/* Dashboard behaviour on top of htmx: draws loss charts (Chart.js) in content as it is loaded or
   swapped in by polling, and frees a chart when htmx removes its canvas. */
(function () {
  "use strict";

  function drawLossChart(canvas) {
    if (typeof Chart === "undefined" || Chart.getChart(canvas)) return;
    var source = document.getElementById(canvas.dataset.lossChart);
    if (!source) return;
    var points = JSON.parse(source.textContent);
    new Chart(canvas, {
      type: "line",
      data: {
        datasets: [{
          label: "loss",
          data: points,
          borderColor: "#2f5fd0",
          backgroundColor: "#2f5fd0",
          borderWidth: 2,
          pointRadius: points.length > 60 ? 0 : 2,
          tension: 0.15,
        }],
      },
      options: {
        animation: false, // redrawn on every poll; animating would flicker
        maintainAspectRatio: false,
        parsing: true,
        scales: {
          x: { type: "linear", title: { display: true, text: "step" } },
          y: { title: { display: true, text: "loss" } },
        },
        plugins: { legend: { display: false } },
      },
    });
  }

  htmx.onLoad(function (root) {
    var canvases = root.matches && root.matches("canvas[data-loss-chart]") ? [root] : [];
    canvases.push.apply(canvases, root.querySelectorAll("canvas[data-loss-chart]"));
    canvases.forEach(drawLossChart);
  });

  document.addEventListener("htmx:beforeCleanupElement", function (event) {
    if (typeof Chart === "undefined") return;
    var chart = Chart.getChart(event.target);
    if (chart) chart.destroy();
  });
})();
