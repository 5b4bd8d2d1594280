/* The generation playground (dashboard/generation/playground.html): shows the fields of the chosen
   model's kind (text or image), a chosen prompt template's variables with their defaults and a
   preview of what the model is given (the API's POST /api/v1/prompt-templates/<name>/render),
   and sends the request with the session's CSRF token. A text answer is read as server-sent
   events from the fetch response's stream (event: start, verdict, delta…, then done or error) and
   appended as it arrives; images come back as data URLs. Ctrl+Enter (or Cmd+Enter) sends; Stop
   aborts the stream. */
(function () {
  "use strict";

  var form = document.getElementById("playground-form");
  if (!form) return;

  var el = function (id) { return document.getElementById(id); };
  var modelSelect = el("pg-model");
  var templateSelect = el("pg-template");
  var variablesBox = el("pg-variables");
  var variableFields = el("pg-variable-fields");
  var previewBody = el("pg-preview-body");
  var systemField = el("pg-system-field");
  var promptBox = el("pg-prompt");
  var sendButton = el("pg-send");
  var stopButton = el("pg-stop-button");
  var formError = el("pg-form-error");
  var statusLine = el("pg-status");
  var output = el("pg-output");
  var imagesBox = el("pg-images");
  var promptVerdict = el("pg-prompt-verdict");
  var outputVerdict = el("pg-output-verdict");
  var finishReason = el("pg-finish-reason");
  var usageBox = el("pg-usage");
  var usedTemplate = el("pg-used-template");
  var templates = JSON.parse(el("playground-templates").textContent);
  var csrfToken = form.querySelector('input[name="csrfmiddlewaretoken"]').value;
  var canSend = !sendButton.disabled;
  var controller = null;
  var previewTimer = null;
  var previewSeq = 0;

  function templateNamed(name) {
    for (var i = 0; i < templates.length; i++) if (templates[i].name === name) return templates[i];
    return null;
  }

  function kind() {
    var option = modelSelect.options[modelSelect.selectedIndex];
    return option ? option.dataset.kind : "text";
  }

  function mode() {
    var checked = form.querySelector('input[name="mode"]:checked');
    return checked ? checked.value : "chat";
  }

  // --- What the form shows ---------------------------------------------------------------------

  function showFields() {
    var current = kind();
    document.querySelectorAll("[data-for-kind]").forEach(function (part) {
      part.hidden = part.dataset.forKind !== current;
    });
    var template = current === "text" && templateSelect.value;
    // A template brings its own system prompt; a text completion has none.
    systemField.hidden = Boolean(template) || mode() !== "chat";
    // In completion mode the filled template is the whole prompt.
    promptBox.disabled = Boolean(template) && mode() === "completion";
    el("pg-prompt-help").textContent = template
      ? (mode() === "chat" ? "Optional: sent as one more user message after the template's. Ctrl+Enter sends."
                           : "The filled template is the prompt. Ctrl+Enter sends.")
      : "Ctrl+Enter sends.";
    sendButton.textContent = current === "image" ? "Generate images" : "Send";
  }

  function showVariables() {
    var template = templateNamed(templateSelect.value);
    variableFields.textContent = "";
    variablesBox.hidden = !template;
    if (!template) return;
    el("pg-template-description").textContent = template.description || "";
    template.variables.forEach(function (name) {
      var wrapper = document.createElement("div");
      wrapper.className = "field";
      wrapper.dataset.field = "template.variables." + name;
      var label = document.createElement("label");
      label.htmlFor = "pg-var-" + name;
      label.textContent = name;
      var input = document.createElement("textarea");
      input.id = "pg-var-" + name;
      input.rows = 1;
      input.dataset.variable = name;
      if (Object.prototype.hasOwnProperty.call(template.defaults, name)) {
        input.value = template.defaults[name];
        input.placeholder = template.defaults[name];
      }
      input.addEventListener("input", schedulePreview);
      wrapper.appendChild(label);
      wrapper.appendChild(input);
      variableFields.appendChild(wrapper);
    });
    if (!template.variables.length) {
      var none = document.createElement("p");
      none.className = "muted";
      none.textContent = "This template has no variables.";
      variableFields.appendChild(none);
    }
    schedulePreview();
  }

  function variableValues() {
    // Left out when empty, so the template's default applies (or the missing one is named).
    var values = {};
    variableFields.querySelectorAll("[data-variable]").forEach(function (input) {
      if (input.value !== "") values[input.dataset.variable] = input.value;
    });
    return values;
  }

  // --- The template preview (the API's render endpoint) ----------------------------------------------

  function schedulePreview() {
    clearTimeout(previewTimer);
    previewTimer = setTimeout(preview, 250);
  }

  function preview() {
    var name = templateSelect.value;
    if (!name) return;
    var seq = ++previewSeq;
    fetch(form.dataset.renderUrl.replace("__template__", encodeURIComponent(name)), {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRFToken": csrfToken, Accept: "application/json" },
      body: JSON.stringify({ variables: variableValues() }),
    }).then(function (response) {
      return response.json().catch(function () { return {}; }).then(function (body) {
        if (seq !== previewSeq) return;
        previewBody.textContent = "";
        if (!response.ok) {
          previewBody.className = "error-text";
          previewBody.textContent = (body.error && body.error.message) || "No preview (" + response.status + ").";
          return;
        }
        previewBody.className = "";
        if (mode() === "chat") {
          body.messages.forEach(function (message) {
            var turn = document.createElement("div");
            turn.className = "pg-turn";
            var role = document.createElement("span");
            role.className = "pg-role";
            role.textContent = message.role;
            var content = document.createElement("span");
            content.className = "pg-turn-text";
            content.textContent = message.content;
            turn.appendChild(role);
            turn.appendChild(content);
            previewBody.appendChild(turn);
          });
        } else {
          var text = document.createElement("pre");
          text.className = "pg-turn-text";
          text.textContent = body.prompt;
          previewBody.appendChild(text);
        }
      });
    }).catch(function () {
      if (seq === previewSeq) previewBody.textContent = "No preview: the request failed.";
    });
  }

  // --- Reporting ----------------------------------------------------------------------------------

  // blocked, held (for a reviewer), redacted, flagged or allowed: what the page says and colours.
  function verdictWord(verdict) {
    if (verdict.blocked) return "blocked";
    if (verdict.held) return "held";
    if (verdict.action === "redact") return "redacted";
    return verdict.flagged ? "flagged" : "allowed";
  }

  function verdictText(verdict) {
    if (!verdict) return "—";
    var word = verdictWord(verdict);
    var parts = [word === "held" ? "held for review" : word];
    var categories = Object.keys(verdict.categories || {});
    if (categories.length) {
      parts.push(categories.map(function (name) {
        var score = verdict.categories[name];
        return typeof score === "number" ? name + " " + score.toFixed(2) : name;
      }).join(", "));
    }
    parts.push(verdict.policy_version === null || verdict.policy_version === undefined
      ? "no policy" : "policy v" + verdict.policy_version);
    return parts.join(" · ");
  }

  function showVerdict(box, verdict) {
    box.textContent = verdictText(verdict);
    box.dataset.verdict = verdict ? verdictWord(verdict) : "";
  }

  function clearFieldErrors() {
    formError.hidden = true;
    formError.textContent = "";
    form.querySelectorAll(".field-invalid").forEach(function (field) { field.classList.remove("field-invalid"); });
    form.querySelectorAll("[aria-invalid]").forEach(function (input) { input.removeAttribute("aria-invalid"); });
  }

  function showError(message, field) {
    formError.textContent = message;
    formError.hidden = false;
    statusLine.textContent = "Refused: " + message;
    if (!field) return;
    // "template.variables.topic" names the variable's box; "template.name" the picker.
    var target = form.querySelector('[data-field="' + CSS.escape(field) + '"]')
      || form.querySelector('[data-field="' + CSS.escape(field.split(".")[0]) + '"]');
    if (!target) return;
    target.classList.add("field-invalid");
    var input = target.querySelector("input, select, textarea");
    if (input) input.setAttribute("aria-invalid", "true");
  }

  function resetAnswer() {
    clearFieldErrors();
    output.textContent = "";
    output.dataset.state = "idle";
    imagesBox.textContent = "";
    [promptVerdict, outputVerdict, finishReason, usageBox, usedTemplate].forEach(function (box) {
      box.textContent = "—";
      delete box.dataset.verdict;
    });
  }

  function busy(on) {
    sendButton.disabled = on || !canSend;
    stopButton.hidden = !on;
    output.setAttribute("aria-busy", on ? "true" : "false");
  }

  // A refusal before anything was generated: Lode's error body (or something that is not JSON).
  function refused(response) {
    return response.text().then(function (text) {
      var body = null;
      try { body = JSON.parse(text); } catch (ignored) { /* not JSON: an HTML error page */ }
      var error = body && body.error;
      if (error && error.message) {
        showError(error.message, error.details && error.details.field);
      } else {
        showError("The request failed (" + response.status + ").", null);
      }
      output.dataset.state = "error";
    });
  }

  // --- Sending --------------------------------------------------------------------------------------

  function params(kindName) {
    var values = {};
    form.querySelectorAll("[data-param]").forEach(function (input) {
      var part = input.closest("[data-for-kind]");
      if (part && part.dataset.forKind !== kindName) return;
      var raw = input.value.trim();
      if (raw === "") return;
      if (input.dataset.param === "stop") {
        var lines = input.value.split("\n").filter(function (line) { return line !== ""; });
        if (lines.length) values.stop = lines;
      } else if (input.type === "number") {
        values[input.dataset.param] = Number(raw);
      } else {
        values[input.dataset.param] = input.value;
      }
    });
    return values;
  }

  function textRequest() {
    var template = templateSelect.value;
    return {
      model: modelSelect.value,
      mode: mode(),
      system: systemField.hidden ? "" : el("pg-system").value,
      prompt: promptBox.disabled ? "" : promptBox.value,
      template: template ? { name: template, variables: variableValues() } : null,
      params: params("text"),
    };
  }

  function post(url, body, signal) {
    return fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRFToken": csrfToken },
      body: JSON.stringify(body),
      signal: signal,
    });
  }

  function handleEvent(name, data, state) {
    if (name === "start") {
      usedTemplate.textContent = data.template ? data.template.name + " v" + data.template.version : "none";
      statusLine.textContent = "Generating with " + data.model + "…";
    } else if (name === "verdict") {
      showVerdict(promptVerdict, data);
    } else if (name === "delta") {
      output.textContent += data.text;
      output.dataset.state = "streaming";
    } else if (name === "done") {
      state.finished = true;
      finishReason.textContent = data.finish_reason || "—";
      var usage = data.usage || {};
      usageBox.textContent = usage.prompt_tokens + " prompt + " + usage.completion_tokens + " completion = "
        + usage.total_tokens + " tokens";
      showVerdict(outputVerdict, data.verdict);
      output.dataset.state = "done";
      if (data.finish_reason !== "content_filter") {
        statusLine.textContent = "Done (" + (data.finish_reason || "finished") + ").";
      } else if (data.verdict && data.verdict.held) {
        statusLine.textContent = "Done: the output is held until a reviewer releases it.";
      } else {
        statusLine.textContent = "Done: the output was blocked by the organization's safety policy.";
      }
    } else if (name === "error") {
      state.finished = true;
      output.dataset.state = "error";
      showError(data.message, data.field);
    }
  }

  // One "event: …\ndata: …" block of the stream.
  function parseBlock(block, state) {
    var name = "message";
    var data = [];
    block.split("\n").forEach(function (line) {
      if (line.indexOf("event:") === 0) name = line.slice(6).trim();
      else if (line.indexOf("data:") === 0) data.push(line.slice(5).replace(/^ /, ""));
    });
    if (!data.length) return;
    handleEvent(name, JSON.parse(data.join("\n")), state);
  }

  function readStream(response, state) {
    var reader = response.body.getReader();
    var decoder = new TextDecoder();
    var buffer = "";
    function pump() {
      return reader.read().then(function (chunk) {
        if (chunk.done) {
          buffer += decoder.decode();
          if (buffer.trim()) parseBlock(buffer.replace(/\r\n/g, "\n"), state);
          return;
        }
        buffer += decoder.decode(chunk.value, { stream: true }).replace(/\r\n/g, "\n");
        var end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          parseBlock(buffer.slice(0, end), state);
          buffer = buffer.slice(end + 2);
        }
        return pump();
      });
    }
    return pump();
  }

  function sendText() {
    var state = { finished: false };
    controller = new AbortController();
    statusLine.textContent = "Sending…";
    return post(form.dataset.streamUrl, textRequest(), controller.signal).then(function (response) {
      if (!response.ok) return refused(response);
      return readStream(response, state).then(function () {
        if (!state.finished) {
          output.dataset.state = "error";
          showError("The answer ended before it was complete.", null);
        }
      });
    });
  }

  function sendImages() {
    controller = new AbortController();
    statusLine.textContent = "Drawing…";
    var body = { model: modelSelect.value, prompt: promptBox.value, params: params("image") };
    return post(form.dataset.imagesUrl, body, controller.signal).then(function (response) {
      if (!response.ok) return refused(response);
      return response.json().then(function (answer) {
        var held = 0;
        answer.images.forEach(function (source, index) {
          var figure = document.createElement("figure");
          figure.className = "pg-image";
          if (source === null) {
            // Held by the safety policy until a reviewer releases it.
            held += 1;
            figure.classList.add("pg-image-held");
            figure.textContent = "Image " + (index + 1) + " is held for review.";
          } else {
            var image = document.createElement("img");
            image.src = source;
            image.alt = "Image " + (index + 1) + " of " + answer.images.length + " for: " + body.prompt;
            figure.appendChild(image);
          }
          imagesBox.appendChild(figure);
        });
        if (answer.verdict) showVerdict(promptVerdict, answer.verdict);
        output.dataset.state = "done";
        statusLine.textContent = "Done: " + answer.images.length + " image" + (answer.images.length === 1 ? "" : "s")
          + " from " + answer.model + (held ? ", " + held + " held for review." : ".");
      });
    });
  }

  function send() {
    if (!canSend || controller) return;
    resetAnswer();
    busy(true);
    var sending = kind() === "image" ? sendImages() : sendText();
    sending.catch(function (error) {
      if (error && error.name === "AbortError") {
        statusLine.textContent = "Stopped.";
        output.dataset.state = "stopped";
      } else {
        output.dataset.state = "error";
        showError("The request failed: " + (error && error.message ? error.message : "network error") + ".", null);
      }
    }).then(function () {
      controller = null;
      busy(false);
    });
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    send();
  });
  form.addEventListener("keydown", function (event) {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      send();
    }
  });
  stopButton.addEventListener("click", function () {
    if (controller) controller.abort();
  });
  modelSelect.addEventListener("change", showFields);
  templateSelect.addEventListener("change", function () {
    showVariables();
    showFields();
  });
  form.querySelectorAll('input[name="mode"]').forEach(function (radio) {
    radio.addEventListener("change", function () {
      showFields();
      if (templateSelect.value) schedulePreview();
    });
  });

  showVariables();
  showFields();
})();
