/*
 * The room page. It subscribes to the room's stream (chat/consumers.py) with presence: tether.js hands each message
 * over once, in order, including the ones posted while the page was offline or reloading (recovered from the
 * stream's history), and keeps the list of who is here. It loads the room's recent history on first load and when
 * the stream cannot be recovered, shows who is typing, posts what the user writes, and shows the server's errors
 * (a guest trying to post, say) above the composer.
 */
(function () {
  "use strict";

  const { socket, me, avatarColor } = window.chatSite;
  // Milliseconds a post may wait for the connection to come back before it is given back to the user.
  const POST_TIMEOUT = 60000;
  const room = document.getElementById("room").dataset.room;
  const list = document.getElementById("messages");
  const empty = document.getElementById("messages-empty");
  const errorBox = document.getElementById("room-error");
  const form = document.getElementById("composer");
  const input = document.getElementById("message-input");
  const counter = document.getElementById("message-count");
  const people = document.getElementById("people");
  const peopleCount = document.getElementById("people-count");
  const typingLine = document.getElementById("typing");
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
    item.dataset.id = message.id;
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

  /** A message from the stream, at the end of the list (unless the history showed it already). */
  function append(message) {
    if (document.getElementById(`message-${message.id}`)) return;
    const stick = nearBottom();
    empty.hidden = true;
    list.append(renderMessage(message));
    if (stick || message.author === me) list.scrollTop = list.scrollHeight;
    stoppedTyping(message.author);
  }

  /**
   * The room's recent messages, merged into what is shown: a message already there stays, a missing one goes in
   * before the first shown message with a greater id. Messages that came from the stream before the history did
   * (recovered after a reload, say) are kept, so the page never loses what it was handed.
   */
  function showHistory(history) {
    empty.textContent = "No messages yet. Say hello!";
    const shown = [...list.querySelectorAll(".message")];
    for (const message of history) {
      if (document.getElementById(`message-${message.id}`)) continue;
      const after = shown.find((item) => Number(item.dataset.id) > message.id);
      const item = renderMessage(message);
      if (after) after.before(item);
      else list.append(item);
    }
    empty.hidden = list.querySelector(".message") !== null;
    list.scrollTop = list.scrollHeight;
  }

  function loadHistory() {
    socket.request("history", { room }).then(
      (answer) => {
        historyLoaded = true;
        showHistory(answer.messages);
      },
      (error) => showError(error.message),
    );
  }

  /** Who is here: one entry per user, whatever their number of tabs; guests are "guest". */
  function showPeople(members) {
    const items = members.map((member) => {
      const name = member.meta.username || "guest";
      const item = document.createElement("li");
      item.className = "person";
      item.dataset.user = name;
      const avatar = document.createElement("span");
      avatar.className = "avatar avatar-small";
      avatar.textContent = name.charAt(0).toUpperCase();
      avatar.style.background = avatarColor(name);
      item.append(avatar, name);
      if (member.connections > 1) item.title = `${member.connections} tabs`;
      return item;
    });
    people.replaceChildren(...items);
    peopleCount.textContent = `${members.length} here`;
  }

  // Who is typing: a name stays for TYPING_SHOWN ms after their last notice, or until their message arrives.
  const TYPING_SHOWN = 4000;
  const typing = new Map(); // name -> timer
  function showTyping() {
    const names = [...typing.keys()];
    typingLine.hidden = names.length === 0;
    typingLine.textContent =
      names.length === 1 ? `${names[0]} is typing…` : `${names.slice(0, -1).join(", ")} and ${names.at(-1)} are typing…`;
  }
  function startedTyping(name) {
    if (name === me) return;
    clearTimeout(typing.get(name));
    typing.set(name, setTimeout(() => stoppedTyping(name), TYPING_SHOWN));
    showTyping();
  }
  function stoppedTyping(name) {
    if (!typing.has(name)) return;
    clearTimeout(typing.get(name));
    typing.delete(name);
    showTyping();
  }

  let historyLoaded = false;
  socket.subscribe(`chat.room.${room}`, append, {
    presence: true,
    onPresence: showPeople,
    // After every (re)subscription: the first time, show the recent history (whatever was recovered stays).
    onSubscribe: () => {
      hideError();
      if (!historyLoaded) loadHistory();
    },
    // Away for longer than the stream keeps (or its history was lost): show the history afresh.
    onReload: loadHistory,
    onError: (error) => showError(error.message),
  });
  // Typing notices are worth seconds: after a reconnection, only new ones.
  socket.subscribe(`chat.typing.${room}`, (notice) => startedTyping(notice.user), { recover: false });

  // Tell the room that this user is typing, at most every TYPING_EVERY ms while they type.
  const TYPING_EVERY = 2500;
  let typingSent = 0;
  input.addEventListener("input", () => {
    if (!me || !input.value.trim() || socket.state !== "open" || Date.now() - typingSent < TYPING_EVERY) return;
    typingSent = Date.now();
    socket.request("typing", { room }).catch(() => {}); // a lost notice is harmless
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
    // While the connection is down the post waits in tether.js's queue (kept across a reload of the page) and goes
    // out when it comes back; the server's refusals (a guest, too fast) come back as errors.
    socket.request("post", { room, text }, { timeout: POST_TIMEOUT }).then(
      () => hideError(),
      (error) => {
        const unsent = error.code === "queue_full" || (error.code === "timeout" && !error.sent);
        if (unsent) {
          showError("Not sent: the connection did not come back in time. Send it again.");
          if (!input.value) input.value = text; // give it back
          updateCounter();
        } else if (error.code === "disconnected" || error.code === "timeout") {
          showError("The connection dropped as the message went out: if it does not appear, send it again.");
        } else {
          showError(error.message);
        }
      },
    );
    input.value = "";
    updateCounter();
    typingSent = 0;
  });
})();
