/*
 * The tether status admin page: one tether.js socket to the staff-only status consumer, whose summaries
 * (every process's latest snapshot and the totals) are written into the page's tables. Text only (textContent),
 * so group and consumer names are never read as HTML.
 */
(function () {
  "use strict";

  const root = document.getElementById("tether-status");
  const byId = (id) => document.getElementById(id);

  function cell(row, text, numeric) {
    const td = document.createElement("td");
    td.textContent = text;
    if (numeric) td.className = "num";
    row.appendChild(td);
    return td;
  }

  function fill(tbodyId, rows, empty) {
    const tbody = byId(tbodyId);
    tbody.replaceChildren();
    if (rows.length === 0) {
      const row = document.createElement("tr");
      const td = cell(row, empty);
      td.colSpan = 6;
      tbody.appendChild(row);
      return;
    }
    for (const values of rows) {
      const row = document.createElement("tr");
      for (const value of values) {
        if (value && typeof value === "object") {
          const td = cell(row, value.text, value.numeric);
          if (value.failing) td.classList.add("failing");
        } else {
          cell(row, String(value), typeof value === "number");
        }
      }
      tbody.appendChild(row);
    }
  }

  function layerText(layers) {
    const parts = [];
    let failing = false;
    for (const [alias, health] of Object.entries(layers || {})) {
      if (health.ok) {
        parts.push(`${alias}: ok, ${(health.seconds * 1000).toFixed(1)} ms`);
      } else {
        failing = true;
        parts.push(`${alias}: FAILING (${health.error})`);
      }
    }
    return { text: parts.join("; ") || "none built", failing };
  }

  function render(summary) {
    const totals = summary.totals;
    byId("tether-status-processes").textContent = String(totals.processes);
    byId("tether-status-open").textContent = String(totals.open);
    fill(
      "tether-status-consumers",
      Object.entries(totals.consumers).map(([name, c]) => [
        name, c.open, c.in_rate.toFixed(1), c.out_rate.toFixed(1), c.in, c.out,
      ]),
      "No connection served yet.",
    );
    fill(
      "tether-status-process-rows",
      summary.processes.map((p) => [
        p.process,
        p.open,
        Object.entries(p.consumers).map(([name, c]) => `${name} ${c.open}`).join(", ") || "none",
        layerText(p.layers),
        { text: `${(p.loop_lag * 1000).toFixed(1)} ms`, numeric: true },
      ]),
      "No process has reported yet.",
    );
    fill("tether-status-drops", Object.entries(totals.drops), "No drops.");
    fill("tether-status-groups", totals.groups, "No group known.");
    byId("tether-status-updated").textContent = `Updated ${new Date().toLocaleTimeString()}.`;
  }

  const socket = Tether.connect(root.dataset.websocketPath);
  const state = byId("tether-status-state");
  for (const type of ["open", "close", "reconnecting"]) {
    socket.on(type, () => {
      state.textContent = socket.state;
      root.dataset.state = socket.state;
    });
  }
  socket.on("message", (event) => {
    if (event.json && event.json.type === "status") render(event.json.summary);
  });
})();
