/*
 * What every page of the example shares: its live connection (one Tether.Socket per page), the connection status
 * in the top bar, mention notifications as toasts, and avatar colours. Page scripts use `window.chatSite`.
 */
(function () {
  "use strict";

  const options = JSON.parse(document.getElementById("client-options").textContent);
  // With `resume`, a reload (or the next page of this tab on the same connection path) carries on where this page
  // left off: each stream from the last message shown, and what waited to be sent goes out.
  const path = document.body.dataset.socket;
  const socket = Tether.connect(path, Object.assign({ resume: `chat:${path}` }, options));
  const me = document.body.dataset.user || null;

  // The status pill: "Live" when connected, "Reconnecting" while the client retries.
  const status = document.getElementById("connection");
  const statusText = status.querySelector(".status-text");
  const LABELS = { connecting: "Connecting", open: "Live", reconnecting: "Reconnecting", closed: "Offline" };
  function showState() {
    status.dataset.state = socket.state;
    statusText.textContent = LABELS[socket.state];
  }
  for (const type of ["open", "close", "reconnecting"]) socket.on(type, showState);
  showState();

  /** A stable colour for a username, so each person looks the same everywhere. */
  function avatarColor(name) {
    let hash = 0;
    for (const char of name) hash = (hash * 31 + char.codePointAt(0)) >>> 0;
    return `hsl(${hash % 360} 55% 46%)`;
  }
  for (const avatar of document.querySelectorAll(".avatar[data-name]")) {
    avatar.style.background = avatarColor(avatar.dataset.name);
  }

  // Toasts: a small card in the corner that goes away by itself after a while, or on click.
  const toasts = document.getElementById("toasts");
  function toast({ title, body, href }) {
    const item = document.createElement(href ? "a" : "div");
    item.className = "toast";
    if (href) item.href = href;
    const heading = document.createElement("strong");
    heading.textContent = title;
    const text = document.createElement("span");
    text.textContent = body;
    item.append(heading, text);
    toasts.append(item);
    const remove = () => item.remove();
    setTimeout(remove, 8000);
    item.addEventListener("click", (event) => {
      if (!href) remove();
      event.stopPropagation();
    });
    return item;
  }

  socket.on("message", (event) => {
    const data = event.json;
    if (data && data.type === "notification") {
      toast({ title: `@${data.from} mentioned you in #${data.room}`, body: data.text, href: data.url });
    }
  });

  window.chatSite = Object.freeze({ socket, me, toast, avatarColor });
})();
