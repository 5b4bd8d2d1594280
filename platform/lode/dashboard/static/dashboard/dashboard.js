/* Dashboard behaviour on top of htmx: draws loss charts (Chart.js) in content as it is loaded or
   swapped in by polling, and frees a chart when htmx removes its canvas; copy buttons; the
   organization switcher's submit on change. */
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
