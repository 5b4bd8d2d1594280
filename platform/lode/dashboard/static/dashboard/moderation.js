/* The moderation pages (dashboard/safety/): live SLA timers (every [data-due] element counts down
   each second and turns red once overdue), and on the queue the keyboard: j/k open the next or
   previous item of the list in the review panel (fetched alone, ?fragment=review-panel), a
   approves, r and e arm a rejection or escalation and put the cursor in the reason box where
   Enter sends it, c claims the next items, x ticks the current item for a bulk decision, ? shows
   the shortcuts. Nothing fires while the person types in a text field. Every decision is an
   ordinary form post: the page works without this script, only slower. */
(function () {
  "use strict";

  // --- SLA timers ----------------------------------------------------------------------------------

  function two(number) { return number < 10 ? "0" + number : String(number); }

  // The same words as lode.safety.selectors.sla_label, which renders the first value.
  function slaLabel(seconds) {
    var whole = Math.floor(Math.abs(seconds));
    var days = Math.floor(whole / 86400);
    var hours = Math.floor((whole % 86400) / 3600);
    var minutes = Math.floor((whole % 3600) / 60);
    var secs = whole % 60;
    var text;
    if (days) text = days + "d " + hours + "h";
    else if (hours) text = hours + "h " + two(minutes) + "m " + two(secs) + "s";
    else if (minutes) text = minutes + "m " + two(secs) + "s";
    else text = secs + "s";
    return seconds >= 0 ? text + " left" : "overdue " + text;
  }

  var SOON_SECONDS = 15 * 60;

  function tick() {
    var now = Date.now();
    document.querySelectorAll("[data-due]").forEach(function (timer) {
      var due = Date.parse(timer.dataset.due);
      if (isNaN(due)) return;
      var seconds = (due - now) / 1000;
      timer.textContent = slaLabel(seconds);
      timer.classList.toggle("sla-overdue", seconds < 0);
      timer.classList.toggle("sla-soon", seconds >= 0 && seconds < SOON_SECONDS);
      timer.dataset.slaState = seconds < 0 ? "overdue" : "on-time";
    });
  }

  tick();
  setInterval(tick, 1000);

  // --- The review panel ----------------------------------------------------------------------------

  var panel = document.getElementById("review-panel");
  var help = document.getElementById("shortcut-help");
  var submitting = false;
  var panelSeq = 0;
  var VERBS = { reject: "Reject", escalate: "Escalate" };

  function reviewForm() { return document.getElementById("review-form"); }
  function reasonBox() { return document.getElementById("review-reason"); }
  function rows() { return Array.prototype.slice.call(document.querySelectorAll("tr[data-item-row]")); }
  function currentRow() { return document.querySelector("tr[data-item-row].is-current"); }

  function hint(text) {
    var box = reasonBox();
    if (!box) return;
    var line = document.getElementById("review-hint");
    if (!line) {
      line = document.createElement("p");
      line.id = "review-hint";
      line.className = "help review-hint";
      line.setAttribute("aria-live", "polite");
      box.insertAdjacentElement("afterend", line);
    }
    line.textContent = text;
  }

  function arm(verdict) {
    var form = reviewForm();
    if (!form) return false;
    form.dataset.armed = verdict || "";
    form.querySelectorAll("button[data-verdict]").forEach(function (button) {
      button.classList.toggle("is-armed", button.dataset.verdict === verdict);
    });
    var box = reasonBox();
    if (verdict && VERBS[verdict]) {
      box.placeholder = "Why " + verdict + "? Enter sends.";
      hint(VERBS[verdict] + ": type the reason, then Enter.");
      box.focus();
    } else {
      box.placeholder = "";
      hint("");
    }
    return true;
  }

  function send(verdict) {
    var form = reviewForm();
    if (!form || submitting) return false;
    var button = form.querySelector('button[data-verdict="' + verdict + '"]');
    if (!button) return false;
    submitting = true;
    form.requestSubmit(button);
    return true;
  }

  // A failed post comes back with the verdict it tried armed again (the reason box focused when
  // the reason was what failed), so typing the reason and Enter finishes it.
  function initPanel() {
    var form = reviewForm();
    if (!form) return;
    var armed = form.dataset.armed;
    form.querySelectorAll("button[data-verdict]").forEach(function (button) {
      button.classList.toggle("is-armed", button.dataset.verdict === armed);
    });
    if (armed && VERBS[armed] && reasonBox() === document.activeElement) hint(VERBS[armed] + ": type the reason, then Enter.");
  }

  function openRow(row) {
    if (!row || !panel) return;
    rows().forEach(function (other) {
      other.classList.toggle("is-current", other === row);
      if (other === row) other.setAttribute("aria-current", "true"); else other.removeAttribute("aria-current");
    });
    row.scrollIntoView({ block: "nearest" });
    if (window.history && history.replaceState) history.replaceState(null, "", row.dataset.pageUrl);
    var seq = ++panelSeq;
    panel.setAttribute("aria-busy", "true");
    fetch(row.dataset.panelUrl, { credentials: "same-origin", headers: { Accept: "text/html" } })
      .then(function (response) {
        if (!response.ok) throw new Error("HTTP " + response.status);
        return response.text();
      })
      .then(function (html) {
        if (seq !== panelSeq) return;
        panel.innerHTML = html;
        panel.removeAttribute("aria-busy");
        initPanel();
        tick();
      })
      .catch(function () {
        if (seq === panelSeq) window.location.href = row.dataset.pageUrl; // the whole page instead
      });
  }

  function move(step) {
    var list = rows();
    if (!list.length) return false;
    var index = list.indexOf(currentRow());
    var next = index === -1 ? (step > 0 ? 0 : list.length - 1) : Math.min(Math.max(index + step, 0), list.length - 1);
    if (next !== index) openRow(list[next]);
    return true;
  }

  function toggleCurrent() {
    var row = currentRow();
    var box = row && row.querySelector('input[type="checkbox"][name="items"]');
    if (!box) return false;
    box.checked = !box.checked;
    return true;
  }

  function claim() {
    var form = document.getElementById("claim-form");
    if (!form || submitting) return false;
    submitting = true;
    form.requestSubmit();
    return true;
  }

  function toggleHelp() {
    if (!help) return false;
    if (help.open) help.close(); else help.showModal();
    return true;
  }

  var TEXT_INPUTS = /^(text|search|email|url|tel|password|number|date|datetime-local|month|week|time)$/;

  function isTyping(target) {
    if (!target || !target.tagName) return false;
    if (target.isContentEditable) return true;
    var tag = target.tagName.toLowerCase();
    if (tag === "textarea" || tag === "select") return true;
    return tag === "input" && TEXT_INPUTS.test((target.type || "text").toLowerCase());
  }

  document.addEventListener("keydown", function (event) {
    // Enter and Esc in the reason box: send the armed verdict, or leave the box.
    if (event.target === reasonBox()) {
      if (event.key === "Escape") {
        event.preventDefault();
        arm("");
        event.target.blur();
      } else if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        var armed = reviewForm().dataset.armed;
        if (armed) send(armed);
        else hint("Enter sends once a verdict is chosen: Esc, then r (reject) or e (escalate), or click a button.");
      }
      return;
    }
    if (event.defaultPrevented || event.ctrlKey || event.metaKey || event.altKey) return;
    if (help && help.open) {
      if (event.key === "?") { event.preventDefault(); help.close(); }
      return; // the dialog is modal: no shortcut acts behind it
    }
    if (isTyping(event.target)) return;
    var handled = false;
    switch (event.key) {
      case "j": handled = move(1); break;
      case "k": handled = move(-1); break;
      case "a": handled = send("approve"); break;
      case "r": handled = arm("reject"); break;
      case "e": handled = arm("escalate"); break;
      case "c": handled = claim(); break;
      case "x": handled = toggleCurrent(); break;
      case "?": handled = toggleHelp(); break;
      default: return;
    }
    if (handled) event.preventDefault();
  });

  // A click on an item in the list opens it in the panel (a modified click opens the page as usual).
  document.addEventListener("click", function (event) {
    var link = event.target.closest && event.target.closest("a[data-open-item]");
    if (!link || !panel || event.button !== 0 || event.ctrlKey || event.metaKey || event.shiftKey || event.altKey) return;
    event.preventDefault();
    openRow(link.closest("tr[data-item-row]"));
  });

  // The list's header checkbox ticks every open item.
  document.addEventListener("change", function (event) {
    if (event.target.id !== "select-all") return;
    document.querySelectorAll('input[type="checkbox"][name="items"]').forEach(function (box) {
      box.checked = event.target.checked;
    });
  });

  // A form's own buttons: once one posts, another key press does not post again.
  document.addEventListener("submit", function (event) {
    if (event.target.id === "review-form" || event.target.id === "claim-form") submitting = true;
  });
  window.addEventListener("pageshow", function () { submitting = false; });

  initPanel();
})();
