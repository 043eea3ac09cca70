// SLB admin: live figures without reloading, member selection, list filter. No build step.
(function () {
  "use strict";

  // -- "Back" links on error pages
  document.querySelectorAll("[data-back]").forEach(function (link) {
    link.addEventListener("click", function (event) {
      if (history.length > 1) { event.preventDefault(); history.back(); }
    });
  });

  // -- member selection: select all, and selection buttons only when something is selected
  var all = document.getElementById("select-all");
  var boxes = document.querySelectorAll("#members input[name=address]");
  var needing = document.querySelectorAll("[data-needs-selection]");
  function refreshSelection() {
    var chosen = 0;
    boxes.forEach(function (box) { if (box.checked) { chosen += 1; } });
    needing.forEach(function (button) { button.disabled = chosen === 0; });
    if (all) {
      all.checked = chosen > 0 && chosen === boxes.length;
      all.indeterminate = chosen > 0 && chosen < boxes.length;
    }
  }
  if (all) {
    all.addEventListener("change", function () {
      boxes.forEach(function (box) { box.checked = all.checked; });
      refreshSelection();
    });
  }
  boxes.forEach(function (box) { box.addEventListener("change", refreshSelection); });
  refreshSelection();

  // -- filter a table as you type (the search form still works without script)
  document.querySelectorAll("input[data-filter]").forEach(function (input) {
    var rows = document.querySelectorAll(input.getAttribute("data-filter"));
    input.addEventListener("input", function () {
      var needle = input.value.trim().toLowerCase();
      rows.forEach(function (row) {
        var text = row.getAttribute("data-search") || row.textContent.toLowerCase();
        row.hidden = needle !== "" && text.indexOf(needle) < 0;
      });
    });
  });

  // -- live figures: poll a JSON endpoint, update [data-row] [data-live] cells in place
  var url = document.body.getAttribute("data-live-url");
  if (!url) { return; }
  var every = parseInt(document.body.getAttribute("data-poll-ms"), 10) || 2000;
  var note = document.getElementById("live-note");
  var stopped = false;

  function say(text) { if (note && note.textContent !== text) { note.textContent = text; } }

  function rowFor(id) {
    var rows = document.querySelectorAll("[data-row]");
    for (var i = 0; i < rows.length; i += 1) {
      if (rows[i].getAttribute("data-row") === id) { return rows[i]; }
    }
    return null;
  }

  function apply(data) {
    var rows = data.rows || {};
    Object.keys(rows).forEach(function (id) {
      var row = rowFor(id);
      if (!row) { return; }
      var values = rows[id];
      Object.keys(values).forEach(function (key) {
        row.querySelectorAll('[data-live="' + key + '"]').forEach(function (cell) {
          var value = values[key];
          var text = value === null || value === undefined ? "–" : String(value);
          if (cell.textContent !== text) { cell.textContent = text; }
          // data-live-class="pill ": the class is that prefix plus this value, or plus the
          // value named by data-live-class-key
          var prefix = cell.getAttribute("data-live-class");
          if (prefix !== null) {
            var classKey = cell.getAttribute("data-live-class-key") || key;
            var wanted = prefix + String(values[classKey]);
            if (cell.className !== wanted) { cell.className = wanted; }
          }
        });
        if (key === "state") { row.className = "row-" + values[key]; }
      });
    });
    if (data.note !== undefined) { say(data.note); }
  }

  function poll() {
    if (stopped) { return; }
    if (document.hidden) { setTimeout(poll, every); return; }
    fetch(url, { credentials: "same-origin", headers: { "Accept": "application/json" } })
      .then(function (reply) {
        if (reply.status === 401) {
          stopped = true;
          say("Your session has ended: reload the page to log in again.");
          return null;
        }
        if (!reply.ok) { throw new Error("HTTP " + reply.status); }
        return reply.json();
      })
      .then(function (data) { if (data) { apply(data); } })
      .catch(function (error) { say("Live figures unavailable (" + error.message + "); retrying."); })
      .then(function () { if (!stopped) { setTimeout(poll, every); } });
  }
  poll();
}());
