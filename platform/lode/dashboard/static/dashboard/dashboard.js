/* Dashboard behaviour on top of htmx: draws loss charts and the billing usage chart (Chart.js) in
   content as it is loaded or swapped in by polling, and frees a chart when htmx removes its
   canvas; copy buttons; the organization switcher's submit on change. */
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

  var PALETTE = ["#2f5fd0", "#1e7b45", "#b3261e", "#9a6400", "#7b3fb0", "#0f7c8c", "#5d6677"];

  // Billing: daily usage, one line per meter. Meters count very different things (millions of
  // tokens, a handful of images), so the scale turns logarithmic when they differ by more than
  // three orders of magnitude; a day without usage is then a gap instead of a zero.
  function drawUsageChart(canvas) {
    if (typeof Chart === "undefined" || Chart.getChart(canvas)) return;
    var source = document.getElementById(canvas.dataset.usageChart);
    if (!source) return;
    var chart = JSON.parse(source.textContent);
    var positive = [];
    chart.datasets.forEach(function (dataset) {
      dataset.data.forEach(function (value) { if (value > 0) positive.push(value); });
    });
    var logarithmic = positive.length > 0 && Math.max.apply(null, positive) / Math.min.apply(null, positive) > 1000;
    new Chart(canvas, {
      type: "line",
      data: {
        labels: chart.labels,
        datasets: chart.datasets.map(function (dataset, index) {
          var colour = PALETTE[index % PALETTE.length];
          return {
            label: dataset.label,
            data: logarithmic ? dataset.data.map(function (value) { return value > 0 ? value : null; }) : dataset.data,
            borderColor: colour,
            backgroundColor: colour,
            borderWidth: 2,
            pointRadius: 3,
            tension: 0.1,
            spanGaps: false,
          };
        }),
      },
      options: {
        animation: false,
        maintainAspectRatio: false,
        scales: {
          x: { title: { display: true, text: "day (UTC)" } },
          y: { type: logarithmic ? "logarithmic" : "linear", beginAtZero: !logarithmic, title: { display: true, text: "quantity" } },
        },
        plugins: { legend: { display: true, position: "bottom" } },
      },
    });
  }

  htmx.onLoad(function (root) {
    var canvases = root.matches && root.matches("canvas[data-loss-chart]") ? [root] : [];
    canvases.push.apply(canvases, root.querySelectorAll("canvas[data-loss-chart]"));
    canvases.forEach(drawLossChart);
    var usage = root.matches && root.matches("canvas[data-usage-chart]") ? [root] : [];
    usage.push.apply(usage, root.querySelectorAll("canvas[data-usage-chart]"));
    usage.forEach(drawUsageChart);
  });

  // Copy buttons: <button data-copy="element-id"> copies that element's text (the new API key).
  document.addEventListener("click", function (event) {
    var button = event.target.closest && event.target.closest("button[data-copy]");
    if (!button) return;
    var source = document.getElementById(button.dataset.copy);
    if (!source) return;
    var text = source.textContent.trim();
    var done = function () { button.textContent = "Copied"; };
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(done, function () { selectText(source); });
    } else {
      selectText(source); // the person copies with the keyboard
    }
  });

  function selectText(element) {
    var range = document.createRange();
    range.selectNodeContents(element);
    var selection = window.getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
  }

  // The organization switcher submits as soon as another organization is picked.
  document.addEventListener("change", function (event) {
    if (event.target.matches && event.target.matches("select[data-autosubmit]")) {
      event.target.form.requestSubmit();
    }
  });

  document.addEventListener("htmx:beforeCleanupElement", function (event) {
    if (typeof Chart === "undefined") return;
    var chart = Chart.getChart(event.target);
    if (chart) chart.destroy();
  });
})();
