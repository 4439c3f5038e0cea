/*
 * tether.js: the browser client of tether (documented in docs/browser-client.md).
 *
 * Plain modern JavaScript, no build step, no dependencies. Load it with
 *   <script src="{% static 'tether/tether.js' %}"></script>
 * and open a connection with
 *   const socket = Tether.connect("/ws/chat/lobby/");
 *
 * A Tether.Socket keeps one WebSocket open for as long as the page wants it:
 * - it resolves a relative path against the page's address, choosing ws: or wss: by the page's scheme;
 * - it reconnects after a drop, waiting a random time between 0 and an exponentially growing cap (full jitter),
 *   and resets the cap once a connection has stayed open for `stableAfter` milliseconds;
 * - it queues what is sent while disconnected (at most `maxQueue` items) and sends it, in order, on reconnection;
 * - it parses JSON frames for you (`event.json`) and sends JSON with `sendJson()`;
 * - it fires `open`, `close`, `message`, `reconnecting` and `drop` events, and tells its `state`:
 *   "connecting", "open", "reconnecting" or "closed";
 * - `close()` closes the connection and stops reconnecting.
 */
(function (global) {
  "use strict";

  /** The values of `socket.state`. */
  const STATES = Object.freeze({
    CONNECTING: "connecting", // the first attempt, not open yet
    OPEN: "open", // connected: sends go out at once
    RECONNECTING: "reconnecting", // dropped: waiting for, or making, another attempt
    CLOSED: "closed", // close() was called, or shouldReconnect() said no: nothing more happens
  });

  /** Defaults of the options of `new Tether.Socket(path, options)`; every one may be overridden. */
  const DEFAULTS = Object.freeze({
    /** Milliseconds: the cap of the wait before the first reconnection attempt; it doubles with each attempt. */
    initialDelay: 500,
    /** Milliseconds: the cap never grows past this. */
    maxDelay: 30000,
    /** Milliseconds a connection must stay open before the next drop starts again from `initialDelay`. */
    stableAfter: 5000,
    /** Milliseconds an attempt may take to open before it is abandoned (and counted as a failed attempt). */
    connectTimeout: 10000,
    /** How many sends are kept while disconnected; when full, send() returns false and fires `drop`. */
    maxQueue: 100,
    /** WebSocket subprotocols to offer, as for `new WebSocket(url, protocols)`. */
    protocols: undefined,
    /** How binary frames arrive: "arraybuffer" or "blob". */
    binaryType: "arraybuffer",
    /**
     * Called with the CloseEvent of each drop; return false to stop reconnecting. By default a normal close (1000)
     * and a close because the login ended (4401: reconnecting would only bring back a logged-out socket; reload the
     * page or log in again) end the socket; every other close, 1012 (server restart) included, reconnects.
     */
    shouldReconnect: (event) => event.code !== 1000 && event.code !== 4401,
    /** The source of randomness for the jitter (a function returning a number in [0, 1)). */
    random: Math.random,
  });

  const NUMBER_OPTIONS = ["initialDelay", "maxDelay", "stableAfter", "connectTimeout", "maxQueue"];

  function checkOptions(options) {
    const merged = Object.assign({}, DEFAULTS, options || {});
    for (const name of Object.keys(options || {})) {
      if (!(name in DEFAULTS)) {
        throw new TypeError(`tether: unknown option "${name}"; the options are ${Object.keys(DEFAULTS).join(", ")}.`);
      }
    }
    for (const name of NUMBER_OPTIONS) {
      const value = merged[name];
      if (typeof value !== "number" || !Number.isFinite(value) || value < 0) {
        throw new RangeError(`tether: option "${name}" must be a finite number >= 0, not ${String(value)}.`);
      }
    }
    if (merged.initialDelay <= 0 || merged.maxDelay < merged.initialDelay) {
      throw new RangeError("tether: options need 0 < initialDelay <= maxDelay.");
    }
    if (!Number.isInteger(merged.maxQueue)) {
      throw new RangeError(`tether: option "maxQueue" must be an integer, not ${merged.maxQueue}.`);
    }
    if (typeof merged.shouldReconnect !== "function" || typeof merged.random !== "function") {
      throw new TypeError('tether: options "shouldReconnect" and "random" must be functions.');
    }
    if (merged.binaryType !== "arraybuffer" && merged.binaryType !== "blob") {
      throw new TypeError('tether: option "binaryType" must be "arraybuffer" or "blob".');
    }
    return merged;
  }

  /**
   * The WebSocket URL for `path`: a relative path is resolved against `base` (the page's address by default),
   * and http:/https: become ws:/wss:. Throws a TypeError for a URL that cannot be a WebSocket's.
   */
  function resolveUrl(path, base) {
    const against = base !== undefined ? base : global.location && global.location.href;
    let url;
    try {
      url = new URL(String(path), against);
    } catch (error) {
      throw new TypeError(`tether: cannot make a WebSocket URL of "${path}" (relative to ${against}).`);
    }
    if (url.protocol === "http:") url.protocol = "ws:";
    else if (url.protocol === "https:") url.protocol = "wss:";
    else if (url.protocol !== "ws:" && url.protocol !== "wss:") {
      throw new TypeError(`tether: a WebSocket URL needs ws:, wss:, http: or https:, not ${url.protocol}`);
    }
    url.hash = "";
    return url.href;
  }

  /**
   * How long to wait before reconnection attempt number `attempt` (1 for the first), in milliseconds:
   * a random time between 0 and min(maxDelay, initialDelay * 2 ** (attempt - 1)) ("full jitter"), so that
   * many pages dropped at once by a server restart come back spread out, not all together.
   */
  function backoffDelay(attempt, options, random) {
    const settings = Object.assign({}, DEFAULTS, options || {});
    const draw = random || settings.random;
    const cap = Math.min(settings.maxDelay, settings.initialDelay * 2 ** Math.max(0, attempt - 1));
    return Math.floor(draw() * cap);
  }

  function makeEvent(type, fields) {
    const event = new Event(type);
    for (const [name, value] of Object.entries(fields)) {
      Object.defineProperty(event, name, { value, enumerable: true });
    }
    return event;
  }

  function makeMessageEvent(data) {
    const event = new Event("message");
    let parsed;
    let tried = false;
    Object.defineProperty(event, "data", { value: data, enumerable: true });
    // Parsed on first use: the JSON value of a text frame, or undefined for binary or non-JSON frames.
    Object.defineProperty(event, "json", {
      enumerable: true,
      get() {
        if (!tried) {
          tried = true;
          if (typeof data === "string") {
            try {
              parsed = JSON.parse(data);
            } catch (error) {
              parsed = undefined;
            }
          }
        }
        return parsed;
      },
    });
    return event;
  }

  /**
   * A WebSocket connection that reconnects by itself. See the file's header and docs/browser-client.md.
   *
   * Events (listen with `addEventListener(type, fn)` or `on(type, fn)`):
   * - `open`: connected; `event.reconnected` is true after a drop. Listeners run before the queue is flushed,
   *   so what they send (joining rooms again, say) goes out ahead of the queued sends.
   * - `message`: a frame; `event.data` as received, `event.json` its parsed JSON (undefined if not JSON).
   * - `close`: the connection ended; `event.code`, `event.reason`, `event.wasClean`, `event.willReconnect`.
   * - `reconnecting`: an attempt is scheduled; `event.attempt` (1, 2, ...) and `event.delay` (milliseconds).
   * - `drop`: a send was refused because the queue was full; `event.data` is what was not sent.
   */
  class TetherSocket extends EventTarget {
    constructor(path, options) {
      super();
      this.options = checkOptions(options);
      this.url = resolveUrl(path);
      this._state = STATES.CONNECTING;
      this._queue = [];
      this._attempt = 0;
      this._ws = null;
      this._everOpened = false;
      this._retryTimer = null;
      this._connectTimer = null;
      this._stableTimer = null;
      this._onOnline = () => this._retryNow();
      this._connect();
      if (typeof global.addEventListener === "function") global.addEventListener("online", this._onOnline);
    }

    /** "connecting", "open", "reconnecting" or "closed" (see Tether.STATES). */
    get state() {
      return this._state;
    }

    /** How many sends wait in the queue for the connection to open. */
    get queued() {
      return this._queue.length;
    }

    /** The number of the current reconnection attempt (0 while the connection is stable or never dropped). */
    get attempt() {
      return this._attempt;
    }

    /**
     * Send a frame (a string, ArrayBuffer, typed array or Blob). Sent at once when open; otherwise queued.
     * Returns true when sent or queued, false when the queue was full (the data is dropped and a `drop`
     * event fires). Throws an Error after close().
     */
    send(data) {
      if (this._state === STATES.CLOSED) {
        throw new Error("tether: send() on a closed socket; open a new one with Tether.connect().");
      }
      if (this._state === STATES.OPEN) {
        this._ws.send(data);
        return true;
      }
      if (this._queue.length >= this.options.maxQueue) {
        this.dispatchEvent(makeEvent("drop", { data }));
        return false;
      }
      this._queue.push(data);
      return true;
    }

    /** Send `value` as a JSON text frame; same return value and queueing as send(). */
    sendJson(value) {
      return this.send(JSON.stringify(value));
    }

    /** Listen to `type`; returns a function that stops listening. */
    on(type, listener) {
      this.addEventListener(type, listener);
      return () => this.removeEventListener(type, listener);
    }

    /**
     * Close the connection for good: no more reconnection attempts, queued sends are discarded, and the state
     * becomes "closed". `code` is 1000 or 3000-4999. A `close` event follows (with willReconnect false).
     */
    close(code = 1000, reason = "") {
      if (code !== 1000 && (code < 3000 || code > 4999)) {
        throw new RangeError(`tether: close() takes code 1000 or 3000-4999, not ${code}.`);
      }
      if (this._state === STATES.CLOSED) return;
      this._state = STATES.CLOSED;
      this._queue = [];
      this._clearTimers();
      if (typeof global.removeEventListener === "function") global.removeEventListener("online", this._onOnline);
      const ws = this._ws;
      if (ws && ws.readyState !== WebSocket.CLOSED) {
        ws.close(code, reason); // the WebSocket's close event fires our `close` event
      } else {
        this._ws = null;
        this.dispatchEvent(makeEvent("close", { code, reason, wasClean: true, willReconnect: false }));
      }
    }

    _connect() {
      let ws;
      try {
        ws = new WebSocket(this.url, this.options.protocols);
      } catch (error) {
        if (!this._everOpened && this._attempt === 0) throw error; // a bad URL or protocol: tell the caller now
        this._scheduleReconnect();
        return;
      }
      ws.binaryType = this.options.binaryType;
      this._ws = ws;
      this._connectTimer = setTimeout(() => {
        if (ws.readyState === WebSocket.CONNECTING) ws.close(); // counts as a drop: the close event follows
      }, this.options.connectTimeout);
      ws.onopen = () => this._opened(ws);
      ws.onmessage = (event) => {
        if (this._ws === ws) this.dispatchEvent(makeMessageEvent(event.data));
      };
      ws.onclose = (event) => this._closed(ws, event);
    }

    _opened(ws) {
      if (this._ws !== ws || this._state === STATES.CLOSED) return;
      clearTimeout(this._connectTimer);
      this._state = STATES.OPEN;
      const reconnected = this._everOpened;
      this._everOpened = true;
      this._stableTimer = setTimeout(() => {
        this._attempt = 0;
      }, this.options.stableAfter);
      this.dispatchEvent(makeEvent("open", { reconnected }));
      while (this._queue.length && this._state === STATES.OPEN && this._ws === ws) {
        ws.send(this._queue.shift());
      }
    }

    _closed(ws, event) {
      if (this._ws !== ws) return;
      this._ws = null;
      this._clearTimers();
      const fields = { code: event.code, reason: event.reason, wasClean: event.wasClean };
      if (this._state === STATES.CLOSED) {
        this.dispatchEvent(makeEvent("close", Object.assign(fields, { willReconnect: false })));
        return;
      }
      let willReconnect = true;
      try {
        willReconnect = this.options.shouldReconnect(event) !== false;
      } catch (error) {
        // Reported like a listener's error would be; reconnecting goes on.
        (typeof global.reportError === "function" ? global.reportError : console.error)(error);
      }
      if (!willReconnect) {
        this._state = STATES.CLOSED;
        this._queue = [];
      } else {
        this._state = STATES.RECONNECTING;
      }
      this.dispatchEvent(makeEvent("close", Object.assign(fields, { willReconnect })));
      if (willReconnect && this._state === STATES.RECONNECTING) this._scheduleReconnect();
    }

    _scheduleReconnect() {
      this._state = STATES.RECONNECTING;
      this._attempt += 1;
      const delay = backoffDelay(this._attempt, this.options, this.options.random);
      this._retryTimer = setTimeout(() => {
        this._retryTimer = null;
        this._connect();
      }, delay);
      this.dispatchEvent(makeEvent("reconnecting", { attempt: this._attempt, delay }));
    }

    _retryNow() {
      // The browser is back online: do not sit out the rest of the wait.
      if (this._state === STATES.RECONNECTING && this._retryTimer !== null) {
        clearTimeout(this._retryTimer);
        this._retryTimer = null;
        this._connect();
      }
    }

    _clearTimers() {
      clearTimeout(this._retryTimer);
      clearTimeout(this._connectTimer);
      clearTimeout(this._stableTimer);
      this._retryTimer = this._connectTimer = this._stableTimer = null;
    }
  }

  global.Tether = Object.freeze({
    Socket: TetherSocket,
    connect: (path, options) => new TetherSocket(path, options),
    backoffDelay,
    resolveUrl,
    STATES,
    DEFAULTS,
  });
})(typeof globalThis !== "undefined" ? globalThis : window);
