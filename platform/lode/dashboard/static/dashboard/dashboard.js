/* Dashboard behaviour on top of htmx: draws loss charts, a fine-tune's evaluation curves, the
   billing usage chart and the dataset statistics charts (Chart.js) in content as it is loaded or
   swapped in by polling, and frees a chart when htmx removes its canvas; copy buttons; the
   organization switcher's submit on change; the dataset upload form (a multipart POST to the API
   with upload progress) and the operation launcher's example parameters. */
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

  // Datasets: a version's statistics. The page prepares each chart (type, labels, datasets, axis
  // titles) in one json_script; each canvas names its index there.
  function drawSpecChart(canvas) {
    if (typeof Chart === "undefined" || Chart.getChart(canvas)) return;
    var source = document.getElementById(canvas.dataset.chartSource);
    if (!source) return;
    var spec = JSON.parse(source.textContent)[Number(canvas.dataset.chartIndex)];
    if (!spec) return;
    var round = spec.type === "doughnut";
    var asPercent = function (value) { return Math.round(value * 1000) / 10 + "%"; };
    var valueAxis = spec.horizontal ? "x" : "y";
    var scales = {};
    if (!round) {
      scales.x = { title: { display: !!spec.x_title, text: spec.x_title || "" } };
      scales.y = { title: { display: !!spec.y_title, text: spec.y_title || "" } };
      scales[valueAxis].beginAtZero = true;
      if (spec.percent) scales[valueAxis].ticks = { callback: asPercent };
    }
    new Chart(canvas, {
      type: spec.type,
      data: {
        labels: spec.labels,
        datasets: spec.datasets.map(function (dataset, index) {
          var colour = round ? spec.labels.map(function (_, j) { return PALETTE[j % PALETTE.length]; })
                             : PALETTE[index % PALETTE.length];
          return { label: dataset.label, data: dataset.data, backgroundColor: colour, borderColor: colour, borderWidth: round ? 1 : 0 };
        }),
      },
      options: {
        animation: false,
        maintainAspectRatio: false,
        indexAxis: spec.horizontal ? "y" : "x",
        scales: scales,
        plugins: {
          legend: { display: round, position: "bottom" },
          tooltip: spec.percent ? { callbacks: { label: function (item) { return asPercent(item.raw); } } } : {},
        },
      },
    });
  }

  // Training: a fine-tune's evaluation curves by step. The page prepares the series ({label,
  // data: [{x: step, y}], axis}); validation loss is on the left axis, the task's metrics
  // (perplexity, accuracy, reward margin…) on the right one, which shows only when there are any.
  function drawStepChart(canvas) {
    if (typeof Chart === "undefined" || Chart.getChart(canvas)) return;
    var source = document.getElementById(canvas.dataset.stepChart);
    if (!source) return;
    var spec = JSON.parse(source.textContent);
    var rightAxis = spec.series.some(function (series) { return series.axis === "y1"; });
    var leftAxis = spec.series.some(function (series) { return series.axis !== "y1"; });
    new Chart(canvas, {
      type: "line",
      data: {
        datasets: spec.series.map(function (series, index) {
          var colour = PALETTE[index % PALETTE.length];
          return {
            label: series.label,
            data: series.data,
            yAxisID: series.axis === "y1" ? "y1" : "y",
            borderColor: colour,
            backgroundColor: colour,
            borderWidth: 2,
            pointRadius: series.data.length > 60 ? 0 : 3,
            tension: 0.15,
          };
        }),
      },
      options: {
        animation: false, // redrawn on every poll; animating would flicker
        maintainAspectRatio: false,
        scales: {
          x: { type: "linear", title: { display: true, text: spec.x_title || "step" } },
          y: { display: leftAxis, position: "left", title: { display: true, text: spec.y_title || "" } },
          y1: { display: rightAxis, position: "right", grid: { drawOnChartArea: false },
                title: { display: true, text: spec.y1_title || "" } },
        },
        plugins: { legend: { display: true, position: "bottom" } },
      },
    });
  }

  function within(root, selector) {
    var found = root.matches && root.matches(selector) ? [root] : [];
    found.push.apply(found, root.querySelectorAll(selector));
    return found;
  }

  htmx.onLoad(function (root) {
    within(root, "canvas[data-loss-chart]").forEach(drawLossChart);
    within(root, "canvas[data-usage-chart]").forEach(drawUsageChart);
    within(root, "canvas[data-chart-source]").forEach(drawSpecChart);
    within(root, "canvas[data-step-chart]").forEach(drawStepChart);
  });

  // Datasets: the upload form sends the file straight to the API (multipart, the session's
  // cookie and CSRF token) with XMLHttpRequest, whose upload events drive the progress bar. A
  // refusal shows the API's message; an accepted file (202) has the versions table fetched again,
  // which then follows the new version's build.
  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (!form.matches || !form.matches("form[data-upload-form]")) return;
    event.preventDefault();
    var file = form.querySelector('input[type="file"]').files[0];
    var status = form.querySelector("#upload-status");
    var bar = form.querySelector("#upload-progress");
    var percent = form.querySelector('[data-testid="upload-percent"]');
    var note = form.querySelector("#upload-message");
    var failure = form.querySelector("#upload-error");
    var done = form.querySelector("#upload-done");
    var button = form.querySelector('button[type="submit"]');
    var show = function (box, text) { box.querySelector("p").textContent = text; box.hidden = false; };
    var setProgress = function (fraction) {
      bar.value = fraction;
      bar.textContent = percent.textContent = Math.floor(fraction * 100) + "%";
    };
    failure.hidden = done.hidden = true;
    if (!file) { show(failure, "Choose a file to upload."); return; }
    if (Number(form.dataset.maxBytes) && file.size > Number(form.dataset.maxBytes)) {
      show(failure, "The file is larger than the " + form.dataset.maxBytes + " byte limit.");
      return;
    }
    var body = new FormData();
    body.append("file", file);
    var format = form.querySelector('select[name="format"]').value;
    if (format) body.append("format", format);
    var mapping = {};
    form.querySelectorAll("input[data-mapping-field]").forEach(function (input) {
      if (input.value.trim()) mapping[input.dataset.mappingField] = input.value.trim();
    });
    if (Object.keys(mapping).length) body.append("column_mapping", JSON.stringify(mapping));

    var request = new XMLHttpRequest();
    request.open("POST", form.dataset.uploadUrl);
    request.setRequestHeader("X-CSRFToken", form.querySelector('input[name="csrfmiddlewaretoken"]').value);
    request.setRequestHeader("Accept", "application/json");
    request.upload.addEventListener("progress", function (progress) {
      if (progress.lengthComputable) setProgress(progress.loaded / progress.total);
    });
    request.upload.addEventListener("load", function () {
      setProgress(1);
      note.textContent = "Sent; checking the file…";
    });
    request.addEventListener("load", function () {
      button.disabled = false;
      var answer = null;
      try { answer = JSON.parse(request.responseText); } catch (ignored) { answer = null; }
      if (request.status === 202 && answer) {
        setProgress(1);
        note.textContent = "";
        show(done, "Accepted: version " + answer.number + " is building.");
        form.querySelector('input[type="file"]').value = "";
        document.body.dispatchEvent(new CustomEvent("versions-changed"));
        return;
      }
      status.hidden = true;
      var error = answer && answer.error;
      var message = error && error.message ? error.message : "The upload failed (HTTP " + request.status + ").";
      var details = (error && error.details) || {};
      var where = [];
      if (details.line != null && message.indexOf("line " + details.line) === -1) where.push("line " + details.line);
      if (details.field && message.indexOf(details.field) !== 0) where.push("field " + details.field);
      show(failure, message + (where.length ? " (" + where.join(", ") + ")" : ""));
    });
    request.addEventListener("error", function () {
      button.disabled = false;
      status.hidden = true;
      show(failure, "The upload did not reach the server; check the connection and try again.");
    });
    setProgress(0);
    note.textContent = "Uploading " + file.name + "…";
    status.hidden = false;
    button.disabled = true;
    request.send(body);
  });

  // The operation launcher: picking an operation puts its example parameters in the box, unless
  // the person has written their own there.
  document.addEventListener("change", function (event) {
    var select = event.target;
    if (!select.matches || !select.matches("form[data-operation-form] select[name=operation]")) return;
    var source = document.getElementById("operation-examples");
    var params = select.form.querySelector("textarea[name=params]");
    if (!source || !params) return;
    var examples = JSON.parse(source.textContent);
    var untouched = !params.value.trim() || Object.keys(examples).some(function (name) {
      return params.value.trim() === JSON.stringify(examples[name]);
    });
    if (untouched) params.value = JSON.stringify(examples[select.value] || {});
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
