/*
 * The dashboard page: draws the snapshots the server pushes as two SVG charts (no library), keeps the ticker
 * going with a "watch" request now and then, and says so when no update arrives (the worker is not running).
 */
(function () {
  "use strict";

  const { socket } = window.chatSite;
  const SVG = "http://www.w3.org/2000/svg";
  const WATCH_EVERY = 15000; // ms: the ticker stops when nobody has watched for a minute
  const STALE_AFTER = 5000; // ms without an update before the page says something is wrong
  const timeFormat = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit", hourCycle: "h23" });
  const clockFormat = new Intl.DateTimeFormat(undefined, { timeStyle: "medium", hourCycle: "h23" });
  const errorBox = document.getElementById("dashboard-error");
  let lastUpdate = 0;
  let openedAt = 0;

  function element(name, attributes, text) {
    const node = document.createElementNS(SVG, name);
    for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, value);
    if (text !== undefined) node.textContent = text;
    return node;
  }

  /** A round top for an axis of four steps, at least `value`: each step is 1, 2 or 5 times a power of ten. */
  function niceMax(value) {
    const rough = Math.max(value, 1) / 4;
    const power = 10 ** Math.floor(Math.log10(rough));
    const step = [1, 2, 5, 10].map((factor) => factor * power).find((candidate) => candidate >= rough);
    return Math.max(step, 1) * 4; // whole numbers: messages and people come in ones
  }

  function drawMessages(series) {
    const svg = document.getElementById("chart-messages");
    const [width, height] = [640, 260];
    const pad = { left: 36, right: 8, top: 12, bottom: 28 };
    const plotW = width - pad.left - pad.right;
    const plotH = height - pad.top - pad.bottom;
    const top = niceMax(Math.max(...series.map((point) => point.count), 1));
    const nodes = [];
    for (let i = 0; i <= 4; i++) {
      const y = pad.top + plotH - (plotH * i) / 4;
      nodes.push(element("line", { x1: pad.left, x2: width - pad.right, y1: y, y2: y, class: "grid" }));
      nodes.push(element("text", { x: pad.left - 6, y: y + 4, class: "axis axis-y" }, String((top * i) / 4)));
    }
    const slot = plotW / series.length;
    series.forEach((point, index) => {
      const barH = (plotH * point.count) / top;
      const x = pad.left + index * slot + slot * 0.15;
      const bar = element("rect", {
        x,
        y: pad.top + plotH - barH,
        width: slot * 0.7,
        height: Math.max(barH, 0),
        rx: 2,
        class: index === series.length - 1 ? "bar bar-now" : "bar",
      });
      bar.append(element("title", {}, `${timeFormat.format(new Date(point.minute))}: ${point.count}`));
      nodes.push(bar);
      if (index % 5 === 4 || index === series.length - 1) {
        const label = index === series.length - 1 ? "now" : timeFormat.format(new Date(point.minute));
        nodes.push(element("text", { x: x + slot * 0.35, y: height - 8, class: "axis axis-x" }, label));
      }
    });
    svg.replaceChildren(...nodes);
  }

  function drawRooms(rooms) {
    const svg = document.getElementById("chart-rooms");
    const [width, height] = [420, 260];
    const labelW = 110;
    const row = (height - 8) / Math.max(rooms.length, 6);
    const top = niceMax(Math.max(...rooms.map((room) => room.users), 1));
    const plotW = width - labelW - 40;
    const nodes = [];
    rooms.forEach((room, index) => {
      const y = 4 + index * row;
      const barW = (plotW * room.users) / top;
      nodes.push(element("text", { x: labelW - 8, y: y + row / 2 + 4, class: "axis axis-y" }, `#${room.room}`));
      nodes.push(element("rect", { x: labelW, y: y + row * 0.18, width: plotW, height: row * 0.64, rx: 3, class: "track" }));
      nodes.push(element("rect", { x: labelW, y: y + row * 0.18, width: barW, height: row * 0.64, rx: 3, class: "bar" }));
      nodes.push(element("text", { x: labelW + barW + 6, y: y + row / 2 + 4, class: "value" }, String(room.users)));
    });
    if (!rooms.length) nodes.push(element("text", { x: width / 2, y: height / 2, class: "axis empty" }, "No rooms yet"));
    svg.replaceChildren(...nodes);
  }

  function show(snapshot) {
    lastUpdate = Date.now();
    errorBox.hidden = true;
    document.getElementById("stat-online").textContent = snapshot.online;
    document.getElementById("stat-messages").textContent = snapshot.messages_recent;
    const busiest = snapshot.rooms.find((room) => room.users > 0);
    document.getElementById("stat-busiest").textContent = busiest ? `#${busiest.room}` : "–";
    document.getElementById("updated").textContent = `Updated ${clockFormat.format(new Date(snapshot.generated))}.`;
    drawMessages(snapshot.messages_per_minute);
    drawRooms(snapshot.rooms);
  }

  function watch() {
    openedAt = Date.now();
    socket.sendJson({ type: "watch" });
  }

  socket.on("open", watch);
  if (socket.state === "open") watch();
  socket.on("message", (event) => {
    const data = event.json;
    if (!data) return;
    if (data.type === "dashboard") show(data);
    else if (data.type === "error") {
      errorBox.textContent = data.message;
      errorBox.hidden = false;
    }
  });

  setInterval(() => {
    if (socket.state !== "open") return;
    const now = Date.now();
    if (now - Math.max(lastUpdate, openedAt) > STALE_AFTER) {
      errorBox.textContent =
        "No update for a while: is the dashboard worker running? (python manage.py runworker dashboard-ticker)";
      errorBox.hidden = false;
      watch();
    } else if (now - openedAt > WATCH_EVERY) {
      watch();
    }
  }, 1000);
})();
