/*
 * The room page: join the room whenever the connection opens (again), show its history and new messages, post
 * what the user writes, and show the server's errors (a guest trying to post, say) above the composer.
 */
(function () {
  "use strict";

  const { socket, me, avatarColor } = window.chatSite;
  const room = document.getElementById("room").dataset.room;
  const list = document.getElementById("messages");
  const empty = document.getElementById("messages-empty");
  const errorBox = document.getElementById("room-error");
  const form = document.getElementById("composer");
  const input = document.getElementById("message-input");
  const counter = document.getElementById("message-count");
  // The server's limit (chat.models.MAX_MESSAGE_LENGTH), in characters as Python counts them (code points).
  const maxLength = Number(input.dataset.maxLength);
  // The counter appears from 90 % of the limit on: early enough to trim, out of the way of ordinary messages.
  const countFrom = Math.floor(maxLength * 0.9);

  // Same rule as notifications/mentions.py: "@name" not preceded by a name character.
  const MENTION = /(?<![\p{L}\p{N}_@.+-])@([\p{L}\p{N}_.+-][\p{L}\p{N}_.@+-]{0,149})/gu;
  const timeFormat = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit", hourCycle: "h23" });

  function showError(text) {
    errorBox.textContent = text;
    errorBox.hidden = false;
  }

  function hideError() {
    errorBox.hidden = true;
  }

  /** The text as DOM nodes, with mentions highlighted (never as HTML: a message is untrusted). */
  function renderText(text) {
    const paragraph = document.createElement("p");
    paragraph.className = "message-text";
    let last = 0;
    for (const match of text.matchAll(MENTION)) {
      const name = match[1].replace(/[.-]+$/, "");
      paragraph.append(text.slice(last, match.index));
      const mention = document.createElement("span");
      mention.className = name === me ? "mention mention-me" : "mention";
      mention.textContent = `@${name}`;
      paragraph.append(mention);
      last = match.index + 1 + name.length;
    }
    paragraph.append(text.slice(last));
    return paragraph;
  }

  function renderMessage(message) {
    const item = document.createElement("li");
    item.className = message.author === me ? "message message-mine" : "message";
    item.id = `message-${message.id}`;
    item.dataset.author = message.author;
    const avatar = document.createElement("span");
    avatar.className = "avatar";
    avatar.textContent = message.author.charAt(0).toUpperCase();
    avatar.style.background = avatarColor(message.author);
    const body = document.createElement("div");
    body.className = "message-body";
    const meta = document.createElement("div");
    meta.className = "message-meta";
    const author = document.createElement("strong");
    author.className = "author";
    author.textContent = message.author;
    const time = document.createElement("time");
    time.dateTime = message.created;
    time.textContent = timeFormat.format(new Date(message.created));
    meta.append(author, time);
    body.append(meta, renderText(message.text));
    item.append(avatar, body);
    return item;
  }

  function nearBottom() {
    return list.scrollHeight - list.scrollTop - list.clientHeight < 80;
  }

  function append(message) {
    if (document.getElementById(`message-${message.id}`)) return; // already shown (joined while it was sent)
    const stick = nearBottom();
    empty.hidden = true;
    list.append(renderMessage(message));
    if (stick || message.author === me) list.scrollTop = list.scrollHeight;
  }

  function showHistory(history) {
    for (const item of list.querySelectorAll(".message")) item.remove();
    empty.textContent = "No messages yet. Say hello!";
    empty.hidden = history.length > 0;
    for (const message of history) list.append(renderMessage(message));
    list.scrollTop = list.scrollHeight;
  }

  function join() {
    socket.sendJson({ type: "join", room });
  }

  socket.on("open", join); // on every (re)connection, before queued posts go out
  if (socket.state === "open") join();

  socket.on("message", (event) => {
    const data = event.json;
    if (!data) return;
    if (data.type === "joined" && data.room === room) {
      hideError();
      showHistory(data.history);
    } else if (data.type === "message" && data.room === room) {
      if (data.author === me) hideError();
      append(data);
    } else if (data.type === "error") {
      showError(data.message);
    }
  });

  /** Characters as the server counts them: code points, so an emoji counts once, not as two UTF-16 units. */
  function lengthOf(text) {
    return Array.from(text).length;
  }

  /** Show "n / limit" near the limit and past it, so a long message is never cut or refused without warning. */
  function updateCounter() {
    const length = lengthOf(input.value);
    counter.hidden = length < countFrom;
    counter.textContent = `${length} / ${maxLength}`;
    counter.classList.toggle("composer-count-over", length > maxLength);
  }

  input.addEventListener("input", updateCounter);

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const text = input.value.trim();
    if (!text) return;
    const length = lengthOf(text);
    if (length > maxLength) {
      showError(`A message holds at most ${maxLength} characters; this one has ${length}. Shorten it and send again.`);
      return;
    }
    if (socket.sendJson({ type: "post", room, text })) {
      input.value = "";
      updateCounter();
    } else {
      showError("Not sent: too many messages are already waiting for the connection to come back.");
    }
  });
})();
